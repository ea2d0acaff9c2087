"""Load and spread: recorded around every timing; unreliable figures marked (issue 17).

The rules are pure functions of the records, so they are checked on synthetic spreads and
load samples; a real busy child process checks that the load is actually seen."""

import json
import subprocess
import sys

import pytest
import torch

from efflab.measure import LoadRecord, LoadSampler, assess, measure
from efflab.measure.load import relative_spread, throughput_drops


def test_spread_is_the_interquartile_range_over_the_median():
    assert relative_spread([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert relative_spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((4 - 2) / 3)
    assert relative_spread([2.0]) == 0.0


def test_a_wide_spread_or_a_busy_machine_marks_figures_unreliable():
    idle = LoadRecord(usable_cores=2, threads=1, runnable_samples=[1, 1, 2, 1])
    assert assess({"latency_inference": 0.05}, idle) == {}
    flagged = assess({"latency_inference": 0.6, "latency_train_step": 0.05}, idle)
    assert list(flagged) == ["latency_inference"] and "60%" in flagged["latency_inference"][0]
    busy = LoadRecord(usable_cores=2, threads=1, runnable_samples=[3, 4, 3, 1])
    flagged = assess({"latency_inference": 0.05, "latency_train_step": 0.05}, busy)
    assert set(flagged) == {"latency_inference", "latency_train_step"}
    assert "machine busy" in flagged["latency_inference"][0] and "75%" in \
        flagged["latency_inference"][0]
    # one stray sample above the core count is not enough
    once = LoadRecord(usable_cores=2, threads=1, runnable_samples=[3, 1, 1, 1, 1])
    assert assess({"latency_inference": 0.05}, once) == {}


def test_a_throughput_that_falls_with_the_batch_size_is_flagged():
    assert throughput_drops([(1, 100.0), (8, 700.0), (32, 2000.0)]) == []
    (drop,) = throughput_drops([(1, 18248.0), (32, 2669.0)])  # the numbers
    assert drop[:2] == (1, 32) and drop[2] == pytest.approx(2669 / 18248)
    flagged = assess({}, None, {"throughput_inference": [(1, 18248.0), (32, 2669.0)]})
    assert "falls from batch 1 to 32" in flagged["throughput_inference"][0]


def test_a_report_says_unreliable_next_to_the_figure_and_in_the_json(monkeypatch):
    monkeypatch.setattr("efflab.measure.report.assess",
                        lambda spreads, load, curves: {"latency_inference": ["spread 90%"]})
    r = measure(torch.nn.Linear(4, 2), torch.randn(2, 4), repeats=2, warmup=0, memory=False,
                peak=False, modules=False)
    line = next(x for x in r.table().splitlines() if x.startswith("latency: inference"))
    assert line.endswith("[unreliable: spread 90%]")
    assert "UNRELIABLE" in r.table()
    d = json.loads(json.dumps(r.to_dict()))
    assert d["reliable"] is False and d["unreliable"] == {"latency_inference": ["spread 90%"]}
    assert r.flat()["reliable"] is False


def test_a_busy_child_process_is_seen_in_the_load_record_and_marks_timings(monkeypatch):
    # one core pretended: the busy child plus the timing thread are then more runnable tasks
    # than cores in every sample, whatever else the shared machine runs
    monkeypatch.setattr("efflab.measure.report.usable_cores", lambda: 1)
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        sampler = LoadSampler(usable_cores=1, threads=1).start()
        for _ in range(5):
            sampler.sample()
        record = sampler.stop()
        r = measure(torch.nn.Linear(8, 8), torch.randn(4, 8), repeats=6, warmup=1,
                    memory=False, peak=False, modules=False)
    finally:
        child.kill()
        child.wait()
    assert min(record.runnable_samples) >= 2  # the child and the sampling thread
    assert r.load is not None and r.load.loadavg_before is not None
    assert min(r.load.runnable_samples) >= 2
    assert "machine busy" in " ".join(r.unreliable["latency_inference"])
    assert not r.reliable
