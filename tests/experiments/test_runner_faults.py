"""What survives which fault: failed and interrupted runs resume with their sweep points,
leftover temporary files are cleaned, tables are written as CSV."""

import csv
import json
import os
from dataclasses import dataclass

import pytest

from efflab import experiments as registry
from efflab.cli import main
from efflab.experiments.base import Claim, Experiment, ExperimentConfig, Table
from efflab.experiments.checks import at_least, param
from efflab.experiments.sweep import SweepInterrupted, sweep


def square_point(point):
    """A sweep point that logs each computation and fails where told to."""
    with open(point["log"], "a") as f:
        f.write(f"{point['i']}\n")
    if point["i"] in point["fail_at"]:
        raise RuntimeError(f"point {point['i']} fails")
    return {"square": point["i"] ** 2}


@dataclass
class _SweepCfg(ExperimentConfig):
    points: int = param(6, "sweep points", check=at_least(1))


class SweepExperiment(Experiment):
    """Fails at the points listed in $FAULT_AT (the failure is not part of the points)."""

    name = "test-sweep"
    paper = "Test"
    checks = "sweeps"
    Config = _SweepCfg
    budget_s = {"quick": 5.0, "full": 5.0}
    log = None

    def run(self, config, ctx):
        fail = [int(x) for x in os.environ.get("FAULT_AT", "").split(",") if x]
        if os.environ.get("FAULT_INTERRUPT_AT"):
            fail = []
        pts = [{"i": i, "log": str(self.log), "fail_at": []} for i in range(config.points)]
        out = []
        for p in pts:  # one sweep per point, so that a failure leaves the others on disk
            if p["i"] in fail:
                raise RuntimeError(f"point {p['i']} fails")
            if str(p["i"]) == os.environ.get("FAULT_INTERRUPT_AT"):
                raise KeyboardInterrupt
            if str(p["i"]) == os.environ.get("FAULT_WORKER_DIES_AT"):
                raise SweepInterrupted("squares", p["i"], len(pts), ctx.outdir / "sweeps")
            out += sweep(square_point, [p], ctx, f"squares-{p['i']}")
        return {"squares": [r["square"] for r in out]}

    def claims(self, results, config):
        return [Claim("squares", "i^2", str(results["squares"]), "exact", "reproduced")]

    def tables(self, results, config):
        return [Table("Squares, i = 0..n", ["i", "i^2"],
                      [[i, s] for i, s in enumerate(results["squares"])], note="a note"),
                Table("empty", ["x"], [])]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    reg = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", reg)
    monkeypatch.setattr(SweepExperiment, "log", tmp_path / "computed.log")
    registry.register(SweepExperiment)
    return tmp_path / "computed.log"


def _computed(log):
    return sorted(int(x) for x in log.read_text().split()) if log.exists() else []


@pytest.mark.parametrize("fault", ["FAULT_AT", "FAULT_WORKER_DIES_AT"])
def test_a_failed_run_keeps_its_points_and_the_rerun_continues(tmp_path, fake, monkeypatch,
                                                                capsys, fault):
    out = tmp_path / "o"
    monkeypatch.setenv(fault, "4")
    assert main(["run", "test-sweep", "--out", str(out), "--quiet"]) == 1
    rec = json.loads((out / "test-sweep" / "results.json").read_text())
    assert rec["status"] == "failed" and rec["verdict"] == "failed"
    assert _computed(fake) == [0, 1, 2, 3]
    assert "efflab: warning" not in capsys.readouterr().err
    monkeypatch.delenv(fault)
    assert main(["run", "test-sweep", "--out", str(out), "--quiet"]) == 0
    assert _computed(fake) == [0, 1, 2, 3, 4, 5]          # 0..3 were not computed again
    rec = json.loads((out / "test-sweep" / "results.json").read_text())
    assert rec["status"] == "ok" and rec["results"]["squares"] == [0, 1, 4, 9, 16, 25]
    assert not (out / ".test-sweep.partial").exists()


def test_reproduce_also_continues_a_failed_run(tmp_path, fake, monkeypatch):
    out = tmp_path / "o"
    monkeypatch.setenv("FAULT_AT", "2")
    assert main(["reproduce", "--only", "test-sweep", "--out", str(out), "--quiet"]) == 1
    monkeypatch.delenv("FAULT_AT")
    assert main(["reproduce", "--only", "test-sweep", "--out", str(out), "--quiet"]) == 0
    assert _computed(fake) == [0, 1, 2, 3, 4, 5]


def test_an_interrupted_run_continues_in_its_working_folder(tmp_path, fake, monkeypatch):
    out = tmp_path / "o"
    monkeypatch.setenv("FAULT_INTERRUPT_AT", "3")
    assert main(["run", "test-sweep", "--out", str(out), "--quiet"]) == 130
    assert not (out / "test-sweep").exists() and (out / ".test-sweep.partial").is_dir()
    monkeypatch.delenv("FAULT_INTERRUPT_AT")
    assert main(["run", "test-sweep", "--out", str(out), "--quiet"]) == 0
    assert _computed(fake) == [0, 1, 2, 3, 4, 5]


def test_leftover_temporary_files_are_removed_on_the_next_start(tmp_path, fake, monkeypatch):
    out = tmp_path / "o"
    work = out / ".test-sweep.partial" / "sweeps" / "squares-0"
    work.mkdir(parents=True)
    stale = [work / ".abc.json.k2j3h4.tmp", out / ".test-sweep.partial" / ".results.json.x1.tmp"]
    for p in stale:
        p.write_text("half")
    keep = out / ".test-sweep.partial" / "notes.tmp"          # not an atomic write's name
    keep.write_text("mine")
    assert main(["run", "test-sweep", "--out", str(out), "--quiet"]) == 0
    assert not any(p.exists() for p in stale)
    assert (out / "test-sweep" / "notes.tmp").read_text() == "mine"
    # a finished folder that reproduce reuses is cleaned too
    leftover = out / "test-sweep" / ".report.md.zz9.tmp"
    leftover.write_text("half")
    assert main(["reproduce", "--only", "test-sweep", "--out", str(out), "--quiet"]) == 0
    assert not leftover.exists()


def test_tables_are_written_as_csv_beside_results(tmp_path, fake):
    out = tmp_path / "o"
    assert main(["run", "test-sweep", "--set", "points=3", "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "test-sweep" / "results.json").read_text())
    assert rec["table_files"] == ["table-1-squares-i-0-n.csv", "table-2-empty.csv"]
    with open(out / "test-sweep" / "table-1-squares-i-0-n.csv", newline="") as f:
        assert list(csv.reader(f)) == [["i", "i^2"], ["0", "0"], ["1", "1"], ["2", "4"]]
    assert (out / "test-sweep" / "table-2-empty.csv").read_text() == "x\n"
