"""Tiny experiments for the tests of ``efflab reproduce --parallel``, importable by the
experiments' processes (spawned: they get this folder on ``sys.path`` from the test
process). ``meet-a`` and ``meet-b`` each wait for the other to arrive (a file
``OUT/here-<name>``), so they finish only when they ran at the same time; ``solo`` times
things (``timed``). Each appends the interval its ``run`` spanned to ``OUT/intervals.log``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from efflab.experiments import register
from efflab.experiments.base import Claim, Experiment, ExperimentConfig
from efflab.experiments.checks import param, positive


@dataclass
class MeetConfig(ExperimentConfig):
    wait_s: float = param(60.0, "seconds to wait for the other experiment", check=positive)


def _log_interval(out: Path, name: str, start: float) -> None:
    with open(out / "intervals.log", "a") as f:
        f.write(f"{name} {start!r} {time.time()!r}\n")


class _Logged(Experiment):
    paper = "Test"
    checks = "efflab reproduce --parallel"
    Config = MeetConfig
    budget_s = {"quick": 30.0, "full": 30.0}
    cores = "one"

    def claims(self, results, config):
        return [Claim("ran", "-", "yes", "exact", "reproduced")]


class _Meet(_Logged):
    other: str

    def run(self, config, ctx):
        out, start = ctx.outdir.parent, time.time()
        (out / f"here-{self.name}").write_text(str(os.getpid()))
        deadline = time.monotonic() + config.wait_s
        while not (out / f"here-{self.other}").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.other} did not run beside {self.name}")
            time.sleep(0.02)
        _log_interval(out, self.name, start)
        return {"met": self.other, "pid": os.getpid()}


@register
class MeetA(_Meet):
    name, other = "meet-a", "meet-b"


@register
class MeetB(_Meet):
    name, other = "meet-b", "meet-a"


@register
class Solo(_Logged):
    """Times things: must run with nothing beside it."""

    name = "solo"
    timed = True

    def run(self, config, ctx):
        start = time.time()
        time.sleep(0.5)
        _log_interval(ctx.outdir.parent, self.name, start)
        return {"pid": os.getpid()}
