"""Latency: warm-up, device synchronization, many repeats, median and p90.

Efficiency Misnomer (arXiv 2110.12894), Sec. 2 ("speed"): wall-clock figures depend on the
machine and on how they are taken. GPU kernels run asynchronously, so a clock read right
after a launch measures the launch, not the work: :func:`time_fn` synchronizes the device
after every timed call, before the clock is read. Medians (not means) because a shared
machine adds long, rare stalls.

Configurations that are compared (batch sizes of a throughput curve, the models of a zoo)
are timed interleaved (:func:`interleaved_times`): they take turns in rounds, the order
rotated every round, so that a slow spell of a shared machine lands on all of them rather
than on one, and the per-round medians of two configurations form paired samples for a
ratio with an interval (``efflab.experiments.verdicts.ratio_interval``).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from efflab.measure.load import LoadSampler, relative_spread


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
    #: interquartile range over the median of ``times_s`` (see efflab.measure.load)
    spread: float = 0.0
    #: interleaved timings only: the median of each round, in round order (paired samples)
    round_medians_s: list[float] = field(default_factory=list)


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
        spread=relative_spread(times_s),
    )


def time_fn(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 20,
            sync: Callable[[], None] = _no_sync,
            clock: Callable[[], float] = time.perf_counter,
            sampler: LoadSampler | None = None) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times, each timed as
    ``clock(); fn(); sync(); clock()``. The device is synchronized once after the warm-up
    too, so that the first timed call does not pay for queued warm-up work. ``sampler``
    (if given) samples the machine's load after each timed call, outside the timed region."""
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
        if sampler is not None:
            sampler.sample()
    return summarize(times, warmup)


def interleaved_times(steps: Mapping[Hashable, Callable[[], Any]], *, rounds: int,
                      repeats: int = 1, warmup: int = 1, round_warmup: int = 0,
                      sync: Callable[[], None] = _no_sync,
                      clock: Callable[[], float] = time.perf_counter,
                      sampler: LoadSampler | None = None) -> dict[Hashable, Timing]:
    """Time every step of ``steps`` in ``rounds`` rounds, the order rotated each round; in a
    round each step gets ``repeats`` timed calls (after ``warmup`` untimed calls in the first
    round, ``round_warmup`` in later ones). Returns one :class:`Timing` per step over all its
    calls, with the per-round medians in ``round_medians_s``."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(steps)
    raw: dict[Hashable, list[float]] = {n: [] for n in names}
    medians: dict[Hashable, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            t = time_fn(steps[name], warmup=warmup if r == 0 else round_warmup,
                        repeats=repeats, sync=sync, clock=clock, sampler=sampler)
            raw[name] += t.times_s
            medians[name].append(t.median_s)
    out = {}
    for name in names:
        t = summarize(raw[name], warmup)
        t.round_medians_s = medians[name]
        out[name] = t
    return out


def interleaved_latency(steps: Mapping[Hashable, Mapping[str, Callable[[], Any]]], *,
                        rounds: int, warmup: int, repeats: Mapping[str, int],
                        sync: Callable[[], None] = _no_sync,
                        sampler: LoadSampler | None = None
                        ) -> dict[Hashable, dict[str, Timing]]:
    """Several kinds of step per configuration (``{"L4": {"inference": f, "train_step": g}}``),
    interleaved across configurations as in :func:`interleaved_times`, each kind with its own
    number of ``repeats`` per round and ``warmup`` calls every round (models switched in and
    out of the cache need warming again). Returns ``{config: {kind: Timing}}``."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(steps)
    raw = {n: {k: [] for k in steps[n]} for n in names}
    medians = {n: {k: [] for k in steps[n]} for n in names}
    for r in range(rounds):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            for kind, step in steps[name].items():
                t = time_fn(step, warmup=warmup, repeats=repeats[kind], sync=sync,
                            sampler=sampler)
                raw[name][kind] += t.times_s
                medians[name][kind].append(t.median_s)
    out: dict[Hashable, dict[str, Timing]] = {}
    for name in names:
        out[name] = {}
        for kind in steps[name]:
            t = summarize(raw[name][kind], warmup)
            t.round_medians_s = medians[name][kind]
            out[name][kind] = t
    return out
