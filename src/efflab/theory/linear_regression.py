"""Double descent of min-norm least squares: the solver, the closed form, the simulation.

Implements the linear-regression part of "A Farewell to the Bias-Variance Tradeoff?"
(Dar, Muthukumar, Baraniuk; arXiv 2109.02355, §3 and §7), with the finite-sample risk of
Belkin, Hsu and Xu (2019, "Two models of double descent for weak features", Thm 1):

    x ~ N(0, I_D),  y = x . beta + sigma * eps,  the learner sees the features T (|T| = p).

    p <= n - 2:  risk = (|beta_Tc|^2 + sigma^2) (1 + p / (n - p - 1))
    p >= n + 2:  risk = |beta_T|^2 (1 - n/p) + (|beta_Tc|^2 + sigma^2) (1 + n / (p - n - 1))
    n-1 <= p <= n+1: infinite.

"risk" is the expected squared error on a fresh (x, y), noise included. Features outside T
act as extra noise of variance |beta_Tc|^2, which is why they enter next to sigma^2.

Benign overfitting (Bartlett, Long, Lugosi and Tsigler 2020, as surveyed in §7): with Sigma's
eigenvalues lambda_1 >= lambda_2 >= ..., the effective ranks

    r_k = sum_{i>k} lambda_i / lambda_{k+1},   R_k = (sum_{i>k} lambda_i)^2 / sum_{i>k} lambda_i^2,
    k*  = min{k >= 0 : r_k >= b n}

(:func:`effective_ranks`) decide whether interpolation is benign (r_0/n, k*/n, n/R_{k*} -> 0).
:func:`min_norm_risk_equivalent` is the deterministic equivalent of the min-norm interpolator's
excess risk (Hastie, Montanari, Rosset, Tibshirani 2022; Bach 2024): kappa > 0 solves
``sum_i lambda_i / (lambda_i + kappa) = n``, and with ``df2 = sum_i lambda_i^2 / (lambda_i +
kappa)^2``

    bias = kappa^2 sum_i theta_i^2 lambda_i / (lambda_i + kappa)^2 / (1 - df2 / n),
    variance = sigma^2 (df2 / n) / (1 - df2 / n);

for Sigma = I it equals :func:`asymptotic_excess_risk` (Hastie et al.'s isotropic limit).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import brentq


def min_norm_least_squares(x: torch.Tensor, y: torch.Tensor, ridge: float = 0.0,
                           rcond: float | None = None) -> torch.Tensor:
    """The minimum-norm least-squares solution (or the ridge solution), through the SVD.

    x: (..., n, p), y: (..., n) -> (..., p), or y: (..., n, k) -> (..., p, k) for k outputs
    sharing one factorization. Batched over leading axes.

    ``ridge = 0``: the pseudo-inverse solution ``pinv(x) y``: the least-squares fit when
    p < n, the interpolator of smallest norm when p > n. Singular values below
    ``rcond * max(n, p) * s_max`` are dropped (default: machine epsilon of the dtype), never
    inverted, so the solve stays as stable as the problem allows near p = n.
    ``ridge > 0``: minimizes ``|x b - y|^2 / n + ridge |b|^2``, i.e.
    ``b = (x^T x + n ridge I)^{-1} x^T y``, computed as ``V diag(s / (s^2 + n ridge)) U^T y``.
    """
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., n, p), got {tuple(x.shape)}")
    multi = y.dim() == x.dim() and y.shape[:-1] == x.shape[:-1]
    if y.shape != x.shape[:-1] and not multi:
        raise ValueError(f"y must have shape {tuple(x.shape[:-1])} (x without its last axis) "
                         f"or {(*x.shape[:-1], 'k')}, got {tuple(y.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    n, p = x.shape[-2], x.shape[-1]
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    if ridge > 0:
        inv = s / (s * s + n * ridge)
    else:
        eps = torch.finfo(x.dtype).eps if rcond is None else rcond
        cutoff = eps * max(n, p) * s.amax(dim=-1, keepdim=True)
        inv = torch.where(s > cutoff, 1.0 / s.clamp_min(torch.finfo(x.dtype).tiny),
                          torch.zeros_like(s))
    rhs = y if multi else y.unsqueeze(-1)
    coef = vh.transpose(-1, -2) @ (inv.unsqueeze(-1) * (u.transpose(-1, -2) @ rhs))
    return coef if multi else coef.squeeze(-1)


def min_norm_least_squares_reference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Textbook formulas, for tests only: ``(X^T X)^{-1} X^T y`` when p <= n (full column
    rank), ``X^T (X X^T)^{-1} y`` when p > n (full row rank). x: (n, p), y: (n,)."""
    n, p = x.shape
    if p <= n:
        return torch.linalg.solve(x.T @ x, x.T @ y)
    return x.T @ torch.linalg.solve(x @ x.T, y)


def bhx_risk(p: int | np.ndarray, n: int, beta_in_sq: float | np.ndarray,
             beta_out_sq: float | np.ndarray, sigma: float) -> np.ndarray:
    """Expected test risk of min-norm least squares with p of the features (Belkin-Hsu-Xu).

    ``beta_in_sq`` = |beta_T|^2 (signal on the used features), ``beta_out_sq`` = |beta_Tc|^2
    (signal on the unused ones); both may be arrays aligned with ``p``. Returns ``inf`` for
    n - 1 <= p <= n + 1, where the expectation diverges.
    """
    p = np.asarray(p, dtype=float)
    if np.any(p < 0) or n < 1 or sigma < 0:
        raise ValueError(f"need p >= 0, n >= 1, sigma >= 0; got p={p}, n={n}, sigma={sigma}")
    b_in = np.broadcast_to(np.asarray(beta_in_sq, dtype=float), p.shape)
    b_out = np.broadcast_to(np.asarray(beta_out_sq, dtype=float), p.shape)
    noise = b_out + sigma**2
    risk = np.full(p.shape, np.inf)
    under = p <= n - 2
    over = p >= n + 2
    with np.errstate(divide="ignore", invalid="ignore"):
        risk[under] = noise[under] * (1 + p[under] / (n - p[under] - 1))
        risk[over] = (b_in[over] * (1 - n / p[over])
                      + noise[over] * (1 + n / (p[over] - n - 1)))
    return risk


def asymptotic_excess_risk(gamma: float | np.ndarray, r2: float, sigma: float) -> np.ndarray:
    """Large-n limit (Hastie et al. 2019) of the excess risk, p/n -> gamma, all features used:
    ``sigma^2 gamma / (1 - gamma)`` for gamma < 1, ``r2 (1 - 1/gamma) + sigma^2 / (gamma - 1)``
    for gamma > 1, infinite at 1."""
    g = np.asarray(gamma, dtype=float)
    out = np.full(g.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(g < 1, sigma**2 * g / (1 - g), out)
        out = np.where(g > 1, r2 * (1 - 1 / g) + sigma**2 / (g - 1), out)
    return out


def simulate_min_norm_risk(n: int, beta: torch.Tensor, sigma: float, ps: list[int],
                           trials: int, generator: torch.Generator, batch: int = 256,
                           progress=None) -> np.ndarray:
    """Monte Carlo of the setting of :func:`bhx_risk`: returns per-trial risks, (len(ps), trials).

    Each trial draws X (n, D) with i.i.d. N(0, 1) entries and y = X beta + sigma eps, fits
    min-norm least squares on the first p columns of X for every p in ``ps`` (the same draw for
    all p, which smooths the curve without biasing any point), and computes the exact risk on
    the test distribution, ``|beta_T - b|^2 + |beta_Tc|^2 + sigma^2``: no test-set noise.
    ``progress`` optionally wraps the loop over trial batches.
    """
    beta = beta.to(torch.float64)
    d = beta.numel()
    if max(ps) > d or min(ps) < 1:
        raise ValueError(f"every p must lie in [1, D={d}], got min {min(ps)}, max {max(ps)}")
    if trials < 1 or n < 1:
        raise ValueError(f"trials and n must be >= 1, got trials={trials}, n={n}")
    out = np.empty((len(ps), trials))
    starts = range(0, trials, batch)
    if progress is not None:
        starts = progress(starts)
    beta_sq_cum = torch.cat([torch.zeros(1, dtype=torch.float64), (beta**2).cumsum(0)])
    total = float(beta_sq_cum[-1])
    for start in starts:
        t = min(batch, trials - start)
        x = torch.randn(t, n, d, generator=generator, dtype=torch.float64)
        y = x @ beta + sigma * torch.randn(t, n, generator=generator, dtype=torch.float64)
        for i, p in enumerate(ps):
            b = min_norm_least_squares(x[:, :, :p], y)
            est = ((b - beta[:p]) ** 2).sum(-1)
            out[i, start:start + t] = (est + (total - float(beta_sq_cum[p])) + sigma**2).numpy()
    return out


def grid_ps(d: int, n: int, points: int) -> list[int]:
    """About ``points`` feature counts from 1 to ``d``, always containing n-2..n+2 and d."""
    if points >= d:
        return list(range(1, d + 1))
    ps = set(np.unique(np.round(np.linspace(1, d, points)).astype(int)).tolist())
    ps |= {q for q in range(n - 2, n + 3) if 1 <= q <= d}
    return sorted(ps)


# -- benign overfitting: effective ranks and the deterministic equivalent ----------------------
def effective_ranks(eigs: np.ndarray, n: int, b: float = 1.0) -> dict[str, float]:
    """r_0, k*, r_{k*}, R_{k*} of a spectrum (any order), as in Bartlett et al. (2020).

    eigs: (d,) nonnegative. ``k*`` is ``d`` (and the ranks nan) when no k qualifies.
    """
    lam = np.sort(np.asarray(eigs, float))[::-1]
    if lam.ndim != 1 or lam.size == 0 or lam[-1] < 0:
        raise ValueError(f"eigs must be a non-empty 1-D array of nonnegative values, "
                         f"got shape {lam.shape}")
    tail = np.concatenate([np.cumsum(lam[::-1])[::-1], [0.0]])       # sum_{i>k}, k = 0..d
    tail_sq = np.concatenate([np.cumsum(lam[::-1] ** 2)[::-1], [0.0]])
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(lam > 0, tail[:-1] / lam, 0.0)                  # r_k for k = 0..d-1
    ok = np.flatnonzero(r >= b * n)
    k_star = int(ok[0]) if ok.size else lam.size
    out = {"r0": float(r[0]), "k_star": k_star, "r_kstar": float("nan"),
           "R_kstar": float("nan")}
    if ok.size:
        out["r_kstar"] = float(r[k_star])
        out["R_kstar"] = float(tail[k_star] ** 2 / tail_sq[k_star])
    return out


def min_norm_risk_equivalent(eigs: np.ndarray, theta_sq: np.ndarray, n: int, sigma: float
                             ) -> dict[str, float]:
    """Deterministic equivalent of the excess risk of min-norm interpolation (needs d > n).

    eigs: (d,) eigenvalues of Sigma, theta_sq: (d,) squared coefficients of theta in Sigma's
    eigenbasis. Returns kappa, bias, variance and their sum, ``excess``.
    """
    lam = np.asarray(eigs, float)
    th = np.asarray(theta_sq, float)
    if lam.shape != th.shape or lam.ndim != 1:
        raise ValueError(f"eigs and theta_sq must be 1-D of one shape, got {lam.shape} and "
                         f"{th.shape}")
    if np.count_nonzero(lam > 0) <= n:
        raise ValueError(f"need more than n = {n} positive eigenvalues to interpolate, "
                         f"got {np.count_nonzero(lam > 0)}")

    def gap(log_kappa: float) -> float:
        return float(np.sum(lam / (lam + np.exp(log_kappa)))) - n

    # sum lambda/(lambda + kappa) falls from (#positive) to 0 as kappa grows: one root
    lo, hi = np.log(lam[lam > 0].min()) - 40.0, np.log(lam.sum()) + 5.0
    kappa = float(np.exp(brentq(gap, lo, hi, xtol=1e-14, rtol=1e-14)))
    df2 = float(np.sum(lam**2 / (lam + kappa) ** 2))
    shrink = 1.0 - df2 / n
    bias = kappa**2 * float(np.sum(th * lam / (lam + kappa) ** 2)) / shrink
    variance = sigma**2 * (df2 / n) / shrink
    return {"kappa": kappa, "bias": bias, "variance": variance, "excess": bias + variance}
