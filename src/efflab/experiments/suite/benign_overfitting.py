"""Benign overfitting of min-norm linear interpolation, and when it is not benign.

"A Farewell to the Bias-Variance Tradeoff?" (arXiv 2109.02355), §7 (benign overfitting,
after Bartlett, Long, Lugosi and Tsigler 2020): the min-norm interpolator of noisy data can
still have small excess risk when the covariance has a few strong directions carrying the
signal plus a long tail of weak ones. The tail soaks up the noise: its many small directions
absorb the part of y the strong directions cannot fit, at little cost on a test point. With
Sigma's eigenvalues lambda_1 >= lambda_2 >= ..., the survey states the conditions through the
effective ranks

    r_k = sum_{i>k} lambda_i / lambda_{k+1},   R_k = (sum_{i>k} lambda_i)^2 / sum_{i>k} lambda_i^2,
    k*  = min{k >= 0 : r_k >= b n}   (b = 1 here),

and overfitting is benign when r_0 / n, k* / n and n / R_{k*} all go to zero. Two cases, both
with n samples, signal theta on the first ``strong`` coordinates and noise sigma:

* ``spiked``: ``strong`` eigenvalues 1, then ``p`` weak ones of ``tail_energy * n / p`` each
  (the tail's total variance fixed while it spreads over ever more directions): the excess
  risk falls towards the strong directions' share sigma^2 k / n, near zero;
* ``isotropic``: Sigma = I with the same dimension: r_0 = d >> n, and the excess risk tends
  to |theta|^2, the risk of predicting zero (Belkin-Hsu-Xu closed form, `efflab.theory`).

The Monte Carlo is compared with the closed form in the isotropic case and, in the spiked
case, with the deterministic equivalent of min-norm interpolation (Hastie, Montanari, Rosset,
Tibshirani 2022; Bach 2024): kappa > 0 solves ``sum_i lambda_i / (lambda_i + kappa) = n``, and
with ``df2 = sum_i lambda_i^2 / (lambda_i + kappa)^2``

    bias = kappa^2 sum_i theta_i^2 lambda_i / (lambda_i + kappa)^2 / (1 - df2 / n),
    variance = sigma^2 (df2 / n) / (1 - df2 / n).

For Sigma = I this is exactly Hastie et al.'s isotropic limit
(`efflab.theory.linear_regression.asymptotic_excess_risk`), which the experiment checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import torch

from efflab.experiments import register
from efflab.experiments.base import (
    Claim,
    ConfigError,
    Experiment,
    ExperimentConfig,
    RunContext,
    Table,
)
from efflab.experiments.checks import at_least, in_range, nonnegative, param, positive
from efflab.experiments.plotting import plot_risk_curve, save_figure
from efflab.experiments.sweep import limit_threads, sweep
from efflab.experiments.verdicts import (
    all_of,
    at_most,
    interval_at_least,
    interval_at_most,
    mean_sem_interval,
)
from efflab.experiments.verdicts import at_least as verdict_at_least
from efflab.seeding import derive_seed
from efflab.theory.linear_regression import (
    asymptotic_excess_risk,
    bhx_risk,
    effective_ranks,
    min_norm_least_squares,
    min_norm_risk_equivalent,
)

CASES = ("spiked", "isotropic")


# -- experiment ------------------------------------------------------------------------------
@dataclass
class BenignOverfittingConfig(ExperimentConfig):
    n: int = param(50, "training samples", check=at_least(10))
    strong: int = param(4, "directions with eigenvalue 1, carrying all the signal; in "
                           "[1, n/2)", check=at_least(1))
    tail_energy: float = param(0.1, "total variance of the weak tail, in units of n",
                               check=positive)
    sigma: float = param(1.0, "label noise standard deviation", check=nonnegative)
    signal: float = param(1.0, "|theta|^2", check=positive)
    tail_min: float = param(1.5, "weak tail size p from tail_min * n ...",
                            check=in_range(1, 1e6, lo_open=True))
    tail_max: float = param(100.0, "... to tail_max * n, geometric",
                            check=in_range(1, 1e6, lo_open=True))
    grid_points: int = param(9, "tail sizes on the grid", check=at_least(3))
    trials: int = param(40, "Monte Carlo draws per point", check=at_least(5))
    benign_level: float = param(0.2, "spiked: excess / |theta|^2 at the largest tail must be "
                                     "below this", check=positive)
    tolerance: float = param(0.1, "relative agreement with theory where judged",
                             check=in_range(0, 1, lo_open=True))
    ordered_fields: ClassVar = (("tail_min", "tail_max"),)

    @classmethod
    def full(cls) -> BenignOverfittingConfig:
        return cls(n=200, strong=8, grid_points=15, trials=100, tolerance=0.05)

    def validate(self) -> None:
        super().validate()
        if not self.strong < self.n // 2:
            raise ConfigError(f"strong must be in [1, n/2) = [1, {self.n // 2}) for "
                              f"n={self.n}, got {self.strong}")
        if self.tail_min == self.tail_max:
            raise ConfigError(f"tail_min must be < tail_max, got {self.tail_min} for both")


def spectrum(case: str, strong: int, tail: int, tail_energy: float, n: int
             ) -> np.ndarray:
    """Eigenvalues of Sigma, (strong + tail,): spiked or isotropic of the same dimension."""
    if case == "isotropic":
        return np.ones(strong + tail)
    return np.concatenate([np.ones(strong), np.full(tail, tail_energy * n / tail)])


def benign_point(point: dict[str, Any]) -> dict[str, Any]:
    """Monte Carlo excess risk of the min-norm interpolator for one (case, tail size)."""
    n, k, p = point["n"], point["strong"], point["tail"]
    lam = torch.as_tensor(spectrum(point["case"], k, p, point["tail_energy"], n))
    theta = torch.zeros(k + p, dtype=torch.float64)
    theta[:k] = (point["signal"] / k) ** 0.5
    gen = torch.Generator().manual_seed(point["seed"])
    scale = lam.sqrt()
    with limit_threads(1):
        risks = [_excess_risk_draw(n, lam, scale, theta, point["sigma"], gen)
                 for _ in range(point["trials"])]
    return {"risks": risks}


def _excess_risk_draw(n: int, lam: torch.Tensor, scale: torch.Tensor, theta: torch.Tensor,
                      sigma: float, gen: torch.Generator) -> float:
    """One draw of (X, y), the min-norm fit, and its exact excess risk
    ``E[(x . (est - theta))^2] = sum_i lambda_i (est_i - theta_i)^2``."""
    x = torch.randn(n, lam.numel(), generator=gen, dtype=torch.float64) * scale
    y = x @ theta + sigma * torch.randn(n, generator=gen, dtype=torch.float64)
    est = min_norm_least_squares(x, y)
    return float((lam * (est - theta) ** 2).sum())


@register
class BenignOverfitting(Experiment):
    name = "benign-overfitting"
    paper = ("A Farewell to the Bias-Variance Tradeoff? (arXiv 2109.02355), §7 "
             "(Bartlett et al. 2020)")
    checks = ("min-norm interpolation is benign with a spiked covariance (excess risk -> near "
              "0 as the weak tail grows, effective-rank conditions met) and not with an "
              "isotropic one")
    Config = BenignOverfittingConfig
    budget_s = {"quick": 30.0, "full": 1800.0}
    smoke = {"n": 20, "strong": 2, "tail_max": 40.0, "grid_points": 3, "trials": 5}

    def run(self, config: BenignOverfittingConfig, ctx: RunContext) -> dict[str, Any]:
        n = config.n
        tails = sorted(set(np.round(n * np.geomspace(config.tail_min, config.tail_max,
                                                     config.grid_points)).astype(int).tolist()))
        points = [{"case": case, "tail": p, "n": n, "strong": config.strong,
                   "tail_energy": config.tail_energy, "sigma": config.sigma,
                   "signal": config.signal, "trials": config.trials,
                   "seed": derive_seed(config.seed, self.name, case, p)}
                  for case in CASES for p in tails]
        done = sweep(benign_point, points, ctx, "benign-v1", desc="benign overfitting")
        out: dict[str, Any] = {"tails": tails, "dims": [config.strong + p for p in tails],
                               "cases": {}}
        for case in CASES:
            rows = [np.asarray(r["risks"]) for pt, r in zip(points, done) if pt["case"] == case]
            mean = np.array([r.mean() for r in rows])
            sem = np.array([r.std(ddof=1) / np.sqrt(r.size) for r in rows])
            equiv, ranks, exact = [], [], []
            for p in tails:
                lam = spectrum(case, config.strong, p, config.tail_energy, n)
                th = np.zeros_like(lam)
                th[:config.strong] = config.signal / config.strong
                equiv.append(min_norm_risk_equivalent(lam, th, n, config.sigma))
                ranks.append(effective_ranks(lam, n))
                if case == "isotropic":  # finite-sample exact: BHX with every feature used
                    exact.append(float(bhx_risk(config.strong + p, n, config.signal, 0.0,
                                                config.sigma)) - config.sigma**2)
            out["cases"][case] = {"mean": mean, "sem": sem, "equivalent": equiv,
                                  "ranks": ranks, "exact": exact}
        # smooth theory curves for the figure
        dense = np.unique(np.round(n * np.geomspace(config.tail_min, config.tail_max, 60))
                          .astype(int))
        th = np.zeros(config.strong)
        th[:] = config.signal / config.strong
        out["dense_tails"] = dense.tolist()
        out["dense_spiked"] = [min_norm_risk_equivalent(
            spectrum("spiked", config.strong, int(p), config.tail_energy, n),
            np.concatenate([th, np.zeros(int(p))]), n, config.sigma)["excess"] for p in dense]
        out["dense_isotropic"] = (bhx_risk(config.strong + dense, n, config.signal, 0.0,
                                           config.sigma) - config.sigma**2).tolist()
        # the equivalent on an isotropic spectrum must be Hastie et al.'s limit: a cross-check
        gammas = np.asarray(out["dims"], float) / n
        hastie = asymptotic_excess_risk(gammas, config.signal, config.sigma)
        ours = np.array([e["excess"] for e in out["cases"]["isotropic"]["equivalent"]])
        out["isotropic_equivalent_vs_hastie"] = float(np.max(np.abs(ours - hastie) / hastie))
        return out

    # -- judging ---------------------------------------------------------------------------
    def claims(self, results: dict[str, Any], config: BenignOverfittingConfig) -> list[Claim]:
        sp, iso = results["cases"]["spiked"], results["cases"]["isotropic"]
        tails = np.asarray(results["tails"])
        sig = config.signal
        sp_mean, iso_mean = np.asarray(sp["mean"]), np.asarray(iso["mean"])
        sp_eq = np.array([e["excess"] for e in sp["equivalent"]])
        iso_exact = np.asarray(iso["exact"])
        claims = []
        first, last = sp_mean[0], sp_mean[-1]
        sp_sem, iso_sem = np.asarray(sp["sem"]), np.asarray(iso["sem"])
        last_est = mean_sem_interval(last, sp_sem[-1], config.trials)
        claims.append(Claim(
            text=("spiked covariance: the min-norm interpolator's excess risk goes to near zero "
                  "as the weak tail grows"),
            paper="benign overfitting (Bartlett et al. 2020): excess risk -> 0",
            ours=(f"{first:.3f} at p = {tails[0]} -> {last:.3f} at p = {tails[-1]} "
                  f"(|theta|^2 = {sig:g}, sigma^2 = {config.sigma**2:g}); floor sigma^2 k/n = "
                  f"{config.sigma**2 * config.strong / config.n:.3f}"),
            tolerance=(f"excess at the largest tail < {config.benign_level:g} |theta|^2 (its 95% "
                       f"interval) and < 1/3 of that at the smallest tail"),
            verdict=all_of([interval_at_most(last_est, config.benign_level * sig),
                            at_most(last, first / 3)]),
            interval=last_est.to_dict(), settle="more trials per point (--set trials=...)"))
        end_iso = iso_mean[-1]
        end_est = mean_sem_interval(end_iso, iso_sem[-1], config.trials)
        claims.append(Claim(
            text="isotropic covariance of the same dimension: overfitting is not benign",
            paper="excess risk -> |theta|^2 (null risk) as d/n grows",
            ours=f"{end_iso:.3f} at d = {results['dims'][-1]} (|theta|^2 = {sig:g})",
            tolerance=">= 0.8 |theta|^2 at the largest dimension (its 95% interval)",
            verdict=interval_at_least(end_est, 0.8 * sig), interval=end_est.to_dict(),
            settle="more trials per point (--set trials=...)"))
        rk_sp, rk_iso = sp["ranks"][-1], iso["ranks"][-1]
        n = config.n
        big_R = rk_sp["R_kstar"]  # NaN (None once saved) when no k* exists: the test fails
        n_over_R = n / big_R if big_R is not None and np.isfinite(big_R) else float("inf")
        claims.append(Claim(
            text="the effective-rank conditions separate the two cases",
            paper="benign iff r_0/n, k*/n, n/R_k* all small",
            ours=(f"spiked: r_0/n = {rk_sp['r0'] / n:.2f}, k*/n = {rk_sp['k_star'] / n:.2f}, "
                  f"n/R_k* = {n_over_R:.3f}; isotropic: r_0/n = "
                  f"{rk_iso['r0'] / n:.0f}"),
            tolerance=("spiked: r_0/n < 1, k*/n <= 0.1, n/R_k* <= 0.1; isotropic: r_0/n > 1 "
                       "(closed forms of the chosen spectra)"),
            verdict=all_of([at_most(rk_sp["r0"] / n, 1.0), at_most(rk_sp["k_star"] / n, 0.1),
                            at_most(n_over_R, 0.1),
                            verdict_at_least(rk_iso["r0"] / n, 1.0)]),
            # effective ranks of spectra we chose, in closed form: only a bug can fail this
            kind="property"))
        judged = tails >= 2 * config.n  # the equivalent is asymptotic; near d = n it is loose
        tol = config.tolerance
        # a Monte Carlo mean is only known to a few standard errors: allow 3 of them on top
        excess_sp = np.abs(sp_mean - sp_eq) - 3 * sp_sem
        excess_iso = np.abs(iso_mean - iso_exact) - 3 * iso_sem
        worst = max(float(np.max(excess_sp[judged] / sp_eq[judged])),
                    float(np.max(excess_iso[judged] / iso_exact[judged])))
        rel_sp = np.abs(sp_mean - sp_eq) / sp_eq
        rel_iso = np.abs(iso_mean - iso_exact) / iso_exact
        claims.append(Claim(
            text=("Monte Carlo matches theory: the deterministic equivalent (spiked) and the "
                  "Belkin-Hsu-Xu closed form (isotropic), where p >= 2n"),
            paper="exact (isotropic) / asymptotic (spiked) formulas",
            ours=(f"max relative difference {100 * float(rel_sp[judged].max()):.1f}% spiked, "
                  f"{100 * float(rel_iso[judged].max()):.1f}% isotropic "
                  f"({config.trials} trials per point)"),
            tolerance=(f"|simulation - theory| <= {100 * tol:.0f}% of theory + 3 s.e. "
                       f"(partly: {200 * tol:.0f}%)"),
            verdict=at_most(worst, tol, partly=2 * tol)))
        gap = results["isotropic_equivalent_vs_hastie"]
        claims.append(Claim(
            text="the deterministic equivalent reduces to Hastie et al.'s limit for Sigma = I",
            paper="sigma^2/(gamma-1) + r^2 (1 - 1/gamma) (efflab.theory)",
            ours=f"max relative difference {gap:.1e}",
            tolerance="<= 1e-8 (two formulas for one quantity: an identity)",
            verdict=at_most(gap, 1e-8), kind="property"))
        return claims

    # -- presentation ----------------------------------------------------------------------
    def figures(self, results: dict[str, Any], config: BenignOverfittingConfig, outdir: Path
                ) -> list[str]:
        n = config.n
        tails = np.asarray(results["tails"], float)
        dims = np.asarray(results["dims"], float)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        sp = results["cases"]["spiked"]
        dense = np.asarray(results["dense_tails"], float)
        plot_risk_curve(axes[0], tails / n, sp["mean"], sp["sem"], dense / n,
                        results["dense_spiked"], threshold=None,
                        label="simulation mean ± s.e.", theory_label="deterministic equivalent",
                        xlabel="weak tail size p / n", ylabel="excess risk")
        ranks = sp["ranks"]
        bound = [config.sigma**2 * (r["k_star"] / n + n / r["R_kstar"]) for r in ranks]
        axes[0].plot(tails / n, bound, ":", color="C3",
                     label="sigma^2 (k*/n + n/R_k*): effective-rank rate")
        axes[0].axhline(config.sigma**2 * config.strong / n, color="0.5", lw=0.8, ls="-.",
                        label="sigma^2 k/n")
        axes[0].set_xscale("log")
        axes[0].legend(fontsize=7, loc="upper right")
        axes[0].set_title(f"spiked: {config.strong} strong directions + p weak, "
                          f"tail variance {config.tail_energy:g} n")
        iso = results["cases"]["isotropic"]
        plot_risk_curve(axes[1], dims / n, iso["mean"], iso["sem"],
                        (config.strong + dense) / n, results["dense_isotropic"],
                        threshold=None, label="simulation mean ± s.e.", log=False,
                        theory_label="closed form (BHX)", xlabel="d / n", ylabel="excess risk")
        axes[1].axhline(config.signal, color="0.5", lw=0.8, ls="-.",
                        label="|theta|^2 (predict 0)")
        axes[1].set_xscale("log")
        axes[1].legend(fontsize=7, loc="upper right")
        axes[1].set_title("isotropic: Sigma = I of the same dimension")
        fig.suptitle(f"Min-norm interpolation, n = {n}, sigma = {config.sigma:g}: "
                     "benign vs not benign")
        return [save_figure(fig, outdir, "benign_overfitting.png")]

    def tables(self, results: dict[str, Any], config: BenignOverfittingConfig) -> list[Table]:
        n = config.n
        sp, iso = results["cases"]["spiked"], results["cases"]["isotropic"]
        rows = []
        for i, p in enumerate(results["tails"]):
            r = sp["ranks"][i]
            rows.append([p, f"{r['r0'] / n:.2f}", r["k_star"], f"{n / r['R_kstar']:.3f}",
                         f"{sp['mean'][i]:.4f} ± {sp['sem'][i]:.1g}",
                         f"{sp['equivalent'][i]['excess']:.4f}",
                         f"{iso['mean'][i]:.3f} ± {iso['sem'][i]:.1g}", f"{iso['exact'][i]:.3f}"])
        return [Table("Excess risk of the min-norm interpolator vs the weak tail size p",
                      ["p", "r_0/n (spiked)", "k*", "n/R_k*", "spiked: simulation",
                       "spiked: equivalent", "isotropic: simulation", "isotropic: BHX"], rows,
                      note=f"n = {n}, {config.strong} strong directions, sigma = "
                           f"{config.sigma:g}, |theta|^2 = {config.signal:g}; isotropic "
                           f"dimension d = {config.strong} + p")]
