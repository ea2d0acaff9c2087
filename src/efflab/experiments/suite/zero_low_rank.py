"""The low-rank learning trajectory of ZerO (Zhao et al., TMLR 2022, Section 4.2 and the
authors' MNIST notebook): the numerical rank of W - I of a square hidden layer starts at 0
under ZerO and grows step by step, while under random initialization it is full from the
start. The stable rank ``|A|_F^2 / |A|_2^2`` of A = W - I is recorded beside it: the count
of singular values says how many directions training has touched, the stable rank how many
carry weight.

Two more measurements:

* **Theorem 1 (training degeneracy).** On a network that widens (40 -> ``wide_width``), a
  first layer started at the partial identity I* alone leaves ``wide_width - 40`` units at 0
  and no gradient ever reaches them, so the rank of W - I of the next (square) layer stays
  at most 40 however long one trains; ZerO's Hadamard first layer ``c H[:P, :Q]`` feeds
  every unit and the rank grows past 40.
* **Convolutions.** The stable rank of every 3x3 convolution kernel (as an (out, in x taps)
  matrix) of the ResNets of ``zero-vs-random`` over training on the digits: ZerO on the
  authors' augmented-skip ResNet (kernels start at 0) against Kaiming on the post-activation
  ResNet.

An MLP 40 -> width -> ... -> 10 on MNIST-1D, trained with SGD; after every optimizer step
(``efflab.train``'s callback) the singular values of W - I of the chosen square layers are
computed in float64 and counted above ``atol`` (the authors' notebook uses 1e-4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from efflab.experiments import Claim, Experiment, ExperimentConfig, RunContext, Table, register
from efflab.experiments.checks import Check, each, in_range, nonempty, one_of, param, positive
from efflab.experiments.sweep import sweep
from efflab.experiments.verdicts import at_least, at_most
from efflab.init import initialize_, is_power_of_two, partial_identity
from efflab.models import create_model

PAPER = "ZerO initialization (Zhao et al., TMLR 2022)"


#: the MLP has no residual branches: ZerO and the random schemes only
INITS = ("zero", "kaiming", "xavier")


@dataclass
class Config(ExperimentConfig):
    width: int = param(64, "hidden width (<= 2^ceil(log2 40): ZerO's first layer has no tied "
                       "rows)", check=positive)
    depth: int = param(3, "hidden layers; layers 2..depth are square (width x width)",
                       check=in_range(2, 64))
    inits: tuple[str, ...] = param(INITS, "initializations compared",
                                   check=nonempty & each(one_of(*INITS)))
    num_samples: int = param(5000, "MNIST-1D signals, 80% for training",
                             check=in_range(100, 10**6))
    steps: int = param(200, "SGD steps", check=positive)
    batch_size: int = param(128, "mini-batch size", check=positive)
    lr: float = param(0.1, "SGD learning rate (momentum 0.9)", check=positive)
    atol: float = param(1e-4, "singular values above this count towards the rank (the "
                        "authors' notebook)", check=positive)
    first_step_fraction: float = param(0.25, "the claim: ZerO's rank after one step at most "
                                       "this fraction of the width", check=in_range(0, 1))
    wide_width: int = param(128, "Theorem 1: hidden width of the widening MLP 40 -> width",
                            check=in_range(41, 4096))
    wide_steps: int = param(150, "Theorem 1: SGD steps", check=positive)
    conv_steps: int = param(120, "convolutions: SGD steps of each ResNet on the digits",
                            check=positive)
    conv_widths: tuple[int, ...] = param((16, 32), "convolutions: ResNet widths (powers of two)",
                                         check=nonempty & each(Check(is_power_of_two,
                                                                     "a power of two")))

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(depth=4, steps=3000)


def numerical_rank(w: torch.Tensor, atol: float) -> int:
    """Number of singular values of ``w`` above ``atol`` (float64 SVD). w: (P, Q)."""
    return int((torch.linalg.svdvals(w.detach().double()) > atol).sum())


def stable_rank(w: torch.Tensor) -> float:
    """``sum s_i^2 / max s_i^2`` over the singular values of w (0 for w = 0). w: (P, Q)."""
    s = torch.linalg.svdvals(w.detach().double())
    top = float(s.max()) if s.numel() else 0.0
    return 0.0 if top == 0.0 else float((s ** 2).sum()) / top ** 2


def residual_component(w: torch.Tensor) -> torch.Tensor:
    """W - I for a square W, W itself otherwise (what ZerO starts at 0 or at I*)."""
    if w.shape[0] == w.shape[1]:
        return w - torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    return w


def square_layers(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and m.weight.shape[0] == m.weight.shape[1]}


def train_point(point: dict[str, Any]) -> dict[str, Any]:
    """Train one MLP; return the rank of W - I of each square layer at steps 0..steps."""
    from efflab.data.mnist1d import load_mnist1d
    from efflab.train import TrainConfig, train

    data = load_mnist1d(point["num_samples"])
    model = create_model("mlp", in_features=40, width=point["width"], depth=point["depth"],
                         num_classes=10)
    initialize_(model, point["init"], seed=point["seed"])
    if point.get("first_layer") == "partial_identity":
        # Theorem 1's degenerate start: I* instead of Algorithm 1's Hadamard
        w = model.net[0].weight
        with torch.no_grad():
            w.copy_(partial_identity(w.shape[0], w.shape[1], dtype=w.dtype))
    layers = square_layers(model)
    if not layers:
        raise ValueError(f"depth={point['depth']} gives no square hidden layer (need >= 2)")
    atol = point["atol"]
    ranks: dict[str, list[int]] = {name: [] for name in layers}
    stable: dict[str, list[float]] = {name: [] for name in layers}

    def record(step: int, _model: nn.Module) -> None:
        for name, m in layers.items():
            a = residual_component(m.weight)
            ranks[name].append(numerical_rank(a, atol))
            stable[name].append(stable_rank(a))

    record(0, model)

    cfg = TrainConfig(steps=point["steps"], batch_size=point["batch_size"], lr=point["lr"],
                      momentum=0.9, seed=point["seed"], device=point["device"],
                      log_grad_norm=False)
    result = train(model, (data.x_train, data.y_train), cfg,
                   eval_data=(data.x_test, data.y_test), callback=record)
    return {"ranks": ranks, "stable_ranks": stable, "test_acc": result.final["test_acc"],
            "train_loss": result.final["train_loss"]}


def conv_point(point: dict[str, Any]) -> dict[str, Any]:
    """Train one digits ResNet; return the mean stable rank of its 3x3 kernels every
    ``record_every`` steps (step 0 first)."""
    from efflab.data.digits import load_digits
    from efflab.train import TrainConfig, train

    data = load_digits(size=8)
    widths = list(point["widths"])
    model = create_model(point["model"], blocks=[1] * len(widths), widths=widths,
                         in_channels=1, num_classes=10, dim=2)
    initialize_(model, point["init"], seed=point["seed"])
    kernels = [m for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.in_channels > 1]
    steps: list[int] = []
    means: list[float] = []

    def record(step: int, _model: nn.Module) -> None:
        if step % point["record_every"] == 0 or step == point["steps"]:
            steps.append(step)
            means.append(sum(stable_rank(k.weight.flatten(1)) for k in kernels) / len(kernels))

    record(0, model)
    cfg = TrainConfig(steps=point["steps"], batch_size=64, lr=0.05, momentum=0.9,
                      seed=point["seed"], device=point["device"], log_grad_norm=False)
    result = train(model, (data.x_train, data.y_train), cfg,
                   eval_data=(data.x_test, data.y_test), callback=record)
    return {"steps": steps, "stable_rank": means, "kernels": len(kernels),
            "test_acc": result.final["test_acc"]}


def first_step_reaching(ranks: list[int], level: int) -> int | None:
    """The first step whose rank is >= ``level`` (None if never)."""
    return next((s for s, r in enumerate(ranks) if r >= level), None)


@register
class ZeroLowRank(Experiment):
    name = "zero-low-rank"
    paper = PAPER
    checks = ("under ZerO the rank of W - I grows gradually from 0 during training; under "
              "random initialization it is full from the first step")
    Config = Config
    budget_s = {"quick": 25.0, "full": 1800.0}
    #: seconds-long overrides for the end-to-end test of every experiment
    smoke = {"width": 16, "depth": 2, "steps": 4, "num_samples": 300, "inits": ("zero", "kaiming"),
             "wide_width": 48, "wide_steps": 3, "conv_steps": 2, "conv_widths": (4, 8)}

    def run(self, config: Config, ctx: RunContext) -> dict[str, Any]:
        c = config
        common = dict(seed=c.seed, batch_size=c.batch_size, lr=c.lr, atol=c.atol,
                      num_samples=c.num_samples, device=str(ctx.device))
        points = [dict(common, init=i, width=c.width, depth=c.depth, steps=c.steps,
                       first_layer="algorithm1") for i in c.inits]
        wide = [dict(common, init="zero", width=c.wide_width, depth=2, steps=c.wide_steps,
                     first_layer=f) for f in ("partial_identity", "algorithm1")]
        results = sweep(train_point, points + wide, ctx, "zero-low-rank-v3",
                        desc="zero-low-rank")
        convs = [dict(model=m, init=i, widths=list(c.conv_widths), steps=c.conv_steps,
                      record_every=max(1, c.conv_steps // 20), seed=c.seed,
                      device=str(ctx.device))
                 for m, i in (("augskip_resnet", "zero"), ("resnet", "kaiming"))]
        conv_results = sweep(conv_point, convs, ctx, "zero-low-rank-conv-v1",
                             desc="zero-low-rank convolutions")
        return {"width": c.width,
                "runs": {p["init"]: r for p, r in zip(points, results)},
                "theorem1": {"width": c.wide_width,
                             **{p["first_layer"]: r for p, r in zip(wide, results[len(points):])}},
                "conv": {p["init"]: r for p, r in zip(convs, conv_results)}}

    def tables(self, results: dict[str, Any], config: Config) -> list[Table]:
        w = results["width"]
        rows = []
        for init, run in results["runs"].items():
            for layer, ranks in run["ranks"].items():
                half = first_step_reaching(ranks, w // 2)
                rows.append([init, layer, ranks[0], ranks[1], ranks[min(10, len(ranks) - 1)],
                             ranks[-1], "never" if half is None else half,
                             f"{run['stable_ranks'][layer][-1]:.2f}", f"{run['test_acc']:.3f}"])
        return [Table(f"Rank of W - I (width {w}, singular values > {config.atol:g})",
                      ["init", "layer", "step 0", "step 1", "step 10", "last step",
                       "first step at half width", "stable rank, last step", "test acc"],
                      rows)]

    def figures(self, results: dict[str, Any], config: Config, outdir: Path) -> list[str]:
        from efflab.experiments.plotting import plt, save_figure

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        styles = ["-", "--", ":", "-."]
        for ax, key, ylabel in ((axes[0], "ranks", f"rank of W - I (s > {config.atol:g})"),
                                (axes[1], "stable_ranks", "stable rank of W - I")):
            for k, (init, run) in enumerate(results["runs"].items()):
                for j, (layer, values) in enumerate(run[key].items()):
                    ax.plot(range(len(values)), values, styles[j % len(styles)],
                            color=f"C{k}", label=f"{init}, {layer}")
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(ylabel)
        axes[0].axhline(results["width"], color="0.5", lw=0.8)
        axes[1].set_yscale("symlog", linthresh=1)
        axes[0].legend(fontsize=7)
        fig.suptitle("Learning trajectory of the residual component W - I")
        names = [save_figure(fig, outdir, "zero_low_rank.png")]
        t1, conv = results.get("theorem1"), results.get("conv")
        if t1 and conv:
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
            for k, (key, label) in enumerate((("partial_identity", "partial identity I*"),
                                              ("algorithm1", "ZerO (Hadamard)"))):
                for values in t1[key]["ranks"].values():
                    axes[0].plot(range(len(values)), values, color=f"C{k}", label=label)
            axes[0].axhline(40, color="0.5", ls="--", lw=0.8, label="input dimension 40")
            axes[0].set_xlabel("optimizer step")
            axes[0].set_ylabel("rank of W - I")
            axes[0].set_title(f"Theorem 1: MLP 40 -> {t1['width']} -> {t1['width']} -> 10")
            axes[0].legend(fontsize=7)
            for k, (init, run) in enumerate(conv.items()):
                axes[1].plot(run["steps"], run["stable_rank"], "o-", ms=3, color=f"C{k}",
                             label=f"{init} ({run['kernels']} kernels)")
            axes[1].set_xlabel("optimizer step")
            axes[1].set_ylabel("mean stable rank of 3x3 kernels")
            axes[1].set_title("ResNets on the 8x8 digits")
            axes[1].legend(fontsize=7)
            names.append(save_figure(fig, outdir, "zero_low_rank_theorem1_conv.png"))
        return names

    def claims(self, results: dict[str, Any], config: Config) -> list[Claim]:
        w = results["width"]
        runs = results["runs"]
        claims = []
        if "zero" in runs:
            zr = runs["zero"]["ranks"]
            start = max(r[0] for r in zr.values())
            first = max(r[1] for r in zr.values())
            halves = [first_step_reaching(r, w // 2) for r in zr.values()]
            earliest = min(math.inf if h is None else h for h in halves)
            limit = config.first_step_fraction * w
            half_txt = ", ".join("never" if h is None else str(h) for h in halves)
            claims.append(Claim(
                text="Under ZerO W - I starts at 0 (every square layer is the identity)",
                paper="ZerO initializes square layers as identities",
                ours=f"ZerO rank of W - I at step 0: {start}",
                tolerance="exactly 0", verdict=at_most(start, 0), kind="property"))
            claims.append(Claim(
                text="Under ZerO the rank of W - I grows gradually: low after the first step",
                paper="rank of W - I grows step by step from 0 (qualitative)",
                ours=f"ZerO rank after step 1: {first} of {w}",
                tolerance=f"<= {config.first_step_fraction:g} x width = {limit:g}",
                verdict=at_most(first, limit)))
            claims.append(Claim(
                text="Under ZerO the rank of W - I reaches half the width only after several "
                     "steps",
                paper="rank of W - I grows step by step from 0 (qualitative)",
                ours=f"first step at half width ({w // 2}): {half_txt}",
                tolerance="not before step 2", verdict=at_least(earliest, 2)))
        random = {i: r for i, r in runs.items() if i != "zero"}
        if random:
            starts = {i: min(v[0] for v in r["ranks"].values()) for i, r in random.items()}
            claims.append(Claim(
                text="Under random initialization W - I is full rank from the start",
                paper="random initialization: full rank throughout (qualitative)",
                ours="; ".join(f"{i}: rank {s} of {w} at step 0" for i, s in starts.items()),
                tolerance="exactly full rank at step 0",
                verdict=at_least(min(starts.values()), w), kind="property"))
        if "zero" in runs and random:
            def last(run):
                return max(v[-1] for v in run["stable_ranks"].values())

            z = last(runs["zero"])
            lowest = min(last(r) for r in random.values())
            claims.append(Claim(
                text="ZerO's learned W - I stays low rank (few directions carry the weight)",
                paper="ZerO's trajectory stays low rank (qualitative)",
                ours=f"stable rank of W - I after {config.steps} steps: ZerO {z:.2f}, "
                     f"random {lowest:.2f} (lowest of {', '.join(random)})",
                tolerance="ZerO's at most half the random inits' lowest",
                verdict=at_most(z, 0.5 * lowest)))
        t1 = results.get("theorem1")
        if t1:
            def top(run):
                return max(max(v) for v in run["ranks"].values())

            pi, had = top(t1["partial_identity"]), top(t1["algorithm1"])
            claims.append(Claim(
                text=f"Theorem 1: on a widening network (40 -> {t1['width']}) a partial-identity "
                     "start stays below full rank",
                paper="partial identity alone: rank bounded by the input dimension "
                      "(Theorem 1)",
                ours=f"largest rank of the square layer's W - I over training: {pi} of "
                     f"{t1['width']}",
                tolerance="at most 40 (the input dimension) at every step",
                verdict=at_most(pi, 40)))
            claims.append(Claim(
                text="Theorem 1: ZerO's Hadamard start on the same network is not stuck",
                paper="the Hadamard transform breaks the degeneracy (Section 3)",
                ours=f"largest rank of W - I over training: {had} of {t1['width']}",
                tolerance="above 40", verdict=at_least(had, 41)))
        conv = results.get("conv")
        if conv and {"zero", "kaiming"} <= set(conv):
            z, k = conv["zero"]["stable_rank"][-1], conv["kaiming"]["stable_rank"][-1]
            claims.append(Claim(
                text="ResNet: ZerO's convolution kernels stay lower in stable rank than "
                     "Kaiming's",
                paper="ZerO's trajectory stays low rank (qualitative)",
                ours=f"mean stable rank of the 3x3 kernels after {config.conv_steps} steps: "
                     f"ZerO (augmented-skip ResNet) {z:.2f}, Kaiming (ResNet) {k:.2f}",
                tolerance="ZerO's at most half Kaiming's", verdict=at_most(z, 0.5 * k)))
        return claims


__all__ = ["INITS", "Config", "conv_point", "ZeroLowRank", "first_step_reaching", "numerical_rank",
           "residual_component", "square_layers", "train_point"]
