"""Hugging Face's 4-D attention masks, read back as what efflab's attention takes: a key
padding mask and a causal flag.

``transformers`` hands an attention function a mask of shape (batch, 1 or heads, seq_q,
seq_k): bool with True = may attend (``sdpa_mask``), or additive float with 0 = may attend
and the dtype's minimum (or -inf) = may not (``eager_mask``, or a user's own 4-D mask), or
None when the pattern is plain causal / full without padding. efflab's mechanisms take only
``key_padding_mask`` (batch, seq_k) and ``causal``, so a mask is accepted only if it is
exactly that structure; anything else (sliding windows, packed sequences, prefix-LM blocks,
additive biases such as ALiBi, masks that differ between heads) raises ``ValueError`` naming
it, rather than being dropped. Causal structure with seq_q < seq_k is aligned bottom-right,
as HF builds it when a cache holds seq_k - seq_q earlier positions.

Rows of padded queries are not checked: their outputs are unspecified (HF masks them in
different ways across versions, and no unpadded token reads them).
"""

from __future__ import annotations

import torch
from torch import Tensor


def allowed_pattern(key_padding_mask: Tensor | None, causal: bool, batch: int, seq_q: int,
                    seq_k: int, device: torch.device | str = "cpu") -> Tensor:
    """(batch, seq_q, seq_k) bool, True = query i may attend to key j: the structure efflab
    supports, built from its parts (the reference :func:`key_padding_from_mask` inverts)."""
    allowed = torch.ones(batch, seq_q, seq_k, dtype=torch.bool, device=device)
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, :]
    if causal:
        offset = seq_k - seq_q
        allowed = allowed & torch.ones(seq_q, seq_k, dtype=torch.bool, device=device).tril(offset)
    return allowed


def _as_allowed(attention_mask: Tensor) -> Tensor:
    """4-D bool or additive float -> bool (True = may attend); refuse biases."""
    if attention_mask.dtype == torch.bool:
        return attention_mask
    if not attention_mask.is_floating_point():
        raise ValueError(
            f"attention_mask must be a bool (True = attend) or additive float 4-D mask, got "
            f"dtype {attention_mask.dtype}"
        )
    blocked = attention_mask <= torch.finfo(attention_mask.dtype).min / 2
    bias = ~blocked & (attention_mask != 0)
    if bool(bias.any()):
        value = attention_mask[bias].flatten()[0].item()
        raise ValueError(
            "attention_mask carries additive biases (values other than 0 and the dtype's "
            f"minimum, e.g. {value!r}: ALiBi, relative positions, ...); efflab's attention "
            "adds no bias to the scores, so this mask is refused rather than ignored"
        )
    return ~blocked


def key_padding_from_mask(attention_mask: Tensor | None, seq_q: int, seq_k: int,
                          causal: bool) -> Tensor | None:
    """The key padding mask (batch, seq_k), True = padding, that together with ``causal``
    makes ``attention_mask``; None when nothing is padded. Raises ``ValueError`` when the mask
    is not of that form.

    attention_mask: None, or (batch, 1 or heads, seq_q, seq_k), bool or additive float.
    """
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, Tensor) or attention_mask.dim() != 4:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else \
            type(attention_mask).__name__
        raise ValueError(
            f"attention_mask must be None or a 4-D (batch, 1 or heads, seq_q, seq_k) tensor, "
            f"got {shape}"
        )
    if tuple(attention_mask.shape[-2:]) != (seq_q, seq_k):
        raise ValueError(
            f"attention_mask must end in (seq_q, seq_k) = {(seq_q, seq_k)}, got shape "
            f"{tuple(attention_mask.shape)}"
        )
    allowed = _as_allowed(attention_mask)
    if allowed.shape[1] > 1 and not bool((allowed == allowed[:, :1]).all()):
        raise ValueError("attention_mask differs between heads; efflab's attention takes one "
                         "key padding mask for all heads")
    allowed = allowed[:, 0]
    batch = allowed.shape[0]
    pad = ~allowed.any(dim=-2)  # a key no query may see
    expected = allowed_pattern(pad, causal, batch, seq_q, seq_k, allowed.device)
    real_query = ~pad[:, seq_k - seq_q:] if seq_k >= seq_q else \
        torch.ones(batch, seq_q, dtype=torch.bool, device=allowed.device)
    wrong = (expected != allowed) & real_query[:, :, None]
    if bool(wrong.any()):
        b, i, j = (int(x) for x in wrong.nonzero()[0])
        kind = "causal" if causal else "bidirectional"
        raise ValueError(
            f"attention_mask is not key padding plus {kind} structure (batch {b}, query {i}, "
            f"key {j} is {'allowed' if bool(allowed[b, i, j]) else 'blocked'}); efflab's "
            "attention takes only a key padding mask and a causal flag, so sliding windows, "
            "packed sequences, prefix blocks and custom masks are refused"
        )
    return pad if bool(pad.any()) else None
