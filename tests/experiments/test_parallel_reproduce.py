"""``efflab reproduce --parallel N``: experiments side by side, each in a fresh process. They
do overlap, a timed one never does, results equal the one-after-another run bit for bit, a
dying experiment loses nothing of the others and a rerun reuses their results, Ctrl-C stops
the processes, and bad values are refused before any work."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import signal
import threading
import time

import pytest

from efflab import experiments as registry
from efflab.cli import main
from efflab.experiments.launchers import (
    LocalExperimentLauncher,
    Need,
    PointTask,
    next_to_start,
)
from efflab.experiments.record import load_record

meet = importlib.import_module("side_by_side_experiments")  # on sys.path: conftest.py
tiny = importlib.import_module("tiny_experiments")
sweep_points = importlib.import_module("sweep_points")


@pytest.fixture
def only(monkeypatch):
    """The registry holds only the given experiment classes (no discovery of the suite)."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_discovered", True)

    def register(*classes):
        for cls in classes:
            registry.register(cls)
    return register


def _reproduce(out, names, *argv):
    return main(["reproduce", "--only", *names, "--out", str(out), "--quiet", *argv])


def _intervals(out):
    rows = [line.split() for line in (out / "intervals.log").read_text().splitlines()]
    return {name: (float(a), float(b)) for name, a, b in rows}


def _log(out, name):
    path = out / name
    return sorted(path.read_text().split()) if path.exists() else []


def test_experiments_overlap_and_a_timed_one_runs_alone(tmp_path, only, capsys):
    only(meet.MeetA, meet.MeetB, meet.Solo)
    out = tmp_path / "out"
    assert _reproduce(out, ["meet-a", "meet-b", "solo"], "--parallel", "2") == 0
    records = {n: load_record(out / n / "results.json") for n in ("meet-a", "meet-b", "solo")}
    # each waited for the other's file: they ran at the same time, in processes of their own
    assert records["meet-a"].results["met"] == "meet-b"
    assert records["meet-b"].results["met"] == "meet-a"
    pids = {r.results["pid"] for r in records.values()}
    assert len(pids) == 3 and os.getpid() not in pids
    assert records["meet-a"].ran_beside == ["meet-b"]
    assert records["meet-b"].ran_beside == ["meet-a"]
    assert records["solo"].ran_beside == []
    spans = _intervals(out)
    s0, s1 = spans["solo"]
    for name in ("meet-a", "meet-b"):
        a, b = spans[name]
        assert b < s0 or a > s1, f"{name} {spans[name]} overlaps solo {spans['solo']}"
    printed = capsys.readouterr().out
    starts = re.findall(r"^\[(\d)/3\] (\S+) \(budget 30 s, (alone|1 core)\) \.\.\.$", printed,
                        re.MULTILINE)
    assert starts[0] == ("1", "solo", "alone")  # the timed one first, on an idle machine
    assert sorted(s[1] for s in starts[1:]) == ["meet-a", "meet-b"]
    assert re.search(r"^  meet-a .* beside meet-b$", printed, re.MULTILINE)
    assert "beside meet-a" in (out / "index.html").read_text()


def test_side_by_side_equals_one_after_another_and_a_dying_one_loses_nothing(tmp_path, only,
                                                                              capsys):
    only(tiny.TinySweep, tiny.TinyPlain)
    names = ["tiny-sweep", "tiny-plain"]
    alone = tmp_path / "alone"
    assert _reproduce(alone, names, "--parallel", "1") == 0
    assert "side by side" not in capsys.readouterr().out
    out = tmp_path / "out"
    out.mkdir()
    (out / "FAIL-tiny-plain").write_text("exit")  # its process dies (os._exit)
    assert _reproduce(out, names, "--parallel", "2") == 1
    assert "side by side on 2 cores" in capsys.readouterr().out
    good, bad = (load_record(out / n / "results.json") for n in names)
    assert good.status == "ok" and bad.status == "failed"
    assert "exited with code 3 before writing its result" in bad.error
    assert "working folder and sweep points are kept" in bad.error
    assert good.results == load_record(alone / "tiny-sweep" / "results.json").results
    (out / "FAIL-tiny-plain").unlink()
    assert _reproduce(out, names, "--parallel", "2") == 0
    assert "tiny-sweep                         reused" in capsys.readouterr().out
    # only the dead one ran again; no sweep point was computed twice
    assert _log(out, "experiments.log") == sorted(["tiny-sweep", "tiny-plain", "tiny-plain"])
    assert _log(out, "points.log") == ["0", "1"]
    for name in names:
        ours, theirs = (load_record(d / name / "results.json") for d in (out, alone))
        assert ours.status == "ok" and ours.results == theirs.results  # floats exactly
        assert ours.claims == theirs.claims


def test_ctrl_c_stops_the_experiments_processes(tmp_path):
    tasks = [PointTask(i, {"dir": str(tmp_path), "i": i, "sleep": 60}, str(tmp_path / f"{i}"))
             for i in range(2)]
    pidfiles = [tmp_path / f"worker-{i}.pid" for i in range(2)]

    def interrupt_when_both_run():
        deadline = time.monotonic() + 60
        while not all(p.exists() for p in pidfiles) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_both_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        list(LocalExperimentLauncher(2).execute(sweep_points.sleeper, tasks, tmp_path))
    for p in pidfiles:
        with pytest.raises(ProcessLookupError):  # stopped and reaped
            os.kill(int(p.read_text()), 0)


def test_the_scheduler_fits_cores_and_keeps_timed_experiments_alone():
    one, two, timed = Need(1), Need(2), Need(1, alone=True)
    assert next_to_start([one, one], [], 2) == 0
    assert next_to_start([two, one], [one], 2) == 1  # the wide one waits, a narrow one fits
    assert next_to_start([two], [one], 2) is None
    assert next_to_start([Need(4)], [], 2) == 0  # more cores than slots: it takes them all
    assert next_to_start([timed, one], [one], 2) is None  # a waiting timed one blocks
    assert next_to_start([one, timed], [one], 2) == 0
    assert next_to_start([timed, one], [], 2) == 0
    assert next_to_start([one], [timed], 2) is None  # nothing beside a timed one
    assert next_to_start([one], [one, one], 2) is None


def _suite():
    for name in registry.names():
        exp = registry.get(name)
        yield exp, inspect.getmodule(type(exp))


def test_suite_experiments_declare_what_they_keep_busy():
    """An experiment that runs ``sweep`` (``ctx.jobs`` workers) may not claim one core; one
    that times things (efflab.measure's timing or cost report) must run alone."""
    for exp, module in _suite():
        source = inspect.getsource(module)
        if exp.cores == "one":
            assert not re.search(r"(?<![\w.])sweep\(|ctx\.jobs", source), exp.name
        tools = {getattr(v, "__module__", "") for v in vars(module).values()}
        if tools & {"efflab.measure.timing", "efflab.measure.report"}:
            assert exp.timed, exp.name
    assert registry.get("efficiency-misnomer").timed


@pytest.mark.parametrize("argv, message", [
    (["--parallel", "0"], "--parallel must be in [1, 2] (2 usable cores / --threads 1), got 0"),
    (["--parallel", "3"], "--parallel must be in [1, 2]"),
    (["--parallel", "2", "--threads", "2"], "--parallel must be in [1, 1]"),
    (["--parallel", "2", "--launcher", "ray"], "--parallel needs --launcher local"),
])
def test_bad_parallel_values_are_refused_before_any_work(tmp_path, capsys, monkeypatch, only,
                                                         argv, message):
    only(meet.Solo)
    monkeypatch.setattr("efflab.cli.usable_cores", lambda: 2)
    out = tmp_path / "out"
    assert _reproduce(out, ["solo"], *argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_parallel_defaults_to_jobs_within_the_cores(tmp_path, monkeypatch):
    from efflab.cli import _parallel_slots, build_parser

    def slots(*argv, cores=2):
        args = build_parser().parse_args(["reproduce", *argv])
        return _parallel_slots(args, cores)

    assert slots() == 1
    assert slots("--jobs", "2") == 2
    assert slots("--jobs", "8") == 2
    assert slots("--jobs", "8", cores=16) == 8
    assert slots("--jobs", "4", "--threads", "2", cores=4) == 2
    assert slots("--jobs", "2", "--launcher", "ray") == 1
