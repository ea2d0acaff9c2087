"""Exact softmax attention (Vaswani et al. 2017): the baseline both papers compare against.

``softmax_attention`` calls ``torch.nn.functional.scaled_dot_product_attention`` so that it
gets FlashAttention / memory-efficient kernels where the device has them;
``softmax_attention_reference`` is the textbook formula, kept beside it for the tests.

Shapes: q (batch, heads, seq_q, head_dim), k (batch, heads, seq_k, head_dim),
v (batch, heads, seq_k, head_dim_v), key_padding_mask (batch, seq_k) bool with True = padding;
the output is (batch, heads, seq_q, head_dim_v).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from efflab.attention._checks import check_qkv


def _allowed(key_padding_mask: Tensor | None, causal: bool, n_q: int, n_k: int,
             device: torch.device) -> Tensor | None:
    """Bool mask broadcastable to (batch, heads, seq_q, seq_k), True = may attend; None = all."""
    allowed = None
    if key_padding_mask is not None:
        allowed = ~key_padding_mask[:, None, None, :]
    if causal:
        tril = torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()
        allowed = tril if allowed is None else allowed & tril
    return allowed


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
                      causal: bool = False, scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale) v through SDPA; scale defaults to 1/sqrt(head_dim).

    A query whose keys are all padding (or, causally, whose past is all padding) gets a zero
    output rather than the NaN of an empty softmax.
    """
    check_qkv(q, k, v, key_padding_mask, causal)
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    allowed = _allowed(key_padding_mask, causal, q.shape[2], k.shape[2], q.device)
    # Rows with nothing to attend to would be NaN; let them attend anywhere, then zero them.
    empty = ~allowed.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | empty, scale=scale)
    return out.masked_fill(empty, 0.0)


def softmax_attention_weights(q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None,
                              causal: bool = False, scale: float | None = None) -> Tensor:
    """The attention matrix P = softmax(q k^T * scale): (batch, heads, seq_q, seq_k), rows
    summing to 1 (0 for a query with nothing to attend to). Linformer's Fig. 1 is about its
    spectrum."""
    if not isinstance(k, Tensor):
        raise ValueError(f"k must be a torch.Tensor, got {type(k).__name__}")
    check_qkv(q, k, k, key_padding_mask, causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-1, -2) * scale
    allowed = _allowed(key_padding_mask, causal, q.shape[2], k.shape[2], q.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)  # empty rows: 0, not NaN


def softmax_attention_reference(q: Tensor, k: Tensor, v: Tensor,
                                key_padding_mask: Tensor | None = None, causal: bool = False,
                                scale: float | None = None) -> Tensor:
    """The same, written out: P = softmax of the scores (-inf where not allowed), then P v."""
    check_qkv(q, k, v, key_padding_mask, causal)
    return softmax_attention_weights(q, k, key_padding_mask, causal, scale) @ v


class SoftmaxAttention(nn.Module):
    """Exact attention as a module: ``attn(q, k, v, key_padding_mask=None)``.

    Args:
        causal: position t attends to positions <= t only.
        scale: score scale, default 1/sqrt(head_dim).
    """

    def __init__(self, causal: bool = False, scale: float | None = None):
        super().__init__()
        self.causal = bool(causal)
        self.scale = scale

    def forward(self, q: Tensor, k: Tensor, v: Tensor,
                key_padding_mask: Tensor | None = None) -> Tensor:
        return softmax_attention(q, k, v, key_padding_mask, self.causal, self.scale)

    def extra_repr(self) -> str:
        return f"causal={self.causal}, scale={self.scale}"
