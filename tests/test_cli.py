"""The command line and the runner: bad input fails early and cleanly, results are complete."""

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from efflab import experiments as registry
from efflab.cli import main
from efflab.experiments.base import Claim, Experiment, ExperimentConfig, Table

TINY = ["--set", "trials=40", "--set", "grid_points=12", "--set", "n=16", "--set", "d=40",
        "--set", "support=4"]


# -- fake experiments registered only for these tests -----------------------------------------
class _Cfg(ExperimentConfig):
    pass


class OkExperiment(Experiment):
    name = "test-ok"
    paper = "Test paper"
    checks = "returns its seed"
    Config = _Cfg
    budget_s = {"quick": 1.0, "full": 1.0}

    def run(self, config, ctx):
        return {"seed": config.seed, "device": str(ctx.device)}

    def claims(self, results, config):
        return [Claim("seed comes back", "0", str(results["seed"]), "equal",
                      "reproduced" if results["seed"] == config.seed else "not reproduced")]

    def tables(self, results, config):
        return [Table("t", ["a", "b"], [[1, 2.5]])]


class FailingExperiment(OkExperiment):
    name = "test-fail"

    def run(self, config, ctx):
        raise RuntimeError("boom: deliberate failure")


class InterruptedExperiment(OkExperiment):
    name = "test-interrupt"

    def run(self, config, ctx):
        (ctx.outdir / "half-written.txt").write_text("partial")
        raise KeyboardInterrupt


@pytest.fixture
def fakes(monkeypatch):
    reg = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", reg)
    for cls in (OkExperiment, FailingExperiment, InterruptedExperiment):
        registry.register(cls)
    return reg


# -- bad input -------------------------------------------------------------------------------
def test_unknown_experiment_exits_2_with_suggestions(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "double-descnt-linear", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'double-descnt-linear'" in err
    assert "double-descent-linear" in err
    assert not out.exists()


def test_unknown_set_key_lists_valid_keys(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "double-descent-linear", "--set", "tirals=5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'tirals'" in err and "trials" in err and "sigma" in err
    assert not out.exists()


@pytest.mark.parametrize("item,expect", [("trials=many", "trials: expected int, got 'many'"),
                                         ("sigma=x", "sigma: expected float, got 'x'"),
                                         ("novalue", "--set takes key=value")])
def test_wrong_type_names_key_and_type(tmp_path, capsys, item, expect):
    out = tmp_path / "out"
    assert main(["run", "double-descent-linear", "--set", item, "--out", str(out)]) == 2
    assert expect in capsys.readouterr().err
    assert not out.exists()


def test_invalid_config_value_is_refused_before_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "double-descent-linear", "--set", "d=10", "--out", str(out)]) == 2
    assert "d must be >=" in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_out_is_reported_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "sub" / "dir"
    assert main(["run", "double-descent-linear", "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_out_that_cannot_be_created_leaves_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "a" / "b"
    real_write = Path.write_text

    def refuse(self, *args, **kwargs):
        if self.name.startswith(".efflab-write-test"):
            raise PermissionError(13, "Permission denied")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse)
    assert main(["run", "double-descent-linear", "--out", str(out)]) == 2
    assert "not writable" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_unavailable_cuda_is_a_usage_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    assert main(["run", "double-descent-linear", "--device", "cuda",
                 "--out", str(tmp_path / "o")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- a real run ------------------------------------------------------------------------------
class _Page(HTMLParser):
    """Collects image sources and the text of every table cell."""

    def __init__(self):
        super().__init__()
        self.imgs, self.cells, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(" ".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None and data.strip():
            self._cell.append(data.strip())


def test_run_writes_complete_folder_and_report(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "double-descent-linear", *TINY, "--seed", "3", "--out", str(out),
                 "--quiet"]) == 0
    folder = out / "double-descent-linear"
    rec = json.loads((folder / "results.json").read_text())
    assert rec["status"] == "ok" and rec["seed"] == 3 and rec["config"]["trials"] == 40
    assert rec["verdict"] in ("reproduced", "partly", "inconclusive", "not reproduced")
    assert {"python_version", "torch_version", "efflab_version", "device", "device_name",
            "usable_cores", "torch_threads", "numpy_version",
            "git_commit"} <= set(rec["environment"])
    assert rec["wall_time_s"] > 0 and len(rec["claims"]) >= 3
    for fig in rec["figures"]:
        assert (folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Verdict" in (folder / "report.md").read_text()
    page = _Page()
    page.feed((out / "index.html").read_text())
    assert page.imgs and all((out / src).is_file() for src in page.imgs)
    assert any(c.startswith("double-descent-linear") for c in page.cells)
    assert any(c.startswith("simulated mean risk matches the closed form") for c in page.cells)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert str(out / "index.html") in capsys.readouterr().out


def test_rerun_refuses_to_clobber_unless_forced(tmp_path, fakes, capsys):
    out = tmp_path / "o"
    assert main(["run", "test-ok", "--out", str(out), "--seed", "1"]) == 0
    before = (out / "test-ok" / "results.json").read_text()
    assert main(["run", "test-ok", "--out", str(out), "--seed", "2"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "test-ok" / "results.json").read_text() == before
    assert main(["run", "test-ok", "--out", str(out), "--seed", "2", "--force"]) == 0
    assert json.loads((out / "test-ok" / "results.json").read_text())["seed"] == 2


def test_reproduce_records_failure_runs_the_rest_and_exits_nonzero(tmp_path, fakes, capsys):
    out = tmp_path / "o"
    assert main(["reproduce", "--only", "test-fail", "test-ok", "--out", str(out)]) == 1
    failed = json.loads((out / "test-fail" / "results.json").read_text())
    assert failed["status"] == "failed" and "boom: deliberate failure" in failed["error"]
    assert json.loads((out / "test-ok" / "results.json").read_text())["status"] == "ok"
    html = (out / "index.html").read_text()
    assert "boom: deliberate failure" in html and "test-ok" in html
    assert "test-fail" in capsys.readouterr().err


def test_reproduce_reuses_finished_results_and_refuses_stale_ones(tmp_path, fakes, capsys):
    out = tmp_path / "o"
    assert main(["reproduce", "--only", "test-ok", "--out", str(out)]) == 0
    stamp = (out / "test-ok" / "results.json").stat().st_mtime_ns
    assert main(["reproduce", "--only", "test-ok", "--out", str(out)]) == 0
    assert "reused" in capsys.readouterr().out
    assert (out / "test-ok" / "results.json").stat().st_mtime_ns == stamp
    assert main(["reproduce", "--only", "test-ok", "--out", str(out), "--profile", "full"]) == 2
    assert "another profile or config" in capsys.readouterr().err


def test_interrupted_run_leaves_no_result_folder(tmp_path, fakes):
    out = tmp_path / "o"
    assert main(["run", "test-interrupt", "--out", str(out)]) == 130
    assert not (out / "test-interrupt").exists()
    assert (out / ".test-interrupt.partial" / "half-written.txt").exists()


def test_report_rebuilds_from_saved_results(tmp_path, fakes, capsys):
    out = tmp_path / "o"
    assert main(["reproduce", "--only", "test-ok", "test-fail", "--out", str(out)]) == 1
    (out / "index.html").unlink()
    assert main(["report", str(out)]) == 0
    html = (out / "index.html").read_text()
    assert "test-ok" in html and "test-fail" in html and "<table>" in html
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_list_shows_every_experiment_with_paper(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [e["name"] for e in data["experiments"]]
    assert "double-descent-linear" in names
    assert all(e["paper"] and e["checks"] for e in data["experiments"])
    assert data["broken"] == {}, f"experiment modules failed to import: {data['broken']}"


@pytest.mark.parametrize("cmd", [[], ["run"], ["reproduce"], ["report"], ["list"]])
def test_help_of_each_command_shows_an_example(cmd):
    res = subprocess.run([sys.executable, "-m", "efflab", *cmd, "--help"], capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "100"})
    assert res.returncode == 0, res.stderr
    assert "examples:" in res.stdout and "efflab " in res.stdout


# -- configs you can see and save ------------------------------------------------------------
def test_print_config_round_trips_through_config(tmp_path, capsys):
    assert main(["run", "double-descent-linear", "--print-config", "--set", "trials=77",
                 "--seed", "5"]) == 0
    text = capsys.readouterr().out
    assert "# trials (int; default 1000; >= 10): Monte Carlo trials per p" in text
    assert "trials = 77" in text and "seed = 5" in text
    saved = tmp_path / "saved.toml"
    saved.write_text(text)
    assert main(["run", "double-descent-linear", "--config", str(saved), "--print-config"]) == 0
    assert capsys.readouterr().out == text
    # --set overrides the file
    assert main(["run", "double-descent-linear", "--config", str(saved), "--set", "n=20",
                 "--set", "d=60", "--set", "support=4", "--print-config"]) == 0
    again = capsys.readouterr().out
    assert "n = 20" in again and "trials = 77" in again


@pytest.mark.parametrize("name", registry.names())
def test_every_experiment_prints_a_config_that_loads_back(name, tmp_path, capsys):
    from efflab.cli.config_file import read_config_file
    from efflab.experiments.runner import plan

    assert main(["run", name, "--print-config", "--profile", "full"]) == 0
    saved = tmp_path / "c.toml"
    saved.write_text(capsys.readouterr().out)
    values, _ = read_config_file(saved, name)
    assert plan(name, "quick", values=values).config == plan(name, "full").config


def test_results_json_holds_the_config_a_rerun_reproduces(tmp_path, fakes):
    out = tmp_path / "o"
    assert main(["run", "test-ok", "--out", str(out), "--seed", "11", "--quiet"]) == 0
    first = json.loads((out / "test-ok" / "results.json").read_text())
    assert main(["run", "test-ok", "--config", str(out / "test-ok" / "results.json"),
                 "--out", str(tmp_path / "again"), "--quiet"]) == 0
    second = json.loads((tmp_path / "again" / "test-ok" / "results.json").read_text())
    assert second["config"] == first["config"] and second["results"] == first["results"]
    assert second["profile"] == first["profile"]


def test_run_help_lists_the_experiments_config_keys():
    res = subprocess.run([sys.executable, "-m", "efflab", "run", "benign-overfitting", "--help"],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"})
    assert res.returncode == 0, res.stderr
    assert "config keys of benign-overfitting" in res.stdout
    for key in ("tail_energy", "trials", "benign_level", "seed"):
        assert f"  {key} " in res.stdout
    assert "in (0, 1]" in res.stdout           # the constraints are shown
    plain = subprocess.run([sys.executable, "-m", "efflab", "run", "--help"],
                           capture_output=True, text=True)
    assert "efflab run NAME --help lists NAME's config keys" in plain.stdout


def test_list_into_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "efflab", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()                         # what `efflab list | head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_terminal_summary_counts_verdicts_and_flags_over_budget():
    from efflab.cli import summary_lines
    from efflab.experiments.runner import RunRecord

    recs = [RunRecord("a", "ok", Path("a"), "reproduced", 10.0, budget_s=30.0),
            RunRecord("b", "ok", Path("b"), "reproduced", 50.0, budget_s=30.0),
            RunRecord("c", "failed", Path("c"), "failed", 1.0, budget_s=30.0),
            RunRecord("d", "reused", Path("d"), "inconclusive", 99.0, budget_s=30.0)]
    assert summary_lines(recs) == [
        "Verdicts of 4 experiment(s): 2 reproduced, 1 inconclusive, 1 failed",
        "Over budget: b (50 s of 30 s)"]


def test_reproduce_prints_the_summary(tmp_path, fakes, capsys):
    assert main(["reproduce", "--only", "test-ok", "test-fail", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Verdicts of 2 experiment(s): 1 reproduced, 1 failed" in out
