"""``efflab reproduce --launcher ray|slurm``: each experiment one job (a Ray task, a Submitit
job), on the engines' local modes. The results equal the local run's bit for bit, a failed
experiment (one that raises, one whose job dies) does not lose the other, and a rerun
computes only what is missing."""

from __future__ import annotations

import importlib
import json
import os
import socket

import pytest
import torch

from efflab import experiments as registry
from efflab.cli import main
from efflab.experiments.base import ConfigError
from efflab.experiments.launchers import SlurmLauncher
from efflab.experiments.record import load_record
from efflab.experiments.runner import (
    JOBS_FOLDER,
    PlannedRun,
    run_as_jobs,
    run_experiment_job,
    run_planned,
)

tiny = importlib.import_module("tiny_experiments")  # on sys.path: conftest.py
NAMES = ["tiny-sweep", "tiny-plain"]


@pytest.fixture
def tiny_registry(monkeypatch):
    """The registry holds only the two tiny experiments (no discovery of the suite)."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_discovered", True)
    registry.register(tiny.TinySweep)
    registry.register(tiny.TinyPlain)


def _reproduce(out, *argv):
    return main(["reproduce", "--only", *NAMES, "--out", str(out), "--quiet", *argv])


def _results(out, name):
    return load_record(out / name / "results.json")


def _log(out, name):
    path = out / name
    return path.read_text().split() if path.exists() else []


def _check_fail_then_resume(tmp_path, argv, failing, how):
    """Locally, then on the launcher with ``failing`` failing (``how``), then a rerun."""
    local = tmp_path / "local"
    assert _reproduce(local) == 0
    out = tmp_path / "cluster"
    out.mkdir()
    (out / f"FAIL-{failing}").write_text(how)
    assert _reproduce(out, *argv) == 1
    other = next(n for n in NAMES if n != failing)
    bad, good = _results(out, failing), _results(out, other)
    assert bad.status == "failed" and good.status == "ok"
    assert good.results == _results(local, other).results  # floats compared exactly
    assert sorted(_log(out, "experiments.log")) == sorted(NAMES)
    assert sorted(_log(out, "points.log")) == ["0", "1"]
    summary = json.loads((out / JOBS_FOLDER / f"{other}.json").read_text())
    assert summary["pid"] != os.getpid()  # the experiment ran in a job, not here
    (out / f"FAIL-{failing}").unlink()
    assert _reproduce(out, *argv) == 0
    # only the failed experiment ran again; the sweep points were all kept
    assert sorted(_log(out, "experiments.log")) == sorted([*NAMES, failing])
    assert sorted(_log(out, "points.log")) == ["0", "1"]
    for name in NAMES:
        assert _results(out, name).results == _results(local, name).results
    assert (out / "index.html").is_file()
    assert not (out / f".{failing}.partial").exists()
    return bad


@pytest.mark.slow
def test_reproduce_on_ray_each_experiment_a_task(tmp_path, tiny_registry, ray_local, capsys):
    bad = _check_fail_then_resume(tmp_path, ["--launcher", "ray"], "tiny-plain", "raise")
    assert "RuntimeError: tiny-plain failed on purpose" in bad.error
    # nested: the sweep points of tiny-sweep were Ray tasks too (computed by Ray workers)
    points = [json.loads(p.read_text()) for p in
              (tmp_path / "cluster" / "tiny-sweep" / "sweeps" / "tiny").glob("*.json")]
    assert len(points) == 2 and os.getpid() not in {p["pid"] for p in points}
    assert "one job each, to ray" in capsys.readouterr().out


@pytest.mark.slow
def test_reproduce_on_submitit_local_jobs(tmp_path, tiny_registry, worker_path):
    """Submitit's local executor (each job a process, the submission path of Slurm); the job
    of tiny-sweep dies after its sweep: recorded failed, its points kept for the rerun."""
    bad = _check_fail_then_resume(
        tmp_path, ["--launcher", "slurm", "--slurm-cluster", "local", "--slurm-time", "5"],
        "tiny-sweep", "exit")
    assert "the job of tiny-sweep on slurm (local" in bad.error
    assert "its working folder and sweep points are kept" in bad.error
    assert (tmp_path / "cluster" / JOBS_FOLDER / ".submitit").is_dir()


@pytest.mark.slow
def test_submitit_debug_equals_local_on_a_real_experiment(tmp_path):
    """A suite experiment with its smoke overrides through run_as_jobs (Submitit's debug
    executor: this process, the same job function) equals run_planned here."""
    exp = importlib.import_module("efflab.experiments.suite.double_descent_linear")
    experiment = next(c for c in vars(exp).values() if isinstance(c, type)
                      and getattr(c, "name", None) == "double-descent-linear")()
    run = PlannedRun(experiment, experiment.smoke_config(), "quick")
    torch.set_num_threads(1)
    local = run_planned(run, tmp_path / "a", torch.device("cpu"))
    seen = []
    (job,) = run_as_jobs([run], tmp_path / "b", SlurmLauncher(cluster="debug"), "cpu",
                         on_record=seen.append)
    assert seen == [job] and job.status == local.status == "ok"
    a, b = _results(tmp_path / "a", run.experiment.name), _results(tmp_path / "b",
                                                                   run.experiment.name)
    assert b.results == a.results and b.claims == a.claims and b.verdict == a.verdict


def test_a_job_resolves_the_device_on_its_worker(tmp_path, monkeypatch):
    """A worker without a GPU refuses --device cuda, naming itself, before any work."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = PlannedRun(tiny.TinyPlain(), tiny.TinyConfig(), "quick")
    job = {"experiment": "tiny-plain", "out": str(tmp_path), "device": "cuda", "force": False,
           "jobs": 1, "threads": 1, "tensorboard": None}
    with pytest.raises(ConfigError, match=f"on {socket.gethostname()}: --device cuda: no CUDA"):
        run_experiment_job(job, {"tiny-plain": run})
    assert not (tmp_path / "tiny-plain").exists()


@pytest.mark.parametrize("argv, message", [
    (["--cpus-per-experiment", "2"], "--cpus-per-experiment needs --launcher ray or slurm"),
    (["--launcher", "slurm", "--gpus-per-experiment", "0.5"],
     "gpus_per_experiment must be a whole number on Slurm, got 0.5"),
    (["--launcher", "ray", "--cpus-per-experiment", "0"],
     "cpus_per_experiment must be a positive number"),
    (["--launcher", "ray", "--device", "tpu"], "--device must be auto, cpu or cuda"),
])
def test_reproduce_refuses_bad_job_options_before_any_work(tmp_path, capsys, tiny_registry,
                                                            argv, message):
    out = tmp_path / "out"
    assert _reproduce(out, *argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_run_has_no_per_experiment_options(tmp_path, capsys, tiny_registry):
    with pytest.raises(SystemExit) as info:
        main(["run", "tiny-plain", "--out", str(tmp_path / "o"), "--launcher", "ray",
              "--cpus-per-experiment", "2"])
    assert info.value.code == 2
    assert "unrecognized arguments: --cpus-per-experiment" in capsys.readouterr().err
