"""Running experiments: validation up front, one result folder each, written atomically.

A run of experiment ``NAME`` into ``OUT`` works in ``OUT/.NAME.partial`` and renames it to
``OUT/NAME`` when it ends, so ``OUT/NAME`` is either absent or complete. The folder holds
``results.json`` (a :class:`~efflab.experiments.record.ResultRecord`: config, seed, results,
claims, verdict, tables, environment, wall time), the PNG figures and each table as CSV
(``report.md`` beside them is written by :mod:`efflab.report`).

What survives which fault:

* killed (Ctrl-C, ``kill -9``, power): only the hidden working folder is left; the next run
  with the same ``--out`` works in it again, so sweep points already saved are kept;
* the experiment raises (or a sweep worker dies): the failure is recorded in ``OUT/NAME``
  with the working folder's content, and the next run moves that folder back into place and
  continues in it (again computing only the missing sweep points);
* an atomic write interrupted half-way leaves a ``.NAME.*.tmp`` file: the next run removes
  them from its working folder, and ``efflab reproduce`` from the finished folders it reuses.

:func:`run_as_jobs` runs whole experiments as jobs of a cluster launcher (``efflab reproduce
--launcher ray|slurm``): each job calls :func:`run_planned` on its worker, so each
experiment's folder is written and renamed into place there exactly as here; the driver reads
the records back. A job that dies (its worker lost, a Slurm job cancelled, ``--out`` not
visible there) is recorded as a failed result by the driver, keeping the working folder and
its sweep points for the next run. Inside a Ray job the experiment's sweep points are Ray
tasks again; inside a Slurm job they run in the job, ``jobs`` local workers (see
docs/scaling.md, "Whole experiments as jobs"). The same path runs experiments side by side
on this machine (``efflab reproduce --parallel N``, docs/reproduce.md "Side by side"): each
job a fresh local process, as many at a time as their declared cores fit in ``N``, a timed
experiment alone; a process that dies is recorded as failed in the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import os
import pickle
import random
import re
import shutil
import subprocess
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import efflab
from efflab.experiments import get
from efflab.experiments.base import (
    ConfigError,
    Experiment,
    ExperimentConfig,
    RunContext,
    Table,
)
from efflab.experiments.record import (
    RESULTS,
    RecordError,
    ResultRecord,
    experiment_verdict,
    load_record,
)
from efflab.io import atomic_write_text, remove_stale_tmp, to_jsonable
from efflab.measure.machine import machine_info


class OutputError(OSError):
    """The output folder cannot be written."""


class ResultExists(FileExistsError):
    """A finished result is in the way and ``force`` was not given."""


@dataclass
class PlannedRun:
    experiment: Experiment
    config: ExperimentConfig
    profile: str


@dataclass
class RunRecord:
    name: str
    status: str  # "ok" | "failed" | "reused"
    folder: Path
    verdict: str | None
    wall_time_s: float
    error: str | None = None
    budget_s: float | None = None
    #: the experiments that ran at the same time (``efflab reproduce --parallel``)
    beside: tuple[str, ...] = ()


def check_device_name(device: str) -> str:
    """``device`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether this machine
    has that device is not checked: a cluster job resolves it on its worker)."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here")
    return torch.device(device)


def plan(name: str, profile: str = "quick", overrides: list[str] | tuple[str, ...] = (),
         seed: int | None = None, values: Mapping[str, Any] | None = None) -> PlannedRun:
    """Look up ``name`` and build its config: the profile, then ``values`` (a saved config,
    ``--config``), then ``overrides`` (``--set``), then ``seed``; validate it. Raises
    :class:`ConfigError` (or :class:`~efflab.experiments.UnknownExperiment`) before any work."""
    exp = get(name)
    try:
        config = exp.Config.profile(profile)
        if values:
            config = config.with_values(values)
        config = config.with_overrides(list(overrides))
        if seed is not None:
            config = dataclasses.replace(config, seed=seed)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{name}: {e}") from None
    try:
        # the base rules (types, declared constraints, finite floats, the seed's range) run
        # even for a config whose own validate() does not call super().validate()
        ExperimentConfig.validate(config)
        config.validate()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{name}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a validate() that crashes still means bad input
        raise ConfigError(f"{name}: the config {config} is refused: validate() raised "
                          f"{type(e).__name__}: {e}") from None
    return PlannedRun(exp, config, profile)


def check_output_dir(out: str | os.PathLike) -> Path:
    """Make sure ``out`` is (or can become) a writable folder; leave nothing behind if not."""
    out = Path(out).expanduser().absolute()
    missing = []
    p = out
    while not p.exists():
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        raise OutputError(f"--out {out}: {p} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".efflab-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        for m in missing:  # deepest first: remove only what this check created
            try:
                m.rmdir()
            except OSError:
                pass
        raise OutputError(f"--out {out} is not writable: {e.strerror or e}") from None
    return out


def finished(folder: Path) -> dict[str, Any] | None:
    """The saved record (as a dict) of a finished (status ok) run in ``folder``, else None."""
    record = finished_record(folder)
    return None if record is None else record.to_dict()


def finished_record(folder: Path) -> ResultRecord | None:
    """The record of a finished (status ok) run in ``folder``; None if absent, failed or
    unreadable."""
    try:
        record = load_record(Path(folder) / RESULTS)
    except RecordError:
        return None
    return record if record.status == "ok" else None


def _git_commit() -> str:
    """The commit of the efflab source that runs (``-dirty`` with uncommitted changes), or
    ``"not a git checkout (efflab X.Y.Z)"`` for an installed package (a wheel), even one
    installed into a virtual environment that happens to sit inside some git repository."""
    src = Path(efflab.__file__).resolve().parent
    fallback = f"not a git checkout (efflab {efflab.__version__})"

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=src, capture_output=True, text=True,
                              timeout=5)

    try:
        # the package's own files must be tracked: a site-packages copy inside a repo is not
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return fallback
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return fallback
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return fallback


def environment(device: torch.device) -> dict[str, Any]:
    """What produced the numbers: :func:`efflab.measure.machine.machine_info` (device, cores,
    threads, versions), plus the numpy version and the git commit."""
    info = machine_info(device, torch.get_default_dtype())
    info["numpy_version"] = np.__version__
    info["git_commit"] = _git_commit()
    return info


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy global use in user code
    torch.manual_seed(seed)


def run_planned(run: PlannedRun, out: Path, device: torch.device, force: bool = False,
                jobs: int = 1, launcher: Any = None) -> RunRecord:
    """Run one planned experiment into ``out/NAME``. Failures are recorded, not raised."""
    exp, config = run.experiment, run.config
    final = out / exp.name
    if finished_record(final) is not None and not force:
        raise ResultExists(f"{final} holds a finished result; pass --force to replace it")
    work = working_folder(out, exp.name)
    seed_everything(config.seed)
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    status, error, results, claims, figures, tables = "ok", None, None, [], [], []
    try:
        ctx = RunContext(device=device, outdir=work, profile=run.profile, jobs=jobs,
                         launcher=launcher)
        results = exp.run(config, ctx)
        claims = exp.claims(results, config)
        figures = exp.figures(results, config, work)
        tables = exp.tables(results, config)
    except Exception:  # noqa: BLE001 - a failed experiment is a result, reported as such
        status, error = "failed", traceback.format_exc()
    wall = time.perf_counter() - t0
    budget = exp.budget_s.get(run.profile)
    record = ResultRecord(
        experiment=exp.name, paper=exp.paper, checks=exp.checks, profile=run.profile,
        status=status, seed=config.seed, config=to_jsonable(config.to_dict()),
        results=to_jsonable(results), claims=claims,
        verdict=experiment_verdict(status, claims), tables=tables, figures=figures,
        error=error, environment=environment(device),
        budget_s=None if budget is None else float(budget), wall_time_s=wall,
        started=started.isoformat(timespec="seconds"),
        finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        table_files=write_table_csvs(tables, work))
    record.save(work)
    _swap_into_place(work, final)
    return RunRecord(exp.name, status, final, record.verdict, wall, error, record.budget_s)


def working_folder(out: Path, name: str) -> Path:
    """``out/.NAME.partial``, ready to work in: an interrupted run's folder is kept as it is;
    without one, a failed result's folder ``out/NAME`` is moved back (its sweep points are
    reused); leftover temporary files of interrupted atomic writes are removed."""
    work = out / f".{name}.partial"
    final = out / name
    if not work.exists() and final.is_dir():
        try:
            failed = load_record(final / RESULTS).status == "failed"
        except RecordError:
            failed = False  # not ours to reuse: replaced when this run ends
        if failed:
            os.replace(final, work)
    work.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(work)
    return work


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:50] or "table"


def write_table_csvs(tables: list[Table], folder: Path) -> list[str]:
    """Each table as ``table-<i>-<title>.csv`` in ``folder`` (atomically); returns the names.
    The title is the CSV's first line, as a comment; the note its last."""
    import csv
    import io

    names = []
    for i, t in enumerate(tables, 1):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(t.columns)
        writer.writerows([[_csv_cell(x) for x in row] for row in t.rows])
        name = f"table-{i}-{_slug(t.title)}.csv"
        atomic_write_text(folder / name, buf.getvalue())
        names.append(name)
    return names


def _csv_cell(x: Any) -> Any:
    x = to_jsonable(x)
    return "" if x is None else x


def _swap_into_place(work: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def record_broken(module: str, error: str, out: Path, profile: str, device: torch.device
                  ) -> RunRecord:
    """Write a failed result for an experiment module that could not even be imported."""
    return _record_failure(module, "?", "(module failed to import)", profile, None, {},
                           error, out, device, None)


def _record_failure(name: str, paper: str, checks: str, profile: str, seed: int | None,
                    config: dict[str, Any], error: str, out: Path, device: torch.device,
                    budget_s: float | None) -> RunRecord:
    """Write a failed result for ``name`` that this process did not run (a broken module, a
    cluster job that died); the working folder (with any sweep points) is kept in it."""
    work = working_folder(out, name)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record = ResultRecord(
        experiment=name, paper=paper, checks=checks, profile=profile,
        status="failed", seed=seed, config=config, results=None, claims=[], verdict="failed",
        tables=[], figures=[], error=error, environment=environment(device),
        budget_s=budget_s, wall_time_s=0.0, started=now, finished=now)
    record.save(work)
    final = out / name
    _swap_into_place(work, final)
    return RunRecord(name, "failed", final, "failed", 0.0, error, budget_s)


def tidy_finished(folder: Path) -> list[Path]:
    """Remove leftover temporary files of interrupted writes from a finished result folder
    that is being reused; returns what was removed."""
    return remove_stale_tmp(folder) if Path(folder).is_dir() else []


# -- whole experiments as cluster jobs -----------------------------------------------------
JOBS_FOLDER = ".jobs"


def run_experiment_job(job: dict[str, Any], runs: Mapping[str, PlannedRun],
                       sweep_launcher: Any = None) -> dict[str, Any]:
    """What one experiment's cluster job runs (on its worker): :func:`run_planned` into
    ``job["out"]``, on ``job["device"]`` resolved here, with ``job["threads"]`` torch threads;
    the experiment's sweeps on ``sweep_launcher`` (None: ``job["jobs"]`` local workers in
    this job). Returns a summary; the result itself is ``OUT/NAME/results.json``."""
    import socket

    run = runs[job["experiment"]]
    out = Path(job["out"])
    try:
        device = resolve_device(job["device"])
    except ConfigError as e:
        raise ConfigError(f"on {socket.gethostname()}: {e}") from None
    torch.set_num_threads(job["threads"])
    if job.get("tensorboard"):
        from efflab.train.loop import TENSORBOARD_ENV

        os.environ[TENSORBOARD_ENV] = job["tensorboard"]
    prev = finished_record(out / run.experiment.name)
    if prev is not None and not job["force"]:
        # a retried job (Ray after a lost worker, Slurm after a requeue) whose first attempt
        # had already finished: nothing is missing
        rec = RunRecord(run.experiment.name, "ok", out / run.experiment.name, prev.verdict,
                        prev.wall_time_s)
    else:
        rec = run_planned(run, out, device, force=job["force"], jobs=job["jobs"],
                          launcher=sweep_launcher)
    return {"status": rec.status, "verdict": rec.verdict, "wall_time_s": rec.wall_time_s,
            "host": socket.gethostname()}


def run_as_jobs(runs: list[PlannedRun], out: Path, launcher: Any, device: str = "auto",
                force: bool = False, jobs: int = 1, threads: int = 1,
                cpus_per_experiment: float | None = None,
                gpus_per_experiment: float | None = None,
                on_record: Any = None) -> list[RunRecord]:
    """Run each planned experiment as one job of ``launcher`` and return their records in the
    order of ``runs``; ``on_record(record)`` is called as each ends. ``launcher``: a cluster
    (a :class:`~efflab.experiments.launchers.RayLauncher` or
    :class:`~efflab.experiments.launchers.SlurmLauncher`), or this machine
    (:class:`~efflab.experiments.launchers.LocalExperimentLauncher`: each experiment a fresh
    process, side by side as their :meth:`~efflab.experiments.base.Experiment.cores_busy`
    and :attr:`~efflab.experiments.base.Experiment.timed` allow, their sweeps on ``jobs``
    local workers; each record names in ``ran_beside`` the experiments that ran at the same
    time).

    Each job requests ``cpus_per_experiment`` CPUs and ``gpus_per_experiment`` GPUs (see
    :func:`~efflab.experiments.launchers.experiment_launcher` for the defaults). On Ray the
    experiment's sweep points are Ray tasks of their own (``launcher``'s per-point request);
    on Slurm they run inside the experiment's job with ``jobs`` local workers. ``force``
    replaces finished results (as in :func:`run_planned`); the caller leaves out those it
    reuses. A job that fails (its worker died, ``out`` not visible there) is recorded in
    ``out/NAME`` as a failed result with the launcher's error; the others go on.
    """
    from efflab.experiments.launchers import (
        LocalExperimentLauncher,
        PointTask,
        RayLauncher,
        experiment_launcher,
    )

    if isinstance(launcher, LocalExperimentLauncher):
        job_launcher, sweep_launcher = launcher, None
    else:
        job_launcher = experiment_launcher(launcher, cpus_per_experiment, gpus_per_experiment)
        sweep_launcher = launcher if isinstance(launcher, RayLauncher) else None
    folder = out / JOBS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = [r.experiment.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs name an experiment more than once: {names}")
    from efflab.train.loop import TENSORBOARD_ENV

    tasks = []
    for i, run in enumerate(runs):
        path = folder / f"{run.experiment.name}.json"
        path.unlink(missing_ok=True)  # a previous run's summary
        exp = run.experiment
        budget = exp.budget_s.get(run.profile)
        tasks.append(PointTask(i, {
            "experiment": exp.name, "out": str(out), "device": device,
            "force": bool(force), "jobs": int(jobs), "threads": int(threads),
            "tensorboard": os.environ.get(TENSORBOARD_ENV),
            # what it asks of the machine, for the local launcher's scheduling
            "cores": exp.cores_busy(jobs), "alone": bool(exp.timed),
            "budget_s": None if budget is None else float(budget)}, str(path)))
    by_name: Mapping[str, PlannedRun] = {r.experiment.name: r for r in runs}
    if isinstance(launcher, LocalExperimentLauncher):
        by_name = _RunsByName(runs)
    fn = functools.partial(run_experiment_job, runs=by_name, sweep_launcher=sweep_launcher)
    records: list[RunRecord | None] = [None] * len(runs)
    submitted = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    for outcome in job_launcher.execute(fn, tasks, folder):
        rec = _collect_job(runs[outcome.index], out, outcome.error, job_launcher, submitted)
        if outcome.beside:
            rec = _note_beside(rec, [runs[j].experiment.name for j in outcome.beside])
        records[outcome.index] = rec
        if on_record is not None:
            on_record(rec)
    return [r for r in records if r is not None]


class _RunsByName(Mapping):
    """Planned runs by name, each pickled on its own: a local experiment's process unpickles,
    and so imports the module of, only its own experiment (importing every suite module costs
    each process a second or two more)."""

    def __init__(self, runs: list[PlannedRun]):
        self._pickled = {r.experiment.name: pickle.dumps(r) for r in runs}

    def __getitem__(self, name: str) -> PlannedRun:
        return pickle.loads(self._pickled[name])

    def __iter__(self):
        return iter(self._pickled)

    def __len__(self) -> int:
        return len(self._pickled)


def _note_beside(rec: RunRecord, names: list[str]) -> RunRecord:
    """Write into ``rec``'s ``results.json`` (atomically) which experiments ran beside it."""
    try:
        record = load_record(rec.folder / RESULTS)
    except RecordError:
        return rec
    record.ran_beside = list(names)
    record.save(rec.folder)
    return dataclasses.replace(rec, beside=tuple(names))


def _collect_job(run: PlannedRun, out: Path, error: str | None, launcher: Any,
                 submitted: _dt.datetime) -> RunRecord:
    """The record of one experiment's finished job, as read back from ``out/NAME``; a job
    that failed is written there as a failed result, unless it died after its experiment
    had finished (a result started after the submission is kept)."""
    exp = run.experiment
    budget = exp.budget_s.get(run.profile)
    final = out / exp.name
    if error is not None and (done := finished_record(final)) is not None:
        with contextlib.suppress(ValueError):
            if _dt.datetime.fromisoformat(done.started) >= submitted:
                error = None
    if error is None:
        try:
            record = load_record(final / RESULTS)
        except RecordError as e:
            from efflab.experiments.launchers import storage_warning

            hint = storage_warning(out) or "--out must be on storage every worker sees"
            error = f"the job finished but its result is not readable here: {e}: {hint}"
        else:
            return RunRecord(exp.name, record.status, final, record.verdict,
                             record.wall_time_s, record.error, record.budget_s)
    message = (f"the job of {exp.name} on {launcher.describe('job')} failed (its working folder "
               f"and sweep points are kept for the next run):\n{error}")
    return _record_failure(exp.name, exp.paper, exp.checks, run.profile, run.config.seed,
                           to_jsonable(run.config.to_dict()), message, out,
                           torch.device("cpu"), None if budget is None else float(budget))
