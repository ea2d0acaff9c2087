"""Exact softmax attention (Vaswani et al. 2017): the baseline both papers compare against.

``softmax_attention`` calls ``torch.nn.functional.scaled_dot_product_attention`` so that it
gets FlashAttention / memory-efficient kernels where the device has them;
``softmax_attention_reference`` is the textbook formula, kept beside it for the tests.

Shapes: q (batch, heads, seq_q, head_dim), k (batch, kv_heads, seq_k, head_dim),
v (batch, kv_heads, seq_k, head_dim_v) (or 3-d (batch * heads, seq, dim)), key_padding_mask
(batch, seq_k) bool with True = padding; the output is (batch, heads, seq_q, head_dim_v).
``attn_mask`` as in SDPA: bool (True = may attend) or additive float, broadcastable to
(batch, heads, seq_q, seq_k).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from efflab.attention._checks import (
    as_4d,
    causal_mask,
    check_bool,
    check_dropout,
    check_qkv,
    check_scale,
    output_dtype,
    repeat_kv,
    resolve_causal,
)


def _check_attn_mask(attn_mask: Tensor | None, q: Tensor, k: Tensor) -> None:
    if attn_mask is None:
        return
    if not isinstance(attn_mask, Tensor):
        raise ValueError(f"attn_mask must be a torch.Tensor or None, got "
                         f"{type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise ValueError(f"attn_mask must be bool (True = may attend) or float (added to the "
                         f"scores), got dtype {attn_mask.dtype}")
    target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    try:
        torch.broadcast_shapes(attn_mask.shape, target)
    except RuntimeError:
        raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to "
                         f"(batch, heads, seq_q, seq_k) = {target}") from None


def _bias(key_padding_mask: Tensor | None, attn_mask: Tensor | None, causal: bool, n_q: int,
          n_k: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor | None, bool]:
    """(mask for SDPA, is_bool): a bool mask (True = may attend) when every part is bool, else
    an additive float mask; None when nothing is masked."""
    allowed = None
    if key_padding_mask is not None:
        allowed = ~key_padding_mask[:, None, None, :]
    if causal:
        tri = causal_mask(n_q, n_k, device)
        allowed = tri if allowed is None else allowed & tri
    if attn_mask is None or attn_mask.dtype == torch.bool:
        if attn_mask is not None:
            allowed = attn_mask if allowed is None else allowed & attn_mask
        return allowed, True
    bias = attn_mask.to(dtype)
    if allowed is not None:
        bias = bias.masked_fill(~allowed, float("-inf"))
    return bias, False


def _math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                    scale: float | None, gqa: bool) -> Tensor:
    """SDPA's math, spelled out with differentiable ops (for double backward)."""
    groups = q.shape[1] // k.shape[1] if gqa else 1
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-1, -2) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool \
            else scores + mask
    return torch.softmax(scores, -1) @ v


class _SDPA(torch.autograd.Function):
    """SDPA (fused kernels) whose first derivative is SDPA's own backward and whose second
    derivative is exact: SDPA's fused backward kernels are not differentiable themselves, so
    when a caller asks for ``create_graph=True`` the backward recomputes the output by
    :func:`_math_attention` from the saved inputs and differentiates that (O(seq_q seq_k)
    memory for that pass only). With dropout the recomputation would draw another mask, so
    double backward with ``dropout_p > 0`` raises."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, scale, dropout_p, gqa):
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(t.requires_grad) for t in (q, k, v)]
            out = F.scaled_dot_product_attention(*leaves, attn_mask=mask, is_causal=causal,
                                                 scale=scale, dropout_p=dropout_p,
                                                 enable_gqa=gqa)
        ctx.inner = (leaves, out)
        ctx.save_for_backward(q, k, v, mask)
        ctx.causal, ctx.scale, ctx.dropout_p, ctx.gqa = causal, scale, dropout_p, gqa
        return out.detach()

    @staticmethod
    def backward(ctx, dout):
        wanted = [i for i in range(3) if ctx.needs_input_grad[i]]
        if torch.is_grad_enabled():
            if ctx.dropout_p:
                raise RuntimeError("double backward (create_graph=True) through softmax "
                                   "attention with dropout_p > 0 is not supported: pass "
                                   "dropout_p=0 (module.eval()) for second derivatives")
            q, k, v, mask = ctx.saved_tensors
            if ctx.causal:  # SDPA's is_causal, here with seq_q == seq_k
                mask = causal_mask(q.shape[2], k.shape[2], q.device)
            with torch.enable_grad():
                out = _math_attention(q, k, v, mask, ctx.scale, ctx.gqa)
                grads = torch.autograd.grad(out, [(q, k, v)[i] for i in wanted], dout,
                                            create_graph=True)
        else:
            leaves, out = ctx.inner
            grads = torch.autograd.grad(out, [leaves[i] for i in wanted], dout,
                                        retain_graph=True)
        result = [None] * 8
        for i, g in zip(wanted, grads):
            result[i] = g
        return tuple(result)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool,
          scale: float | None, dropout_p: float, gqa: bool) -> Tensor:
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad
                                              or v.requires_grad)
    if not needs_grad or torch.compiler.is_compiling() or torch.is_autocast_enabled(
            q.device.type):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              scale=scale, dropout_p=dropout_p,
                                              enable_gqa=gqa)
    return _SDPA.apply(q, k, v, mask, causal, scale, dropout_p, gqa)


def _prepare(q, k, v, key_padding_mask, causal, is_causal, attn_mask, enable_gqa, scale):
    causal = resolve_causal(causal, is_causal)
    check_qkv(q, k, v, key_padding_mask, causal, enable_gqa)
    was_3d, (q, k, v) = as_4d(q, k, v)
    if attn_mask is not None and was_3d and isinstance(attn_mask, Tensor) and \
            attn_mask.dim() == 3:
        attn_mask = attn_mask[:, None]
    _check_attn_mask(attn_mask, q, k)
    return causal, was_3d, q, k, v, attn_mask, check_scale(scale)


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
                      causal: bool = False, scale: float | None = None, *,
                      is_causal: bool | None = None, attn_mask: Tensor | None = None,
                      dropout_p: float = 0.0, enable_gqa: bool = False) -> Tensor:
    """softmax(q k^T * scale + mask) v through SDPA; scale defaults to 1/sqrt(head_dim).

    ``causal`` (alias ``is_causal``) with seq_q < seq_k takes the queries as the last seq_q
    positions (chunked prefill; SDPA's own ``is_causal`` would align them top-left).
    ``dropout_p`` is applied to the attention weights (as in SDPA: pass 0 in eval).
    ``enable_gqa``: k, v with fewer heads, as SDPA. A query whose keys are all masked gets a
    zero output (and zero gradients) rather than the NaN of an empty softmax.
    """
    causal, was_3d, q, k, v, attn_mask, scale = _prepare(
        q, k, v, key_padding_mask, causal, is_causal, attn_mask, enable_gqa, scale)
    dropout_p = check_dropout(dropout_p, True, "softmax")
    if q.shape[2] == 0 or k.shape[2] == 0:
        out = v.new_zeros(q.shape[0], q.shape[1], q.shape[2], v.shape[-1],
                          dtype=output_dtype(v))
        return out[:, 0] if was_3d else out
    gqa = q.shape[1] != k.shape[1]
    if key_padding_mask is None and attn_mask is None and (not causal or q.shape[2] == k.shape[2]):
        out = _sdpa(q, k, v, None, causal, scale, dropout_p, gqa)
        return out[:, 0] if was_3d else out
    mask, is_bool = _bias(key_padding_mask, attn_mask, causal, q.shape[2], k.shape[2],
                          q.device, q.dtype)
    # Rows with nothing to attend to would be NaN; let them attend anywhere, then zero them.
    empty = ~mask.any(-1, keepdim=True) if is_bool else torch.isneginf(mask).all(-1, True)
    safe = (mask | empty) if is_bool else mask.masked_fill(empty, 0.0)
    if attn_mask is None and not causal:
        # a key padding mask only: the empty rows are whole (batch) items, so zeroing their
        # values zeroes their outputs and every gradient through them, exactly, at the cost
        # of a pass over v rather than over the output (Linformer: k rows, not seq)
        out = _sdpa(q, k, v.masked_fill(empty, 0.0), safe, False, scale, dropout_p, gqa)
        return out[:, 0] if was_3d else out
    out = _sdpa(q, k, v, safe, False, scale, dropout_p, gqa).masked_fill(empty, 0.0)
    return out[:, 0] if was_3d else out


def softmax_attention_weights(q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None,
                              causal: bool = False, scale: float | None = None, *,
                              is_causal: bool | None = None, attn_mask: Tensor | None = None,
                              enable_gqa: bool = False) -> Tensor:
    """The attention matrix P = softmax(q k^T * scale + mask): (batch, heads, seq_q, seq_k),
    rows summing to 1 (0 for a query with nothing to attend to). Linformer's Fig. 1 is about
    its spectrum."""
    if not isinstance(k, Tensor):
        raise ValueError(f"k must be a torch.Tensor, got {type(k).__name__}")
    causal, was_3d, q, k, _, attn_mask, scale = _prepare(
        q, k, k, key_padding_mask, causal, is_causal, attn_mask, enable_gqa, scale)
    k = repeat_kv(k, q.shape[1] // k.shape[1])
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-1, -2) * scale
    mask, is_bool = _bias(key_padding_mask, attn_mask, causal, q.shape[2], k.shape[2],
                          q.device, scores.dtype)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if is_bool else scores + mask
    empty = torch.isneginf(scores).all(-1, keepdim=True)
    # empty rows: 0, not NaN, and a zero gradient (where, not nan_to_num of a NaN)
    p = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return p[:, 0] if was_3d else p


def softmax_attention_reference(q: Tensor, k: Tensor, v: Tensor,
                                key_padding_mask: Tensor | None = None, causal: bool = False,
                                scale: float | None = None, *, is_causal: bool | None = None,
                                attn_mask: Tensor | None = None,
                                enable_gqa: bool = False) -> Tensor:
    """The same, written out: P = softmax of the scores (-inf where not allowed), then P v."""
    check_qkv(q, k, v, key_padding_mask, resolve_causal(causal, is_causal), enable_gqa)
    p = softmax_attention_weights(q, k, key_padding_mask, causal, scale, is_causal=is_causal,
                                  attn_mask=attn_mask, enable_gqa=enable_gqa)
    was_3d, (v,) = as_4d(v)
    if was_3d:
        p = p[:, None]
    out = p @ repeat_kv(v, p.shape[1] // v.shape[1])
    return out[:, 0] if was_3d else out


class SoftmaxAttention(nn.Module):
    """Exact attention as a module: ``attn(q, k, v, key_padding_mask=None)``, SDPA keywords
    ``attn_mask``, ``is_causal``, ``enable_gqa``, ``dropout_p`` as in :func:`softmax_attention`.

    Args:
        causal: position t attends to positions <= t only (alias ``is_causal``).
        scale: score scale, default 1/sqrt(head_dim).
        dropout: dropout on the attention weights in training mode (nn.MultiheadAttention's
            ``dropout``).
    """

    def __init__(self, causal: bool = False, scale: float | None = None, *,
                 is_causal: bool | None = None, dropout: float = 0.0):
        super().__init__()
        self.causal = resolve_causal(causal, is_causal)
        self.scale = check_scale(scale)
        self.dropout = check_dropout(dropout, True, "softmax")

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
                *, attn_mask: Tensor | None = None, is_causal: bool | None = None,
                enable_gqa: bool = False, dropout_p: float | None = None) -> Tensor:
        if is_causal is not None:
            check_bool("is_causal", is_causal)
        causal = self.causal if is_causal is None else is_causal
        if dropout_p is None:
            dropout_p = self.dropout if self.training else 0.0
        return softmax_attention(q, k, v, key_padding_mask, causal, self.scale,
                                 attn_mask=attn_mask, dropout_p=dropout_p,
                                 enable_gqa=enable_gqa)

    def extra_repr(self) -> str:
        return f"causal={self.causal}, scale={self.scale}"
