"""Running experiments: validation up front, one result folder each, written atomically.

A run of experiment ``NAME`` into ``OUT`` works in ``OUT/.NAME.partial`` and renames it to
``OUT/NAME`` when it ends, so ``OUT/NAME`` is either absent or complete. The folder holds
``results.json`` (config, seed, results, claims, verdict, environment, wall time),
the PNG figures, and ``report.md``. An interrupted run leaves only the hidden working
folder, which the next run with the same ``--out`` picks up again (sweeps resume from it).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import random
import shutil
import subprocess
import time
import traceback
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
    combine_verdicts,
)
from efflab.io import atomic_write_json, atomic_write_text, to_jsonable

RESULTS = "results.json"


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


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here")
    return torch.device(device)


def plan(name: str, profile: str = "quick", overrides: list[str] | tuple[str, ...] = (),
         seed: int | None = None) -> PlannedRun:
    """Look up ``name`` and build its config; raises before any work on any bad input."""
    exp = get(name)
    config = exp.Config.profile(profile).with_overrides(list(overrides))
    if seed is not None:
        config = dataclasses.replace(config, seed=int(seed))
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
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
    """The saved results of a finished (status ok) run in ``folder``, else None."""
    import json

    path = folder / RESULTS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("status") == "ok" else None


def _git_commit() -> str | None:
    src = Path(efflab.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                                text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=src, capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """What produced the numbers: versions, device, cores, threads, commit."""
    dev_name = (torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name())
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "efflab": efflab.__version__, "platform": platform.platform(),
        "device": str(device), "device_name": dev_name, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "git_commit": _git_commit(),
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy global use in user code
    torch.manual_seed(seed)


def _verdict_line(record: dict[str, Any]) -> str:
    return record.get("verdict") or "failed"


def experiment_markdown(record: dict[str, Any]) -> str:
    """The short ``report.md`` of one run."""
    lines = [f"# {record['experiment']}", "", f"Paper: {record['paper']}", "",
             f"Checks: {record['checks']}", "",
             f"Profile: {record['profile']} · seed {record['seed']} · "
             f"wall time {record['wall_time_s']:.1f} s (budget {record['budget_s']:.0f} s) · "
             f"device {record['environment']['device_name']}", "",
             f"**Verdict: {_verdict_line(record)}**", ""]
    if record["claims"]:
        lines += ["| claim | paper | ours | tolerance | verdict |", "|---|---|---|---|---|"]
        for c in record["claims"]:
            cells = [str(c[k]).replace("|", "\\|") for k in
                     ("text", "paper", "ours", "tolerance", "verdict")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    for fig in record["figures"]:
        lines += [f"![{fig}]({fig})", ""]
    if record.get("error"):
        lines += ["## Error", "", "```", record["error"].rstrip(), "```", ""]
    return "\n".join(lines)


def run_planned(run: PlannedRun, out: Path, device: torch.device, force: bool = False,
                jobs: int = 1, launcher: Any = None) -> RunRecord:
    """Run one planned experiment into ``out/NAME``. Failures are recorded, not raised."""
    exp, config = run.experiment, run.config
    final = out / exp.name
    if finished(final) is not None and not force:
        raise ResultExists(f"{final} holds a finished result; pass --force to replace it")
    work = out / f".{exp.name}.partial"
    work.mkdir(parents=True, exist_ok=True)
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
    record = {
        "experiment": exp.name, "paper": exp.paper, "checks": exp.checks,
        "profile": run.profile, "status": status, "seed": config.seed,
        "config": config.to_dict(), "results": results,
        "claims": [dataclasses.asdict(c) for c in claims],
        "verdict": combine_verdicts(claims) if status == "ok" else None,
        "tables": [dataclasses.asdict(t) for t in tables], "figures": figures,
        "error": error, "environment": environment(device),
        "budget_s": float(exp.budget_s.get(run.profile, float("nan"))), "wall_time_s": wall,
        "started": started.isoformat(timespec="seconds"),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record = to_jsonable(record)
    atomic_write_json(work / RESULTS, record)
    atomic_write_text(work / "report.md", experiment_markdown(record))
    _swap_into_place(work, final)
    return RunRecord(exp.name, status, final, record["verdict"], wall, error)


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
    work = out / f".{module}.partial"
    work.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record = to_jsonable({
        "experiment": module, "paper": "?", "checks": "(module failed to import)",
        "profile": profile, "status": "failed", "seed": None, "config": {}, "results": None,
        "claims": [], "verdict": None, "tables": [], "figures": [], "error": error,
        "environment": environment(device), "budget_s": float("nan"), "wall_time_s": 0.0,
        "started": now, "finished": now,
    })
    atomic_write_json(work / RESULTS, record)
    atomic_write_text(work / "report.md", experiment_markdown(record))
    final = out / module
    _swap_into_place(work, final)
    return RunRecord(module, "failed", final, None, 0.0, error)
