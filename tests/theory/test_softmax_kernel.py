"""Closed-form MSE of the softmax-kernel estimators (Performer Lemma 2, Theorem 2) against
simulation with efflab's own feature maps, and the bound against the exact series."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from efflab.attention import draw_random_features, random_feature_map
from efflab.theory import softmax_kernel as sk


def _pair(r: float, theta: float, d: int):
    x = torch.zeros(d, dtype=torch.float64)
    y = torch.zeros(d, dtype=torch.float64)
    x[0] = r
    y[0], y[1] = r * math.cos(theta), r * math.sin(theta)
    return x, y


def _simulate(kind: str, orthogonal: bool, x, y, m: int, draws: int, seed: int) -> np.ndarray:
    """Squared errors of ``draws`` independent estimates with m features each. The draws'
    rows come from one draw_random_features call (for orthogonal features: whole d x d blocks
    per draw, the last one cut as a call for m rows cuts it), and one feature map over all
    rows gives each draw's estimate as the sum over its own m features."""
    gen = torch.Generator().manual_seed(seed)
    d = x.shape[0]
    rows = math.ceil(m / d) * d if orthogonal else m
    w = draw_random_features(draws * rows, d, orthogonal, "chi", generator=gen)
    w = w.reshape(draws, rows, d)[:, :m].reshape(draws * m, d)
    parts = 2 if kind in ("trig", "hyperbolic") else 1
    fx = random_feature_map(x, w, kind).reshape(parts, draws, m)
    fy = random_feature_map(y, w, kind).reshape(parts, draws, m)
    est = draws * (fx * fy).sum(dim=(0, 2))  # the map's 1 / (draws m) -> each draw's 1 / m
    return ((est - math.exp(float(x @ y))) ** 2).numpy()


CASES = [(0.4, 0.5), (0.5, 2.0), (0.3, 2.8)]  # (r, theta): small norms, light tails


@pytest.mark.parametrize("kind", ["trig", "positive", "hyperbolic"])
@pytest.mark.parametrize("r, theta", CASES)
def test_lemma2_matches_simulation(kind, r, theta):
    d, m, draws = 4, 3, 20000
    x, y = _pair(r, theta, d)
    sq = _simulate(kind, False, x, y, m, draws, seed=11)
    mse = sk.iid_mse(kind, r * r, r * r, float(x @ y), m)
    se = sq.std(ddof=1) / math.sqrt(draws)
    assert abs(sq.mean() - mse) < 5 * se, (sq.mean(), mse, se)


@pytest.mark.parametrize("m", [4, 6])  # one block; a full block plus a cut one
@pytest.mark.parametrize("r, theta", [(0.6, 0.5), (0.6, 2.0)])
def test_orthogonal_series_matches_simulation(m, r, theta):
    d, draws = 4, 20000
    x, y = _pair(r, theta, d)
    sq = _simulate("positive", True, x, y, m, draws, seed=5)
    mse = float(sk.orthogonal_positive_mse(r * r, r * r, float(x @ y), m, d))
    se = sq.std(ddof=1) / math.sqrt(draws)
    assert abs(sq.mean() - mse) < 5 * se, (sq.mean(), mse, se)
    # and the orthogonal improvement is visible against the iid figure
    assert mse < 0.95 * float(sk.positive_mse(r * r, r * r, float(x @ y), m))


def test_orthogonal_pair_covariance_by_monte_carlo_of_its_definition():
    """Cov(f(w1), f(w2)) for two orthogonal chi(d) rows, straight from the definition."""
    d, draws = 3, 200_000
    rng = np.random.default_rng(0)
    z = np.array([0.9, 0.4, 0.0])
    x_sq, y_sq = 0.5, 0.47
    xy = (z @ z - x_sq - y_sq) / 2
    g = rng.standard_normal((draws, d, d))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    norms = np.linalg.norm(rng.standard_normal((draws, 2, d)), axis=2)
    w1, w2 = q[:, :, 0] * norms[:, :1], q[:, :, 1] * norms[:, 1:]
    c = math.exp(-(x_sq + y_sq) / 2)
    f1, f2 = c * np.exp(w1 @ z), c * np.exp(w2 @ z)
    cov = np.mean(f1 * f2) - np.mean(f1) * np.mean(f2)
    se = np.std((f1 - f1.mean()) * (f2 - f2.mean())) / math.sqrt(draws)
    assert abs(cov - float(sk.orthogonal_pair_covariance(x_sq, y_sq, xy, d))) < 5 * se


def test_theorem2_bound_holds_and_is_the_leading_term_of_the_series():
    norms = np.linspace(0.05, 2.0, 12)
    angles = np.linspace(0.0, math.pi, 13)
    r, th = np.meshgrid(norms, angles)
    x_sq, xy = r**2, r**2 * np.cos(th)
    for d in (2, 4, 16, 64):
        for m in sorted({1, 2, d // 2 or 1, d}):
            exact = sk.orthogonal_positive_mse(x_sq, x_sq, xy, m, d)
            bound = sk.theorem2_bound(x_sq, x_sq, xy, m, d)
            iid = sk.positive_mse(x_sq, x_sq, xy, m)
            assert (exact <= bound * (1 + 1e-12) + 1e-300).all()
            assert (bound <= iid).all()
    # small |z|: the covariance is its k = 2 term, -|z|^4 / (2 (d + 2)) exp(-|x|^2 - |y|^2)
    d, x_sq, y_sq, xy = 8, 1e-3, 1e-3, 0.0
    z_sq = x_sq + y_sq + 2 * xy
    k2 = -(z_sq**2) / 2 / (d + 2) * math.exp(-x_sq - y_sq)
    assert math.isclose(float(sk.orthogonal_pair_covariance(x_sq, y_sq, xy, d)), k2,
                        rel_tol=1e-2)
    with pytest.raises(ValueError, match="m <= d"):
        sk.theorem2_bound(1.0, 1.0, 0.0, 5, 4)


def test_special_points_and_identities():
    # positive features are exact at y = -x (z = 0); trigonometric ones at y = x
    assert float(sk.positive_mse(1.0, 1.0, -1.0, 8)) == 0.0
    assert float(sk.trig_mse(1.0, 1.0, 1.0, 8)) == 0.0
    a = np.linspace(0.1, 3, 7)
    assert np.allclose(sk.hyperbolic_mse(a, a, 0.0, 5),
                       0.5 * (1 - np.exp(-2 * a)) * sk.positive_mse(a, a, 0.0, 5))
    # 1/m scaling, and the trig / positive ratio is > 1 where the kernel is small
    assert np.isclose(sk.trig_mse(1.0, 1.0, 0.3, 2), 2 * sk.trig_mse(1.0, 1.0, 0.3, 4))
    assert sk.trig_mse(1.0, 1.0, -0.9, 8) > sk.positive_mse(1.0, 1.0, -0.9, 8)
    assert sk.trig_mse(1.0, 1.0, 0.9, 8) < sk.positive_mse(1.0, 1.0, 0.9, 8)
    assert sk.orthogonal_pairs(6, 4) == 4 * 3 + 2 * 1


def test_one_map_over_all_draws_is_the_mean_of_single_draw_estimates():
    d, m, draws = 4, 3, 5
    x, y = _pair(0.7, 1.1, d)
    gen = torch.Generator().manual_seed(0)
    w = draw_random_features(draws * m, d, False, generator=gen).reshape(draws, m, d)
    single = [float(random_feature_map(x, wi, "trig") @ random_feature_map(y, wi, "trig"))
              for wi in w]
    sq = _simulate("trig", False, x, y, m, draws, seed=0)
    assert np.allclose(sq, (np.array(single) - math.exp(float(x @ y))) ** 2)


def test_predicted_relative_standard_error_matches_the_spread_of_a_simulation():
    d, m, draws = 4, 3, 20000
    for kind, (r, theta) in (("trig", (0.5, 1.0)), ("positive", (0.3, 1.0)),
                             ("hyperbolic", (0.4, 0.5))):
        x, y = _pair(r, theta, d)
        sq = _simulate(kind, False, x, y, m, draws, seed=3)
        empirical = sq.std(ddof=1) / math.sqrt(draws) / sq.mean()
        predicted = float(sk.mse_relative_standard_error(kind, r * r, r * r, float(x @ y), m,
                                                         draws))
        assert 0.7 < empirical / predicted < 1.4, (kind, empirical, predicted)


@pytest.mark.parametrize("call, match", [
    (lambda: sk.trig_mse(1.0, 1.0, 0.0, 0), "m must be a positive int"),
    (lambda: sk.positive_mse(1.0, 1.0, 0.0, 2.5), "m must be a positive int"),
    (lambda: sk.positive_mse(-1.0, 1.0, 0.0, 2), "squared norms"),
    (lambda: sk.positive_mse(1.0, 1.0, 2.0, 2), "Cauchy-Schwarz"),
    (lambda: sk.iid_mse("relu", 1.0, 1.0, 0.0, 2), "kind must be one of"),
    (lambda: sk.orthogonal_positive_mse(1.0, 1.0, 0.0, 2, 0), "d must be a positive int"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
