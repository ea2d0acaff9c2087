"""Launchers: Ray (a local Ray for the session, on loopback: conftest.py) and Submitit (its
local and debug executors, the same code path as Slurm submission) keep the sweep's
guarantees: results equal the local launcher's bit for bit, a killed or failing point does
not lose the others, a rerun computes only the missing points, Ray retries a point whose
process died; the sbatch script asks for the requested resources; options are checked
before any work."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import signal
import threading
import time

import pytest

from efflab.cli.launcher_options import add_launcher_arguments, launcher_from_args
from efflab.experiments.base import ConfigError
from efflab.experiments.launchers import (
    RayLauncher,
    SharedStorageError,
    SlurmLauncher,
    run_point,
    storage_warning,
)
from efflab.experiments.sweep import SweepPointFailed, point_key, run_sweep, sweep_folder

points = importlib.import_module("sweep_points")  # on sys.path: conftest.py


def _log_points(tmp_path, n, **extra):
    return [{"i": i, "log": str(tmp_path / "log.txt"), **extra} for i in range(n)]


def _computed(tmp_path) -> list[int]:
    log = tmp_path / "log.txt"
    return sorted(int(s) for s in log.read_text().split()) if log.exists() else []


def _trained_points(tmp_path):
    return [{"i": i, "seed": 10 + i, "lr": 0.05 * (i + 1), "log": str(tmp_path / "log.txt")}
            for i in range(4)]


def _kill_one_point(tmp_path, launcher, name, n):
    """Run the blocking sweep in a thread, SIGKILL the process of point 0 once the others
    are saved; return the exception the sweep ended with."""
    pts = _log_points(tmp_path, n, pidfile=str(tmp_path / "pid"), release=str(tmp_path / "go"))
    folder = sweep_folder(tmp_path, name)
    errors = []

    def target():
        try:
            run_sweep(points.blocking, pts, tmp_path, name, launcher=launcher)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not (
            (tmp_path / "pid").exists() and len(list(folder.glob("*.json"))) == n - 1):
        time.sleep(0.1)
    assert (tmp_path / "pid").exists(), "the blocking point never started"
    os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
    thread.join(timeout=150)
    assert not thread.is_alive()
    assert len(errors) == 1, errors
    return pts, errors[0]


def _check_resume_after_kill(tmp_path, launcher, name, n=4):
    pts, error = _kill_one_point(tmp_path, launcher, name, n)
    assert isinstance(error, SweepPointFailed), error
    assert (error.done, error.total) == (n - 1, n)
    assert [p["i"] for p, _ in error.failures] == [0]
    assert _computed(tmp_path) == list(range(1, n))
    (tmp_path / "go").write_text("")
    out = run_sweep(points.blocking, pts, tmp_path, name, launcher=launcher)
    assert _computed(tmp_path) == list(range(n))  # only the killed point ran again
    assert [r["square"] for r in out] == [i * i for i in range(n)]
    return error


# -- Ray -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_equals_local_bit_for_bit(tmp_path, ray_local):
    local = run_sweep(points.trained, _trained_points(tmp_path), tmp_path / "a", "t")
    on_ray = run_sweep(points.trained, _trained_points(tmp_path), tmp_path / "b", "t",
                       launcher=RayLauncher(cpus_per_point=1))
    assert on_ray == local  # floats compared exactly
    pids = {json.loads(f.read_text())["pid"]
            for f in sweep_folder(tmp_path / "b", "t").glob("*.json")}
    assert os.getpid() not in pids  # computed by Ray workers


@pytest.mark.slow
def test_ray_killed_task_keeps_the_others_and_rerun_computes_only_it(tmp_path, ray_local):
    error = _check_resume_after_kill(tmp_path, RayLauncher(retries=0), "ray-kill")
    assert "WorkerCrashedError" in error.failures[0][1]


@pytest.mark.slow
def test_ray_retries_a_point_whose_worker_died(tmp_path, ray_local):
    """retries=1: the point's first worker dies (os._exit), Ray runs it again, it computes;
    with retries=0 the same death is a failed point."""
    pts = [{"i": i, "log": str(tmp_path / "log.txt"), "died": str(tmp_path / f"died-{i}")}
           for i in range(2)]
    out = run_sweep(points.dies_once, pts, tmp_path / "a", "r", launcher=RayLauncher(retries=1))
    assert [r["square"] for r in out] == [0, 1]
    assert all((tmp_path / f"died-{i}").exists() for i in range(2))  # each died once
    assert _computed(tmp_path) == [0, 1]  # and was computed once, by its second attempt
    for i in range(2):
        (tmp_path / f"died-{i}").unlink()
    with pytest.raises(SweepPointFailed) as info:
        run_sweep(points.dies_once, pts[:1], tmp_path / "b", "r",
                  launcher=RayLauncher(retries=0))
    assert "WorkerCrashedError" in info.value.failures[0][1]


@pytest.mark.slow
def test_ray_failing_point_is_reported_with_its_error(tmp_path, ray_local):
    with pytest.raises(SweepPointFailed) as info:
        run_sweep(points.failing, _log_points(tmp_path, 4), tmp_path, "f",
                  launcher=RayLauncher())
    assert [p["i"] for p, _ in info.value.failures] == [2]
    assert "RuntimeError: point 2 failed on purpose" in info.value.failures[0][1]
    assert _computed(tmp_path) == [0, 1, 3]


# -- Submitit ------------------------------------------------------------------------------
def test_submitit_debug_equals_local(tmp_path):
    """The debug executor (in this process; it opens pdb on a failure, so only success here)."""
    local = run_sweep(points.trained, _trained_points(tmp_path), tmp_path / "a", "t")
    debug = run_sweep(points.trained, _trained_points(tmp_path), tmp_path / "b", "t",
                      launcher=SlurmLauncher(cluster="debug"))
    assert debug == local


@pytest.mark.slow
def test_submitit_local_jobs_survive_a_killed_job(tmp_path, worker_path):
    """Jobs as local processes through Submitit's submission path (each job a process; the
    results' equality with the local launcher is checked on the debug executor above, through
    the same run_point)."""
    launcher = SlurmLauncher(cluster="local", time_min=5)
    error = _check_resume_after_kill(tmp_path, launcher, "slurm-kill", n=2)
    assert (sweep_folder(tmp_path, "slurm-kill") / ".submitit").is_dir()  # Submitit's files
    assert "UncompletedJobError" in error.failures[0][1] or "FailedJobError" in \
        error.failures[0][1], error.failures[0][1]


def test_sbatch_script_asks_for_the_requested_resources(tmp_path):
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "cpu"\ntime_min = 30\ncpus_per_point = 4\n'
                      'gpus_per_point = 2\nmem_gb = 16\naccount = "lab"\n'
                      'array_parallelism = 8\nsetup = ["module load cuda/12"]\n'
                      '[extra]\nreservation = "paper"\n')
    launcher = SlurmLauncher.from_file(config, partition="gpu", time_min=None)
    assert launcher.partition == "gpu" and launcher.time_min == 30  # the command line wins
    script = launcher.sbatch_script(10, tmp_path / "logs")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=30", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --mem=16384MB",
                 "#SBATCH --account=lab", "#SBATCH --array=0-9%8",
                 "#SBATCH --reservation=paper", "#SBATCH --signal=USR2@120",
                 "module load cuda/12"):
        assert line in script.splitlines(), (line, script)
    assert "submitit.core._submit" in script


def test_slurm_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("partion = 'gpu'\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['partion'\]"):
        SlurmLauncher.from_file(bad)
    bad.write_text("partition = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        SlurmLauncher.from_file(bad)
    with pytest.raises(ConfigError, match="No such file"):
        SlurmLauncher.from_file(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="gpus_per_point must be a whole number on Slurm, "
                                          "got 0.5"):
        SlurmLauncher(gpus_per_point=0.5)
    with pytest.raises(ConfigError, match="time_min must be a positive integer, got 0"):
        SlurmLauncher(time_min=0)
    with pytest.raises(ConfigError, match="slurm cluster must be one of"):
        SlurmLauncher(cluster="pbs")


# -- shared storage, options ---------------------------------------------------------------
def test_worker_that_does_not_see_the_folder_refuses_before_computing(tmp_path):
    pt = _log_points(tmp_path, 1)[0]
    with pytest.raises(SharedStorageError, match="--out must be on storage every worker sees"):
        run_point(points.square, pt, str(tmp_path / "r.json"), str(tmp_path / "no-probe"))
    assert _computed(tmp_path) == [] and not (tmp_path / "r.json").exists()
    run_point(points.square, pt, str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["result"]["square"] == 0
    assert point_key(pt)  # the probe check does not depend on the point
    assert storage_warning("/dev/shm/x") is not None


def _args(*argv):
    p = argparse.ArgumentParser()
    add_launcher_arguments(p)
    return p.parse_args(list(argv))


def test_launcher_options():
    assert launcher_from_args(_args()) is None  # the local pool (--jobs)
    ray = launcher_from_args(_args("--launcher", "ray", "--ray-address", "auto",
                                   "--gpus-per-point", "0.25", "--cpus-per-point", "2"))
    assert isinstance(ray, RayLauncher)
    assert (ray.address, ray.cpus_per_point, ray.gpus_per_point) == ("auto", 2.0, 0.25)
    slurm = launcher_from_args(_args("--launcher", "slurm", "--slurm-partition", "gpu",
                                     "--slurm-time", "20", "--gpus-per-point", "1",
                                     "--slurm-cluster", "local"))
    assert isinstance(slurm, SlurmLauncher)
    assert (slurm.partition, slurm.time_min, slurm.gpus_per_point, slurm.cluster) == (
        "gpu", 20, 1, "local")
    for argv, message in [
        (("--ray-address", "auto"), "--ray-address needs --launcher ray, got --launcher local"),
        (("--launcher", "ray", "--slurm-time", "5"), "--slurm-time needs --launcher slurm"),
        (("--launcher", "slurm", "--gpus-per-point", "0.5"),
         "--gpus-per-point must be a whole number on Slurm, got 0.5"),
        (("--launcher", "slurm", "--slurm-time", "0"), "time_min must be a positive integer"),
        (("--launcher", "ray", "--cpus-per-point", "0"), "cpus_per_point must be a positive"),
        (("--launcher", "ray", "--gpus-per-point", "nan"), "gpus_per_point must be a non-neg"),
        (("--cpus-per-point", "2"), "need --launcher ray or slurm"),
    ]:
        with pytest.raises(ConfigError, match=message):
            launcher_from_args(_args(*argv))


def test_missing_extra_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("ray", "submitit") else real(name, *a))
    with pytest.raises(ConfigError, match=r"--launcher ray needs the optional dependency "
                                          r"'ray', which is not installed: pip install "
                                          r"'efflab\[ray\]'"):
        RayLauncher()
    with pytest.raises(ConfigError, match=r"pip install 'efflab\[slurm\]'"):
        launcher_from_args(_args("--launcher", "slurm"))


@pytest.mark.parametrize("argv, message", [
    (["--launcher", "slurm", "--gpus-per-point", "0.5"],
     "--gpus-per-point must be a whole number on Slurm, got 0.5"),
    (["--ray-address", "auto"], "--ray-address needs --launcher ray"),
])
def test_cli_refuses_bad_launcher_options_before_any_work(tmp_path, capsys, argv, message):
    from efflab.cli import main

    for command in (["run", "double-descent-linear"], ["reproduce"]):
        out = tmp_path / "out"
        assert main([*command, "--out", str(out), *argv]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
