"""Very deep residual networks without batch norm (Zhao et al., TMLR 2022, Section 5: ZerO
trains deep ResNets without normalization, where random initialization needs batch norm).

efflab's 1-D ResNet with ``batch_norm=False``, one stage of ``depth`` blocks, trained with the
same optimizer and schedule under ZerO, Kaiming and Xavier initialization. Each (depth, init,
seed) is one sweep point; the figure is the final training loss against depth, with
non-finite (diverged) runs marked.

The MNIST-1D signal is given as 40 channels of length 1, which makes the ResNet a residual
MLP (only the centre taps of the 3-tap kernels ever see data). This isolates depth from a
separate limit of ZerO that ``zero-vs-random`` shows: on a 1-channel signal Algorithm 2's
stem copies the one channel into every channel (column 0 of H is all ones), and the copies
are never told apart, so a deep ZerO network of 1-channel input is effectively 1 wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efflab.experiments import Claim, Experiment, ExperimentConfig, RunContext, Table, register
from efflab.experiments.sweep import sweep
from efflab.init import INITS, initialize_
from efflab.models import create_model

PAPER = "ZerO initialization (Zhao et al., TMLR 2022)"
CHANCE = math.log(10.0)   # cross entropy of a uniform guess over MNIST-1D's 10 classes


@dataclass
class Config(ExperimentConfig):
    depths: tuple[int, ...] = (2, 8, 32, 128)   # residual blocks
    width: int = 64                             # channels (40 inputs -> 64: Hadamard stem)
    inits: tuple[str, ...] = INITS
    seeds: tuple[int, ...] = (0,)
    num_samples: int = 2000                     # MNIST-1D, 80% for training
    steps: int = 60
    batch_size: int = 64
    lr: float = 0.02
    warmup_steps: int = 15
    # a run "trains" when its final training loss is this far below chance (ln 10)
    margin: float = 0.05

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(depths=(2, 8, 32, 128, 512), width=128, seeds=(0, 1, 2),
                   num_samples=5000, steps=3000, batch_size=128, lr=0.02, warmup_steps=300)


def train_point(point: dict[str, Any]) -> dict[str, Any]:
    """One deep network without batch norm, initialized by ``point["init"]`` and trained."""
    from efflab.data.mnist1d import load_mnist1d
    from efflab.train import TrainConfig, train

    data = load_mnist1d(point["num_samples"])
    model = create_model("resnet", blocks=[point["depth"]], widths=[point["width"]],
                         in_channels=40, num_classes=10, dim=1, batch_norm=False)
    initialize_(model, point["init"], seed=point["seed"])
    cfg = TrainConfig(steps=point["steps"], batch_size=point["batch_size"], lr=point["lr"],
                      momentum=0.9, warmup_steps=point["warmup_steps"], seed=point["seed"],
                      device=point["device"], log_grad_norm=False)
    # (n, 40) -> (n, 40 channels, length 1): see the module docstring
    result = train(model, (data.x_train[:, :, None], data.y_train), cfg,
                   eval_data=(data.x_test[:, :, None], data.y_test))
    losses = [h["train_loss"] for h in result.history]
    return {"final_train_loss": _finite_or_none(result.final["train_loss"]),
            "test_acc": result.final["test_acc"],
            "first_batch_loss": _finite_or_none(losses[0]),
            "batch_losses": [_finite_or_none(v) for v in losses],
            "wall_s": result.wall_s}


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _trains(loss: float | None, margin: float) -> bool:
    return loss is not None and loss < CHANCE - margin


@register
class ZeroDeepNoBN(Experiment):
    name = "zero-deep-no-bn"
    paper = PAPER
    checks = ("ZerO trains residual networks without batch norm at depths where Kaiming and "
              "Xavier initialization diverge or fail")
    Config = Config
    budget_s = {"quick": 90.0, "full": 4 * 3600.0}

    def run(self, config: Config, ctx: RunContext) -> dict[str, Any]:
        c = config
        if any(i not in INITS for i in c.inits):
            raise ValueError(f"inits must be drawn from {INITS}, got {list(c.inits)}")
        bad = [d for d in c.depths if d < 1]
        if bad or c.width < 1:
            raise ValueError(f"depths and width must be >= 1, got depths={list(c.depths)}, "
                             f"width={c.width}")
        points = [dict(depth=d, init=i, seed=s, width=c.width, steps=c.steps,
                       batch_size=c.batch_size, lr=c.lr, warmup_steps=c.warmup_steps,
                       num_samples=c.num_samples, device=str(ctx.device))
                  for d in c.depths for i in c.inits for s in c.seeds]
        results = sweep(train_point, points, ctx, "zero-deep-no-bn-v2", desc="zero-deep-no-bn")
        runs = [{"depth": p["depth"], "init": p["init"], "seed": p["seed"], **r}
                for p, r in zip(points, results)]
        return {"runs": runs, "chance_loss": CHANCE}

    def _by(self, results, init, depth) -> list[dict[str, Any]]:
        return [r for r in results["runs"] if r["init"] == init and r["depth"] == depth]

    def tables(self, results: dict[str, Any], config: Config) -> list[Table]:
        rows = []
        for r in results["runs"]:
            loss = r["final_train_loss"]
            rows.append([r["depth"], r["init"], r["seed"],
                         "diverged (non-finite)" if loss is None else f"{loss:.3f}",
                         f"{r['test_acc']:.3f}"])
        return [Table("Final training loss of residual networks without batch norm",
                      ["blocks", "init", "seed", "final train loss", "test acc"], rows,
                      note=f"chance = ln 10 = {CHANCE:.3f}; {config.steps} steps of SGD, "
                           f"lr {config.lr:g}, warmup {config.warmup_steps}")]

    def figures(self, results: dict[str, Any], config: Config, outdir: Path) -> list[str]:
        from efflab.experiments.plotting import plt, save_figure

        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        top = CHANCE + 0.6
        for k, init in enumerate(config.inits):
            xs, ys, bad = [], [], []
            for d in config.depths:
                for r in self._by(results, init, d):
                    loss = r["final_train_loss"]
                    if loss is None or loss > top:
                        bad.append(d)
                    else:
                        xs.append(d)
                        ys.append(loss)
            ax.plot(xs, ys, "o-", color=f"C{k}", label=init)
            if bad:
                ax.plot(bad, [top] * len(bad), "x", color=f"C{k}", ms=9, mew=2,
                        label=f"{init}: diverged / off the chart")
        ax.axhline(CHANCE, color="0.4", ls="--", lw=1, label="chance (ln 10)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("residual blocks (no batch norm)")
        ax.set_ylabel("final training loss")
        ax.set_title(f"Deep ResNets without batch norm, {config.steps} SGD steps")
        ax.legend(fontsize=7)
        return [save_figure(fig, outdir, "zero_deep_no_bn.png")]

    def claims(self, results: dict[str, Any], config: Config) -> list[Claim]:
        deepest = max(config.depths)
        m = config.margin
        zero = self._by(results, "zero", deepest)
        zero_ok = bool(zero) and all(_trains(r["final_train_loss"], m) for r in zero)
        failed = {i: all(not _trains(r["final_train_loss"], m)
                         for r in self._by(results, i, deepest))
                  for i in config.inits if i != "zero"}

        def fmt(rows):
            return ", ".join("diverged" if r["final_train_loss"] is None
                             else f"{r['final_train_loss']:.3f}" for r in rows)

        random_txt = "; ".join(f"{i} {fmt(self._by(results, i, deepest))}" for i in failed)
        both = zero_ok and all(failed.values())
        claims = [Claim(
            text=f"At {deepest} blocks without batch norm ZerO trains while random "
                 "initializations diverge or fail",
            paper="ZerO trains very deep ResNets without batch norm (qualitative)",
            ours=f"final training loss at {deepest} blocks: ZerO {fmt(zero)}; {random_txt} "
                 f"(chance {CHANCE:.3f})",
            tolerance=f"'trains' = final loss finite and below ln 10 - {m:g}; 'fails' = not",
            verdict="reproduced" if both else "partly" if zero_ok else "not reproduced")]
        every = {d: [r["final_train_loss"] for r in self._by(results, "zero", d)]
                 for d in config.depths}
        trained = [d for d, losses in every.items() if losses
                   and all(_trains(v, m) for v in losses)]
        claims.append(Claim(
            text="ZerO trains at every depth tried, without batch norm",
            paper="ZerO trains ResNets without batch norm whatever the depth (qualitative)",
            ours="ZerO final training loss by blocks: " + ", ".join(
                f"{d}: {fmt(self._by(results, 'zero', d))}" for d in config.depths),
            tolerance=f"every depth: final loss finite and below ln 10 - {m:g} (partly: the "
                      "deepest one)",
            verdict="reproduced" if len(trained) == len(config.depths)
            else "partly" if deepest in trained else "not reproduced"))
        return claims


__all__ = ["Config", "ZeroDeepNoBN", "train_point"]
