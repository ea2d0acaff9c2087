"""The ``--launcher`` options of ``efflab run`` and ``efflab reproduce`` (docs/scaling.md):
parsed here, turned into a launcher of :mod:`efflab.experiments.launchers`, checked before
any work."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from efflab.experiments.base import ConfigError
from efflab.experiments.launchers import (
    LAUNCHERS,
    SLURM_CLUSTERS,
    Launcher,
    RayLauncher,
    SlurmLauncher,
    experiment_launcher,
)


def add_launcher_arguments(parser: argparse.ArgumentParser, experiments: bool = False
                           ) -> None:
    """The launcher options; ``experiments`` adds the per-experiment job request of
    ``efflab reproduce``."""
    g = parser.add_argument_group(
        "where experiments and sweep points run (docs/scaling.md)" if experiments else
        "where sweep points run (docs/scaling.md)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: here, --jobs processes (default); ray: a Ray cluster; "
                        "slurm: Slurm jobs through Submitit"
                        + ("; with ray or slurm each experiment is one job" if experiments
                           else ""))
    g.add_argument("--cpus-per-point", type=float, default=None, metavar="N",
                   help="CPUs each point requests on ray/slurm (default 1)")
    g.add_argument("--gpus-per-point", type=float, default=None, metavar="N",
                   help="GPUs each point requests on ray (fractions allowed) or slurm "
                        "(default 0)")
    if experiments:
        g.add_argument("--cpus-per-experiment", type=float, default=None, metavar="N",
                       help="CPUs each experiment's job requests on ray/slurm (default: "
                            "--cpus-per-point's)")
        g.add_argument("--gpus-per-experiment", type=float, default=None, metavar="N",
                       help="GPUs each experiment's job requests (default: on slurm "
                            "--gpus-per-point's, its points run in the job; on ray 0, its "
                            "points are tasks with their own GPUs)")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join (auto, host:6379, ray://host:10001; default "
                        "$RAY_ADDRESS, else a Ray started here)")
    g.add_argument("--slurm-config", default=None, metavar="FILE",
                   help="TOML file with Slurm settings (partition, time_min, cpus_per_point, "
                        "gpus_per_point, mem_gb, account, qos, setup, extra, ...)")
    g.add_argument("--slurm-partition", default=None, metavar="NAME", help="Slurm partition")
    g.add_argument("--slurm-time", type=int, default=None, metavar="MIN",
                   help="time limit of one job, minutes (default 60): a point's, or with "
                        "reproduce an experiment's")
    g.add_argument("--slurm-cluster", choices=SLURM_CLUSTERS, default=None,
                   help="slurm: submit with sbatch (default); local: run the jobs as local "
                        "processes through Submitit, to try a setup without a cluster")


def launcher_from_args(args: argparse.Namespace) -> Launcher | None:
    """The launcher the options ask for (None for the default local pool); raises
    :class:`ConfigError` on a bad option or a missing extra, before any work."""
    choice = getattr(args, "launcher", "local")
    cpus, gpus = getattr(args, "cpus_per_point", None), getattr(args, "gpus_per_point", None)
    per_experiment = {"--cpus-per-experiment": getattr(args, "cpus_per_experiment", None),
                      "--gpus-per-experiment": getattr(args, "gpus_per_experiment", None)}
    if choice != "ray" and args.ray_address is not None:
        raise ConfigError(f"--ray-address needs --launcher ray, got --launcher {choice}")
    slurm_opts = {"--slurm-config": args.slurm_config, "--slurm-partition": args.slurm_partition,
                  "--slurm-time": args.slurm_time, "--slurm-cluster": args.slurm_cluster}
    if choice != "slurm":
        given = [k for k, v in slurm_opts.items() if v is not None]
        if given:
            raise ConfigError(f"{given[0]} needs --launcher slurm, got --launcher {choice}")
    if choice == "local":
        if cpus is not None or gpus is not None:
            raise ConfigError("--cpus-per-point/--gpus-per-point need --launcher ray or "
                              "slurm (the local pool uses --jobs)")
        given = [k for k, v in per_experiment.items() if v is not None]
        if given:
            raise ConfigError(f"{given[0]} needs --launcher ray or slurm, got --launcher "
                              f"local")
        return None
    if choice == "ray":
        launcher: Launcher = RayLauncher(address=args.ray_address,
                                         cpus_per_point=1.0 if cpus is None else cpus,
                                         gpus_per_point=0.0 if gpus is None else gpus)
    else:
        for name, v in (("--cpus-per-point", cpus), ("--gpus-per-point", gpus)):
            if v is not None and v != int(v):
                raise ConfigError(f"{name} must be a whole number on Slurm, got {v:g}")
        overrides: Mapping[str, Any] = {
            "partition": args.slurm_partition, "time_min": args.slurm_time,
            "cluster": args.slurm_cluster,
            "cpus_per_point": None if cpus is None else int(cpus),
            "gpus_per_point": None if gpus is None else int(gpus)}
        launcher = SlurmLauncher.from_file(args.slurm_config, **overrides)
    # the experiments' job request, checked now although only reproduce uses it
    experiment_launcher(launcher, *per_experiment.values())
    return launcher
