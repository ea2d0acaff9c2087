"""The ``efflab`` command line: list, run, reproduce, report (and measure).

Exit codes: 0 success, 1 an experiment failed (raised an error), 2 bad input (unknown name,
bad ``--set``, unwritable ``--out``, a finished result in the way): bad input is reported
before any work starts and leaves no result folder behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import torch

from efflab import __version__
from efflab import experiments as registry
from efflab.cli import bench as bench_command
from efflab.cli import measure as measure_command
from efflab.experiments.base import PROFILES, ConfigError
from efflab.experiments.launchers import (
    add_launcher_arguments,
    launcher_from_args,
    launcher_warning,
)
from efflab.experiments.runner import (
    OutputError,
    PlannedRun,
    RunRecord,
    check_output_dir,
    finished,
    plan,
    record_broken,
    resolve_device,
    run_planned,
)
from efflab.io import to_jsonable
from efflab.progress import set_quiet

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: printed as ``efflab: error: ...`` with exit code 2."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="quick: minutes on a laptop CPU; full: the paper's scale (default quick)")
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
    add_launcher_arguments(p)


def build_parser() -> argparse.ArgumentParser:
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

    p = sub.add_parser("run", help="run one experiment", formatter_class=_formatter,
                       description="Run one experiment and write its folder and the report.",
                       epilog=_examples(
                           "efflab run double-descent-linear",
                           "efflab run double-descent-linear --profile full --seed 3",
                           "efflab run double-descent-linear --set n=60 --set d=180 --out runs/x"))
    p.add_argument("name", help="experiment name (see `efflab list`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field; repeatable")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    _add_common(p, "runs/run")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("reproduce", help="run every experiment and write one report",
                       formatter_class=_formatter,
                       description=textwrap.dedent("""\
                           Run every registered experiment (or those named with --only) and
                           write OUT/index.html. A failing experiment is recorded as failed and
                           the others still run; the exit code is 1 if any failed. Finished
                           results already in OUT with the same config are reused unless
                           --force is given."""),
                       epilog=_examples("efflab reproduce",
                                        "efflab reproduce --profile full --device cuda",
                                        "efflab reproduce --only double-descent-linear "
                                        "--out runs/dd"))
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only these experiments")
    _add_common(p, "runs/reproduce")
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


def _prepare(args: argparse.Namespace, names: list[str], overrides: list[str],
             seed: int | None) -> tuple[list[PlannedRun], Path, object]:
    """Validate everything (names, config, device, output folder) before any work."""
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    planned = [plan(n, args.profile, overrides, seed) for n in names]
    device = resolve_device(args.device)
    args.sweep_launcher = launcher_from_args(args)
    out = check_output_dir(args.out)
    if warning := launcher_warning(args.sweep_launcher, out):
        print(f"efflab: warning: {warning}", file=sys.stderr)
    torch.set_num_threads(args.threads)
    return planned, out, device


def _print_record(rec: RunRecord) -> None:
    verdict = rec.verdict or "-"
    print(f"  {rec.name:<34} {rec.status:<7} {verdict:<15} {rec.wall_time_s:7.1f} s")
    if rec.error:
        last = rec.error.strip().splitlines()[-1]
        print(f"      error: {last}")


def _finish(out: Path, records: list[RunRecord]) -> int:
    from efflab.report import build_report

    index = build_report(out)
    failed = [r for r in records if r.status == "failed"]
    print(f"\nReport: {index}")
    if failed:
        print(f"{len(failed)} experiment(s) failed: {', '.join(r.name for r in failed)}",
              file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    planned, out, device = _prepare(args, [args.name], args.overrides, args.seed)
    run = planned[0]
    if finished(out / run.experiment.name) is not None and not args.force:
        raise UsageError(f"{out / run.experiment.name} already holds a finished result; "
                         "pass --force to replace it, or choose another --out")
    print(f"Running {run.experiment.name} ({args.profile} profile) on {device} -> {out}")
    rec = run_planned(run, out, device, force=args.force, jobs=args.jobs,
                      launcher=args.sweep_launcher)
    _print_record(rec)
    return _finish(out, [rec])


def cmd_reproduce(args: argparse.Namespace) -> int:
    names = args.only if args.only else registry.names()
    if args.only:
        seen = set()
        names = [n for n in names if not (n in seen or seen.add(n))]
    planned, out, device = _prepare(args, names, [], None)
    reuse, stale = set(), []
    for run in planned:
        prev = finished(out / run.experiment.name)
        if prev is None or args.force:
            continue
        same = (prev.get("profile") == run.profile
                and prev.get("config") == to_jsonable(run.config.to_dict()))
        (reuse.add if same else stale.append)(run.experiment.name)
    if stale:
        raise UsageError(f"{out} holds finished results with another profile or config for: "
                         f"{', '.join(stale)}; pass --force to replace them, or another --out")
    print(f"Reproducing {len(planned)} experiment(s), {args.profile} profile, on {device} "
          f"-> {out}")
    records = []
    for i, run in enumerate(planned, 1):
        name = run.experiment.name
        if name not in reuse:
            budget = run.experiment.budget_s.get(args.profile)
            print(f"[{i}/{len(planned)}] {name} (budget {budget:.0f} s) ...", flush=True)
        if name in reuse:
            prev = finished(out / name) or {}
            rec = RunRecord(name, "reused", out / name, prev.get("verdict"),
                            float(prev.get("wall_time_s") or 0.0))
        else:
            rec = run_planned(run, out, device, force=args.force, jobs=args.jobs,
                      launcher=args.sweep_launcher)
        records.append(rec)
        _print_record(rec)
    if not args.only:
        for module, err in registry.broken().items():
            rec = record_broken(module, err, out, args.profile, device)
            records.append(rec)
            _print_record(rec)
    return _finish(out, records)


def cmd_report(args: argparse.Namespace) -> int:
    from efflab.report import build_report

    try:
        index = build_report(args.dir)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    print(f"Report: {index}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except registry.UnknownExperiment as e:
        print(f"efflab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ConfigError, OutputError) as e:
        print(f"efflab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nefflab: interrupted; finished results are kept, an interrupted experiment "
              "resumes from its working folder with the same --out", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
