"""Overhead per point of each sweep launcher against the local pool, on the same sweep.

The points do nothing (``noop``), so a sweep's wall time is the launcher's cost alone: for
each launcher, sweeps of ``--small`` and ``--large`` points into fresh folders, and

    per point = (T_large - T_small) / (large - small),   fixed = T_small - small * per point.

``fixed`` holds what a sweep pays once (starting pool workers, Submitit's job processes that
import torch, ...); Ray's own start (``ray.init``) is timed apart, and Ray is measured twice,
with cold workers (the first sweep) and warm ones. The local launchers run the same sweep in
this process (``jobs=1``) and in a spawn pool of 2 workers.

    python benchmarks/sweep_launchers.py [--small 4] [--large 16] [--repeats 2]

Writes benchmarks/results/sweep_launchers.json. Record ``cat /proc/loadavg`` with it: on a
shared machine the fixed costs (process start, imports) grow with the load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from efflab.experiments.launchers import LocalLauncher, RayLauncher, SlurmLauncher
from efflab.experiments.sweep import run_sweep
from efflab.io import atomic_write_json
from efflab.measure.load import read_loadavg

RESULTS = Path(__file__).resolve().parent / "results"


def noop(point):
    return point["i"]


def _timed_sweep(launcher, n: int, root: Path, tag: str) -> float:
    out = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=root))
    t0 = time.perf_counter()
    run_sweep(noop, [{"i": i, "tag": tag} for i in range(n)], out, "bench", launcher=launcher)
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return wall


def measure(name: str, launcher, small: int, large: int, repeats: int, root: Path
            ) -> dict[str, float | str]:
    t_small = statistics.median(_timed_sweep(launcher, small, root, name)
                                for _ in range(repeats))
    t_large = statistics.median(_timed_sweep(launcher, large, root, name)
                                for _ in range(repeats))
    per_point = (t_large - t_small) / (large - small)
    return {"launcher": name, "small_s": t_small, "large_s": t_large,
            "per_point_s": per_point, "fixed_s": t_small - small * per_point}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=4)
    ap.add_argument("--large", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if not 1 <= args.small < args.large:
        raise SystemExit(f"need 1 <= --small < --large, got {args.small} and {args.large}")
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="efflab-bench-"))
    load_before = read_loadavg()
    rows = [measure("local, jobs=1 (here)", LocalLauncher(1), args.small, args.large,
                    args.repeats, root),
            measure("local, jobs=2 (spawn pool)", LocalLauncher(2), args.small, args.large,
                    args.repeats, root)]
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    ray_init = time.perf_counter() - t0
    ray_launcher = RayLauncher(cpus_per_point=1)
    cold = _timed_sweep(ray_launcher, args.small, root, "ray-cold")
    rows.append(measure("ray, local 2 CPUs (warm workers)", ray_launcher, args.small,
                        args.large, args.repeats, root))
    rows[-1]["ray_init_s"], rows[-1]["first_sweep_cold_s"] = ray_init, cold
    ray.shutdown()
    rows.append(measure("submitit debug (in process)", SlurmLauncher(cluster="debug"),
                        args.small, args.large, args.repeats, root))
    rows.append(measure("submitit local (a process per job)",
                        SlurmLauncher(cluster="local", time_min=10), args.small, args.large,
                        1, root))
    shutil.rmtree(root, ignore_errors=True)
    result = {
        "date": dt.date.today().isoformat(), "machine": f"{platform.machine()} CPU "
        f"({os.cpu_count()} cores)", "torch": torch.__version__, "ray": ray.__version__,
        "loadavg_before": load_before, "loadavg_after": read_loadavg(), "small": args.small,
        "large": args.large, "repeats": args.repeats, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "sweep_launchers.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
