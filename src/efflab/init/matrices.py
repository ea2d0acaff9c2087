"""The matrices of ZerO initialization (Zhao et al., TMLR 2022, Section 3 and Algorithm 1).

``zero_matrix(P, Q)`` is the paper's Algorithm 1 for one weight matrix W: (P_out, Q_in):

* ``P == Q``: the identity;
* ``P < Q``:  the partial identity I* (the first P input coordinates pass, the rest are dropped);
* ``P > Q``:  ``c * I*_(P x 2^m) @ H_m @ I*_(2^m x Q)`` with ``m = ceil(log2 P)`` and H_m the
  Sylvester Hadamard matrix of size 2^m, i.e. the first Q columns of the first P rows of H_m.

The scale c. The paper writes ``c = 2^{-(m-1)/2}``; the authors' code (and the copies of it)
use ``c = 2^{-m/2}``, which makes ``2^{-m/2} H_m`` orthogonal. efflab's default,
``scale="orthonormal"``, is ``2^{-m/2}``: when P is a power of two the map is then an isometry
(``W.T @ W = I_Q``), so a layer neither grows nor shrinks the signal. ``scale="paper"`` gives
the paper's ``2^{-(m-1)/2}``, larger by sqrt(2) (which would offset a ReLU halving the energy).

Dimensions that are not powers of two: the Hadamard matrix is padded to 2^m and cropped to
P rows. The cropped map still has full column rank Q, but it is *not* an isometry any more:
for P = 1000, Q = 784 its singular values lie in [0.47, 1.0] with the orthonormal scale.

Every construction here has a slow, literal reference beside it (``*_reference``), which the
tests compare against in float64.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Scale = Literal["orthonormal", "paper"]
SCALES = ("orthonormal", "paper")


def is_power_of_two(n: object) -> bool:
    """``n`` is an int (not a bool) in {1, 2, 4, 8, ...}."""
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1 and (n & (n - 1)) == 0


def hadamard(n: int, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None) -> torch.Tensor:
    """The Sylvester Hadamard matrix of order ``n`` (a power of two), entries +-1, unscaled.

    Built by doubling, ``H_{2k} = [[H_k, H_k], [H_k, -H_k]]``, so that ``H @ H.T = n * I``.
    Returns (n, n).
    """
    if not isinstance(n, int) or not is_power_of_two(n):
        raise ValueError(f"n must be a power of two (1, 2, 4, ...), got {n!r}")
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)], dim=0)
    return h


def hadamard_reference(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Entry by entry: ``H[i, j] = (-1)^popcount(i & j)``, the closed form of Sylvester's
    construction. Slow; for tests."""
    if not isinstance(n, int) or not is_power_of_two(n):
        raise ValueError(f"n must be a power of two (1, 2, 4, ...), got {n!r}")
    h = torch.empty(n, n, dtype=dtype)
    for i in range(n):
        for j in range(n):
            h[i, j] = -1.0 if bin(i & j).count("1") % 2 else 1.0
    return h


def partial_identity(rows: int, cols: int, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """I*: (rows, cols) with ones on the main diagonal and zeros elsewhere.

    As a map R^cols -> R^rows it keeps the first ``min(rows, cols)`` coordinates: it drops the
    rest when rows < cols and pads with zeros when rows > cols.
    """
    _check_dims(rows, cols)
    return torch.eye(rows, cols, dtype=dtype, device=device)


def hadamard_scale(rows: int, scale: Scale = "orthonormal") -> float:
    """The constant c in front of the Hadamard matrix for a (rows, .) weight, m = ceil(log2 rows).
    ``"orthonormal"``: 2^{-m/2}; ``"paper"``: 2^{-(m-1)/2}."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    m = math.ceil(math.log2(rows)) if rows > 1 else 0
    return 2.0 ** (-m / 2) if scale == "orthonormal" else 2.0 ** (-(m - 1) / 2)


def zero_matrix(out_features: int, in_features: int, scale: Scale = "orthonormal",
                dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Algorithm 1 of the ZerO paper for one weight W: (out_features, in_features).

    Identity when square, partial identity when the layer narrows, and the scaled, cropped
    Hadamard ``c * H_m[:P, :Q]`` when it widens (see the module docstring for c).
    """
    p, q = out_features, in_features
    _check_dims(p, q)
    if p <= q:
        return partial_identity(p, q, dtype=dtype, device=device)
    m = math.ceil(math.log2(p))
    c = hadamard_scale(p, scale)
    return c * hadamard(2 ** m, dtype=dtype, device=device)[:p, :q]


def zero_matrix_reference(out_features: int, in_features: int, scale: Scale = "orthonormal"
                          ) -> torch.Tensor:
    """Algorithm 1 written as the paper does, ``c * I* @ H_m @ I*``, with explicit products
    and the entry-wise Hadamard matrix, in float64. Slow; for tests."""
    p, q = out_features, in_features
    _check_dims(p, q)
    if p == q:
        return torch.eye(p, dtype=torch.float64)
    if p < q:
        w = torch.zeros(p, q, dtype=torch.float64)
        for i in range(p):
            w[i, i] = 1.0
        return w
    m = math.ceil(math.log2(p))
    c = 2.0 ** (-m / 2) if scale == "orthonormal" else 2.0 ** (-(m - 1) / 2)
    left = torch.zeros(p, 2 ** m, dtype=torch.float64)   # I*: keep the first p of 2^m rows
    right = torch.zeros(2 ** m, q, dtype=torch.float64)  # I*: embed q coordinates in 2^m
    for i in range(p):
        left[i, i] = 1.0
    for j in range(q):
        right[j, j] = 1.0
    return c * left @ hadamard_reference(2 ** m) @ right


def _check_dims(rows: int, cols: int) -> None:
    if int(rows) < 1 or int(cols) < 1:
        raise ValueError(f"matrix dimensions must be >= 1, got (rows, cols) = {(rows, cols)}")


__all__ = [
    "SCALES", "Scale", "hadamard", "hadamard_reference", "hadamard_scale", "is_power_of_two",
    "partial_identity",
    "zero_matrix", "zero_matrix_reference",
]
