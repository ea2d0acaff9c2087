"""Input checks and SDPA-style argument handling shared by every attention mechanism: one place
that names the bad argument, and one reading of ``is_causal`` / ``attn_mask`` / 3-d inputs /
``enable_gqa`` for all three mechanisms."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor


def check_qkv(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
              causal: bool = False, enable_gqa: bool = False) -> None:
    """Raise ``ValueError`` naming the argument unless q, k, v (and the mask) fit together.

    q: (batch, heads, seq_q, head_dim), k: (batch, kv_heads, seq_k, head_dim),
    v: (batch, kv_heads, seq_k, head_dim_v) (or all three 3-d: (batch * heads, seq, dim), as
    SDPA takes them), key_padding_mask: (batch, seq_k) bool, True = padding. kv_heads equals
    heads unless ``enable_gqa``, where it must divide heads. ``causal`` with seq_q != seq_k is
    allowed: the queries are the last seq_q positions (see :func:`causal_mask`).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() not in (3, 4):
            raise ValueError(
                f"{name} must have shape (batch, heads, seq, head_dim), a 4-d tensor (or 3-d "
                f"(batch * heads, seq, head_dim)), got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor, got dtype {t.dtype}")
    if not (q.dim() == k.dim() == v.dim()):
        raise ValueError(f"q, k, v must all be 3-d or all 4-d, got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k, v must be on one device, got q {q.device}, k {k.device}, v {v.device}"
        )
    check_bool("enable_gqa", enable_gqa)
    if q.dim() == 3:
        q, k, v = q[:, None], k[:, None], v[:, None]
    if q.shape[0] != k.shape[0] or k.shape[:2] != v.shape[:2]:
        raise ValueError(
            "q, k, v must agree in batch and k, v in heads, got "
            f"q {tuple(q.shape[:2])}, k {tuple(k.shape[:2])}, v {tuple(v.shape[:2])}"
        )
    hq, hk = q.shape[1], k.shape[1]
    if hq != hk and not (enable_gqa and hk > 0 and hq % hk == 0):
        hint = ("" if enable_gqa else "; pass enable_gqa=True for fewer kv heads")
        raise ValueError(f"q has {hq} heads and k, v {hk}: they must be equal, or k's divide "
                         f"q's with enable_gqa=True{hint}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(
            f"k and v must have the same seq length, got k {k.shape[2]}, v {v.shape[2]}"
        )
    if q.shape[3] != k.shape[3]:
        raise ValueError(
            f"q and k must have the same head_dim, got q {q.shape[3]}, k {k.shape[3]}"
        )
    check_bool("causal", causal)
    check_mask(key_padding_mask, k.shape[0], k.shape[2], k.device)


def check_mask(key_padding_mask: Tensor | None, batch: int, seq: int,
               device: torch.device) -> None:
    """``key_padding_mask`` must be None or a (batch, seq) bool tensor on ``device``."""
    if key_padding_mask is None:
        return
    m = key_padding_mask
    if not isinstance(m, Tensor):
        raise ValueError(f"key_padding_mask must be a torch.Tensor or None, got {type(m).__name__}")
    if m.dtype != torch.bool:
        raise ValueError(
            f"key_padding_mask must be a bool tensor (True = padding), got dtype {m.dtype}"
        )
    if tuple(m.shape) != (batch, seq):
        raise ValueError(
            f"key_padding_mask must have shape (batch, seq) = {(batch, seq)}, got {tuple(m.shape)}"
        )
    if m.device != device:
        raise ValueError(f"key_padding_mask must be on {device}, got {m.device}")


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """A real bool: ``"no"`` or ``1`` would otherwise be taken as True."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool (True or False), got {value!r}")
    return value


def check_seed(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 63:
        raise ValueError(f"{name} must be an int in [0, 2**63), got {value!r}")
    return value


def check_scale(scale: object) -> float | None:
    """``scale`` is None (1/sqrt(head_dim)) or a finite float > 0."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or \
            not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0 or None, got {scale!r}")
    return float(scale)


def check_dropout(dropout_p: object, supported: bool, mechanism: str) -> float:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or \
            not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")
    if dropout_p and not supported:
        raise ValueError(
            f"dropout_p={dropout_p}: {mechanism} never forms the attention weights, so there "
            "are none to drop; use dropout_p=0 (and dropout on the output if wanted)"
        )
    return float(dropout_p)


def resolve_causal(causal: object, is_causal: object) -> bool:
    """``is_causal`` (SDPA's name) and ``causal`` are one option: give either, or both alike."""
    check_bool("causal", causal)
    if is_causal is None:
        return causal
    check_bool("is_causal", is_causal)
    if causal and not is_causal:
        raise ValueError("causal=True and is_causal=False contradict each other; give one")
    return is_causal


def causal_mask(n_q: int, n_k: int, device: torch.device) -> Tensor:
    """(n_q, n_k) bool, True = may attend: query i is position n_k - n_q + i (the last n_q
    positions, as in chunked prefill; ``torch.nn.attention.bias.causal_lower_right``), so it
    sees keys j <= n_k - n_q + i. Note SDPA's own ``is_causal`` aligns a shorter q top-left;
    for n_q == n_k the two agree."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(n_k - n_q)


def key_mask_from_attn_mask(attn_mask: Tensor | None, key_padding_mask: Tensor | None,
                            batch: int, seq_k: int, mechanism: str) -> Tensor | None:
    """A linear-time mechanism honours only key padding (and causality): an ``attn_mask``
    that is a pure key mask, bool of shape (batch or 1, 1, 1, seq_k) (or (batch or 1, 1, seq_k)
    for 3-d inputs) with True = may attend, is folded into the key padding mask; anything else
    is refused here, before any work."""
    if attn_mask is None:
        return key_padding_mask
    if not isinstance(attn_mask, Tensor):
        raise ValueError(f"attn_mask must be a torch.Tensor or None, got "
                         f"{type(attn_mask).__name__}")
    shape = tuple(attn_mask.shape)
    pure_key = (attn_mask.dtype == torch.bool and attn_mask.dim() in (3, 4)
                and all(s == 1 for s in shape[1:-1]) and shape[-1] == seq_k
                and shape[0] in (1, batch))
    if not pure_key:
        raise ValueError(
            f"attn_mask of shape {shape} and dtype {attn_mask.dtype}: {mechanism} runs in "
            "linear time and can honour only key padding and causality. Pass "
            "key_padding_mask=(batch, seq_k) bool (True = padding) and is_causal=True; a bool "
            "attn_mask of shape (batch, 1, 1, seq_k) (True = attend) is also accepted"
        )
    pad = ~attn_mask.reshape(shape[0], seq_k).expand(batch, seq_k)
    return pad if key_padding_mask is None else pad | key_padding_mask


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types (accumulate in float32), else the dtype itself."""
    return torch.promote_types(dtype, torch.float32)


def output_dtype(t: Tensor) -> torch.dtype:
    """The dtype SDPA would return: the autocast dtype inside ``torch.autocast``, else t's."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def no_autocast(device: torch.device):
    """Run the body in full precision even inside ``torch.autocast`` (we cast ourselves)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def as_4d(*tensors: Tensor) -> tuple[bool, tuple[Tensor, ...]]:
    """3-d (batch * heads, seq, dim) inputs as 4-d with one head; returns (was_3d, tensors)."""
    if tensors[0].dim() == 3:
        return True, tuple(t[:, None] for t in tensors)
    return False, tensors


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(batch, kv_heads, seq, d) -> (batch, kv_heads * groups, seq, d), each kv head repeated
    for its ``groups`` consecutive query heads (SDPA's ``enable_gqa`` layout)."""
    if groups == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, groups, n, d).reshape(b, h * groups, n, d)
