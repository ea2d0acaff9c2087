"""Rotary position embeddings (Su et al. 2021, arXiv 2104.09864, Sec. 3.4): rotate each pair of
q and k coordinates by an angle proportional to the position, so q_i . k_j depends on i - j.
Pairs are (x[i], x[i + d/2]) (the "rotate half" layout of GPT-NeoX and Hugging Face Llama);
frequencies base^(-2i/d). Applied to q and k before any mechanism, so for FAVOR+ before the
feature map. :func:`rotary_embedding_reference` is the per-pair 2 x 2 rotation, written out.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _angles(positions: Tensor, dim: int, base: float) -> Tensor:
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    return positions.to(torch.float64)[:, None] * inv[None, :]  # (seq, dim / 2)


def _check(x: Tensor, positions: Tensor, base: float) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[-1] % 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"rotary embeddings need x of shape (..., seq, head_dim) with an even "
                         f"head_dim, got {shape}")
    if not isinstance(positions, Tensor) or positions.shape != (x.shape[-2],):
        raise ValueError(f"positions must be a (seq={x.shape[-2]},) tensor, got "
                         f"{getattr(positions, 'shape', type(positions).__name__)}")
    if isinstance(base, bool) or not isinstance(base, (int, float)) or base <= 1:
        raise ValueError(f"rotary base must be a number > 1, got {base!r}")


def apply_rotary_embedding(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """x (..., seq, head_dim) rotated for ``positions`` (seq,) (integer or float positions)."""
    _check(x, positions, base)
    ang = _angles(positions, x.shape[-1], base)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def rotary_embedding_reference(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """The same, one position and one pair at a time: [x_i, x_{i+d/2}] times the rotation
    matrix [[cos t, -sin t], [sin t, cos t]], t = position * base^(-2i/d)."""
    _check(x, positions, base)
    d = x.shape[-1]
    out = torch.empty_like(x)
    for n, pos in enumerate(positions.tolist()):
        for i in range(d // 2):
            t = torch.tensor(pos * base ** (-2 * i / d), dtype=torch.float64)
            rot = torch.tensor([[t.cos(), -t.sin()], [t.sin(), t.cos()]], dtype=x.dtype)
            pair = torch.stack([x[..., n, i], x[..., n, i + d // 2]], -1)
            new = pair @ rot.T
            out[..., n, i], out[..., n, i + d // 2] = new[..., 0], new[..., 1]
    return out
