"""Latency semantics: warm-up untimed, the device synchronized before every clock read,
median and p90 of the timed calls; CUDA's synchronize reached through a mock."""

from unittest import mock

import numpy as np
import pytest
import torch

from efflab.measure import interleaved_times, synchronizer, time_fn
from efflab.measure.report import throughput_at


class Recorder:
    """A fake clock, a fake sync and a fake workload writing one shared event log."""

    def __init__(self, durations):
        self.events = []
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def fn(self):
        self.events.append("fn")
        self.calls += 1

    def sync(self):
        self.events.append("sync")
        # the work "finishes" at the sync: that is where the time passes
        if self.calls and self.durations:
            self.now += self.durations.pop(0)

    def clock(self):
        self.events.append("clock")
        return self.now


def test_every_timed_call_is_followed_by_a_sync_before_the_clock_is_read():
    rec = Recorder(durations=[9.0, 9.0] + [0.5, 0.1, 0.3, 0.2, 0.4])
    time_fn(rec.fn, warmup=2, repeats=5, sync=rec.sync, clock=rec.clock)
    ev = rec.events
    assert ev[:3] == ["fn", "fn", "sync"]  # warm-up untimed, then drained
    timed = ev[3:]
    assert timed == ["clock", "fn", "sync", "clock"] * 5


def test_median_and_p90_of_the_timed_calls_only():
    durations = [0.5, 0.1, 0.3, 0.2, 0.4, 0.9, 0.25]
    rec = Recorder(durations=[100.0] + durations)  # the warm-up's drain is not timed
    t = time_fn(rec.fn, warmup=1, repeats=len(durations), sync=rec.sync, clock=rec.clock)
    assert t.times_s == pytest.approx(durations)
    assert t.median_s == pytest.approx(np.median(durations))
    assert t.p90_s == pytest.approx(np.percentile(durations, 90))
    assert t.min_s == pytest.approx(0.1)
    assert (t.repeats, t.warmup) == (7, 1)


def test_cuda_synchronizer_calls_torch_cuda_synchronize_on_that_device():
    with mock.patch("torch.cuda.synchronize") as cuda_sync:
        sync = synchronizer("cuda:1")
        cuda_sync.assert_not_called()
        sync()
        cuda_sync.assert_called_once_with(torch.device("cuda:1"))
        time_fn(lambda: None, warmup=3, repeats=4, sync=sync)
        assert cuda_sync.call_count == 1 + 1 + 4  # ours, after warm-up, after each call


def test_cpu_synchronizer_does_not_touch_cuda():
    with mock.patch("torch.cuda.synchronize") as cuda_sync:
        synchronizer("cpu")()
        cuda_sync.assert_not_called()


def test_throughput_synchronizes_the_measured_device():
    seen = []

    def fake_synchronizer(device):
        seen.append(torch.device(device))
        return lambda: seen.append("sync")

    model = torch.nn.Linear(3, 2)
    with mock.patch("efflab.measure.report.synchronizer", fake_synchronizer):
        point = throughput_at(model, (torch.randn(4, 3),), 8, "inference",
                              torch.device("cpu"), warmup=1, repeats=3)
    assert seen[0] == torch.device("cpu")
    # after the warm-up; then in each of the 3 rounds: before the timed call and after it
    assert seen.count("sync") == 1 + 3 * 2
    assert point.status == "ok" and point.samples_per_s > 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        time_fn(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup must be >= 0, got -1"):
        time_fn(lambda: None, warmup=-1)
    with pytest.raises(ValueError, match="device must be cpu, cuda or mps, got 'meta'"):
        synchronizer("meta")


def test_interleaved_rounds_rotate_the_order_and_pair_round_medians():
    order, now = [], [0.0]
    cost = {"a": 1.0, "b": 2.0, "c": 3.0}

    def step(name):
        def fn():
            order.append(name)
            now[0] += cost[name]
        return fn

    times = interleaved_times({n: step(n) for n in "abc"}, rounds=3, repeats=2, warmup=1,
                              clock=lambda: now[0])
    timed = order[3:]  # the first round starts with one untimed call per step
    assert order[:3] == ["a", "a", "a"] or order[0] == "a"
    rounds = [timed[i:i + 6] for i in range(0, 18, 6)]
    assert [r[0] for r in rounds][1:] == ["b", "c"]  # rotated every round
    assert times["b"].round_medians_s == [2.0, 2.0, 2.0] and times["c"].median_s == 3.0
    assert times["a"].repeats == 6 and times["a"].spread == 0.0
