"""Min-norm least squares and the Belkin-Hsu-Xu closed form, against references and simulation."""

import functools

import numpy as np
import pytest
import torch

from efflab.theory.linear_regression import (
    asymptotic_excess_risk,
    bhx_risk,
    grid_ps,
    min_norm_least_squares,
    min_norm_least_squares_reference,
    simulate_min_norm_risk,
)


@pytest.mark.parametrize("n,p", [(30, 7), (12, 40), (25, 25), (1, 5)])
def test_min_norm_matches_textbook_formula_float64(n, p):
    g = torch.Generator().manual_seed(n * 100 + p)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    b = min_norm_least_squares(x, y)
    ref = min_norm_least_squares_reference(x, y)
    torch.testing.assert_close(b, ref, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(b, torch.linalg.pinv(x) @ y, rtol=1e-8, atol=1e-10)


def test_min_norm_interpolates_and_is_smallest_when_overparameterized():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 30, generator=g, dtype=torch.float64)
    y = torch.randn(10, generator=g, dtype=torch.float64)
    b = min_norm_least_squares(x, y)
    torch.testing.assert_close(x @ b, y, rtol=1e-9, atol=1e-9)
    # any other interpolator differs by a null-space vector and is longer
    null = torch.linalg.svd(x).Vh[10:].T
    other = b + null @ torch.randn(20, generator=g, dtype=torch.float64)
    torch.testing.assert_close(x @ other, y, rtol=1e-9, atol=1e-9)
    assert other.norm() > b.norm()


def test_min_norm_batched_equals_loop():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 8, 13, generator=g, dtype=torch.float64)
    y = torch.randn(4, 8, generator=g, dtype=torch.float64)
    b = min_norm_least_squares(x, y)
    for i in range(4):
        torch.testing.assert_close(b[i], min_norm_least_squares_reference(x[i], y[i]))


@pytest.mark.parametrize("n,p", [(12, 5), (6, 20)])
def test_several_outputs_share_one_solve(n, p):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, n, p, generator=g, dtype=torch.float64)
    y = torch.randn(3, n, 4, generator=g, dtype=torch.float64)
    for ridge in (0.0, 0.1):
        b = min_norm_least_squares(x, y, ridge=ridge)
        assert b.shape == (3, p, 4)
        for j in range(4):
            torch.testing.assert_close(b[..., j], min_norm_least_squares(x, y[..., j], ridge=ridge))


def test_ridge_matches_regularized_normal_equations():
    g = torch.Generator().manual_seed(3)
    n, p, lam = 15, 40, 0.3
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    ref = torch.linalg.solve(x.T @ x + n * lam * torch.eye(p, dtype=torch.float64), x.T @ y)
    torch.testing.assert_close(min_norm_least_squares(x, y, ridge=lam), ref)


def test_min_norm_rank_deficient_drops_null_directions():
    x = torch.zeros(6, 4, dtype=torch.float64)
    x[:, 0] = torch.arange(6.0, dtype=torch.float64)
    x[:, 1] = 2 * x[:, 0]  # same direction: rank 1
    y = 3 * x[:, 0]
    b = min_norm_least_squares(x, y)
    assert torch.isfinite(b).all()
    torch.testing.assert_close(x @ b, y)
    torch.testing.assert_close(b, torch.tensor([0.6, 1.2, 0.0, 0.0], dtype=torch.float64))


def test_solver_rejects_bad_shapes():
    with pytest.raises(ValueError, match="y must have shape"):
        min_norm_least_squares(torch.randn(5, 3), torch.randn(4))
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        min_norm_least_squares(torch.randn(5, 3), torch.randn(5), ridge=-1.0)


def test_bhx_closed_form_values_and_pole():
    n = 20
    risk = bhx_risk(np.array([5, 18, 19, 20, 21, 22, 40]), n, 0.6, 0.4, 0.5)
    # p = 5: (0.4 + 0.25) (1 + 5/14)
    assert risk[0] == pytest.approx(0.65 * (1 + 5 / 14))
    assert risk[1] == pytest.approx(0.65 * (1 + 18 / 1))
    assert np.isinf(risk[2:5]).all()
    assert risk[5] == pytest.approx(0.6 * (1 - 20 / 22) + 0.65 * (1 + 20 / 1))
    assert risk[6] == pytest.approx(0.6 * 0.5 + 0.65 * (1 + 20 / 19))


def test_bhx_tends_to_the_asymptotic_formula():
    # all features used (beta_Tc = 0): excess risk -> Hastie et al.'s limit as n grows
    n, r2, sigma = 20000, 1.0, 0.7
    for gamma in (0.3, 0.8, 1.5, 4.0):
        p = int(gamma * n)
        excess = bhx_risk(p, n, r2, 0.0, sigma) - sigma**2
        assert float(excess) == pytest.approx(float(asymptotic_excess_risk(gamma, r2, sigma)),
                                              rel=2e-3)


@functools.lru_cache(maxsize=4)  # one simulation serves several tests
def _simulate(n=20, d=64, sigma=0.5, trials=3000, seed=0):
    beta = torch.full((d,), d**-0.5, dtype=torch.float64)
    ps = [3, 8, 14, 28, 40, 64]
    risks = simulate_min_norm_risk(n, beta, sigma, ps, trials, torch.Generator().manual_seed(seed))
    cum = np.concatenate([[0.0], np.cumsum(beta.numpy() ** 2)])
    return np.array(ps), risks, cum


def test_simulation_agrees_with_closed_form_away_from_threshold():
    """D=64, n=20, sigma=0.5, judged where |p - n| >= n/4."""
    ps, risks, cum = _simulate()
    theory = bhx_risk(ps, 20, cum[ps], cum[-1] - cum[ps], 0.5)
    mean = risks.mean(1)
    sem = risks.std(1, ddof=1) / np.sqrt(risks.shape[1])
    assert (sem / mean < 0.02).all()  # the tolerance below is several standard errors
    np.testing.assert_allclose(mean, theory, rtol=0.05)


@pytest.mark.parametrize("wrong", ["no_minus_one", "no_misspecification", "no_bias_term"])
def test_closed_form_check_would_catch_a_wrong_formula(wrong):
    """The same simulation rejects plausible mistakes in the formula by more than 5%."""
    ps, risks, cum = _simulate()
    p = ps.astype(float)
    b_in, b_out, s2, n = cum[ps], cum[-1] - cum[ps], 0.25, 20
    right = bhx_risk(ps, n, b_in, b_out, 0.5)
    if wrong == "no_minus_one":
        bad = np.where(p < n, (b_out + s2) * (1 + p / (n - p)),
                       b_in * (1 - n / p) + (b_out + s2) * (1 + n / (p - n)))
    elif wrong == "no_misspecification":
        bad = bhx_risk(ps, n, b_in, 0.0, 0.5) + b_out
    else:
        bad = np.where(p < n, right, right - b_in * (1 - n / p))
    mean = risks.mean(1)
    assert np.max(np.abs(mean - bad) / bad) > 0.05
    assert np.max(np.abs(mean - right) / right) <= 0.05


def test_simulation_is_deterministic_given_the_generator():
    a = _simulate(trials=50, seed=7)[1]
    b = _simulate(trials=50, seed=7)[1]
    np.testing.assert_array_equal(a, b)


def test_grid_contains_threshold_neighbourhood_and_ends():
    ps = grid_ps(120, 40, 20)
    assert ps[0] == 1 and ps[-1] == 120
    assert {38, 39, 40, 41, 42} <= set(ps)
    assert grid_ps(10, 4, 50) == list(range(1, 11))


# -- benign overfitting: effective ranks and the deterministic equivalent ---------------------
def _ranks_reference(eigs, n, b=1.0):
    """Bartlett et al.'s definitions, term by term."""
    lam = sorted(eigs, reverse=True)
    d = len(lam)

    def r(k):
        return sum(lam[k:]) / lam[k]

    k_star = next((k for k in range(d) if lam[k] > 0 and r(k) >= b * n), d)
    out = {"r0": r(0), "k_star": k_star}
    if k_star < d:
        out["R_kstar"] = sum(lam[k_star:]) ** 2 / sum(x * x for x in lam[k_star:])
    return out


@pytest.mark.parametrize("eigs,n", [
    (np.concatenate([np.ones(3), np.full(200, 0.05)]), 20),
    (np.random.default_rng(0).exponential(size=50), 5),
    (1.0 / np.arange(1, 80) ** 2, 4),
    (np.ones(30), 10),
])
def test_effective_ranks_match_the_definitions(eigs, n):
    from efflab.theory import effective_ranks

    ours, ref = effective_ranks(np.random.default_rng(1).permutation(eigs), n), \
        _ranks_reference(list(eigs), n)
    assert ours["r0"] == pytest.approx(ref["r0"])
    assert ours["k_star"] == ref["k_star"]
    if "R_kstar" in ref:
        assert ours["R_kstar"] == pytest.approx(ref["R_kstar"])


def test_effective_ranks_isotropic_and_unreachable():
    from efflab.theory import effective_ranks

    iso = effective_ranks(np.ones(100), 10)
    assert iso["r0"] == 100 and iso["k_star"] == 0 and iso["R_kstar"] == pytest.approx(100)
    none = effective_ranks(np.ones(5), 10)               # r_k <= 5 < n for every k
    assert none["k_star"] == 5 and np.isnan(none["R_kstar"])
    with pytest.raises(ValueError, match="nonnegative"):
        effective_ranks(np.array([1.0, -0.5]), 3)
    with pytest.raises(ValueError, match="non-empty"):
        effective_ranks(np.array([]), 3)


def test_risk_equivalent_on_identity_is_hastie_limit():
    from efflab.theory import asymptotic_excess_risk, min_norm_risk_equivalent

    n, sigma = 50, 0.7
    for d in (60, 100, 400):
        theta_sq = np.full(d, 2.0 / d)
        eq = min_norm_risk_equivalent(np.ones(d), theta_sq, n, sigma)
        assert eq["excess"] == pytest.approx(asymptotic_excess_risk(d / n, 2.0, sigma), rel=1e-10)
        assert eq["excess"] == pytest.approx(eq["bias"] + eq["variance"])
        # kappa solves sum lambda / (lambda + kappa) = n
        assert d / (1 + eq["kappa"]) == pytest.approx(n)


def test_risk_equivalent_follows_a_spiked_monte_carlo():
    """Spiked spectrum: the deterministic equivalent against a direct simulation."""
    from efflab.theory import min_norm_risk_equivalent

    n, k, p, sigma = 40, 3, 400, 0.5
    lam = np.concatenate([np.ones(k), np.full(p, 0.1 * n / p)])
    theta = np.zeros(k + p)
    theta[:k] = (1.0 / k) ** 0.5
    eq = min_norm_risk_equivalent(lam, theta**2, n, sigma)["excess"]
    g = torch.Generator().manual_seed(0)
    scale = torch.as_tensor(lam).sqrt()
    th = torch.as_tensor(theta)
    risks = []
    for _ in range(200):
        x = torch.randn(n, k + p, generator=g, dtype=torch.float64) * scale
        y = x @ th + sigma * torch.randn(n, generator=g, dtype=torch.float64)
        est = min_norm_least_squares(x, y)
        risks.append(float((torch.as_tensor(lam) * (est - th) ** 2).sum()))
    assert np.mean(risks) == pytest.approx(eq, rel=0.15)


def test_risk_equivalent_refuses_bad_input():
    from efflab.theory import min_norm_risk_equivalent

    with pytest.raises(ValueError, match="more than n = 10 positive eigenvalues"):
        min_norm_risk_equivalent(np.ones(10), np.ones(10), 10, 1.0)
    with pytest.raises(ValueError, match="one shape"):
        min_norm_risk_equivalent(np.ones(20), np.ones(19), 10, 1.0)
