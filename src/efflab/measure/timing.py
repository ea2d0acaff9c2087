"""Latency: warm-up, device synchronization, many repeats, median and p90.

Efficiency Misnomer (arXiv 2110.12894), Sec. 2 ("speed"): wall-clock figures depend on the
machine and on how they are taken. GPU kernels run asynchronously, so a clock read right
after a launch measures the launch, not the work: :func:`time_fn` synchronizes the device
after every timed call, before the clock is read. Medians (not means) because a shared
machine adds long, rare stalls.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def _no_sync() -> None:
    """CPU work is finished when the call returns: nothing to wait for."""


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """The call that waits until ``device`` has finished its queued work (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return functools.partial(torch.cuda.synchronize, device)
    if device.type == "mps":
        return torch.mps.synchronize
    if device.type == "cpu":
        return _no_sync
    raise ValueError(f"device must be cpu, cuda or mps, got {str(device)!r}")


@dataclass
class Timing:
    """Seconds per call over ``repeats`` timed calls, after ``warmup`` untimed ones."""

    median_s: float
    p90_s: float
    min_s: float
    mean_s: float
    repeats: int
    warmup: int
    times_s: list[float] = field(default_factory=list)


def summarize(times_s: list[float], warmup: int) -> Timing:
    """Median, 90th percentile (linear interpolation), min and mean of the timed calls."""
    if not times_s:
        raise ValueError("times_s must hold at least one timing, got an empty list")
    return Timing(
        median_s=float(statistics.median(times_s)),
        p90_s=float(np.percentile(times_s, 90)),
        min_s=float(min(times_s)),
        mean_s=float(statistics.fmean(times_s)),
        repeats=len(times_s),
        warmup=warmup,
        times_s=[float(t) for t in times_s],
    )


def time_fn(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 20,
            sync: Callable[[], None] = _no_sync,
            clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times, each timed as
    ``clock(); fn(); sync(); clock()``. The device is synchronized once after the warm-up
    too, so that the first timed call does not pay for queued warm-up work."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return summarize(times, warmup)
