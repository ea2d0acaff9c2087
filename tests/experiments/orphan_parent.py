"""A parent process for the orphan tests of test_sweep.py; the test SIGKILLs it.

``sweep DIR``: a ``jobs=2`` sweep of two points that sleep (their workers write their pids).
``watchdog DIR``: one spawned child armed with the parent watchdog only (no death signal),
which must notice on its own that its parent is gone. ``experiments DIR``: two sleeping
jobs side by side on the launcher of ``efflab reproduce --parallel`` (forks of its fork
server).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

from efflab.experiments.launchers import LocalExperimentLauncher, PointTask, init_worker
from efflab.experiments.sweep import run_sweep

sys.path.insert(0, str(Path(__file__).parent))
import sweep_points  # noqa: E402 - needs the path above


def _watched_child(folder: str, parent_pid: int) -> None:
    init_worker(1, parent_pid, death_signal=False, interval_s=0.2)
    Path(folder, "worker-0.pid").write_text(str(os.getpid()))
    time.sleep(120)


if __name__ == "__main__":
    mode, folder = sys.argv[1], sys.argv[2]
    Path(folder, "parent.pid").write_text(str(os.getpid()))
    if mode == "sweep":
        pts = [{"i": i, "dir": folder} for i in range(2)]
        run_sweep(sweep_points.sleeper, pts, Path(folder), "orphans", jobs=2)
    elif mode == "experiments":
        tasks = [PointTask(i, {"i": i, "dir": folder}, str(Path(folder, f"{i}.json")))
                 for i in range(2)]
        list(LocalExperimentLauncher(2).execute(sweep_points.sleeper, tasks, Path(folder)))
    else:
        child = multiprocessing.get_context("spawn").Process(
            target=_watched_child, args=(folder, os.getpid()))
        child.start()
        child.join()
