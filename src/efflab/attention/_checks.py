"""Input checks shared by every attention mechanism: one place that names the bad argument."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor


def check_qkv(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
              causal: bool = False) -> None:
    """Raise ``ValueError`` naming the argument unless q, k, v (and the mask) fit together.

    q: (batch, heads, seq_q, head_dim), k: (batch, heads, seq_k, head_dim),
    v: (batch, heads, seq_k, head_dim_v), key_padding_mask: (batch, seq_k) bool, True = padding.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must have shape (batch, heads, seq, head_dim), a 4-d tensor, "
                f"got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor, got dtype {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k, v must be on one device, got q {q.device}, k {k.device}, v {v.device}"
        )
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(
            "q, k, v must agree in (batch, heads), got "
            f"q {tuple(q.shape[:2])}, k {tuple(k.shape[:2])}, v {tuple(v.shape[:2])}"
        )
    if k.shape[2] != v.shape[2]:
        raise ValueError(
            f"k and v must have the same seq length, got k {k.shape[2]}, v {v.shape[2]}"
        )
    if q.shape[3] != k.shape[3]:
        raise ValueError(
            f"q and k must have the same head_dim, got q {q.shape[3]}, k {k.shape[3]}"
        )
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError(
            f"causal attention needs q and k of the same seq length, got q {q.shape[2]}, "
            f"k {k.shape[2]}"
        )
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


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types (accumulate in float32), else the dtype itself."""
    return torch.promote_types(dtype, torch.float32)


def no_autocast(device: torch.device):
    """Run the body in full precision even inside ``torch.autocast`` (we cast ourselves)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
