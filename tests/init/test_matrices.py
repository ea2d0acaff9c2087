"""Algorithm 1 of ZerO (Zhao et al. 2022): Hadamard, partial identity, scale, non-powers of 2."""

from __future__ import annotations

import math

import pytest
import torch

from efflab.init import (
    hadamard,
    hadamard_reference,
    hadamard_scale,
    partial_identity,
    zero_matrix,
    zero_matrix_reference,
)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 64])
def test_hadamard_matches_closed_form_and_is_orthogonal(n):
    h = hadamard(n, dtype=torch.float64)
    assert torch.equal(h, hadamard_reference(n))
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=torch.float64))


def test_hadamard_small_case_by_hand():
    expected = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]],
                            dtype=torch.float64)
    assert torch.equal(hadamard(4, dtype=torch.float64), expected)


@pytest.mark.parametrize("n", [0, 3, 6, 12, -4, 2.0])
def test_hadamard_rejects_non_powers_of_two(n):
    with pytest.raises(ValueError, match=rf"n must be a power of two.*got {n!r}"):
        hadamard(n)


def test_partial_identity_keeps_first_coordinates():
    x = torch.arange(1.0, 6.0)
    assert torch.equal(partial_identity(3, 5) @ x, x[:3])           # narrows: drops the rest
    assert torch.equal(partial_identity(7, 5) @ x, torch.cat([x, torch.zeros(2)]))  # pads


def test_algorithm1_cases_by_hand():
    assert torch.equal(zero_matrix(3, 3), torch.eye(3))
    assert torch.equal(zero_matrix(2, 3), torch.tensor([[1.0, 0, 0], [0, 1, 0]]))
    # P=3 > Q=2: m = 2, rows 0..2 and columns 0..1 of H_4 above
    widen = torch.tensor([[1.0, 1], [1, -1], [1, 1]])
    assert torch.allclose(zero_matrix(3, 2, scale="orthonormal"), widen / 2)          # 2^{-m/2}
    assert torch.allclose(zero_matrix(3, 2, scale="paper"), widen / math.sqrt(2))     # 2^{-(m-1)/2}


def test_scale_constants():
    # m = ceil(log2 P): P = 100 -> m = 7
    assert hadamard_scale(100, "orthonormal") == pytest.approx(2 ** -3.5)
    assert hadamard_scale(100, "paper") == pytest.approx(2 ** -3.0)
    with pytest.raises(ValueError, match="scale must be one of"):
        hadamard_scale(100, "unit")


@pytest.mark.parametrize("scale", ["orthonormal", "paper"])
def test_algorithm1_matches_literal_products_on_random_shapes(scale):
    g = torch.Generator().manual_seed(1234)
    shapes = torch.randint(1, 80, (40, 2), generator=g).tolist()
    for p, q in shapes + [[64, 40], [40, 64], [33, 33], [1, 7], [7, 1]]:
        got = zero_matrix(p, q, scale=scale, dtype=torch.float64)
        assert torch.equal(got, zero_matrix_reference(p, q, scale)), (p, q)


@pytest.mark.parametrize("p,q", [(64, 40), (128, 100), (256, 3), (32, 31)])
def test_power_of_two_rows_give_an_isometry(p, q):
    w = zero_matrix(p, q, dtype=torch.float64)
    assert torch.allclose(w.T @ w, torch.eye(q, dtype=torch.float64), atol=1e-12)
    # the paper's constant is sqrt(2) larger: W^T W = 2 I
    w = zero_matrix(p, q, scale="paper", dtype=torch.float64)
    assert torch.allclose(w.T @ w, 2 * torch.eye(q, dtype=torch.float64), atol=1e-12)


def test_padded_and_cropped_hadamard_is_full_rank_but_not_an_isometry():
    w = zero_matrix(1000, 784, dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    assert int(torch.linalg.matrix_rank(w)) == 784
    assert s.max().item() == pytest.approx(1.0, abs=1e-9)
    assert 0.46 < s.min().item() < 0.48    # 0.47 with the 2^{-m/2} scale (docs/paper-numbers.md)


def test_every_widening_map_up_to_48_rows_has_full_column_rank():
    for p in range(2, 49):
        for q in range(1, p):
            w = zero_matrix(p, q, dtype=torch.float64)
            assert int(torch.linalg.matrix_rank(w)) == q, (p, q)


@pytest.mark.parametrize("rows,cols", [(0, 3), (3, 0), (-1, 2)])
def test_bad_dimensions_are_named(rows, cols):
    with pytest.raises(ValueError, match=r"matrix dimensions must be >= 1, got \(rows, cols\)"):
        zero_matrix(rows, cols)
