"""Random features regression: features and fits against the textbook references (float64),
interpolation at N >= n, the min-norm property, and clear errors."""

import math

import pytest
import torch

from efflab.theory.random_features import (
    ACTIVATIONS,
    activation_coefficients,
    fit_second_layer,
    fit_second_layer_reference,
    mei_montanari_risk,
    mm_nus,
    mm_nus_reference,
    random_features,
    random_features_reference,
    random_features_regression,
    sample_feature_weights,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_features_match_reference(activation):
    g = _gen(1)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    w = sample_feature_weights(7, 4, g)
    fast = random_features(x, w, activation)
    ref = random_features_reference(x, w, activation)
    assert fast.shape == (5, 7)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)


def test_weights_on_sphere_and_seeded():
    w = sample_feature_weights(50, 9, _gen(3))
    torch.testing.assert_close(w.norm(dim=1), torch.full((50,), 3.0, dtype=torch.float64))
    assert torch.equal(w, sample_feature_weights(50, 9, _gen(3)))
    assert not torch.equal(w, sample_feature_weights(50, 9, _gen(4)))
    gw = sample_feature_weights(50, 9, _gen(3), distribution="gaussian")
    assert gw.norm(dim=1).std() > 0.1  # Gaussian rows are not normalized


@pytest.mark.parametrize("n_feat,ridge", [(6, 0.0), (25, 0.0), (6, 0.3), (25, 1e-2)])
@pytest.mark.parametrize("outputs", [None, 3])
def test_fit_matches_reference(n_feat, ridge, outputs):
    g = _gen(n_feat + outputs if outputs else n_feat)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    feats = random_features(x, sample_feature_weights(n_feat, 5, g), "tanh")
    shape = (12,) if outputs is None else (12, outputs)
    y = torch.randn(*shape, generator=g, dtype=torch.float64)
    fast = fit_second_layer(feats, y, ridge=ridge)
    ref = fit_second_layer_reference(feats, y, ridge=ridge)
    assert fast.shape == ref.shape == ((n_feat,) if outputs is None else (n_feat, outputs))
    torch.testing.assert_close(fast, ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_min_norm_interpolates_when_overparameterized(activation):
    g = _gen(7)
    n, d = 30, 6
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    for n_feat in (n, n + 1, 2 * n, 10 * n):
        w = sample_feature_weights(n_feat, d, g)
        train_pred, _ = random_features_regression(x, y, x[:3], w, activation)
        scale = float(y.abs().max())
        assert float((train_pred - y).abs().max()) < 1e-7 * scale, n_feat
    # below the threshold the least-squares fit cannot pass through every point
    w = sample_feature_weights(n // 2, d, g)
    train_pred, _ = random_features_regression(x, y, x[:3], w, activation)
    assert float((train_pred - y).norm()) > 0.1 * float(y.norm())


def test_min_norm_solution_has_smallest_norm_and_ridge_shrinks():
    g = _gen(11)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.randn(10, generator=g, dtype=torch.float64)
    feats = random_features(x, sample_feature_weights(40, 4, g))
    a = fit_second_layer(feats, y)
    # every interpolator is a + (null-space vector); the min-norm one has no null component
    null = torch.linalg.svd(feats).Vh[10:]  # (30, 40): rows span the null space
    assert float((null @ a).abs().max()) < 1e-8
    other = a + null.T @ torch.randn(30, generator=g, dtype=torch.float64)
    torch.testing.assert_close(feats @ other, y, rtol=1e-7, atol=1e-8)
    assert float(other.norm()) > float(a.norm())
    ridge = fit_second_layer(feats, y, ridge=0.05)
    assert float(ridge.norm()) < float(a.norm())
    assert float((feats @ ridge - y).norm()) > 1e-3


def test_batched_fit_equals_one_at_a_time():
    g = _gen(5)
    feats = torch.randn(3, 8, 20, generator=g, dtype=torch.float64)
    y = torch.randn(3, 8, 2, generator=g, dtype=torch.float64)
    batched = fit_second_layer(feats, y, ridge=0.0)
    for b in range(3):
        torch.testing.assert_close(batched[b], fit_second_layer_reference(feats[b], y[b]))


def test_feature_scale_makes_ridge_comparable_across_widths():
    # the kernel F F^T converges as N grows, so its entries do not grow with N
    g = _gen(2)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    k_small = random_features(x, sample_feature_weights(2000, 5, g))
    k_big = random_features(x, sample_feature_weights(20000, 5, g))
    gram_small, gram_big = k_small @ k_small.T, k_big @ k_big.T
    assert float((gram_small - gram_big).abs().max()) < 0.1 * float(gram_big.abs().max())
    assert math.isclose(float(gram_big.diagonal().mean()), float((x * x).sum(1).mean()) / 5 / 2,
                        rel_tol=0.1)  # E relu(z)^2 = Var(z)/2 for z ~ N(0, |x|^2/d)


def test_errors_name_the_argument():
    x = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="weights must have shape"):
        random_features(x, torch.zeros(5, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="activation must be one of"):
        random_features(x, torch.zeros(5, 3, dtype=torch.float64), "swish")
    with pytest.raises(ValueError, match="y must have shape"):
        fit_second_layer(torch.zeros(4, 5, dtype=torch.float64), torch.zeros(5))
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        random_features_regression(x, torch.zeros(4), x, torch.zeros(5, 3), ridge=-1.0)
    with pytest.raises(ValueError, match="distribution must be one of"):
        sample_feature_weights(3, 3, _gen(0), distribution="uniform")


# -- Mei & Montanari's asymptotic formula ----------------------------------------------------
def test_activation_coefficients_closed_forms():
    relu = activation_coefficients("relu")
    assert relu["mu0"] == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-10)
    assert relu["mu1"] == pytest.approx(0.5, rel=1e-10)
    assert relu["mu_star"] ** 2 == pytest.approx(0.25 - 1 / (2 * math.pi), rel=1e-9)
    lin = activation_coefficients("linear")
    assert lin["mu0"] == pytest.approx(0, abs=1e-12) and lin["mu1"] == pytest.approx(1)
    assert lin["mu_star"] == pytest.approx(0, abs=1e-5)
    erf = activation_coefficients("erf")  # E G erf(G) = 2/sqrt(3 pi) (Gaussian integral)
    assert erf["mu0"] == pytest.approx(0, abs=1e-12)
    assert erf["mu1"] == pytest.approx(2 / math.sqrt(3 * math.pi), rel=1e-9)


@pytest.mark.parametrize("xi,psi1,psi2", [(0.3j, 2.0, 3.0), (1.0j, 5.0, 1.5), (0.05j, 0.5, 4.0)])
def test_newton_continuation_matches_fixed_point_iteration(xi, psi1, psi2):
    zeta = 1.6
    fast = mm_nus(xi, psi1, psi2, zeta)
    ref = mm_nus_reference(xi, psi1, psi2, zeta)
    for a, b in zip(fast, ref):
        assert abs(a - b) < 1e-9 * (1 + abs(b))
        assert a.imag > 0  # the branch analytic in the upper half plane


@pytest.mark.parametrize("psi1", [0.3, 1.0, 2.2])
def test_underparameterized_ridgeless_variance_is_least_squares(psi1):
    # N < n ridgeless is least squares on N features: variance N / (n - N), whatever sigma is
    zeta = 0.5 / math.sqrt(0.25 - 1 / (2 * math.pi))
    out = mei_montanari_risk(psi1, 3.0, 1e-10, zeta, signal=1.0, noise_var=0.0)
    assert out["variance"] == pytest.approx(psi1 / (3.0 - psi1), rel=1e-5)


def test_formula_matches_simulation():
    d, n, sigma, ridge = 60, 120, 0.5, 1e-3
    coef = activation_coefficients("relu")
    zeta = coef["mu1"] / coef["mu_star"]
    g = _gen(21)
    for n_feat in (40, 480):
        errs = []
        for _ in range(4):
            beta = torch.randn(d, generator=g, dtype=torch.float64)
            beta /= beta.norm()
            x = torch.randn(n, d, generator=g, dtype=torch.float64)
            y = x @ beta + sigma * torch.randn(n, generator=g, dtype=torch.float64)
            xt = torch.randn(2000, d, generator=g, dtype=torch.float64)
            w = sample_feature_weights(n_feat, d, g)
            _, pred = random_features_regression(x, y, xt, w, "relu", ridge=ridge)
            errs.append(float(((pred - xt @ beta) ** 2).mean()))
        theory = mei_montanari_risk(n_feat / d, n / d, ridge * d / coef["mu_star"] ** 2, zeta,
                                    1.0, sigma**2)["risk"]
        assert sum(errs) / len(errs) == pytest.approx(theory, rel=0.15), n_feat


def test_formula_rejects_bad_arguments():
    with pytest.raises(ValueError, match="ridge_bar must be > 0"):
        mei_montanari_risk(1.0, 2.0, 0.0, 1.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="positive imaginary axis"):
        mm_nus(1.0 + 0j, 1.0, 2.0, 1.0)
