"""Double descent of random features regression, ridgeless and with a small ridge.

"A Farewell to the Bias-Variance Tradeoff?" (arXiv 2109.02355), §7, after Mei & Montanari
(2019): fit the second layer of N random ReLU features (`efflab.theory.random_features`) by
min-norm least squares on n samples. As N grows the test error falls, rises to a peak at the
interpolation threshold N = n, and falls again for N > n; a small ridge flattens the peak.
Two tasks:

* ``teacher``: x ~ N(0, I_d), y = x . beta + sigma * eps with |beta| = 1; the test error is the
  mean squared error against the noiseless teacher on fresh inputs (the excess risk);
* ``mnist1d``: MNIST-1D as regression on one-hot targets (10 outputs, fitted independently),
  n training signals drawn from the standard training set; the test error is the squared error
  summed over the 10 outputs, averaged over the 1000 test signals. The class error of the
  arg-max is reported beside it.

Each trial (new first layer, new training draw) is one point of a resumable sweep
(`efflab.experiments.sweep`), so ``--jobs`` spreads trials over processes. Near N = n the
ridgeless error is heavy-tailed across trials, so curves and verdicts use the median over
trials (with the interquartile range drawn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from efflab.experiments import register
from efflab.experiments.base import Claim, Experiment, ExperimentConfig, RunContext, Table
from efflab.experiments.checks import (
    at_least,
    finite,
    in_range,
    nonnegative,
    one_of,
    param,
    positive,
)
from efflab.experiments.plotting import plot_risk_curve, save_figure
from efflab.experiments.sweep import limit_threads, sweep
from efflab.experiments.verdicts import all_of, at_most
from efflab.experiments.verdicts import at_least as verdict_at_least
from efflab.seeding import derive_seed
from efflab.theory.random_features import (
    ACTIVATIONS,
    activation_coefficients,
    fit_second_layer,
    mei_montanari_risk,
    random_features,
    sample_feature_weights,
)

TASKS = ("teacher", "mnist1d")


@dataclass
class DoubleDescentRandomFeaturesConfig(ExperimentConfig):
    n_teacher: int = param(200, "training samples, teacher task", check=at_least(20))
    d_teacher: int = param(100, "input dimension, teacher task (n << d^2: Mei-Montanari "
                                "regime)", check=at_least(1))
    sigma: float = param(0.5, "teacher label noise (standard deviation)", check=nonnegative)
    n_mnist1d: int = param(200, "training signals drawn from MNIST-1D's 4000",
                           check=in_range(20, 4000))
    n_test: int = param(1000, "teacher test inputs (MNIST-1D uses its 1000 test signals)",
                        check=at_least(1))
    ratio_min: float = param(0.1, "N / n from ratio_min ...",
                             check=in_range(0, 0.5, lo_open=True, hi_open=True))
    ratio_max: float = param(8.0, "... to ratio_max, geometric, plus N = n exactly",
                             check=at_least(2) & finite)
    grid_points: int = param(17, "feature counts on the grid", check=at_least(7))
    ridge: float = param(1e-3, "the small ridge (0 is always run too)", check=positive)
    activation: str = param("relu", "activation of the random features",
                            check=one_of(*ACTIVATIONS))
    trials: int = param(6, "teacher trials (new features and data each)", check=at_least(1))
    trials_mnist1d: int = param(2, "MNIST-1D trials", check=at_least(1))
    prominence: float = param(3.0, "ridgeless: error at N = n over error at the largest N must "
                                   "exceed this", check=positive)
    bump_ridge: float = param(1.1, "ridge: error at N = n over the best error at N < n must "
                                   "stay below this", check=positive)
    theory_tol: float = param(0.2, "teacher: relative gap to the asymptotic theory where "
                                   "judged (d = 100 is small: finite-d corrections are largest "
                                   "near N = n)", check=in_range(0, 1, lo_open=True))
    ridgeless_bar: float = param(1e-8, "the theory's ridgeless limit, lambda / mu_star^2 -> 0+",
                                 check=positive)

    @classmethod
    def full(cls) -> DoubleDescentRandomFeaturesConfig:
        # MNIST-1D stays at n = 400: its 10 outputs cost 10 SVDs per fit (see fit_second_layer)
        return cls(n_teacher=400, d_teacher=200, n_mnist1d=400, ratio_max=10.0,
                   grid_points=41, trials=40, trials_mnist1d=5, theory_tol=0.1)


def feature_grid(n: int, ratio_min: float, ratio_max: float, points: int) -> list[int]:
    """Feature counts N: geometric in N/n, always holding N = n."""
    ns = np.maximum(np.round(n * np.geomspace(ratio_min, ratio_max, points)).astype(int), 1)
    return sorted(set(ns.tolist()) | {n})


def _teacher_data(point: dict[str, Any], gen: torch.Generator):
    n, d, m = point["n"], point["d"], point["n_test"]
    beta = torch.randn(d, generator=gen, dtype=torch.float64)
    beta /= beta.norm()
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = x @ beta + point["sigma"] * torch.randn(n, generator=gen, dtype=torch.float64)
    xt = torch.randn(m, d, generator=gen, dtype=torch.float64)
    return x, y, xt, xt @ beta


def _mnist1d_data(point: dict[str, Any], gen: torch.Generator):
    from efflab.data.mnist1d import load_mnist1d

    split = load_mnist1d()
    idx = torch.randperm(split.x_train.shape[0], generator=gen)[:point["n"]]
    x, labels = split.x_train[idx].double(), split.y_train[idx]
    # standardize with training statistics so that <w, x>/sqrt(d) is of order one
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    one_hot = torch.nn.functional.one_hot
    return ((x - mean) / std, one_hot(labels, 10).double(),
            (split.x_test.double() - mean) / std, one_hot(split.y_test, 10).double())


def rf_trial(point: dict[str, Any]) -> dict[str, Any]:
    """One trial: new data draw and first layer; test/train error for every N and ridge."""
    with limit_threads(1):
        return _rf_trial(point)


def _rf_trial(point: dict[str, Any]) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(point["seed"])
    task = point["task"]
    x, y, xt, yt = (_teacher_data if task == "teacher" else _mnist1d_data)(point, gen)
    weights = sample_feature_weights(max(point["ns"]), x.shape[1], gen)
    out: dict[str, Any] = {"test": {}, "train": {}, "class_err": {}}
    for ridge in point["ridges"]:
        test, train, cls = [], [], []
        for n_feat in point["ns"]:
            # nested features: the first N rows of one draw, so the curve is smooth in N
            w = weights[:n_feat]
            feats = random_features(x, w, point["activation"])
            coef = fit_second_layer(feats, y, ridge=ridge)
            pred_t = random_features(xt, w, point["activation"]) @ coef
            sq = (pred_t - yt) ** 2
            test.append(float(sq.sum(-1).mean() if sq.dim() == 2 else sq.mean()))
            res = (feats @ coef - y) ** 2
            train.append(float(res.sum(-1).mean() if res.dim() == 2 else res.mean()))
            if task == "mnist1d":
                cls.append(float((pred_t.argmax(1) != yt.argmax(1)).double().mean()))
        key = repr(float(ridge))
        out["test"][key], out["train"][key] = test, train
        if cls:
            out["class_err"][key] = cls
    return out


def _points(cfg: DoubleDescentRandomFeaturesConfig) -> list[dict[str, Any]]:
    pts = []
    for task in TASKS:
        n = cfg.n_teacher if task == "teacher" else cfg.n_mnist1d
        trials = cfg.trials if task == "teacher" else cfg.trials_mnist1d
        for trial in range(trials):
            pts.append({"task": task, "trial": trial,
                        "seed": derive_seed(cfg.seed, "random-features", task, trial),
                        "n": n, "d": cfg.d_teacher, "n_test": cfg.n_test, "sigma": cfg.sigma,
                        "ns": feature_grid(n, cfg.ratio_min, cfg.ratio_max, cfg.grid_points),
                        "ridges": [0.0, cfg.ridge], "activation": cfg.activation})
    return pts


def _quartiles(rows: list[list[float]]) -> dict[str, list[float]]:
    a = np.asarray(rows, float)
    q1, med, q3 = np.quantile(a, [0.25, 0.5, 0.75], axis=0)
    return {"median": med.tolist(), "q1": q1.tolist(), "q3": q3.tolist(),
            "mean": a.mean(0).tolist()}


@register
class DoubleDescentRandomFeatures(Experiment):
    name = "double-descent-random-features"
    paper = "A Farewell to the Bias-Variance Tradeoff? (arXiv 2109.02355), §7 (Mei & Montanari)"
    checks = ("random ReLU features regression: ridgeless test error peaks at N = n and "
              "descends after it; a small ridge flattens the peak (teacher and MNIST-1D)")
    Config = DoubleDescentRandomFeaturesConfig
    budget_s = {"quick": 45.0, "full": 1800.0}
    smoke = {"n_teacher": 24, "d_teacher": 12, "n_mnist1d": 24, "n_test": 50,
             "grid_points": 7, "ratio_max": 3.0, "trials": 2, "trials_mnist1d": 1}
    smoke_slow = True  # generating MNIST-1D takes ~10 s

    def run(self, config: DoubleDescentRandomFeaturesConfig, ctx: RunContext) -> dict[str, Any]:
        points = _points(config)
        trials = sweep(rf_trial, points, ctx, "rf-v1", desc="random features trials")
        out: dict[str, Any] = {"tasks": {}}
        for task in TASKS:
            mine = [(p, r) for p, r in zip(points, trials) if p["task"] == task]
            first = mine[0][0]
            entry: dict[str, Any] = {"n": first["n"], "ns": first["ns"], "trials": len(mine),
                                     "ridges": {}}
            for ridge in first["ridges"]:
                key = repr(float(ridge))
                entry["ridges"][key] = {
                    "ridge": ridge,
                    "test": _quartiles([r["test"][key] for _, r in mine]),
                    "train": _quartiles([r["train"][key] for _, r in mine]),
                }
                if task == "mnist1d":
                    entry["ridges"][key]["class_err"] = _quartiles(
                        [r["class_err"][key] for _, r in mine])
            out["tasks"][task] = entry
        out["theory"] = self._theory(config)
        return out

    @staticmethod
    def _theory(config: DoubleDescentRandomFeaturesConfig) -> dict[str, Any]:
        """Mei & Montanari's asymptotic error for the teacher task, on the grid and densely.

        The teacher is linear (|beta|^2 = 1, no nonlinear part), noise variance sigma^2; this
        module's ``ridge`` is their lambda / d, so lambda_bar = ridge * d / mu_star^2.
        """
        coef = activation_coefficients(config.activation)
        zeta = coef["mu1"] / coef["mu_star"]
        n, d = config.n_teacher, config.d_teacher
        grid = feature_grid(n, config.ratio_min, config.ratio_max, config.grid_points)
        dense = np.geomspace(config.ratio_min, config.ratio_max, 120)
        dense = dense[np.abs(dense - 1) > 0.004]  # the ridgeless pole itself is not drawn
        out: dict[str, Any] = {"coefficients": coef, "dense_ratio": dense.tolist()}
        for ridge in (0.0, config.ridge):
            bar = ridge * d / coef["mu_star"] ** 2 if ridge > 0 else config.ridgeless_bar

            def risk(n_feat: float, bar: float = bar) -> float:
                return mei_montanari_risk(n_feat / d, n / d, bar, zeta, 1.0,
                                          config.sigma**2)["risk"]

            out[repr(float(ridge))] = {
                "grid": [risk(m) if ridge > 0 or m != n else float("inf") for m in grid],
                "dense": [risk(r * n) for r in dense]}
        return out

    # -- judging ---------------------------------------------------------------------------
    @staticmethod
    def _stats(entry: dict[str, Any], key: str) -> dict[str, float]:
        ns = np.asarray(entry["ns"])
        n = entry["n"]
        med = np.asarray(entry["ridges"][key]["test"]["median"])
        at_n = int(np.flatnonzero(ns == n)[0])
        peak = int(np.argmax(med))
        past = np.flatnonzero(ns >= 1.5 * n)
        return {"peak_N": int(ns[peak]), "peak_steps": abs(peak - at_n),
                "at_n": float(med[at_n]), "end": float(med[-1]), "N_end": int(ns[-1]),
                "at_1_5n": float(med[past[0]]), "N_1_5n": int(ns[past[0]]),
                "prominence": float(med[at_n] / med[-1]),
                "bump": float(med[at_n] / med[ns < n].min()),
                "train_over": float(np.max(np.asarray(
                    entry["ridges"][key]["train"]["median"])[ns >= n]))}

    def claims(self, results: dict[str, Any], config: DoubleDescentRandomFeaturesConfig
               ) -> list[Claim]:
        claims = []
        r0, rr = repr(0.0), repr(float(config.ridge))
        for task in TASKS:
            entry = results["tasks"][task]
            s0, sr = self._stats(entry, r0), self._stats(entry, rr)
            n = entry["n"]
            claims.append(Claim(
                text=f"{task}: the ridgeless test error peaks at the interpolation threshold",
                paper=f"peak at N = n = {n}",
                ours=f"median peak at N = {s0['peak_N']} ({s0['peak_steps']} grid steps away)",
                tolerance="within one grid step of N = n",
                verdict=at_most(s0["peak_steps"], 1)))
            descends = all_of([at_most(s0["end"], s0["at_1_5n"]),
                               verdict_at_least(s0["prominence"], config.prominence)])
            claims.append(Claim(
                text=f"{task}: past the threshold the ridgeless error descends again",
                paper="second descent for N > n",
                ours=(f"{s0['at_n']:.3g} at N = n -> {s0['at_1_5n']:.3g} at N = {s0['N_1_5n']} "
                      f"-> {s0['end']:.3g} at N = {s0['N_end']}; min-norm train error "
                      f"<= {s0['train_over']:.1e} for N >= n"),
                tolerance=(f"error at the largest N below that at N ~ 1.5 n, and error at "
                           f"N = n over error at the largest N > {config.prominence:g}"),
                verdict=descends))
            claims.append(Claim(
                text=f"{task}: a small ridge ({config.ridge:g}) flattens the peak",
                paper="no peak at N = n with a (well tuned) ridge",
                ours=(f"error at N = n / best error at N < n: {sr['bump']:.2f} with ridge, "
                      f"{s0['bump']:.3g} ridgeless"),
                tolerance=f"ridge ratio < {config.bump_ridge:g}",
                verdict=at_most(sr["bump"], config.bump_ridge)))
        claims.append(self._theory_claim(results, config))
        return claims

    @staticmethod
    def _theory_claim(results: dict[str, Any], config: DoubleDescentRandomFeaturesConfig
                      ) -> Claim:
        e = results["tasks"]["teacher"]
        ns = np.asarray(e["ns"])
        judged = np.abs(ns / e["n"] - 1) >= 0.25
        worst, where = 0.0, ""
        for key in (repr(0.0), repr(float(config.ridge))):
            sim = np.asarray(e["ridges"][key]["test"]["median"])[judged]
            th = np.asarray(results["theory"][key]["grid"], float)[judged]
            rel = np.abs(sim - th) / th
            i = int(np.argmax(rel))
            if rel[i] >= worst:
                worst = float(rel[i])
                where = (f"N = {int(ns[judged][i])}, ridge {float(key):g}: "
                         f"{sim[i]:.3g} vs {th[i]:.3g}")
        tol = config.theory_tol
        return Claim(
            text=(f"teacher: the median test error follows Mei & Montanari's asymptotic formula "
                  f"(d = {config.d_teacher}, n = {e['n']}), wherever |N/n - 1| >= 1/4"),
            paper="limit N, n, d -> infinity at fixed N/d, n/d (Mei & Montanari 2019, Thm 1)",
            ours=f"max relative gap {100 * worst:.1f}% ({where})",
            tolerance=f"<= {100 * tol:.0f}% (partly: <= {200 * tol:.0f}%)",
            verdict=at_most(worst, tol, partly=2 * tol))

    # -- presentation ----------------------------------------------------------------------
    def figures(self, results: dict[str, Any], config: DoubleDescentRandomFeaturesConfig,
                outdir: Path) -> list[str]:
        r0, rr = repr(0.0), repr(float(config.ridge))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, task in zip(axes, TASKS):
            e = results["tasks"][task]
            ratio = np.asarray(e["ns"], float) / e["n"]
            t0 = e["ridges"][r0]["test"]
            ax.fill_between(ratio, t0["q1"], t0["q3"], color="C1", alpha=0.2, lw=0,
                            label="ridgeless, interquartile range")
            th = results["theory"] if task == "teacher" else None
            plot_risk_curve(ax, ratio, t0["median"], label="ridgeless, median",
                            theory_x=None if th is None else th["dense_ratio"],
                            theory_y=None if th is None else th[r0]["dense"],
                            theory_label="ridgeless, Mei-Montanari limit",
                            xlabel="N / n (features / samples)",
                            ylabel="test MSE" + (" (vs noiseless teacher)" if task == "teacher"
                                                 else " (one-hot, summed over classes)"))
            tr = e["ridges"][rr]["test"]
            ax.plot(ratio, tr["median"], "s", ms=3, color="C2",
                    label=f"ridge {config.ridge:g}, median")
            if th is not None:
                ax.plot(th["dense_ratio"], th[rr]["dense"], "--", color="C2", lw=1.2,
                        label=f"ridge {config.ridge:g}, Mei-Montanari limit")
            else:
                ax.plot(ratio, tr["median"], "-", color="C2", lw=1)
            ax.set_xscale("log")
            ax.legend(fontsize=7, loc="upper right")
            ax.set_title(f"{task}: n = {e['n']}, {e['trials']} trials")
        fig.suptitle("Random ReLU features regression: test error vs N/n")
        names = [save_figure(fig, outdir, "rf_test_error.png")]

        e = results["tasks"]["mnist1d"]
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        ratio = np.asarray(e["ns"], float) / e["n"]
        for i, (key, lab) in enumerate(((r0, "ridgeless"), (rr, f"ridge {config.ridge:g}"))):
            ax.plot(ratio, 100 * np.asarray(e["ridges"][key]["class_err"]["median"]), "o-",
                    ms=3, color=f"C{2 * i + 1}", label=lab)
        ax.axvline(1.0, color="0.4", ls="--", lw=1, label="N = n")
        ax.set_xscale("log")
        ax.set_xlabel("N / n")
        ax.set_ylabel("test class error, % (median)")
        ax.set_title(f"MNIST-1D, arg-max of the one-hot regression (n = {e['n']})")
        ax.grid(alpha=0.25)
        ax.legend(fontsize=8)
        names.append(save_figure(fig, outdir, "rf_mnist1d_class_error.png"))
        return names

    def tables(self, results: dict[str, Any], config: DoubleDescentRandomFeaturesConfig
               ) -> list[Table]:
        r0, rr = repr(0.0), repr(float(config.ridge))
        tables = []
        for task in TASKS:
            e = results["tasks"][task]
            ns = np.asarray(e["ns"])
            show = sorted(set(np.linspace(0, len(ns) - 1, 9).round().astype(int).tolist())
                          | {int(np.flatnonzero(ns == e["n"])[0])})
            rows = []
            for i in show:
                row = [int(ns[i]), f"{ns[i] / e['n']:.2f}"]
                for key in (r0, rr):
                    t = e["ridges"][key]["test"]
                    row.append(f"{t['median'][i]:.4g} [{t['q1'][i]:.3g}, {t['q3'][i]:.3g}]")
                row.append(f"{e['ridges'][r0]['train']['median'][i]:.2g}")
                if task == "mnist1d":
                    row.append(f"{100 * e['ridges'][r0]['class_err']['median'][i]:.1f}%")
                rows.append(row)
            cols = ["N", "N/n", "test, ridgeless: median [IQR]",
                    f"test, ridge {config.ridge:g}: median [IQR]", "train, ridgeless"]
            if task == "mnist1d":
                cols.append("class error, ridgeless")
            tables.append(Table(f"{task}: random features test error", cols, rows,
                                note=f"median over {e['trials']} trials; n = {e['n']}"))
        return tables
