"""The sweep runner: each point computed once, saved atomically under a key of its config,
the same results whatever the number of workers, and resume after a real worker is killed."""

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from efflab.experiments.sweep import (
    SweepIncomplete,
    SweepInterrupted,
    SweepPointFailed,
    point_key,
    run_sweep,
    sweep_folder,
)

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
points_module = importlib.import_module("sweep_points")
_square, _blocking, _failing = points_module.square, points_module.blocking, points_module.failing


def _computed(log: Path) -> list[int]:
    return sorted(int(s) for s in log.read_text().split()) if log.exists() else []


def _points(tmp_path, n, **extra):
    return [{"i": i, "log": str(tmp_path / "log.txt"), **extra} for i in range(n)]


def test_key_is_order_independent_and_config_sensitive():
    a = point_key({"width": 16, "noise": 0.15, "seed": 0})
    assert a == point_key({"seed": 0, "noise": 0.15, "width": 16})
    assert a != point_key({"width": 16, "noise": 0.15, "seed": 1})
    assert point_key({"w": (1, 2)}) == point_key({"w": [1, 2]})


def test_resume_in_process_computes_only_missing(tmp_path):
    log = tmp_path / "log.txt"
    first = run_sweep(_square, _points(tmp_path, 3), tmp_path, "sq")
    assert _computed(log) == [0, 1, 2]
    # five points now, three of them already on disk
    second = run_sweep(_square, _points(tmp_path, 5), tmp_path, "sq")
    assert _computed(log) == [0, 1, 2, 3, 4]
    assert second[:3] == first and [r["square"] for r in second] == [0, 1, 4, 9, 16]
    # one file per point, named by its key, holding the point and its result
    files = sorted(sweep_folder(tmp_path, "sq").glob("*.json"))
    assert len(files) == 5
    p = _points(tmp_path, 5)[3]
    record = json.loads((sweep_folder(tmp_path, "sq") / f"{point_key(p)}.json").read_text())
    assert record["point"] == p and record["result"]["square"] == 9
    # another sweep name shares nothing
    run_sweep(_square, _points(tmp_path, 1), tmp_path, "other")
    assert _computed(log) == [0, 0, 1, 2, 3, 4]


def test_corrupt_or_foreign_file_is_recomputed(tmp_path):
    pts = _points(tmp_path, 2)
    run_sweep(_square, pts, tmp_path, "sq")
    folder = sweep_folder(tmp_path, "sq")
    (folder / f"{point_key(pts[0])}.json").write_text("{ half a fi")
    other = json.loads((folder / f"{point_key(pts[1])}.json").read_text())
    other["point"]["i"] = 99  # a record whose point is not the one its name claims
    (folder / f"{point_key(pts[1])}.json").write_text(json.dumps(other))
    out = run_sweep(_square, pts, tmp_path, "sq")
    assert _computed(tmp_path / "log.txt") == [0, 0, 1, 1]
    assert [r["square"] for r in out] == [0, 1]


def test_workers_give_the_same_results_as_in_process_and_report_a_failure(tmp_path):
    serial = run_sweep(_square, _points(tmp_path, 4, tag="x"), tmp_path / "a", "sq", jobs=1)
    # in 2 workers, point 2 raising: the others all run, the failure comes back with its error
    log = tmp_path / "b" / "log.txt"
    pts = [{**p, "log": str(log)} for p in _points(tmp_path, 4, tag="x")]
    with pytest.raises(SweepPointFailed) as info:
        run_sweep(_failing, pts, tmp_path / "b", "sq", jobs=2)
    assert [p["i"] for p, _ in info.value.failures] == [2]
    assert "RuntimeError: point 2 failed on purpose" in info.value.failures[0][1]
    assert _computed(log) == [0, 1, 3]
    pids = {json.loads(f.read_text())["pid"]
            for f in sweep_folder(tmp_path / "b", "sq").glob("*.json")}
    assert os.getpid() not in pids  # computed in worker processes
    parallel = run_sweep(_square, pts, tmp_path / "b", "sq", jobs=1)
    assert _computed(log) == [0, 1, 2, 3]  # only the failed point again
    assert parallel == serial


def test_killed_worker_then_resume_without_recomputation(tmp_path):
    pts = _points(tmp_path, 6, pidfile=str(tmp_path / "pid"), release=str(tmp_path / "go"))
    log = tmp_path / "log.txt"
    folder = sweep_folder(tmp_path, "kill")
    errors = []

    def target():
        try:
            run_sweep(_blocking, pts, tmp_path, "kill", jobs=2)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 60
    # wait until the victim blocks and the other worker has saved all five other points
    while time.monotonic() < deadline and not (
            (tmp_path / "pid").exists() and len(list(folder.glob("*.json"))) == 5):
        time.sleep(0.05)
    assert (tmp_path / "pid").exists(), "the blocking point never started"
    victim = int((tmp_path / "pid").read_text())
    assert victim != os.getpid()
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], SweepInterrupted), errors
    assert errors[0].done == 5 and errors[0].total == 6
    assert _computed(log) == [1, 2, 3, 4, 5]
    assert not (folder / f"{point_key(pts[0])}.json").exists()

    (tmp_path / "go").write_text("")
    out = run_sweep(_blocking, pts, tmp_path, "kill", jobs=2)
    assert _computed(log) == [0, 1, 2, 3, 4, 5]  # only the missing point ran again
    assert [r["square"] for r in out] == [0, 1, 4, 9, 16, 25]


def test_failing_point_is_reported_and_the_others_all_run(tmp_path):
    with pytest.raises(SweepPointFailed) as info:
        run_sweep(_failing, _points(tmp_path, 5), tmp_path, "f")
    e = info.value
    assert isinstance(e, SweepIncomplete) and isinstance(e, RuntimeError)
    assert (e.done, e.total) == (4, 5)
    assert [p["i"] for p, _ in e.failures] == [2]
    assert "RuntimeError: point 2 failed on purpose" in e.failures[0][1]
    assert "1 of 5 points failed" in str(e) and "point 2 failed on purpose" in str(e)
    assert _computed(tmp_path / "log.txt") == [0, 1, 3, 4]  # the failure stopped nothing
    out = run_sweep(_square, _points(tmp_path, 5), tmp_path, "f")
    assert _computed(tmp_path / "log.txt") == [0, 1, 2, 3, 4]  # only the failed one again
    assert [r["i"] for r in out] == [0, 1, 2, 3, 4]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="jobs must be >= 1, got 0"):
        run_sweep(_square, _points(tmp_path, 1), tmp_path, "sq", jobs=0)
    with pytest.raises(ValueError, match="more than once"):
        run_sweep(_square, _points(tmp_path, 1) * 2, tmp_path, "sq")
    with pytest.raises(ValueError, match="sweep name"):
        run_sweep(_square, _points(tmp_path, 1), tmp_path, "../x")
    with pytest.raises(TypeError, match="module-level function"):
        run_sweep(lambda p: p, _points(tmp_path, 2), tmp_path, "sq", jobs=2)
    with pytest.raises(TypeError, match="must be a dict"):
        run_sweep(_square, [3], tmp_path, "sq")


def test_limit_threads_caps_and_restores():
    import torch

    from efflab.experiments.sweep import limit_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with limit_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"), limit_threads(1):
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _alive(pid: int) -> bool:
    """Running (a zombie left for an init that does not reap is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("mode, workers", [("sweep", 2), ("watchdog", 1), ("experiments", 2)])
def test_workers_exit_when_their_parent_is_killed(tmp_path, mode, workers):
    """SIGKILL of the parent of a --jobs 2 sweep: the workers go too (death signal and
    watchdog), and the watchdog alone suffices (where there is no death signal); so do the
    processes of experiments side by side (``reproduce --parallel``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE)])}
    parent = subprocess.Popen([sys.executable, str(HERE / "orphan_parent.py"), mode,
                               str(tmp_path)], env=env)
    try:
        pidfiles = [tmp_path / f"worker-{i}.pid" for i in range(workers)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(p.exists() for p in pidfiles):
            assert parent.poll() is None, "the parent ended early"
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in pidfiles]
        assert all(_alive(p) for p in pids)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), f"orphaned workers left running: {pids}"
    finally:
        if parent.poll() is None:
            parent.kill()
        for p in tmp_path.glob("worker-*.pid"):
            if _alive(int(p.read_text())):
                os.kill(int(p.read_text()), signal.SIGKILL)
