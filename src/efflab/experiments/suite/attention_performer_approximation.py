"""Performer, Fig. 4 (arXiv 2009.14794): how well FAVOR+ approximates softmax attention.

The paper's setting: L = 4096 tokens, head_dim d = 16, the MSE of the attention *output*
against exact softmax attention as the number of random features m grows, 15 feature draws
per point; orthogonal vs iid features, positive vs trigonometric feature maps. Its reading:
orthogonal features beat iid ones, positive features beat trigonometric ones (which can be
far worse), and the error falls as m grows.

Inputs here (the paper does not pin them down): q, k with iid N(0, s^2) entries for two
scales s, v with N(0, 1), float64. The scale decides the picture: with s = 0.5 the kernel
values exp(x.y) are all near 1, the error falls like 1/m, and trigonometric features are in
fact *better* than positive ones; with s = 1 (|q / d^(1/4)| about 2) many kernel values are
small, trigonometric features blow up (the paper's point), but the positive estimator's
variance, growing like exp(2 |x + y|^2), keeps its MSE nearly flat in m.
Both profiles use the paper's L = 4096; the full one extends m to 1024.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from efflab.attention import draw_random_features, favor_attention, features_seed
from efflab.attention import softmax_attention_reference as exact_attention
from efflab.experiments import register
from efflab.experiments.base import Claim, Experiment, ExperimentConfig, RunContext, Table

#: (label, feature map, orthogonal, norm)
VARIANTS = (
    ("positive, orthogonal", "positive", True, "chi"),
    ("positive, iid", "positive", False, "chi"),
    ("trig, orthogonal", "trig", True, "chi"),
    ("trig, iid", "trig", False, "chi"),
    ("positive, orthogonal (fixed norms)", "positive", True, "fixed"),
)


@dataclass
class Config(ExperimentConfig):
    seq_len: int = 4096
    head_dim: int = 16
    features: tuple[int, ...] = (16, 32, 64, 128, 256)
    draws: int = 15
    input_stds: tuple[float, ...] = (0.5, 1.0)

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(features=(16, 32, 64, 128, 256, 512, 1024))


def attention_mse(q, k, v, exact, m: int, feature_map: str, orthogonal: bool, norm: str,
                  draws: int, seed: int) -> list[float]:
    """MSE of FAVOR's output against ``exact`` for ``draws`` independent feature draws."""
    errs = []
    for r in range(draws):
        gen = torch.Generator().manual_seed(features_seed(seed, 1000 * m + r))
        w = draw_random_features(m, q.shape[-1], orthogonal, norm, generator=gen)
        out = favor_attention(q, k, v, w, feature_map=feature_map)
        errs.append(((out - exact) ** 2).mean().item())
    return errs


@register
class PerformerApproximation(Experiment):
    name = "performer-approximation"
    paper = "Performer (arXiv 2009.14794), Fig. 4"
    checks = ("FAVOR+ output MSE vs number of features: orthogonal < iid, positive < trig, "
              "error falling with m")
    Config = Config
    budget_s = {"quick": 30.0, "full": 600.0}

    def run(self, config: Config, ctx: RunContext) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(config.seed)
        shape = (1, 1, config.seq_len, config.head_dim)
        q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
        by_std = {}
        for std in config.input_stds:
            qs, ks = std * q, std * k
            exact = exact_attention(qs, ks, v)
            curves = {}
            for label, fmap, orthogonal, norm in ctx.progress(VARIANTS, desc=f"std {std:g}"):
                points = []
                for m in config.features:
                    errs = attention_mse(qs, ks, v, exact, m, fmap, orthogonal, norm,
                                         config.draws, config.seed)
                    finite = [e for e in errs if math.isfinite(e)]
                    mean = sum(finite) / len(finite) if finite else float("inf")
                    sd = (math.sqrt(sum((e - mean) ** 2 for e in finite) / (len(finite) - 1))
                          if len(finite) > 1 else 0.0)
                    points.append({"m": m, "mse_mean": mean, "mse_std": sd,
                                   "nonfinite_draws": len(errs) - len(finite),
                                   "mse_draws": errs})
                curves[label] = points
            by_std[f"{std:g}"] = {"curves": curves, "output_variance": exact.var().item()}
        return {"by_input_std": by_std}

    def figures(self, results: dict[str, Any], config: Config, outdir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        stds = list(results["by_input_std"])
        fig, axes = plt.subplots(1, len(stds), figsize=(6 * len(stds), 4.5), squeeze=False)
        styles = {"positive": "-", "trig": "--"}
        for ax, std in zip(axes[0], stds):
            for label, points in results["by_input_std"][std]["curves"].items():
                pts = [p for p in points if math.isfinite(p["mse_mean"])]
                ax.errorbar([p["m"] for p in pts], [p["mse_mean"] for p in pts],
                            yerr=[p["mse_std"] / math.sqrt(config.draws) for p in pts],
                            marker="o", capsize=3, label=label,
                            linestyle=styles[label.split(",")[0]])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("random features m")
            ax.set_ylabel("MSE of attention output")
            ax.set_title(f"q, k ~ N(0, {std}^2): L={config.seq_len}, d={config.head_dim}, "
                         f"{config.draws} draws")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("FAVOR+ vs exact softmax attention (Performer Fig. 4 setting)")
        fig.tight_layout()
        name = "performer_approximation.png"
        fig.savefig(outdir / name, dpi=120)
        plt.close(fig)
        return [name]

    def tables(self, results: dict[str, Any], config: Config) -> list[Table]:
        tables = []
        for std, res in results["by_input_std"].items():
            labels = list(res["curves"])
            rows = [[m] + [f"{res['curves'][lab][i]['mse_mean']:.3g}" for lab in labels]
                    for i, m in enumerate(config.features)]
            tables.append(Table(
                f"FAVOR+ attention-output MSE, q and k ~ N(0, {std}^2) (mean over draws)",
                ["m"] + labels, rows,
                note=f"L={config.seq_len}, d={config.head_dim}, {config.draws} draws; variance "
                     f"of the exact output {res['output_variance']:.3g}"))
        return tables

    def claims(self, results: dict[str, Any], config: Config) -> list[Claim]:
        by_std = results["by_input_std"]

        def mse(std, label):
            return [p["mse_mean"] for p in by_std[std]["curves"][label]]

        def below(std, a, b):
            return [x < y for x, y in zip(mse(std, a), mse(std, b))]

        def verdict(share):
            return "reproduced" if share == 1 else "partly" if share >= 0.5 else "not reproduced"

        def describe(per_std):
            return "; ".join(f"std {s}: {sum(v)}/{len(v)} m values" for s, v in per_std.items())

        claims = []
        per = {s: below(s, "positive, orthogonal", "positive, iid") for s in by_std}
        share = sum(sum(v) for v in per.values()) / sum(len(v) for v in per.values())
        claims.append(Claim(
            "orthogonal random features give a lower attention MSE than iid ones",
            "Fig. 4: orthogonal below iid at every m", f"lower at {describe(per)}",
            "reproduced if lower at every (scale, m), partly if at >= half", verdict(share)))
        per = {s: below(s, "positive, orthogonal", "trig, orthogonal")
               + below(s, "positive, iid", "trig, iid") for s in by_std}
        share = sum(sum(v) for v in per.values()) / sum(len(v) for v in per.values())
        claims.append(Claim(
            "positive features give a lower attention MSE than trigonometric ones",
            "Fig. 4: positive below trig at every m (trig can be far worse)",
            f"lower at {describe(per)} (orthogonal and iid pairs)",
            "reproduced if lower at every (scale, m, kind), partly if at >= half", verdict(share)))
        slopes = {}
        for s in by_std:
            lx = [math.log(m) for m in config.features]
            ly = [math.log(y) for y in mse(s, "positive, orthogonal")]
            mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
            slopes[s] = (sum((a - mx) * (b - my) for a, b in zip(lx, ly))
                         / sum((a - mx) ** 2 for a in lx))
        good = [-1.5 <= v <= -0.5 for v in slopes.values()]
        claims.append(Claim(
            "the error falls as the number of features grows (variance ~ 1/m)",
            "Fig. 4: MSE decreasing in m; Lemma 2: variance O(1/m)",
            "log-log slope of MSE vs m (positive, orthogonal): "
            + ", ".join(f"std {s}: {v:.2f}" for s, v in slopes.items()),
            "reproduced if the slope is in [-1.5, -0.5] at every scale, partly at some",
            "reproduced" if all(good) else "partly" if any(good) else "not reproduced"))
        return claims
