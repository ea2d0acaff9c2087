"""How busy the machine was while it was timed, and whether that makes a figure unreliable.

Efficiency Misnomer (arXiv 2110.12894), Sec. 5: a speed figure means nothing without the
conditions it was taken in. On a shared machine the conditions change under the clock: a
second CPU-bound job on a 2-core VM can make a latency 180 times longer (issue 17). So every
cost report records

* the load average (``/proc/loadavg``: 1, 5 and 15 minutes) before and after the
  measurement: the machine's recent past, which lags by design;
* the number of runnable tasks (``procs_running`` in ``/proc/stat``, the timing process's own
  threads included) sampled after every timed call, outside the timed region: what the clock
  actually competed with;
* the spread of the repeats of each figure.

:func:`assess` turns these into reasons a figure is unreliable: a spread above
:data:`SPREAD_LIMIT`, more runnable tasks than usable cores in more than
:data:`BUSY_FRACTION_LIMIT` of the samples, or a throughput that falls with the batch size
where it should rise. It is a pure function of the records, so it is tested on synthetic
inputs; :class:`LoadSampler` is the only part that reads the machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

#: relative interquartile range of the repeats above which a figure is marked unreliable
SPREAD_LIMIT = 0.25
#: fraction of samples with more runnable tasks than cores above which timings are unreliable
BUSY_FRACTION_LIMIT = 0.25
#: a throughput this much lower at a larger batch than at a smaller one is flagged
THROUGHPUT_DROP_LIMIT = 0.10


def read_loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or ``None`` off Linux."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def runnable_tasks() -> int | None:
    """Tasks running or waiting for a CPU right now (``procs_running``), or ``None``."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


@dataclass
class LoadRecord:
    """The machine's load around one measurement (see the module docstring)."""

    usable_cores: int
    threads: int
    loadavg_before: list[float] | None = None
    loadavg_after: list[float] | None = None
    runnable_samples: list[int] = field(default_factory=list)

    @property
    def busy_fraction(self) -> float:
        """Fraction of samples with more runnable tasks than usable cores."""
        if not self.runnable_samples:
            return 0.0
        busy = sum(n > self.usable_cores for n in self.runnable_samples)
        return busy / len(self.runnable_samples)

    def summary(self) -> dict[str, object]:
        s = self.runnable_samples
        return {"loadavg_before": self.loadavg_before, "loadavg_after": self.loadavg_after,
                "runnable_median": statistics.median(s) if s else None,
                "runnable_max": max(s) if s else None, "samples": len(s),
                "busy_fraction": self.busy_fraction, "usable_cores": self.usable_cores,
                "threads": self.threads}

    def text(self) -> str:
        """``"load 1.75 -> 2.10; runnable tasks median 2, max 3 on 2 cores"``."""
        def avg(v: list[float] | None) -> str:
            return "?" if v is None else f"{v[0]:.2f}"
        s = self.runnable_samples
        run = (f"runnable tasks median {statistics.median(s):g}, max {max(s)} on "
               f"{self.usable_cores} core(s)") if s else "runnable tasks not sampled"
        return f"load {avg(self.loadavg_before)} -> {avg(self.loadavg_after)}; {run}"


class LoadSampler:
    """Collects a :class:`LoadRecord`: ``start()``, ``sample()`` after each timed call,
    ``stop()``. ``sample`` costs one read of ``/proc/stat`` (tens of microseconds)."""

    def __init__(self, usable_cores: int, threads: int) -> None:
        self.record = LoadRecord(usable_cores=usable_cores, threads=threads)

    def start(self) -> LoadSampler:
        self.record.loadavg_before = read_loadavg()
        return self

    def sample(self) -> None:
        n = runnable_tasks()
        if n is not None:
            self.record.runnable_samples.append(n)

    def stop(self) -> LoadRecord:
        self.record.loadavg_after = read_loadavg()
        return self.record


def relative_spread(times_s: Sequence[float]) -> float:
    """Interquartile range over the median (0 for fewer than two times)."""
    import numpy as np

    if len(times_s) < 2:
        return 0.0
    q25, q50, q75 = np.percentile(times_s, [25, 50, 75])
    return float((q75 - q25) / q50) if q50 > 0 else 0.0


def spread_reasons(spread: float, limit: float = SPREAD_LIMIT) -> list[str]:
    if spread > limit:
        return [f"spread across repeats {spread:.0%} > {limit:.0%}"]
    return []


def load_reasons(load: LoadRecord | None, limit: float = BUSY_FRACTION_LIMIT) -> list[str]:
    """Why the machine's load makes every timing of a report unreliable (maybe nothing)."""
    if load is None or not load.runnable_samples:
        return []
    if load.busy_fraction > limit:
        return [f"machine busy: more runnable tasks than its {load.usable_cores} core(s) "
                f"in {load.busy_fraction:.0%} of samples (max {max(load.runnable_samples)})"]
    return []


def throughput_drops(points: Sequence[tuple[int, float]],
                     limit: float = THROUGHPUT_DROP_LIMIT) -> list[tuple[int, int, float]]:
    """``(smaller batch, larger batch, ratio)`` for each neighbouring pair of a throughput
    curve ``[(batch, samples/s), ...]`` where the larger batch is more than ``limit`` slower
    per sample: on one device a larger batch should never lose throughput, so a drop means
    the timing was disturbed (or memory ran short)."""
    pts = sorted(points)
    drops = []
    for (b0, r0), (b1, r1) in zip(pts, pts[1:]):
        if b1 > b0 and r0 > 0 and r1 < (1 - limit) * r0:
            drops.append((b0, b1, r1 / r0))
    return drops


def assess(spreads: dict[str, float], load: LoadRecord | None,
           throughput: dict[str, Sequence[tuple[int, float]]] | None = None
           ) -> dict[str, list[str]]:
    """Reasons each timed figure is unreliable; figures without a reason are left out.

    spreads: figure name -> relative spread of its repeats;
    throughput: curve name (``"throughput_inference"``) -> ``[(batch, samples/s), ...]``.
    """
    busy = load_reasons(load)
    out: dict[str, list[str]] = {}
    for name, spread in spreads.items():
        reasons = spread_reasons(spread) + busy
        if reasons:
            out[name] = reasons
    for name, curve in (throughput or {}).items():
        for b0, b1, ratio in throughput_drops(curve):
            out.setdefault(name, []).append(
                f"throughput falls from batch {b0} to {b1} (x {ratio:.2f}) where it should "
                "rise")
    return out
