"""The ``efflab`` command line: list, run, reproduce, report (and measure).

Exit codes: 0 success, 1 an experiment failed (raised an error), 2 bad input (unknown name,
bad ``--set`` or ``--config``, a config value its constraint refuses, a bad seed, an empty or
unwritable ``--out``, more ``--threads`` than cores, a ``--parallel`` the cores cannot hold, a
finished result in the way): bad input is reported before any work starts and leaves no
result folder behind. 130: interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections import Counter
from pathlib import Path

import torch

from efflab import __version__
from efflab import experiments as registry
from efflab.cli import bench as bench_command
from efflab.cli import measure as measure_command
from efflab.cli.config_file import config_toml, read_config_file
from efflab.cli.launcher_options import add_launcher_arguments, launcher_from_args
from efflab.experiments.base import EXPERIMENT_VERDICTS, PROFILES, ConfigError
from efflab.experiments.launchers import (
    LocalExperimentLauncher,
    experiment_launcher,
    launcher_warning,
)
from efflab.experiments.runner import (
    OutputError,
    PlannedRun,
    RunRecord,
    check_device_name,
    check_output_dir,
    finished_record,
    plan,
    record_broken,
    resolve_device,
    run_as_jobs,
    run_planned,
    tidy_finished,
)
from efflab.io import to_jsonable
from efflab.measure.machine import usable_cores
from efflab.progress import set_quiet

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: printed as ``efflab: error: ...`` with exit code 2."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_common(p: argparse.ArgumentParser, default_out: str, experiments: bool = False
                ) -> None:
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="quick: minutes on a laptop CPU; full: the paper's scale (default quick, "
                        "or the profile of a results.json given to --config)")
    p.add_argument("--device", default="auto",
                   help="auto (a GPU when there is one), cpu or cuda (default auto)")
    p.add_argument("--out", default=default_out,
                   help=f"folder for results and the report (default {default_out})")
    p.add_argument("--force", action="store_true",
                   help="replace finished results already in --out")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes for experiments that run sweeps (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the quick profiles' small tensors run "
                        "fastest on one thread, and a second thread on a busy machine can make "
                        "them ten times slower; the count is recorded in results.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", metavar="DIR", default=None,
                   help="write the scalars of every training run (loss, accuracy, learning "
                        "rate, gradient norm, seconds per step) for TensorBoard under DIR, one "
                        "subfolder per run (the tensorboard extra)")
    add_launcher_arguments(p, experiments=experiments)


def _config_keys_epilog(name: str) -> str:
    """The config keys of experiment ``name``, for ``efflab run NAME --help``."""
    try:
        exp = registry.get(name)
    except registry.UnknownExperiment as e:
        return f"{e}\n"
    rows = exp.Config.describe()
    width = max(len(r["name"]) for r in rows)
    lines = [f"config keys of {name} (--set KEY=VALUE; quick-profile values: "
             f"efflab run {name} --print-config):"]
    for r in rows:
        meta = r["type"] + (f", {r['constraint']}" if r["constraint"] else "")
        lines.append(f"  {r['name']:<{width}}  {meta}; default {r['default']}"
                     + (f"\n  {'':<{width}}  {r['help']}" if r["help"] else ""))
    return "\n".join(lines) + "\n\n"


def build_parser(run_help_for: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``run_help_for`` adds that experiment's config keys to
    ``efflab run NAME --help``."""
    parser = argparse.ArgumentParser(
        prog="efflab", formatter_class=_formatter,
        description="efflab: efficient deep learning, and one-command paper reproductions.",
        epilog=_examples("efflab list", "efflab run double-descent-linear --set trials=200",
                         "efflab reproduce --profile quick --out runs/quick",
                         "efflab report runs/quick"))
    parser.add_argument("--version", action="version", version=f"efflab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list registered experiments", formatter_class=_formatter,
                       description="Every registered experiment, its paper, what it checks.",
                       epilog=_examples("efflab list", "efflab list --json"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    keys = (_config_keys_epilog(run_help_for) if run_help_for else
            "efflab run NAME --help lists NAME's config keys.\n\n")
    p = sub.add_parser("run", help="run one experiment", formatter_class=_formatter,
                       description="Run one experiment and write its folder and the report.",
                       epilog=keys + _examples(
                           "efflab run double-descent-linear",
                           "efflab run double-descent-linear --profile full --seed 3",
                           "efflab run double-descent-linear --set n=60 --set d=180 --out runs/x",
                           "efflab run double-descent-linear --print-config > dd.toml",
                           "efflab run double-descent-linear --config dd.toml --set trials=200",
                           "efflab run double-descent-linear --config runs/x/double-descent-"
                           "linear/results.json --out runs/again"))
    p.add_argument("name", help="experiment name (see `efflab list`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field; repeatable")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="start from a saved config: TOML (as --print-config writes it) or a "
                        "results.json (that run's exact config); --set overrides it")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as TOML (type, default, constraint and "
                        "meaning of each key) and exit without running")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed in [0, 2**63 - 1] (default: the config's)")
    _add_common(p, "runs/run")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("reproduce", help="run every experiment and write one report",
                       formatter_class=_formatter,
                       description=textwrap.dedent("""\
                           Run every registered experiment (or those named with --only) and
                           write OUT/index.html. A failing experiment is recorded as failed and
                           the others still run; the exit code is 1 if any failed. Finished
                           results already in OUT with the same config are reused unless
                           --force is given. With --parallel N > 1 (the default when --jobs
                           is above 1) experiments run side by side, each in a fresh
                           process, keeping up to N cores busy: one that runs sweeps counts
                           as its --jobs workers, one that times things runs alone
                           (docs/reproduce.md, "Side by side"). With --launcher ray or slurm
                           each experiment runs as one job on the cluster
                           (docs/scaling.md)."""),
                       epilog=_examples("efflab reproduce",
                                        "efflab reproduce --jobs 2     # two cores' worth "
                                        "side by side",
                                        "efflab reproduce --jobs 2 --parallel 1   # one "
                                        "after another",
                                        "efflab reproduce --profile full --device cuda",
                                        "efflab reproduce --only double-descent-linear "
                                        "--out runs/dd",
                                        "efflab reproduce --profile full --launcher ray "
                                        "--ray-address auto --out /shared/runs/full"))
    p.add_argument("--only", nargs="+", action="extend", default=None, metavar="NAME",
                   help="run only these experiments (repeatable: --only A --only B runs both)")
    p.add_argument("--parallel", type=int, default=None, metavar="N",
                   help="cores the experiments side by side may keep busy: each a fresh "
                        "process; one with sweeps counts as --jobs, one that times things "
                        "runs alone; 1 runs them one after another in this process (default "
                        "--jobs, at most the usable cores / --threads)")
    _add_common(p, "runs/reproduce", experiments=True)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="rebuild the HTML report from saved results",
                       formatter_class=_formatter,
                       description="Rebuild DIR/index.html from DIR/*/results.json, no re-running.",
                       epilog=_examples("efflab report runs/reproduce"))
    p.add_argument("dir", help="a folder written by `efflab run` or `efflab reproduce`")
    p.set_defaults(func=cmd_report)

    measure_command.add_parser(sub)
    bench_command.add_parser(sub)
    return parser


# -- commands ------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    names = registry.names()
    rows = []
    for name in names:
        exp = registry.get(name)
        rows.append({"name": name, "paper": exp.paper, "checks": exp.checks,
                     "budget_quick_s": exp.budget_s.get("quick")})
    if args.json:
        print(json.dumps({"experiments": rows, "broken": registry.broken()}, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']}\n    paper:  {r['paper']}\n    checks: {r['checks']}\n"
              f"    quick budget: {r['budget_quick_s']:.0f} s")
    for module, err in registry.broken().items():
        print(f"{module}  [BROKEN: failed to import: {err.strip().splitlines()[-1]}]")
    return 0


def _check_run_options(args: argparse.Namespace) -> None:
    """The options every run shares, checked before anything else."""
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    cores = usable_cores()
    if not 1 <= args.threads <= cores:
        raise UsageError(f"--threads must be in [1, {cores}] (the cores this process may use), "
                         f"got {args.threads}")
    if not str(args.out).strip():
        raise UsageError("--out must name a folder, got an empty string")
    if hasattr(args, "parallel"):
        args.slots = _parallel_slots(args, cores)


def _parallel_slots(args: argparse.Namespace, cores: int) -> int:
    """The cores ``efflab reproduce`` keeps busy with experiments side by side
    (``--parallel``; default ``--jobs``, at most ``cores // --threads``)."""
    most = max(1, cores // args.threads)
    if args.parallel is None:
        return 1 if args.launcher != "local" else min(args.jobs, most)
    if args.launcher != "local":
        raise UsageError(f"--parallel needs --launcher local (on {args.launcher} each "
                         f"experiment is a job of its own), got --launcher {args.launcher}")
    if not 1 <= args.parallel <= most:
        raise UsageError(f"--parallel must be in [1, {most}] ({cores} usable cores / "
                         f"--threads {args.threads}), got {args.parallel}")
    return args.parallel


def _prepare(args: argparse.Namespace, names: list[str], overrides: list[str],
             seed: int | None, values: dict | None = None, profile: str = "quick",
             device_on_workers: bool = False) -> tuple[list[PlannedRun], Path, object]:
    """Validate everything (names, config, device, output folder) before any work.
    ``device_on_workers``: with a cluster launcher the device is resolved by each job on its
    worker (here only its name is checked, and the device returned is this machine's CPU)."""
    _check_run_options(args)
    planned = [plan(n, profile, overrides, seed, values) for n in names]
    args.sweep_launcher = launcher_from_args(args)
    if device_on_workers and args.sweep_launcher is not None:
        check_device_name(args.device)
        device = torch.device("cpu")
    else:
        device = resolve_device(args.device)
    out = check_output_dir(args.out)
    if warning := launcher_warning(args.sweep_launcher, out):
        print(f"efflab: warning: {warning}", file=sys.stderr)
    if args.tensorboard is not None:
        _use_tensorboard(args.tensorboard)
    torch.set_num_threads(args.threads)
    return planned, out, device


def _use_tensorboard(folder: str) -> None:
    """Every ``efflab.train.train`` call of this process and its workers logs under
    ``folder`` (through the environment, which sweep workers inherit)."""
    from efflab.train.loop import TENSORBOARD_ENV

    if not folder:
        raise UsageError("--tensorboard needs a folder, got ''")
    try:
        import tensorboard  # noqa: F401 - torch's SummaryWriter needs it
    except ImportError:
        raise UsageError("--tensorboard needs the tensorboard extra: "
                         "pip install 'efflab[tensorboard]'") from None
    path = check_output_dir(folder)
    os.environ[TENSORBOARD_ENV] = str(path)


def _print_record(rec: RunRecord) -> None:
    verdict = rec.verdict or "-"
    over = ""
    if rec.budget_s is not None and rec.status != "reused" and rec.wall_time_s > rec.budget_s:
        over = f"  OVER BUDGET ({rec.budget_s:.0f} s)"
    beside = f"  beside {', '.join(rec.beside)}" if rec.beside else ""
    print(f"  {rec.name:<34} {rec.status:<7} {verdict:<15} {rec.wall_time_s:7.1f} s{over}"
          f"{beside}")
    if rec.error:
        last = rec.error.strip().splitlines()[-1]
        print(f"      error: {last}")


def _warn(message: str) -> None:
    print(f"efflab: warning: {message}", file=sys.stderr)


def summary_lines(records: list[RunRecord]) -> list[str]:
    """The terminal summary: counts by verdict, then the runs over their budget."""
    counts = Counter(r.verdict or "failed" for r in records)
    parts = [f"{counts[v]} {v}" for v in EXPERIMENT_VERDICTS if counts[v]]
    lines = [f"Verdicts of {len(records)} experiment(s): {', '.join(parts)}"]
    over = [r for r in records if r.status != "reused" and r.budget_s is not None
            and r.wall_time_s > r.budget_s]
    if over:
        lines.append("Over budget: " + ", ".join(
            f"{r.name} ({r.wall_time_s:.0f} s of {r.budget_s:.0f} s"
            f"{', beside ' + ' and '.join(r.beside) if r.beside else ''})" for r in over))
    return lines


def _finish(out: Path, records: list[RunRecord]) -> int:
    from efflab.report import build_report

    failed = [r for r in records if r.status == "failed"]
    print()
    for line in summary_lines(records):
        print(line)
    try:
        index = build_report(out, warn=_warn)
        print(f"Report: {index}")
    except OSError as e:
        print(f"efflab: error: the report could not be written: {e}", file=sys.stderr)
        return EXIT_FAILED
    if failed:
        print(f"{len(failed)} experiment(s) failed: {', '.join(r.name for r in failed)}",
              file=sys.stderr)
        return EXIT_FAILED
    return 0


def _resolve_run_config(args: argparse.Namespace) -> tuple[dict | None, str]:
    values, profile = None, None
    if args.config is not None:
        values, profile = read_config_file(args.config, args.name)
    return values, args.profile or profile or "quick"


def cmd_run(args: argparse.Namespace) -> int:
    values, profile = _resolve_run_config(args)
    if args.print_config:
        run = plan(args.name, profile, args.overrides, args.seed, values)
        sys.stdout.write(config_toml(run.experiment, run.config, profile))
        return 0
    planned, out, device = _prepare(args, [args.name], args.overrides, args.seed, values,
                                    profile)
    run = planned[0]
    if finished_record(out / run.experiment.name) is not None and not args.force:
        raise UsageError(f"{out / run.experiment.name} already holds a finished result; "
                         "pass --force to replace it, or choose another --out")
    print(f"Running {run.experiment.name} ({profile} profile) on {device} -> {out}")
    rec = run_planned(run, out, device, force=args.force, jobs=args.jobs,
                      launcher=args.sweep_launcher)
    _print_record(rec)
    return _finish(out, [rec])


def cmd_reproduce(args: argparse.Namespace) -> int:
    profile = args.profile or "quick"
    names = list(dict.fromkeys(args.only)) if args.only else registry.names()
    planned, out, device = _prepare(args, names, [], None, None, profile,
                                    device_on_workers=True)
    reuse, stale = set(), []
    for run in planned:
        prev = finished_record(out / run.experiment.name)
        if prev is None or args.force:
            continue
        same = prev.profile == run.profile and prev.config == to_jsonable(run.config.to_dict())
        (reuse.add if same else stale.append)(run.experiment.name)
    if stale:
        raise UsageError(f"{out} holds finished results with another profile or config for: "
                         f"{', '.join(stale)}; pass --force to replace them, or another --out")
    cluster = args.sweep_launcher is not None
    side_by_side = not cluster and args.slots > 1
    where = f"{args.device} on each job's worker" if cluster else device
    print(f"Reproducing {len(planned)} experiment(s), {profile} profile, on {where} -> {out}")
    by_name: dict[str, RunRecord] = {}
    to_run: list[PlannedRun] = []
    for i, run in enumerate(planned, 1):
        name = run.experiment.name
        budget = run.experiment.budget_s.get(profile)
        if name in reuse:
            tidy_finished(out / name)
            prev = finished_record(out / name)
            rec = RunRecord(name, "reused", out / name, prev.verdict if prev else None,
                            prev.wall_time_s if prev else 0.0, budget_s=budget,
                            beside=tuple(prev.ran_beside) if prev else ())
        elif cluster or side_by_side:
            to_run.append(run)
            continue
        else:
            shown = "?" if budget is None else f"{budget:.0f}"
            print(f"[{i}/{len(planned)}] {name} (budget {shown} s) ...", flush=True)
            rec = run_planned(run, out, device, force=args.force, jobs=args.jobs,
                              launcher=args.sweep_launcher)
        by_name[name] = rec
        _print_record(rec)
    if to_run and side_by_side:
        print(f"Running {len(to_run)} experiment(s) side by side on {args.slots} cores, each "
              f"in its own process (those that time things alone) ...", flush=True)
        launcher = LocalExperimentLauncher(args.slots, on_start=_start_printer(len(to_run)))
        for rec in run_as_jobs(to_run, out, launcher, str(device), force=args.force,
                               jobs=args.jobs, threads=args.threads, on_record=_print_record):
            by_name[rec.name] = rec
    elif to_run:
        jobs_on = experiment_launcher(args.sweep_launcher, args.cpus_per_experiment,
                                      args.gpus_per_experiment)
        print(f"Submitting {len(to_run)} experiment(s), one job each, to "
              f"{jobs_on.describe('job')} ...", flush=True)
        for rec in run_as_jobs(to_run, out, args.sweep_launcher, args.device,
                               force=args.force, jobs=args.jobs, threads=args.threads,
                               cpus_per_experiment=args.cpus_per_experiment,
                               gpus_per_experiment=args.gpus_per_experiment,
                               on_record=_print_record):
            by_name[rec.name] = rec
    records = [by_name[r.experiment.name] for r in planned]
    if not args.only:
        for module, err in registry.broken().items():
            rec = record_broken(module, err, out, profile, device)
            records.append(rec)
            _print_record(rec)
    return _finish(out, records)


def _start_printer(total: int):
    """``on_start`` of the side-by-side launcher: one line as each experiment starts."""
    started = 0

    def show(task) -> None:
        nonlocal started
        started += 1
        job = task.point
        budget = "?" if job["budget_s"] is None else f"{job['budget_s']:.0f}"
        needs = "alone" if job["alone"] else f"{job['cores']} core{'s' * (job['cores'] > 1)}"
        print(f"[{started}/{total}] {job['experiment']} (budget {budget} s, {needs}) ...",
              flush=True)

    return show


def cmd_report(args: argparse.Namespace) -> int:
    from efflab.report import build_report

    try:
        index = build_report(args.dir, warn=_warn)
    except (FileNotFoundError, IsADirectoryError) as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"the report could not be written: {e}") from None
    print(f"Report: {index}")
    return 0


_RUN_VALUE_OPTIONS = {"--set", "--seed", "--profile", "--device", "--out", "--jobs",
                      "--threads", "--config"}


def _run_help_target(argv: list[str]) -> str | None:
    """NAME in ``efflab run NAME ... --help``, so that the help can list NAME's keys."""
    if not argv or argv[0] != "run" or not ({"-h", "--help"} & set(argv)):
        return None
    skip = False
    for token in argv[1:]:
        if skip:
            skip = False
        elif token in _RUN_VALUE_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(run_help_for=_run_help_target(argv))
        args = parser.parse_args(argv)
        set_quiet(getattr(args, "quiet", False))
        return int(args.func(args) or 0)
    except registry.UnknownExperiment as e:
        print(f"efflab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ConfigError, OutputError) as e:
        print(f"efflab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader went away (`efflab list | head`): stop quietly, as other tools do
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        print("\nefflab: interrupted; finished results are kept, an interrupted experiment "
              "resumes from its working folder with the same --out", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
