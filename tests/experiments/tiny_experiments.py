"""Two tiny experiments for the tests of ``efflab reproduce --launcher``: importable by the
workers (the tests put this folder on PYTHONPATH), so that a Ray task or a Submitit job can
unpickle them. Each logs its runs to ``OUT/experiments.log`` and fails where a file
``OUT/FAIL-<name>`` says how: ``raise`` (the experiment raises) or ``exit`` (its process
dies, as a job whose node is lost)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sweep_points import trained

from efflab.experiments import register
from efflab.experiments.base import Claim, Experiment, ExperimentConfig
from efflab.experiments.checks import at_least, param
from efflab.experiments.sweep import sweep


@dataclass
class TinyConfig(ExperimentConfig):
    points: int = param(2, "training runs", check=at_least(1))


def _log_and_maybe_fail(name: str, out: Path) -> None:
    with open(out / "experiments.log", "a") as f:
        f.write(f"{name}\n")
    flag = out / f"FAIL-{name}"
    if flag.exists():
        how = flag.read_text().strip()
        if how == "exit":
            os._exit(3)
        raise RuntimeError(f"{name} failed on purpose")


class _Tiny(Experiment):
    paper = "Test"
    checks = "the launchers"
    Config = TinyConfig
    budget_s = {"quick": 30.0, "full": 30.0}

    def claims(self, results, config):
        return [Claim("ran", "every run", str(len(results["runs"])), "exact", "reproduced")]


@register
class TinySweep(_Tiny):
    """Its training runs are sweep points (Ray tasks of their own under --launcher ray)."""

    name = "tiny-sweep"

    def run(self, config, ctx):
        out = ctx.outdir.parent
        pts = [{"i": i, "seed": 10 + i, "lr": 0.05 * (i + 1), "log": str(out / "points.log")}
               for i in range(config.points)]
        runs = sweep(trained, pts, ctx, "tiny")
        _log_and_maybe_fail(self.name, out)
        return {"runs": runs}


@register
class TinyPlain(_Tiny):
    """Its training runs are plain calls in the experiment's own process."""

    name = "tiny-plain"

    def run(self, config, ctx):
        out = ctx.outdir.parent
        _log_and_maybe_fail(self.name, out)
        log = str(out / "plain.log")
        return {"runs": [trained({"i": i, "seed": 20 + i, "lr": 0.1, "log": log})
                         for i in range(config.points)]}
