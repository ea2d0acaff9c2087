"""Overhead per experiment of running whole experiments as cluster jobs
(``efflab reproduce --launcher ray|slurm``, :func:`efflab.experiments.runner.run_as_jobs`)
against running them here one after another (:func:`~efflab.experiments.runner.run_planned`),
on the same experiments.

The experiments do nothing (``Noop``: no sweep, empty results), so the wall time is the cost
of the framework (writing the result folder, the environment record) plus the launcher's:
for each way, ``--small`` and ``--large`` experiments into fresh folders, and

    per experiment = (T_large - T_small) / (large - small),  fixed = T_small - small * per exp.

Ray is started once (``ray.init``, timed apart) and warmed by one run first (its workers
import efflab once); Submitit's local executor runs each job as a process of its own.

    python benchmarks/experiment_jobs.py [--small 2] [--large 6]

Writes benchmarks/results/experiment_jobs.json with ``/proc/loadavg`` before and after: on a
shared machine the process starts (imports of torch and efflab) grow with the load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from efflab.experiments.base import Experiment, ExperimentConfig
from efflab.experiments.launchers import RayLauncher, SlurmLauncher
from efflab.experiments.runner import PlannedRun, run_as_jobs, run_planned
from efflab.io import atomic_write_json
from efflab.measure.load import read_loadavg

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class NoopConfig(ExperimentConfig):
    pass


class Noop(Experiment):
    paper = "-"
    checks = "nothing: the overhead of a run"
    Config = NoopConfig

    def run(self, config, ctx):
        return {}

    def claims(self, results, config):
        return []


def _runs(n: int) -> list[PlannedRun]:
    runs = []
    for i in range(n):
        exp = Noop()
        exp.name = f"noop-{i}"  # each its own result folder
        runs.append(PlannedRun(exp, NoopConfig(), "quick"))
    return runs


def _timed(way, n: int, root: Path, tag: str) -> float:
    out = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=root))
    t0 = time.perf_counter()
    if way is None:
        records = [run_planned(r, out, torch.device("cpu")) for r in _runs(n)]
    else:
        records = run_as_jobs(_runs(n), out, way, "cpu")
    wall = time.perf_counter() - t0
    assert all(r.status == "ok" for r in records), [r.error for r in records]
    shutil.rmtree(out, ignore_errors=True)
    return wall


def measure(name: str, way, small: int, large: int, root: Path) -> dict[str, float | str]:
    t_small = _timed(way, small, root, "s")
    t_large = _timed(way, large, root, "l")
    per = (t_large - t_small) / (large - small)
    return {"launcher": name, "small_s": t_small, "large_s": t_large,
            "per_experiment_s": per, "fixed_s": t_small - small * per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=2)
    ap.add_argument("--large", type=int, default=6)
    args = ap.parse_args()
    if not 1 <= args.small < args.large:
        raise SystemExit(f"need 1 <= --small < --large, got {args.small} and {args.large}")
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="efflab-bench-"))
    load_before = read_loadavg()
    rows = [measure("local (here, one after another)", None, args.small, args.large, root)]
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    ray_init = time.perf_counter() - t0
    ray_launcher = RayLauncher(cpus_per_point=1)
    cold = _timed(ray_launcher, args.small, root, "ray-cold")
    rows.append(measure("ray, local 2 CPUs (warm workers)", ray_launcher, args.small,
                        args.large, root))
    rows[-1]["ray_init_s"], rows[-1]["first_run_cold_s"] = ray_init, cold
    ray.shutdown()
    rows.append(measure("submitit debug (in process)", SlurmLauncher(cluster="debug"),
                        args.small, args.large, root))
    rows.append(measure("submitit local (a process per job)",
                        SlurmLauncher(cluster="local", time_min=10), args.small, args.large,
                        root))
    shutil.rmtree(root, ignore_errors=True)
    result = {
        "date": dt.date.today().isoformat(), "machine": f"{platform.machine()} CPU "
        f"({os.cpu_count()} cores)", "torch": torch.__version__, "ray": ray.__version__,
        "loadavg_before": load_before, "loadavg_after": read_loadavg(), "small": args.small,
        "large": args.large, "repeats": 1, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "experiment_jobs.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
