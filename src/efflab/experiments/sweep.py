"""Parallel, resumable sweeps: many independent runs, each computed once and kept on disk.

A sweep (the widths of a double descent curve, the seeds of a table) is a list of *points*,
each a small JSON-able dict holding everything its run depends on (its seed included). Each
point's result is written atomically to its own file,

    <outdir>/sweeps/<sweep name>/<key>.json,   key = sha256 of the canonical JSON of the point,

the moment it is computed, by the process that computed it. A sweep that is interrupted (a
killed worker, Ctrl-C, a machine going away) is resumed by running it again with the same
``outdir``: finished points are read back, only the missing ones run. ``RunContext.outdir``
is that folder when ``efflab run`` is restarted with the same ``--out``.

With ``jobs > 1`` the missing points run in that many worker processes (``--jobs``), started
with ``spawn`` so that no thread pool or lock state of the parent is inherited, each limited
to ``cores // jobs`` torch threads so that the workers do not fight over the cores. The point
function must be importable (defined at module level). Results do not depend on ``jobs`` or
on the order of completion: a point carries its own seed, and every result, fresh or resumed,
is returned as read back from its JSON file.

Give a sweep a new ``name`` (e.g. with a version suffix) when what its point function computes
changes; otherwise old results are reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from efflab.io import atomic_write_json, to_jsonable

PointFn = Callable[[dict[str, Any]], Any]


class SweepInterrupted(RuntimeError):
    """A worker died (killed, out of memory) before the sweep finished; the finished points
    are on disk and a rerun with the same folder computes only the missing ones."""

    def __init__(self, name: str, done: int, total: int, folder: Path):
        self.done, self.total, self.folder = done, total, folder
        super().__init__(f"sweep {name!r} interrupted: a worker process died; {done} of {total} "
                         f"points are finished and saved in {folder}. Run again with the same "
                         f"output folder (--out) to compute only the missing {total - done}.")


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
              "seconds": time.perf_counter() - start, "pid": os.getpid()}
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


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_sweep(fn: PointFn, points: Sequence[Mapping[str, Any]], outdir: Path, name: str,
              jobs: int = 1, desc: str | None = None) -> list[Any]:
    """Results of ``fn(point)`` for every point, in order, computing only those not on disk.

    ``jobs = 1`` runs the missing points here, one after another; ``jobs > 1`` in up to that
    many worker processes (a single missing point runs here: no worker to start). Raises
    :class:`SweepInterrupted` if a worker dies; an exception raised by ``fn`` propagates
    (after the points already running have finished and been saved).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
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

    with bar(len(canon), desc or name) as pbar:
        pbar.update(len(canon) - len(missing))
        if jobs == 1 or len(missing) == 1:
            for i in missing:
                results[i] = _compute(fn, canon[i], str(paths[i]))
                pbar.update(1)
            return results
        try:
            pickle.dumps(fn)
        except Exception as e:  # noqa: BLE001 - any pickling failure means the same thing
            raise TypeError(f"fn must be a module-level function to run in worker processes "
                            f"(jobs={jobs}), got {fn!r}: {e}") from e
        workers = min(jobs, len(missing))
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(_compute, fn, canon[i], str(paths[i])): i for i in missing}
            pending = set(futures)
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        results[futures[fut]] = fut.result()
                        pbar.update(1)
            except BrokenProcessPool:
                # count from disk: points may have finished after the last one we collected
                saved = sum(_load(path, p)[0] for p, path in zip(canon, paths))
                raise SweepInterrupted(name, saved, len(canon), folder) from None
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return results


def sweep(fn: PointFn, points: Sequence[Mapping[str, Any]], ctx, name: str,
          desc: str | None = None) -> list[Any]:
    """:func:`run_sweep` in an experiment: folder ``ctx.outdir``, ``ctx.jobs`` workers."""
    return run_sweep(fn, points, ctx.outdir, name, jobs=ctx.jobs, desc=desc)
