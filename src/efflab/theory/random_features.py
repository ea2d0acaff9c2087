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
        k = y.shape[-1]
        # The shared solver takes one right-hand side per matrix: put the k outputs on a batch
        # axis in front (a view, no copy). This repeats the SVD k times; see the report.
        feats = features.unsqueeze(0).expand(k, *features.shape)
        coef = min_norm_least_squares(feats, y.movedim(-1, 0), ridge=ridge)
        return coef.movedim(0, -1)
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
