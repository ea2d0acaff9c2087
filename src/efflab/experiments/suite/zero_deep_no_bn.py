"""Deep residual networks without batch norm (Zhao et al., TMLR 2022, Section 5: ZerO trains
deep ResNets without normalization, where plain random initialization needs batch norm).

``depth`` blocks in two stages (widths ``width`` and ``2 width``: the widening shortcut's
Hadamard transform is what separates the channels that ZerO's stem fills with the same
signal from a one-channel image), no batch norm anywhere, on scikit-learn's 8x8 digits, trained
for a fixed number of SGD steps with the same optimizer and schedule for every init, judged on
test accuracy:

* ``zero``: ZerO on the authors' augmented-skip ResNet (``augskip_resnet``, no BN);
* ``kaiming``, ``xavier``: efflab's post-activation ResNet, no BN (the plain random inits);
* ``fixup``, ``rezero``: the same ResNet with Fixup's scalars or a residual gate: the fair
  baselines, since they too were designed to train deep networks without normalization.

Each (depth, init, seed) is one sweep point; the figure is test accuracy against depth, with
diverged (non-finite loss) runs marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efflab.experiments import Claim, Experiment, ExperimentConfig, RunContext, Table, register
from efflab.experiments.checks import Check, each, in_range, nonempty, one_of, param, positive
from efflab.experiments.sweep import sweep
from efflab.experiments.verdicts import at_least, at_most
from efflab.init import initialize_, is_power_of_two
from efflab.models import create_model
from efflab.seeding import derive_seed

PAPER = "ZerO initialization (Zhao et al., TMLR 2022)"

#: init -> (registered model, model options, initializer)
SETUPS: dict[str, tuple[str, dict[str, Any], str]] = {
    "zero": ("augskip_resnet", {}, "zero"),
    "kaiming": ("resnet", {}, "kaiming"),
    "xavier": ("resnet", {}, "xavier"),
    "fixup": ("resnet", {"residual": "fixup"}, "fixup"),
    "rezero": ("resnet", {"residual": "gate"}, "rezero"),
}
CHANCE = 0.1   # ten balanced classes


@dataclass
class Config(ExperimentConfig):
    depths: tuple[int, ...] = param((2, 8, 16), "residual blocks (split over two stages)",
                                    check=nonempty & each(in_range(2, 4096)))
    width: int = param(8, "first stage's channels (a power of two: the Hadamard transforms)",
                       check=Check(is_power_of_two, "a power of two"))
    inits: tuple[str, ...] = param(tuple(SETUPS), "initializations compared",
                                   check=nonempty & each(one_of(*SETUPS)))
    seeds: tuple[int, ...] = param((0,), "training seeds",
                                   check=nonempty & each(in_range(0, 2**31)))
    steps: int = param(100, "SGD steps of every run", check=positive)
    batch_size: int = param(64, "mini-batch size", check=positive)
    lr: float = param(0.1, "SGD learning rate (momentum 0.9, cosine)", check=positive)
    warmup_steps: int = param(10, "linear warmup steps", check=in_range(0, 10**9))
    threshold: float = param(0.5, "test accuracy above which a run 'trains' (chance 0.1)",
                             check=in_range(0, 1, lo_open=True, hi_open=True))

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(depths=(2, 8, 32, 128, 512), width=32, seeds=(0, 1, 2), steps=2000,
                   warmup_steps=200)


def train_point(point: dict[str, Any]) -> dict[str, Any]:
    """One network without batch norm, initialized by ``point["init"]`` and trained."""
    from efflab.data.digits import load_digits
    from efflab.train import TrainConfig, train

    data = load_digits(size=8)
    name, extra, init = SETUPS[point["init"]]
    half = point["depth"] // 2
    model = create_model(name, blocks=[half, point["depth"] - half],
                         widths=[point["width"], 2 * point["width"]], in_channels=1,
                         num_classes=10, dim=2, batch_norm=False, **extra)
    initialize_(model, init, seed=point["init_seed"])
    cfg = TrainConfig(steps=point["steps"], batch_size=point["batch_size"], lr=point["lr"],
                      momentum=0.9, warmup_steps=point["warmup_steps"], schedule="cosine",
                      seed=point["order_seed"], device=point["device"], log_grad_norm=False)
    result = train(model, (data.x_train, data.y_train), cfg,
                   eval_data=(data.x_test, data.y_test))
    loss = _finite_or_none(result.final["train_loss"])
    # a diverged network's logits are NaN: its predictions mean nothing, count it at chance
    acc = result.final["test_acc"] if loss is not None else CHANCE
    return {"final_train_loss": loss, "test_acc": acc, "wall_s": result.wall_s}


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@register
class ZeroDeepNoBN(Experiment):
    name = "zero-deep-no-bn"
    paper = PAPER
    checks = ("ZerO trains residual networks without batch norm at depths where plain random "
              "initialization fails; Fixup and ReZero shown as the fair baselines")
    Config = Config
    budget_s = {"quick": 60.0, "full": 6 * 3600.0}
    #: seconds-long overrides for the end-to-end test of every experiment
    smoke = {"depths": (2, 4), "width": 4, "steps": 2, "warmup_steps": 0,
             "inits": ("zero", "kaiming", "fixup", "rezero")}

    def run(self, config: Config, ctx: RunContext) -> dict[str, Any]:
        c = config
        points = [dict(depth=d, init=i, seed=s, width=c.width, steps=c.steps,
                       batch_size=c.batch_size, lr=c.lr, warmup_steps=c.warmup_steps,
                       device=str(ctx.device),
                       order_seed=derive_seed(c.seed, "zero-deep-no-bn", d, s),
                       init_seed=derive_seed(c.seed, "zero-deep-no-bn", d, i, s))
                  for d in c.depths for i in c.inits for s in c.seeds]
        results = sweep(train_point, points, ctx, "zero-deep-no-bn-v5", desc="zero-deep-no-bn")
        runs = [{"depth": p["depth"], "init": p["init"], "seed": p["seed"], **r}
                for p, r in zip(points, results)]
        return {"runs": runs}

    @staticmethod
    def _accs(results, init, depth) -> list[float]:
        return [r["test_acc"] for r in results["runs"] if r["init"] == init
                and r["depth"] == depth]

    def tables(self, results: dict[str, Any], config: Config) -> list[Table]:
        rows = []
        for r in results["runs"]:
            loss = r["final_train_loss"]
            rows.append([r["depth"], r["init"], r["seed"],
                         "diverged (non-finite)" if loss is None else f"{loss:.3f}",
                         f"{r['test_acc']:.3f}"])
        return [Table("Residual networks without batch norm on the 8x8 digits",
                      ["blocks", "init", "seed", "final train loss", "test acc"], rows,
                      note=f"{config.steps} SGD steps, lr {config.lr:g}, warmup "
                           f"{config.warmup_steps}, width {config.width}; a diverged run "
                           "counts at chance (0.1)")]

    def figures(self, results: dict[str, Any], config: Config, outdir: Path) -> list[str]:
        from efflab.experiments.plotting import plt, save_figure

        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        for k, init in enumerate(config.inits):
            xs, ys, bad = [], [], []
            for r in results["runs"]:
                if r["init"] != init:
                    continue
                (bad if r["final_train_loss"] is None else xs).append(r["depth"])
                if r["final_train_loss"] is not None:
                    ys.append(r["test_acc"])
            ax.plot(xs, ys, "o-", color=f"C{k}", label=init)
            if bad:
                ax.plot(bad, [CHANCE] * len(bad), "x", color=f"C{k}", ms=9, mew=2,
                        label=f"{init}: diverged")
        ax.axhline(CHANCE, color="0.4", ls="--", lw=1, label="chance")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1)
        ax.set_xlabel("residual blocks (no batch norm)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"ResNets without batch norm, {config.steps} SGD steps")
        ax.legend(fontsize=7)
        return [save_figure(fig, outdir, "zero_deep_no_bn.png")]

    def claims(self, results: dict[str, Any], config: Config) -> list[Claim]:
        deepest = max(config.depths)
        t = config.threshold
        claims = []
        zero = {d: self._accs(results, "zero", d) for d in config.depths}
        if zero[deepest]:
            claims.append(Claim(
                text="ZerO trains a ResNet without batch norm at every depth tried",
                paper="ZerO trains very deep ResNets without batch norm (qualitative)",
                ours="ZerO test accuracy by blocks: " + ", ".join(
                    f"{d}: {'/'.join(f'{a:.3f}' for a in accs)}" for d, accs in zero.items()),
                tolerance=f"every run's test accuracy >= {t:g} (chance 0.1)",
                verdict=at_least(min(a for accs in zero.values() for a in accs), t)))
        kaiming = self._accs(results, "kaiming", deepest)
        if kaiming:
            claims.append(Claim(
                text=f"At {deepest} blocks without batch norm plain Kaiming initialization "
                     "fails to train in the same budget",
                paper="random initialization needs normalization at depth (qualitative)",
                ours=f"Kaiming test accuracy at {deepest} blocks: "
                     + "/".join(f"{a:.3f}" for a in kaiming),
                tolerance=f"every run's test accuracy < {t:g} (or diverged)",
                verdict=at_most(max(kaiming), t - 1e-12)))
        return claims


__all__ = ["CHANCE", "Config", "SETUPS", "ZeroDeepNoBN", "train_point"]
