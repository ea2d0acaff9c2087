"""Mean squared error of the random-feature estimators of the softmax kernel, in closed form.

Performer (Choromanski et al., arXiv 2009.14794), Sec. 2.3-2.4: the softmax kernel
``SM(x, y) = exp(x . y)`` is estimated by ``phi(x) . phi(y)`` with m random features
``w_i ~ N(0, I_d)`` (the feature maps of :func:`efflab.attention.random_feature_map`):

* trigonometric: per feature ``exp((|x|^2 + |y|^2) / 2) cos(w . (x - y))``;
* positive: per feature ``exp(w . (x + y) - (|x|^2 + |y|^2) / 2)``;
* hyperbolic: the mean of the positive feature at ``w`` and at ``-w``.

All three are unbiased. Their MSE (= variance) with iid features is Lemma 2 of the paper, with
``z = x + y`` and ``delta = x - y``::

    MSE(trig)       = 1 / (2m) exp(|z|^2) SM^-2 (1 - exp(-|delta|^2))^2
    MSE(positive)   = 1 / m    exp(|z|^2) SM^2  (1 - exp(-|z|^2))
    MSE(hyperbolic) = 1/2 (1 - exp(-|z|^2)) MSE(positive)

(Each follows from the Gaussian moment ``E exp(w . t) = exp(|t|^2 / 2)`` and
``E cos(w . t) = exp(-|t|^2 / 2)``; the tests check them by simulation.) The positive
estimator is exact where ``z = 0`` (``y = -x``: the kernel at its smallest for given norms),
while the trigonometric one is worst there: this is the paper's reason for positive features.

Orthogonal features (Sec. 2.4): rows drawn in d x d blocks whose rows are exactly orthogonal,
each rescaled to an independent chi(d) norm, so every row is still N(0, I_d) but rows of a
block are dependent. The MSE of the positive estimator is then the iid MSE plus the covariance
of the per-feature estimates of every orthogonal pair, which has the exact series
(:func:`orthogonal_pair_covariance`; ``|w_i + w_j|^2 ~ chi^2(2d)`` with a uniform direction)::

    Cov = exp(-|x|^2 - |y|^2) sum_{k >= 2} |z|^(2k) / k! (prod_{j<k} (d + j) / (d + 2j) - 1) <= 0.

Theorem 2 of the paper bounds the improvement for one block (m <= d)::

    MSE(orthogonal positive) <= MSE(positive) - 2 (m - 1) / (m (d + 2)) (SM - exp(-c))^2,
    c = (|x|^2 + |y|^2) / 2,

which is the k = 2 term of the series (the tests check the bound against the series).

Arguments are the three inner products ``x_sq = |x|^2``, ``y_sq = |y|^2``, ``xy = x . y``
(floats or numpy arrays that broadcast together); ``m`` the number of random features.
"""

from __future__ import annotations

import math

import numpy as np

ESTIMATORS = ("trig", "positive", "hyperbolic")


def _parts(x_sq, y_sq, xy):
    x_sq, y_sq, xy = (np.asarray(a, dtype=float) for a in (x_sq, y_sq, xy))
    if (x_sq < 0).any() or (y_sq < 0).any():
        raise ValueError("x_sq and y_sq are squared norms and must be >= 0")
    if (xy**2 > x_sq * y_sq * (1 + 1e-9) + 1e-12).any():
        raise ValueError("xy must satisfy |xy| <= |x| |y| (Cauchy-Schwarz)")
    z_sq = np.maximum(x_sq + y_sq + 2 * xy, 0.0)
    delta_sq = np.maximum(x_sq + y_sq - 2 * xy, 0.0)
    return x_sq, y_sq, xy, z_sq, delta_sq


def _check_m(m: int, name: str = "m") -> int:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"{name} must be a positive int, got {m!r}")
    return int(m)


def softmax_kernel(x_sq, y_sq, xy):
    """SM(x, y) = exp(x . y) (``x_sq`` and ``y_sq`` only checked)."""
    return np.exp(_parts(x_sq, y_sq, xy)[2])


def trig_mse(x_sq, y_sq, xy, m: int):
    """Lemma 2, trigonometric features: ``exp(|x|^2 + |y|^2) (1 - exp(-|x - y|^2))^2 / (2m)``."""
    m = _check_m(m)
    x_sq, y_sq, _, _, delta_sq = _parts(x_sq, y_sq, xy)
    # exp(|z|^2) SM^-2 = exp(|x|^2 + |y|^2)
    return np.exp(x_sq + y_sq) * (-np.expm1(-delta_sq)) ** 2 / (2 * m)


def positive_mse(x_sq, y_sq, xy, m: int):
    """Lemma 2, positive features: ``exp(|z|^2) SM^2 (1 - exp(-|z|^2)) / m``, z = x + y."""
    m = _check_m(m)
    _, _, xy, z_sq, _ = _parts(x_sq, y_sq, xy)
    return np.exp(z_sq + 2 * xy) * (-np.expm1(-z_sq)) / m


def hyperbolic_mse(x_sq, y_sq, xy, m: int):
    """Lemma 2, hyperbolic features (m pairs w, -w): ``(1 - exp(-|z|^2)) / 2`` times the
    positive MSE."""
    z_sq = _parts(x_sq, y_sq, xy)[3]
    return 0.5 * (-np.expm1(-z_sq)) * positive_mse(x_sq, y_sq, xy, m)


def iid_mse(kind: str, x_sq, y_sq, xy, m: int):
    """Lemma 2 for ``kind`` in :data:`ESTIMATORS`."""
    if kind == "trig":
        return trig_mse(x_sq, y_sq, xy, m)
    if kind == "positive":
        return positive_mse(x_sq, y_sq, xy, m)
    if kind == "hyperbolic":
        return hyperbolic_mse(x_sq, y_sq, xy, m)
    raise ValueError(f"kind must be one of {ESTIMATORS}, got {kind!r}")


def _orthogonal_series(z_sq: np.ndarray, d: int, terms: int = 400) -> np.ndarray:
    """sum_{k>=2} a^k / k! (prod_{j<k} (d + j) / (d + 2j) - 1), a = |z|^2, summed in log space
    for the a^k / k! factor so that large a does not overflow before the prefactor cancels."""
    a = np.asarray(z_sq, dtype=float)
    out = np.zeros_like(a)
    log_prod = 0.0
    log_a = np.log(np.where(a > 0, a, 1.0))
    for k in range(terms):
        if k >= 2:
            coeff = math.expm1(log_prod)  # prod - 1, in (-1, 0]
            term = np.where(a > 0, np.exp(k * log_a - math.lgamma(k + 1)), 0.0) * coeff
            out += term
            if k > 2 * float(a.max(initial=0.0)) + 40:
                break
        log_prod += math.log((d + k) / (d + 2 * k))
    return out


def orthogonal_pair_covariance(x_sq, y_sq, xy, d: int):
    """Covariance of the positive per-feature estimates of two exactly orthogonal rows with
    independent chi(d) norms (the series of the module docstring); <= 0."""
    d = _check_m(d, "d")
    x_sq, y_sq, _, z_sq, _ = _parts(x_sq, y_sq, xy)
    return np.exp(-x_sq - y_sq) * _orthogonal_series(z_sq, d)


def orthogonal_pairs(m: int, d: int) -> int:
    """Ordered pairs of rows sharing a d x d block among m rows drawn as
    :func:`efflab.attention.draw_random_features` does (full blocks, the last one cut)."""
    m, d = _check_m(m), _check_m(d, "d")
    full, rest = divmod(m, d)
    return full * d * (d - 1) + rest * (rest - 1)


def orthogonal_positive_mse(x_sq, y_sq, xy, m: int, d: int):
    """Exact MSE of the positive estimator with m block-orthogonal chi(d)-norm features."""
    cov = orthogonal_pair_covariance(x_sq, y_sq, xy, d)
    return positive_mse(x_sq, y_sq, xy, m) + orthogonal_pairs(m, d) / m**2 * cov


def theorem2_bound(x_sq, y_sq, xy, m: int, d: int):
    """Theorem 2's upper bound on the orthogonal positive MSE, for one block (m <= d):
    ``MSE(positive) - 2 (m - 1) / (m (d + 2)) (SM - exp(-(|x|^2 + |y|^2) / 2))^2``."""
    m, d = _check_m(m), _check_m(d, "d")
    if m > d:
        raise ValueError(f"Theorem 2 is stated for m <= d, got m={m}, d={d}")
    x_sq, y_sq, xy, _, _ = _parts(x_sq, y_sq, xy)
    gap = np.exp(xy) - np.exp(-(x_sq + y_sq) / 2)
    return positive_mse(x_sq, y_sq, xy, m) - 2 * (m - 1) / (m * (d + 2)) * gap**2


# ------------------------------------------------------------ how well a simulation can see it

def _feature_moments(kind: str, x_sq, y_sq, xy):
    """Mean and 2nd and 4th central moments of one iid feature's estimate."""
    x_sq, y_sq, xy, z_sq, delta_sq = _parts(x_sq, y_sq, xy)
    c = (x_sq + y_sq) / 2
    if kind == "positive":
        raw = [np.exp(k * k * z_sq / 2 - k * c) for k in range(1, 5)]
    elif kind == "hyperbolic":  # exp(-c) cosh(w . z), cosh^k = 2^-k sum_j C(k, j) e^((k-2j) s)
        raw = [np.exp(-k * c) * sum(math.comb(k, j) * np.exp((k - 2 * j) ** 2 * z_sq / 2)
                                    for j in range(k + 1)) / 2**k for k in range(1, 5)]
    elif kind == "trig":
        s = delta_sq
        e = [np.exp(-j * j * s / 2) for j in range(5)]  # E cos(j w.delta) = exp(-j^2 s / 2)
        cos_moments = [e[1], (1 + e[2]) / 2, (3 * e[1] + e[3]) / 4, (3 + 4 * e[2] + e[4]) / 8]
        raw = [np.exp(k * c) * mom for k, mom in zip(range(1, 5), cos_moments)]
    else:
        raise ValueError(f"kind must be one of {ESTIMATORS}, got {kind!r}")
    mu = raw[0]
    mu2 = raw[1] - mu**2
    mu4 = raw[3] - 4 * mu * raw[2] + 6 * mu**2 * raw[1] - 3 * mu**4
    return mu, np.maximum(mu2, 0.0), np.maximum(mu4, 0.0)


def mse_relative_standard_error(kind: str, x_sq, y_sq, xy, m: int, draws: int):
    """Relative standard error of the MSE estimated as the mean squared error of ``draws``
    independent estimates with m iid features: ``sd(err^2) / (sqrt(draws) MSE)``.

    The positive estimator's error is heavy tailed (its 4th moment grows like
    ``exp(8 |z|^2)``): where this is large, a simulation of that size cannot check the MSE,
    and it should not be judged there. Infinite where the MSE is 0.
    """
    m, draws = _check_m(m), _check_m(draws, "draws")
    _, mu2, mu4 = _feature_moments(kind, x_sq, y_sq, xy)
    mse = mu2 / m
    fourth = mu4 / m**3 + 3 * (m - 1) * mu2**2 / m**3  # E err^4 of a mean of m iid
    var_sq = np.maximum(fourth - mse**2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mse > 0, np.sqrt(var_sq / draws) / mse, np.inf)
