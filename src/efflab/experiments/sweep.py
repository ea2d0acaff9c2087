"""Parallel, resumable sweeps: many independent runs, each computed once and kept on disk.

A sweep (the widths of a double descent curve, the seeds of a table) is a list of *points*,
each a small JSON-able dict holding everything its run depends on (its seed included). Each
point's result is written atomically to its own file,

    <outdir>/sweeps/<sweep name>/<key>.json,   key = sha256 of the canonical JSON of the point,

the moment it is computed, by the process that computed it. A sweep that is interrupted (a
killed worker, Ctrl-C, a machine going away) is resumed by running it again with the same
``outdir``: finished points are read back, only the missing ones run. ``RunContext.outdir``
is that folder when ``efflab run`` is restarted with the same ``--out``. A point that raises
does not stop the others; the sweep then raises :class:`SweepPointFailed` naming every failed
point, and a rerun computes only those.

Where the missing points run is a *launcher* (:mod:`efflab.experiments.launchers`): here, in
``jobs`` local worker processes (``--jobs``: started with ``spawn`` so that no thread pool or
lock state of the parent is inherited, each limited to ``cores // jobs`` torch threads, each
exiting when the parent dies), as Ray tasks or as a Slurm job array (``--launcher``). The
point function must be importable (defined at module level). Results do not depend on the
launcher, on ``jobs`` or on the order of completion: a point carries its own seed, and every
result, fresh or resumed, is returned as read back from its JSON file.

Give a sweep a new ``name`` (e.g. with a version suffix) when what its point function computes
changes; otherwise old results are reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from efflab.io import atomic_write_json, to_jsonable

if TYPE_CHECKING:
    from efflab.experiments.launchers import Launcher

PointFn = Callable[[dict[str, Any]], Any]


class SweepIncomplete(RuntimeError):
    """Some points did not finish; the finished ones are saved in ``folder`` and a rerun with
    the same folder computes only the missing ones. ``failures``: ``(point, error)`` pairs."""

    def __init__(self, message: str, name: str, done: int, total: int, folder: Path,
                 failures: list[tuple[dict[str, Any], str]] | None = None):
        self.name, self.done, self.total, self.folder = name, done, total, folder
        self.failures = failures or []
        super().__init__(message)


class SweepInterrupted(SweepIncomplete):
    """A local worker died (killed, out of memory) before the sweep finished."""

    def __init__(self, name: str, done: int, total: int, folder: Path):
        super().__init__(
            f"sweep {name!r} interrupted: a worker process died; {done} of {total} points are "
            f"finished and saved in {folder}. Run again with the same output folder (--out) "
            f"to compute only the missing {total - done}.", name, done, total, folder)


class SweepPointFailed(SweepIncomplete):
    """One or more points raised (or lost their worker on a cluster); every other point ran
    and is saved."""

    def __init__(self, name: str, done: int, total: int, folder: Path,
                 failures: list[tuple[dict[str, Any], str]]):
        first_point, first_error = failures[0]
        last = first_error.strip().splitlines()[-1] if first_error.strip() else "?"
        super().__init__(
            f"sweep {name!r}: {len(failures)} of {total} points failed, the first "
            f"({first_point}) with {last}; {done} of {total} points are finished and saved "
            f"in {folder}. Run again with the same output folder (--out) to compute only the "
            f"missing {total - done}.\n--- error of the first failed point ---\n"
            f"{first_error}", name, done, total, folder, failures)


def canonical_point(point: Mapping[str, Any]) -> dict[str, Any]:
    """The point as plain JSON data (tuples become lists, numpy scalars numbers)."""
    if not isinstance(point, Mapping):
        raise TypeError(f"a sweep point must be a dict, got {type(point).__name__}: {point!r}")
    return json.loads(json.dumps(to_jsonable(dict(point)), sort_keys=True, allow_nan=False))


def point_key(point: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the point's canonical JSON (sorted keys)."""
    text = json.dumps(canonical_point(point), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sweep_folder(outdir: Path, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"sweep name must be a non-empty folder name, got {name!r}")
    return Path(outdir) / "sweeps" / name


def _load(path: Path, point: dict[str, Any]) -> tuple[bool, Any]:
    """(True, result) if ``path`` holds the finished result of exactly this point."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False, None
    if not isinstance(record, dict) or record.get("point") != point or "result" not in record:
        return False, None
    return True, record["result"]


def _compute(fn: PointFn, point: dict[str, Any], path: str) -> Any:
    """Run one point and write its record atomically; returns the result as stored (JSON)."""
    start = time.perf_counter()
    result = fn(dict(point))
    record = {"point": point, "result": to_jsonable(result),
              "seconds": time.perf_counter() - start, "pid": os.getpid(),
              "host": socket.gethostname()}
    atomic_write_json(path, record)
    return json.loads(json.dumps(record["result"]))


@contextlib.contextmanager
def limit_threads(threads: int = 1):
    """Run the block with at most ``threads`` torch threads, restoring the count afterwards.

    For point functions whose work is many small tensor ops: a second thread buys little
    there, and on a shared machine it costs a lot (threads spin while waiting for cores). The
    points themselves are the parallelism (``jobs``).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(before, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_sweep(fn: PointFn, points: Sequence[Mapping[str, Any]], outdir: Path, name: str,
              jobs: int = 1, desc: str | None = None, launcher: Launcher | None = None
              ) -> list[Any]:
    """Results of ``fn(point)`` for every point, in order, computing only those not on disk.

    ``launcher`` says where the missing points run (see :mod:`efflab.experiments.launchers`);
    None means :class:`~efflab.experiments.launchers.LocalLauncher` with ``jobs`` workers:
    ``jobs = 1`` runs them here, one after another, ``jobs > 1`` in up to that many worker
    processes (a single missing point runs here: no worker to start).

    A point that raises does not stop the others: when all have ended,
    :class:`SweepPointFailed` reports every failed point with its error. A local worker that
    dies raises :class:`SweepInterrupted` at once. Both are :class:`SweepIncomplete`: every
    finished point is on disk, and a rerun computes only the missing ones.
    """
    from efflab.experiments.launchers import LocalLauncher, PointTask, WorkerDied

    if launcher is None:
        launcher = LocalLauncher(jobs)
    folder = sweep_folder(outdir, name)
    canon = [canonical_point(p) for p in points]
    keys = [point_key(p) for p in canon]
    if len(set(keys)) != len(keys):
        dup = next(p for p, k in zip(canon, keys) if keys.count(k) > 1)
        raise ValueError(f"sweep {name!r} lists the point {dup} more than once")
    paths = [folder / f"{k}.json" for k in keys]
    results: list[Any] = [None] * len(canon)
    missing = []
    for i, (p, path) in enumerate(zip(canon, paths)):
        found, value = _load(path, p)
        if found:
            results[i] = value
        else:
            missing.append(i)
    if not missing:
        return results
    folder.mkdir(parents=True, exist_ok=True)

    from efflab.progress import bar

    failures: list[tuple[dict[str, Any], str]] = []
    tasks = [PointTask(i, canon[i], str(paths[i])) for i in missing]
    with bar(len(canon), desc or name) as pbar:
        pbar.update(len(canon) - len(missing))
        try:
            for outcome in launcher.execute(fn, tasks, folder):
                i = outcome.index
                if outcome.error is None:
                    # every result as read back from its file: the same on every launcher
                    found, value = _load(paths[i], canon[i])
                    if found:
                        results[i] = value
                    else:
                        from efflab.experiments.launchers import storage_warning

                        hint = storage_warning(folder) or (
                            "--out must be on storage every worker sees")
                        failures.append((canon[i], f"the point finished but its result file "
                                                   f"{paths[i]} is not readable here: {hint}"))
                else:
                    failures.append((canon[i], outcome.error))
                pbar.update(1)
        except WorkerDied:
            # count from disk: points may have finished after the last one we collected
            saved = sum(_load(path, p)[0] for p, path in zip(canon, paths))
            raise SweepInterrupted(name, saved, len(canon), folder) from None
    if failures:
        failures.sort(key=lambda f: keys.index(point_key(f[0])))
        saved = sum(_load(path, p)[0] for p, path in zip(canon, paths))
        raise SweepPointFailed(name, saved, len(canon), folder, failures)
    return results


def sweep(fn: PointFn, points: Sequence[Mapping[str, Any]], ctx, name: str,
          desc: str | None = None) -> list[Any]:
    """:func:`run_sweep` in an experiment: folder ``ctx.outdir``, on ``ctx.launcher`` (the
    ``--launcher`` option) if it is set, else ``ctx.jobs`` local workers."""
    return run_sweep(fn, points, ctx.outdir, name, jobs=ctx.jobs, desc=desc,
                     launcher=getattr(ctx, "launcher", None))
