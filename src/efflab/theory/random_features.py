"""Random features regression: a two-layer network whose first layer is frozen at random.

Implements the random features model of "A Farewell to the Bias-Variance Tradeoff?"
(Dar, Muthukumar, Baraniuk; arXiv 2109.02355, §7), after Rahimi & Recht (2007) and
Mei & Montanari (2019, "The generalization error of random features regression"):

    f(x) = sum_{j=1..N} a_j phi_j(x),   phi_j(x) = sigma(<w_j, x> / sqrt(d)) / sqrt(N),

with the first-layer weights w_j drawn once (uniform on the sphere of radius sqrt(d), or
Gaussian) and only the second layer ``a`` fitted, by min-norm least squares (ridgeless) or
ridge, through the shared SVD solver :func:`efflab.theory.linear_regression.min_norm_least_squares`.
Ridgeless, the test error peaks at N = n (the square feature matrix is as ill-conditioned as a
random matrix gets) and descends again for N > n.

The 1/sqrt(N) scale leaves the ridgeless fit unchanged and makes ``ridge`` mean the same
penalty for every N: the kernel ``Phi Phi^T`` then has entries of order one whatever N is,
and tends to the random features kernel as N grows.

Shapes: x (n, d), weights (N, d), features (n, N); targets y (n,) or (n, k) for k outputs.
"""

from __future__ import annotations

import math

import torch

from efflab.theory.linear_regression import min_norm_least_squares

ACTIVATIONS = ("relu", "tanh", "erf", "linear")
WEIGHT_DISTRIBUTIONS = ("sphere", "gaussian")


def _activation(name: str):
    if name == "relu":
        return torch.relu
    if name == "tanh":
        return torch.tanh
    if name == "erf":
        return torch.special.erf
    if name == "linear":
        return lambda z: z
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def sample_feature_weights(num_features: int, in_features: int, generator: torch.Generator,
                           distribution: str = "sphere", dtype: torch.dtype = torch.float64
                           ) -> torch.Tensor:
    """First-layer weights, (num_features, in_features).

    ``sphere``: each row uniform on the sphere of radius sqrt(d) (Mei & Montanari's choice, so
    that <w, x>/sqrt(d) is of order one for |x| ~ sqrt(d)); ``gaussian``: i.i.d. N(0, 1).
    """
    if num_features < 1 or in_features < 1:
        raise ValueError(f"num_features and in_features must be >= 1, got "
                         f"num_features={num_features}, in_features={in_features}")
    if distribution not in WEIGHT_DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {WEIGHT_DISTRIBUTIONS}, "
                         f"got {distribution!r}")
    w = torch.randn(num_features, in_features, generator=generator, dtype=dtype)
    if distribution == "sphere":
        w = w * (math.sqrt(in_features) / w.norm(dim=1, keepdim=True))
    return w


def _check_inputs(x: torch.Tensor, weights: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must have shape (n, d), got {tuple(x.shape)}")
    if weights.dim() != 2 or weights.shape[1] != x.shape[1]:
        raise ValueError(f"weights must have shape (N, d) = (N, {x.shape[1]}), "
                         f"got {tuple(weights.shape)}")


def random_features(x: torch.Tensor, weights: torch.Tensor, activation: str = "relu"
                    ) -> torch.Tensor:
    """Feature matrix ``sigma(x W^T / sqrt(d)) / sqrt(N)``: x (n, d), weights (N, d) -> (n, N)."""
    _check_inputs(x, weights)
    act = _activation(activation)
    n_feat, d = weights.shape
    return act(x @ weights.T / math.sqrt(d)) / math.sqrt(n_feat)


def random_features_reference(x: torch.Tensor, weights: torch.Tensor, activation: str = "relu"
                              ) -> torch.Tensor:
    """Entry by entry with Python's math module, for tests only (same shapes as above)."""
    _check_inputs(x, weights)
    scalar = {"relu": lambda z: max(z, 0.0), "tanh": math.tanh, "erf": math.erf,
              "linear": lambda z: z}
    if activation not in scalar:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    n, d = x.shape
    n_feat = weights.shape[0]
    out = torch.empty(n, n_feat, dtype=x.dtype)
    for i in range(n):
        for j in range(n_feat):
            pre = sum(float(x[i, k]) * float(weights[j, k]) for k in range(d)) / math.sqrt(d)
            out[i, j] = scalar[activation](pre) / math.sqrt(n_feat)
    return out


def fit_second_layer(features: torch.Tensor, y: torch.Tensor, ridge: float = 0.0
                     ) -> torch.Tensor:
    """Second-layer coefficients: min-norm least squares (``ridge = 0``) or ridge.

    features: (..., n, N); y: (..., n) -> (..., N), or y: (..., n, k) -> (..., N, k) for k
    outputs fitted independently (e.g. one-hot class targets). ``ridge`` minimizes
    ``|features a - y|^2 / n + ridge |a|^2`` per output, as in the shared solver.
    """
    if features.dim() < 2:
        raise ValueError(f"features must have shape (..., n, N), got {tuple(features.shape)}")
    lead = features.shape[:-1]
    if y.shape == lead:
        return min_norm_least_squares(features, y, ridge=ridge)
    if y.dim() == features.dim() and y.shape[:-1] == lead:
        return min_norm_least_squares(features, y, ridge=ridge)  # one SVD for all k outputs
    raise ValueError(f"y must have shape {tuple(lead)} or {(*lead, 'k')} to match features "
                     f"{tuple(features.shape)}, got {tuple(y.shape)}")


def fit_second_layer_reference(features: torch.Tensor, y: torch.Tensor, ridge: float = 0.0
                               ) -> torch.Tensor:
    """Textbook formulas, for tests only: features (n, N), y (n,) or (n, k).

    ridge > 0: ``(F^T F + n ridge I)^{-1} F^T y``; ridge = 0: ``(F^T F)^{-1} F^T y`` when
    N <= n and ``F^T (F F^T)^{-1} y`` when N > n (full rank assumed).
    """
    n, n_feat = features.shape
    if ridge > 0:
        gram = features.T @ features + n * ridge * torch.eye(n_feat, dtype=features.dtype)
        return torch.linalg.solve(gram, features.T @ y)
    if n_feat <= n:
        return torch.linalg.solve(features.T @ features, features.T @ y)
    return features.T @ torch.linalg.solve(features @ features.T, y)


def random_features_regression(x_train: torch.Tensor, y_train: torch.Tensor,
                               x_test: torch.Tensor, weights: torch.Tensor,
                               activation: str = "relu", ridge: float = 0.0
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit on (x_train, y_train) with the given first layer; predict on x_test.

    x_train (n, d), y_train (n,) or (n, k), x_test (m, d), weights (N, d)
    -> (train predictions (n,) or (n, k), test predictions (m,) or (m, k)).
    """
    if y_train.shape[0] != x_train.shape[0]:
        raise ValueError(f"y_train must have {x_train.shape[0]} rows (one per training "
                         f"sample), got shape {tuple(y_train.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    train_feats = random_features(x_train, weights, activation)
    coef = fit_second_layer(train_feats, y_train, ridge=ridge)
    return train_feats @ coef, random_features(x_test, weights, activation) @ coef


# -- Mei & Montanari (2019): the asymptotic test error --------------------------------------
def activation_coefficients(activation: str) -> dict[str, float]:
    """Hermite coefficients of sigma under G ~ N(0, 1): ``mu0 = E sigma(G)``,
    ``mu1 = E G sigma(G)``, ``mu_star^2 = E sigma(G)^2 - mu0^2 - mu1^2``.

    mu1 is the linear part of the features, mu_star their "nonlinear noise" (Mei & Montanari,
    eq. 4); for ReLU, mu0 = 1/sqrt(2 pi), mu1 = 1/2, mu_star^2 = 1/4 - 1/(2 pi). Integrated
    numerically on each side of 0, where ReLU has its kink.
    """
    from scipy.integrate import quad

    act = _activation(activation)

    def f(z: float) -> float:
        return float(act(torch.tensor(z, dtype=torch.float64)))

    def moment(g) -> float:
        dens = 1 / math.sqrt(2 * math.pi)
        return sum(quad(lambda z: g(z) * math.exp(-z * z / 2) * dens, a, b,
                        epsabs=1e-13, epsrel=1e-12)[0] for a, b in ((-math.inf, 0), (0, math.inf)))

    mu0, mu1 = moment(f), moment(lambda z: z * f(z))
    mu_star_sq = max(moment(lambda z: f(z) ** 2) - mu0**2 - mu1**2, 0.0)
    return {"mu0": mu0, "mu1": mu1, "mu_star": math.sqrt(mu_star_sq)}


def _mm_residual(n1: complex, n2: complex, xi: complex, psi1: float, psi2: float, z2: float
                 ) -> tuple[complex, complex]:
    q = 1 - z2 * n1 * n2
    return (n1 - psi1 / (-xi - n2 - z2 * n2 / q), n2 - psi2 / (-xi - n1 - z2 * n1 / q))


def _mm_newton(n1: complex, n2: complex, xi: complex, psi1: float, psi2: float, z2: float,
               iters: int = 60, tol: float = 1e-13) -> tuple[complex, complex, bool]:
    """Newton's method on Definition 1 of Mei & Montanari, holomorphic in (nu1, nu2)."""
    for _ in range(iters):
        q = 1 - z2 * n1 * n2
        d1 = -xi - n2 - z2 * n2 / q
        d2 = -xi - n1 - z2 * n1 / q
        r1, r2 = n1 - psi1 / d1, n2 - psi2 / d2
        if abs(r1) + abs(r2) < tol * (1 + abs(n1) + abs(n2)):
            return n1, n2, True
        cross = -1 - z2 / q - z2 * z2 * n1 * n2 / q**2     # dD1/dn2 = dD2/dn1
        a11 = 1 + psi1 / d1**2 * (-(z2 * n2 / q) ** 2)
        a12 = psi1 / d1**2 * cross
        a21 = psi2 / d2**2 * cross
        a22 = 1 + psi2 / d2**2 * (-(z2 * n1 / q) ** 2)
        det = a11 * a22 - a12 * a21
        if det == 0:
            return n1, n2, False
        n1, n2 = n1 - (a22 * r1 - a12 * r2) / det, n2 - (a11 * r2 - a21 * r1) / det
    r1, r2 = _mm_residual(n1, n2, xi, psi1, psi2, z2)
    return n1, n2, abs(r1) + abs(r2) < 1e-9 * (1 + abs(n1) + abs(n2))


def mm_nus(xi: complex, psi1: float, psi2: float, zeta: float) -> tuple[complex, complex]:
    """(nu1, nu2) of Mei & Montanari's Definition 1 at ``xi`` on the positive imaginary axis.

    Continuation from a large imaginary xi, where nu_k ~ psi_k / (-xi), down the axis, each
    step solved by Newton from the previous solution; the step shrinks where Newton fails,
    so the branch followed is the one analytic in the upper half plane.
    """
    if xi.real != 0 or xi.imag <= 0:
        raise ValueError(f"xi must be on the positive imaginary axis, got {xi}")
    z2 = zeta * zeta
    s = max(100.0, 10 * xi.imag)
    n1, n2 = 1j * psi1 / s, 1j * psi2 / s
    ratio = 0.5
    while s > xi.imag:
        s_next = max(s * ratio, xi.imag)
        m1, m2, ok = _mm_newton(n1, n2, 1j * s_next, psi1, psi2, z2)
        if ok and m1.imag > 0 and m2.imag > 0:
            n1, n2, s = m1, m2, s_next
            ratio = max(ratio * ratio, 1e-3) if ratio < 0.9 else ratio
        else:
            ratio = math.sqrt(ratio)
            if ratio > 1 - 1e-9:
                raise RuntimeError(f"Mei-Montanari continuation stalled at xi = {s}i "
                                   f"(psi1={psi1}, psi2={psi2}, zeta={zeta})")
    return n1, n2


def mm_nus_reference(xi: complex, psi1: float, psi2: float, zeta: float,
                     iters: int = 200000) -> tuple[complex, complex]:
    """Damped fixed-point iteration of the same equations, for tests only (slow; use a xi
    not too close to 0)."""
    z2 = zeta * zeta
    n1, n2 = 1j * psi1 / abs(xi), 1j * psi2 / abs(xi)
    for _ in range(iters):
        r1, r2 = _mm_residual(n1, n2, xi, psi1, psi2, z2)
        n1, n2 = n1 - 0.5 * r1, n2 - 0.5 * r2
        if abs(r1) + abs(r2) < 1e-14:
            break
    return n1, n2


def mei_montanari_risk(psi1: float, psi2: float, ridge_bar: float, zeta: float,
                       signal: float, noise_var: float, nonlinear: float = 0.0
                       ) -> dict[str, float]:
    """Asymptotic test error of random features ridge regression (Mei & Montanari 2019, Thm 1).

    N, n, d -> infinity with ``psi1 = N/d``, ``psi2 = n/d``; ``ridge_bar = lambda / mu_star^2``
    where lambda is their penalty ``(N lambda / d) |a|^2`` on unnormalized features (for this
    module's normalization, ``lambda = ridge * d``); ``zeta = mu1 / mu_star``. The target is
    ``y = <beta, x> + f_NL(x) + noise`` with ``|beta|^2 = signal``, ``E f_NL^2 = nonlinear``,
    noise variance ``noise_var``. Returns the error against the noiseless target,
    ``risk = signal * B + (noise_var + nonlinear) * V + nonlinear``, with B and V, where
    ``chi = nu1 nu2`` at ``xi = i sqrt(psi1 psi2 ridge_bar)`` enters B = E1/E0 and V = E2/E0.
    Ridgeless is the limit ridge_bar -> 0+: pass a small value (1e-8 is accurate away from
    psi1 = psi2, where the ridgeless error is infinite).
    """
    if min(psi1, psi2) <= 0 or ridge_bar <= 0:
        raise ValueError(f"psi1, psi2 and ridge_bar must be > 0, got psi1={psi1}, "
                         f"psi2={psi2}, ridge_bar={ridge_bar}")
    n1, n2 = mm_nus(1j * math.sqrt(psi1 * psi2 * ridge_bar), psi1, psi2, zeta)
    chi = n1 * n2
    z2, z4, z6 = zeta**2, zeta**4, zeta**6
    p = psi1 * psi2
    e0 = (-chi**5 * z6 + 3 * chi**4 * z4 + (p - psi2 - psi1 + 1) * chi**3 * z6
          - 2 * chi**3 * z4 - 3 * chi**3 * z2 + (psi1 + psi2 - 3 * p + 1) * chi**2 * z4
          + 2 * chi**2 * z2 + chi**2 + 3 * p * chi * z2 - p)
    e1 = psi2 * chi**3 * z4 - psi2 * chi**2 * z2 + p * chi * z2 - p
    e2 = (chi**5 * z6 - 3 * chi**4 * z4 + (psi1 - 1) * chi**3 * z6 + 2 * chi**3 * z4
          + 3 * chi**3 * z2 + (-psi1 - 1) * chi**2 * z4 - 2 * chi**2 * z2 - chi**2)
    bias, var = (e1 / e0).real, (e2 / e0).real
    risk = signal * bias + (noise_var + nonlinear) * var + nonlinear
    return {"risk": float(risk), "bias": float(bias), "variance": float(var),
            "chi": float(chi.real)}
