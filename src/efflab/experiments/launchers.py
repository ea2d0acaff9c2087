"""Where a sweep's points run: here (a process pool), on a Ray cluster, or as a Slurm job array.

:func:`efflab.experiments.sweep.run_sweep` decides *which* points are missing and reads every
result back from its file; a launcher only runs ``_compute(fn, point, path)`` for each missing
point somewhere and reports, point by point as they end, whether it raised. So the guarantees
are the same on every launcher: each finished point is written atomically by the process that
computed it, a failed point is reported with its error and does not stop the others, and a
rerun with the same folder computes only what is missing.

* :class:`LocalLauncher` (``--launcher local``, the default): the missing points one after
  another here (``jobs = 1``) or in ``jobs`` worker processes (started with ``spawn``; each
  exits when its parent dies: ``PR_SET_PDEATHSIG`` on Linux, and a watchdog thread that
  polls the parent's pid everywhere).
* :class:`RayLauncher` (``--launcher ray``): each point a Ray task with its CPU and GPU
  request (fractional GPUs allowed), on the cluster at ``address`` (``--ray-address``, else
  ``$RAY_ADDRESS``, else a Ray started here).
* :class:`SlurmLauncher` (``--launcher slurm``): one Submitit job array per sweep, with the
  partition, time, CPUs and GPUs given or read from a small TOML file; a preempted or
  timed-out job is requeued by Submitit's checkpointing (the point starts again: points are
  the unit of saved work).

Whole experiments run side by side on this machine with :class:`LocalExperimentLauncher`
(``efflab reproduce --parallel N``): each one a fresh process, as many at a time as their
declared cores fit in ``N``, one that times things alone (:func:`next_to_start`).

On a cluster the output folder must be on storage every worker sees: the driver writes a probe
file into the sweep's folder, and a worker that does not see it fails its point with
:class:`SharedStorageError` before computing anything.

Ray and Submitit are optional extras (``efflab[ray]``, ``efflab[slurm]``), imported only when
their launcher runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from efflab.experiments.base import ConfigError

PointFn = Callable[[dict[str, Any]], Any]
LAUNCHERS = ("local", "ray", "slurm")
SLURM_CLUSTERS = ("slurm", "local", "debug")


@dataclass(frozen=True)
class PointTask:
    """One missing point: its position in the sweep, its canonical dict, its result file."""

    index: int
    point: dict[str, Any]
    path: str


@dataclass(frozen=True)
class Outcome:
    """How a point ended: ``error`` is None when its result file was written."""

    index: int
    error: str | None = None
    #: the indices of the tasks that ran at the same time on this machine (whole
    #: experiments side by side, :class:`LocalExperimentLauncher`); empty elsewhere
    beside: tuple[int, ...] = ()


class WorkerDied(RuntimeError):
    """A local worker process died (killed, out of memory): the pool cannot go on."""


class SharedStorageError(RuntimeError):
    """A worker does not see the sweep's folder: ``--out`` is not on shared storage."""


def _format_error(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()


def _require(module: str, extra: str, launcher: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"--launcher {launcher} needs the optional dependency {module!r}, "
                          f"which is not installed: pip install 'efflab[{extra}]'")


# -- what runs on a worker -----------------------------------------------------------------
def run_point(fn: PointFn, point: dict[str, Any], path: str, probe: str | None = None,
              threads: int | None = None) -> None:
    """Compute one point and write its result file (on whichever machine this runs)."""
    from efflab.experiments.sweep import _compute

    if probe is not None and not os.path.exists(probe):
        raise SharedStorageError(
            f"{socket.gethostname()} does not see {os.path.dirname(probe)} (the driver wrote "
            f"{os.path.basename(probe)} there): --out must be on storage every worker sees")
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    _compute(fn, point, path)


class _SubmititPoint:
    """The callable a Slurm job runs. Its ``checkpoint`` makes Submitit requeue the job with
    the same arguments when it is preempted or reaches its time limit (the point starts again:
    only whole points are saved)."""

    def __call__(self, fn, point, path, probe, threads):
        run_point(fn, point, path, probe, threads)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


# -- local: here, or a process pool ------------------------------------------------------
def _set_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval_s: float) -> None:
    while True:
        if os.getppid() != parent_pid:  # re-parented: the parent is gone
            os._exit(1)
        time.sleep(interval_s)


def init_worker(threads: int, parent_pid: int, death_signal: bool = True,
                interval_s: float = 0.5) -> None:
    """Set up a pool worker: ``threads`` torch threads, and exit when the parent dies.

    Two mechanisms, because either alone has a gap: the death signal fires when the *thread*
    that started the worker ends (run_sweep starts the pool from its calling thread and joins
    it before returning, so that thread outlives the workers) and exists only on Linux; the
    watchdog polls every ``interval_s`` and works everywhere.
    """
    import torch

    torch.set_num_threads(threads)
    if death_signal:
        _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval_s), daemon=True,
                     name="efflab-parent-watchdog").start()


@dataclass
class LocalLauncher:
    """The missing points here (``jobs = 1``, or one missing point) or in ``jobs`` processes."""

    jobs: int = 1
    name: str = field(default="local", init=False)

    def __post_init__(self) -> None:
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")

    def describe(self) -> str:
        return f"local ({self.jobs} worker{'s' if self.jobs > 1 else ''})"

    def execute(self, fn: PointFn, tasks: Sequence[PointTask], folder: Path
                ) -> Iterator[Outcome]:
        from efflab.experiments.sweep import _compute

        if self.jobs == 1 or len(tasks) == 1:
            for t in tasks:
                try:
                    _compute(fn, t.point, t.path)
                except Exception as e:  # noqa: BLE001 - a failed point is reported, not fatal
                    yield Outcome(t.index, _format_error(e))
                else:
                    yield Outcome(t.index)
            return
        try:
            pickle.dumps(fn)
        except Exception as e:  # noqa: BLE001 - any pickling failure means the same thing
            raise TypeError(f"fn must be a module-level function to run in worker processes "
                            f"(jobs={self.jobs}), got {fn!r}: {e}") from e
        workers = min(self.jobs, len(tasks))
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                                 initargs=(threads, os.getpid())) as pool:
            futures = {pool.submit(_compute, fn, t.point, t.path): t.index for t in tasks}
            pending = set(futures)
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        error = fut.exception()
                        if isinstance(error, BrokenProcessPool):
                            raise WorkerDied(str(error)) from None
                        yield Outcome(futures[fut], None if error is None
                                      else _format_error(error))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


# -- whole experiments side by side on this machine ----------------------------------------
@dataclass(frozen=True)
class Need:
    """What one experiment's job asks of the machine: ``cores`` slots (at most all of them),
    and ``alone``: nothing else may run beside it (it times things)."""

    cores: int = 1
    alone: bool = False

    @classmethod
    def of(cls, job: dict[str, Any]) -> Need:
        return cls(int(job.get("cores", 1)), bool(job.get("alone", False)))


def next_to_start(pending: Sequence[Need], running: Sequence[Need], slots: int
                  ) -> int | None:
    """The position in ``pending`` (in order of preference) of the job to start now beside
    the ``running`` ones on ``slots`` slots, or None: the first that fits. A job that must
    run alone fits only when nothing runs, and while one waits at the head nothing else
    starts (so that it gets the machine as soon as the running jobs end); nothing starts
    beside a job that runs alone."""
    if any(r.alone for r in running):
        return None
    free = slots - sum(min(r.cores, slots) for r in running)
    for i, need in enumerate(pending):
        if need.alone:
            if not running:
                return i
            if i == 0:
                return None
            continue
        if min(need.cores, slots) <= free:
            return i
    return None


#: what the fork server of the experiments' processes imports once, before any fork
_PRELOAD = ["torch", "efflab.experiments.runner"]


def _experiment_context() -> Any:
    """Where the experiments' processes come from: a fork server where there is one (Linux,
    macOS), which imports torch and efflab once; each process is a fork of it, so it starts
    in milliseconds instead of the seconds of a torch import, and it is fresh all the same:
    no experiment ever ran in the server. Elsewhere ``spawn``."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _exit_with_the_driver() -> None:
    """Exit the moment the process that started this one dies. Not through the parent pid
    or a death signal: under the fork server the parent is the server, which lives on as
    long as any of its forks does; but the driver holds the other end of a pipe whose end
    here (``multiprocessing.parent_process().sentinel``) becomes readable when it dies."""
    import multiprocessing.connection

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="efflab-driver-watchdog").start()


def _experiment_process(fn: PointFn, point: dict[str, Any], path: str, threads: int) -> None:
    """The body of one experiment's process: ``threads`` torch threads, exits with the
    driver, shows no progress bars (two bars side by side would garble the terminal),
    writes ``path`` as a sweep point does, or the error beside it as ``path + ".error"``."""
    import torch

    torch.set_num_threads(threads)
    _exit_with_the_driver()
    from efflab.progress import set_quiet

    set_quiet(True)
    from efflab.experiments.sweep import _compute

    try:
        _compute(fn, point, path)
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C: the driver says so, once, rather than a traceback from each
    except Exception as e:  # noqa: BLE001 - reported to the parent, which records it
        from efflab.io import atomic_write_text

        atomic_write_text(path + ".error", _format_error(e))
        sys.exit(1)


def _exit_error(process: Any, path: str) -> str | None:
    """None when ``process`` wrote its result ``path``, else why not."""
    if process.exitcode == 0 and os.path.exists(path):
        return None
    with contextlib.suppress(OSError):
        return Path(path + ".error").read_text(encoding="utf-8")
    code = process.exitcode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else \
        f"exited with code {code}"
    return f"its process (pid {process.pid}) {how} before writing its result"


@dataclass
class LocalExperimentLauncher:
    """Whole experiments as jobs on this machine (``efflab reproduce --parallel N``): each
    one in a fresh process (a fork of a server that only imported torch and efflab, see
    :func:`_experiment_context`: torch's thread settings, seeds and global state do not
    carry over from one experiment to another), up to ``slots`` cores' worth of them at a
    time.

    A job's dict says what it needs (:class:`Need`: ``cores``, ``alone``); jobs start in the
    order :func:`next_to_start` picks from: those that run alone first, then by
    ``budget_s``, longest first (ties: the order given). ``on_start(task)`` is called as
    each starts. Each outcome names in ``beside`` the jobs that ran at the same time. A job
    that raises or whose process dies is reported with its error, the others go on; when
    the caller stops (Ctrl-C), the running processes are terminated (and their sweep
    workers exit with them).
    """

    slots: int
    on_start: Callable[[PointTask], None] | None = None
    name: str = field(default="local", init=False)

    def __post_init__(self) -> None:
        if isinstance(self.slots, bool) or not isinstance(self.slots, int) or self.slots < 1:
            raise ConfigError(f"slots must be an integer >= 1, got {self.slots!r}")

    def describe(self, per: str = "job") -> str:
        return f"this machine ({self.slots} cores, a fresh process a {per})"

    def execute(self, fn: PointFn, tasks: Sequence[PointTask], folder: Path
                ) -> Iterator[Outcome]:
        import multiprocessing.connection

        ctx = _experiment_context()
        pending = sorted(tasks, key=lambda t: (not Need.of(t.point).alone,
                                               -float(t.point.get("budget_s") or 0.0)))
        running: dict[int, tuple[Any, PointTask]] = {}
        beside: dict[int, set[int]] = {}
        try:
            while pending or running:
                while (i := next_to_start([Need.of(t.point) for t in pending],
                                          [Need.of(t.point) for _, t in running.values()],
                                          self.slots)) is not None:
                    task = pending.pop(i)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(task.path + ".error")  # a previous run's
                    process = ctx.Process(
                        target=_experiment_process, name=f"efflab-job-{task.index}",
                        args=(fn, task.point, task.path, int(task.point.get("threads", 1))))
                    process.start()
                    beside[task.index] = set(running)
                    for other in running:
                        beside[other].add(task.index)
                    running[task.index] = (process, task)
                    if self.on_start is not None:
                        self.on_start(task)
                # (with nothing running, next_to_start always picks one: running is not empty)
                multiprocessing.connection.wait([p.sentinel for p, _ in running.values()])
                for index in [k for k, (p, _) in running.items() if not p.is_alive()]:
                    process, task = running.pop(index)
                    process.join()
                    yield Outcome(index, _exit_error(process, task.path),
                                  tuple(sorted(beside.pop(index))))
        finally:
            for process, _ in running.values():
                process.terminate()
            for process, _ in running.values():
                process.join(5)
                if process.is_alive():
                    process.kill()
                    process.join()


# -- Ray -----------------------------------------------------------------------------------
@dataclass
class RayLauncher:
    """Each missing point a Ray task requesting ``cpus_per_point`` CPUs and ``gpus_per_point``
    GPUs (fractions allowed: 0.25 packs four points on a GPU).

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
    None uses ``$RAY_ADDRESS`` or starts Ray here. ``retries``: how often Ray reruns a point
    whose worker process died (a lost node, the OOM killer) before reporting it failed.
    ``init_kwargs`` go to ``ray.init`` (e.g. ``runtime_env``). Ray is started on first use
    and left running for the next sweep of this process.
    """

    address: str | None = None
    cpus_per_point: float = 1.0
    gpus_per_point: float = 0.0
    retries: int = 2
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = field(default="ray", init=False)

    def __post_init__(self) -> None:
        _require("ray", "ray", "ray")
        _check_resources(self.cpus_per_point, self.gpus_per_point, integer_gpus=False)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) \
                or self.retries < 0:
            raise ConfigError(f"retries must be an integer >= 0, got {self.retries!r}")

    def describe(self, per: str = "point") -> str:
        where = self.address or os.environ.get("RAY_ADDRESS") or "a Ray started here"
        return (f"ray ({where}; {self.cpus_per_point:g} CPU, {self.gpus_per_point:g} GPU "
                f"a {per})")

    def execute(self, fn: PointFn, tasks: Sequence[PointTask], folder: Path
                ) -> Iterator[Outcome]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_kwargs)
        remote = ray.remote(run_point).options(
            num_cpus=self.cpus_per_point, num_gpus=self.gpus_per_point,
            max_retries=self.retries, retry_exceptions=False)
        threads = max(1, math.floor(self.cpus_per_point))
        with _probe(folder) as probe:
            refs = {remote.remote(fn, t.point, t.path, probe, threads): t.index for t in tasks}
            pending = list(refs)
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        try:
                            ray.get(ref)
                        except ray.exceptions.RayTaskError as e:  # the point raised
                            cause = getattr(e, "cause", None)
                            yield Outcome(refs[ref], _format_error(cause) if cause else str(e))
                        except ray.exceptions.RayError as e:  # its worker or node died
                            yield Outcome(refs[ref], f"{type(e).__name__}: {e}")
                        else:
                            yield Outcome(refs[ref])
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise


# -- Slurm (Submitit) ----------------------------------------------------------------------
@dataclass
class SlurmLauncher:
    """One Submitit job array per sweep, one array task per missing point.

    ``partition``, ``time_min`` (minutes per point), ``cpus_per_point``, ``gpus_per_point``,
    ``mem_gb``, ``account``, ``qos``, ``constraint``, ``array_parallelism`` (points running at
    once), ``setup`` (shell lines run before each job, e.g. ``module load`` or activating the
    environment) and ``extra`` (any other sbatch option, as Submitit's
    ``additional_parameters``). ``cluster``: ``slurm`` submits with sbatch; ``local`` runs the
    jobs as local processes through the same Submitit code path (to try a setup without a
    cluster); ``debug`` runs them one by one in this process (Submitit's DebugExecutor,
    which opens pdb on a failing point). ``logs``: Submitit's folder (job scripts,
    pickles, logs), default ``<sweep folder>/.submitit``.
    """

    partition: str | None = None
    time_min: int = 60
    cpus_per_point: int = 1
    gpus_per_point: int = 0
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None
    setup: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    cluster: str = "slurm"
    logs: str | None = None
    max_requeues: int = 3
    name: str = field(default="slurm", init=False)

    def __post_init__(self) -> None:
        _require("submitit", "slurm", "slurm")
        if self.cluster not in SLURM_CLUSTERS:
            raise ConfigError(f"slurm cluster must be one of {SLURM_CLUSTERS}, "
                              f"got {self.cluster!r}")
        _check_resources(self.cpus_per_point, self.gpus_per_point, integer_gpus=True)
        for name in ("time_min", "array_parallelism", "max_requeues"):
            v = getattr(self, name)
            if v is None and name == "array_parallelism":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name ==
                                                                     "max_requeues" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.mem_gb is not None and not (isinstance(self.mem_gb, (int, float))
                                            and math.isfinite(self.mem_gb) and self.mem_gb > 0):
            raise ConfigError(f"mem_gb must be a positive number, got {self.mem_gb!r}")
        self.setup = tuple(self.setup)

    @classmethod
    def from_file(cls, path: str | os.PathLike | None, **overrides: Any) -> SlurmLauncher:
        """Settings from a TOML file (keys: the fields of this class), then ``overrides``
        (those that are not None): the command line wins over the file."""
        values: dict[str, Any] = {}
        if path is not None:
            import tomllib

            try:
                with open(path, "rb") as f:
                    values = tomllib.load(f)
            except OSError as e:
                raise ConfigError(f"--slurm-config {path}: {e.strerror or e}") from None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"--slurm-config {path}: not valid TOML: {e}") from None
            values = values.get("slurm", values)
            known = {f for f in cls.__dataclass_fields__ if f != "name"}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(f"--slurm-config {path}: unknown key(s) {unknown}; "
                                  f"known: {sorted(known)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as e:
            raise ConfigError(f"--slurm-config {path}: {e}") from None

    def describe(self, per: str = "point") -> str:
        return (f"slurm ({self.cluster}; partition {self.partition or 'default'}, "
                f"{self.time_min} min, {self.cpus_per_point} CPU, {self.gpus_per_point} GPU "
                f"a {per})")

    def sbatch_parameters(self) -> dict[str, Any]:
        """The parameters of Submitit's SlurmExecutor (Slurm's own names)."""
        params: dict[str, Any] = {"time": self.time_min, "cpus_per_task": self.cpus_per_point,
                                  "signal_delay_s": 120, "setup": list(self.setup)}
        if self.gpus_per_point:
            params["gpus_per_node"] = self.gpus_per_point
        for key in ("partition", "account", "qos", "constraint", "array_parallelism"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        if self.mem_gb is not None:
            params["mem"] = f"{int(math.ceil(self.mem_gb * 1024))}MB"
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params

    def sbatch_script(self, n_points: int, logs: str | os.PathLike) -> str:
        """The sbatch script Submitit submits for a job array of ``n_points`` points."""
        from submitit.slurm.slurm import _make_sbatch_string

        command = f"{sys.executable} -u -m submitit.core._submit {logs}"
        return _make_sbatch_string(command=command, folder=logs, map_count=n_points,
                                   **self.sbatch_parameters())

    def _executor(self, logs: Path):
        import submitit

        if self.cluster == "slurm":
            ex = submitit.SlurmExecutor(folder=logs, max_num_timeout=self.max_requeues)
            ex.update_parameters(**self.sbatch_parameters())
        elif self.cluster == "local":
            ex = submitit.LocalExecutor(folder=logs, max_num_timeout=self.max_requeues)
            ex.update_parameters(timeout_min=self.time_min, gpus_per_node=self.gpus_per_point,
                                 setup=list(self.setup))
        else:
            ex = submitit.DebugExecutor(folder=logs)
        return ex

    def execute(self, fn: PointFn, tasks: Sequence[PointTask], folder: Path
                ) -> Iterator[Outcome]:
        from submitit.helpers import as_completed

        logs = Path(self.logs) if self.logs else folder / ".submitit"
        ex = self._executor(logs)
        with _probe(folder) as probe:
            n = len(tasks)
            jobs = ex.map_array(_SubmititPoint(), [fn] * n, [t.point for t in tasks],
                                [t.path for t in tasks], [probe] * n,
                                [self.cpus_per_point] * n)
            index = {id(job): t.index for job, t in zip(jobs, tasks)}
            try:
                for job in as_completed(jobs, poll_frequency=0.2):
                    try:
                        job.result()
                    except Exception as e:  # noqa: BLE001 - failed, killed or cancelled job
                        yield Outcome(index[id(job)], _submitit_error(e))
                    else:
                        yield Outcome(index[id(job)])
            except BaseException:
                for job in jobs:
                    if not job.done():
                        job.cancel(check=False)
                raise


def _submitit_error(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _check_resources(cpus: float, gpus: float, integer_gpus: bool, per: str = "point"
                     ) -> None:
    for name, v, low in ((f"cpus_per_{per}", cpus, 1e-9), (f"gpus_per_{per}", gpus, 0.0)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < low:
            raise ConfigError(f"{name} must be a {'positive' if low else 'non-negative'} "
                              f"number, got {v!r}")
    if integer_gpus and gpus != int(gpus):
        raise ConfigError(f"gpus_per_{per} must be a whole number on Slurm, got {gpus!r} "
                          f"(fractional GPUs: --launcher ray)")
    if integer_gpus and cpus != int(cpus):
        raise ConfigError(f"cpus_per_{per} must be a whole number on Slurm, got {cpus!r}")


@contextlib.contextmanager
def _probe(folder: Path):
    """A file only the driver writes, which every worker must see before it computes."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".shared-probe-{uuid.uuid4().hex[:12]}"
    probe.write_text(socket.gethostname())
    try:
        yield str(probe)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def storage_warning(path: str | os.PathLike) -> str | None:
    """A warning when ``path`` lies on storage that is private to this machine (a tmpfs,
    /tmp, /dev/shm): cluster workers elsewhere would not see it."""
    path = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (path == parts[1] or path.startswith(
                        parts[1].rstrip("/") + "/")) and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
    except OSError:
        pass
    if fstype in ("tmpfs", "ramfs") or path.startswith(("/tmp/", "/dev/shm/")):
        return (f"{path} is on {fstype or 'local'} storage of this machine: cluster workers "
                "on other machines will not see it (they fail with SharedStorageError); put "
                "--out on a shared file system")
    return None


Launcher = LocalLauncher | RayLauncher | SlurmLauncher


def experiment_launcher(launcher: Launcher, cpus: float | None = None,
                        gpus: float | None = None) -> RayLauncher | SlurmLauncher:
    """The launcher that runs whole experiments as jobs (``efflab reproduce --launcher``):
    ``launcher`` with each job requesting ``cpus`` CPUs (default: ``launcher``'s per-point
    request) and ``gpus`` GPUs. The GPU default differs: on Slurm the experiment's sweep
    points run inside its job, so the job gets the per-point GPUs; on Ray the points are
    tasks with their own request, and an experiment task waiting for them keeps the GPUs
    it holds (Ray lends out only the CPUs of a blocked task), so the default is 0."""
    if isinstance(launcher, RayLauncher):
        cpus = launcher.cpus_per_point if cpus is None else cpus
        gpus = 0.0 if gpus is None else gpus
        _check_resources(cpus, gpus, integer_gpus=False, per="experiment")
        return dataclasses.replace(launcher, cpus_per_point=cpus, gpus_per_point=gpus)
    if isinstance(launcher, SlurmLauncher):
        cpus = launcher.cpus_per_point if cpus is None else cpus
        gpus = launcher.gpus_per_point if gpus is None else gpus
        _check_resources(cpus, gpus, integer_gpus=True, per="experiment")
        return dataclasses.replace(launcher, cpus_per_point=int(cpus), gpus_per_point=int(gpus))
    raise ConfigError(f"whole experiments run as jobs on --launcher ray or slurm, got "
                      f"{getattr(launcher, 'name', launcher)!r}")


def launcher_warning(launcher: Launcher | None, out: str | os.PathLike) -> str | None:
    """What to tell the user before a run on ``launcher`` into ``out``: a warning when the
    workers may be on other machines and ``out`` is on storage private to this one."""
    remote = (isinstance(launcher, RayLauncher)
              and (launcher.address or os.environ.get("RAY_ADDRESS"))) or (
        isinstance(launcher, SlurmLauncher) and launcher.cluster == "slurm")
    return storage_warning(out) if remote else None
