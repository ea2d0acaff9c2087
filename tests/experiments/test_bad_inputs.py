"""Every bad input is caught before any work: exit 2, one line naming the argument and the
value, nothing written, never a traceback.

The first test is generated from the registry: for every registered experiment and every
config field, values that are wrong for the field's type (NaN, infinities, negative and
oversized numbers, empty lists, unknown choices, unparsable text) go through ``efflab run
--set``. Each must either exit 2 before any work or pass the field's declared constraint
(then the run would start: the runner is replaced by a stub here, so the test stays fast).
"""

import dataclasses
import json
import math
import types
import typing

import pytest

import efflab.cli as cli
from efflab import experiments as registry
from efflab.cli import main
from efflab.experiments.base import ConfigError, ExperimentConfig
from efflab.experiments.runner import RunRecord, plan
from efflab.seeding import SEED_MAX

INT_CASES = ["-1", "0", "1", "-9223372036854775809", "18446744073709551616", "1e3", "nan",
             "", "0x10"]
FLOAT_CASES = ["nan", "-nan", "inf", "-inf", "1e400", "-1", "0", "-0.0", "x", ""]
SEQ_CASES = ["", ",", "x", "-1", "0", "nan", "inf", "1,,2"]
OTHER_CASES = ["", "zzz", "none", "nan", "-1"]


def _cases(tp) -> list[str]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return sorted({c for a in inner for c in _cases(a)} | {"none"})
    if origin in (tuple, list):
        return SEQ_CASES
    if tp is int:
        return INT_CASES
    if tp is float:
        return FLOAT_CASES
    return OTHER_CASES


@pytest.fixture
def no_work(monkeypatch):
    """The runner's stub: records the validated config instead of running."""
    started = []

    def run_planned(run, out, device, force=False, jobs=1, launcher=None):
        started.append(run.config)
        return RunRecord(run.experiment.name, "ok", out / run.experiment.name, "reproduced", 0.0)

    monkeypatch.setattr(cli, "run_planned", run_planned)
    monkeypatch.setattr(cli, "_finish", lambda out, records: 0)
    return started


def _one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("efflab: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("name", registry.names())
def test_every_config_field_refuses_bad_values_before_work(name):
    """Through :func:`plan`, the step of ``efflab run`` before any work (the CLI turns its
    ConfigError into exit 2: see the tests below and the CLI sample at the end)."""
    config_cls = registry.get(name).Config
    hints = typing.get_type_hints(config_cls)
    problems = []
    for f in dataclasses.fields(config_cls):
        for raw in _cases(hints[f.name]):
            try:
                config = plan(name, "quick", [f"{f.name}={raw}"]).config
            except ConfigError as e:
                if f.name not in str(e).split(": ", 1)[1]:
                    problems.append(f"{f.name}={raw!r}: message does not name it: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - the failure this test exists to find
                problems.append(f"{f.name}={raw!r}: {type(e).__name__}: {e}")
                continue
            value = getattr(config, f.name)
            check = f.metadata.get("check")
            if check is not None and not check(value):
                problems.append(f"{f.name}={raw!r} reached the run breaking {check.text}")
            if any(isinstance(x, float) and not math.isfinite(x)
                   for x in (value if isinstance(value, (tuple, list)) else [value])):
                problems.append(f"{f.name}={raw!r} reached the run as {value}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", registry.names())
def test_a_sample_of_bad_values_through_the_cli(name, tmp_path, capsys, no_work):
    """The last field and the seed, through ``efflab run``: exit 2, one line, no folder."""
    field = dataclasses.fields(registry.get(name).Config)[-1]
    for i, item in enumerate((f"{field.name}=nan", f"{field.name}=", "seed=-1")):
        out = tmp_path / f"out{i}"
        assert main(["run", name, "--set", item, "--out", str(out)]) in (0, 2)
        err = capsys.readouterr().err
        if err:
            assert item.split("=")[0] in _one_error_line(err) and not out.exists()
    assert not no_work or all(c.seed >= 0 for c in no_work)


@pytest.mark.parametrize("argv,message", [
    (["--seed", "-1"], "seed must be >= 0"),
    (["--seed", "18446744073709551616"], "seed must be >= 0, <= 2**63 - 1, got 1844674407"),
    (["--seed", str(SEED_MAX + 1)], "<= 2**63 - 1"),
    (["--set", "seed=2^70"], "seed: expected int, got '2^70'"),
    (["--set", "seed=18446744073709551616"], "seed must be"),
    (["--out", ""], "--out must name a folder"),
    (["--out", "   "], "--out must name a folder"),
    (["--threads", "100000"], "--threads must be in [1, "),
    (["--threads", "0"], "--threads must be in [1, "),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--set", "trials"], "--set takes key=value"),
    (["--set", "=3"], "unknown config key ''"),
    (["--set", "tolerance=nan"], "tolerance: expected a number, got 'nan'"),
    (["--set", "tolerance=inf"], "tolerance must be in (0, 1], got inf"),
    (["--set", "tolerance=0"], "tolerance must be in (0, 1], got 0.0"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["--config", "/nonexistent/cfg.toml"], "--config /nonexistent/cfg.toml: no such file"),
])
def test_bad_command_line_exits_2_and_leaves_nothing(tmp_path, capsys, monkeypatch, no_work,
                                                     argv, message):
    monkeypatch.chdir(tmp_path)
    args = ["run", "double-descent-linear", *argv]
    if "--out" not in argv:
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert message in line
    assert list(tmp_path.iterdir()) == [] and not no_work


@pytest.mark.parametrize("content,message", [
    ("n = [1", "not valid TOML"),
    ("zzz = 1", "unknown config key 'zzz'"),
    ("n = 'forty'", "n: expected int, got 'forty'"),
    ("n = 4.5", "n must be int, got float 4.5"),
    ("sigma = nan", "sigma must be >= 0, got nan"),
    ("trials = 5", "trials must be >= 10, got 5"),
    ("[table]\nn = 3", "unknown config key 'table'"),
])
def test_bad_config_file_exits_2(tmp_path, capsys, no_work, content, message):
    cfg = tmp_path / "saved.toml"
    cfg.write_text(content)
    out = tmp_path / "out"
    assert main(["run", "double-descent-linear", "--config", str(cfg), "--out", str(out)]) == 2
    assert message in _one_error_line(capsys.readouterr().err)
    assert not out.exists() and not no_work


def test_config_json_of_another_experiment_or_shape_is_refused(tmp_path, capsys, no_work):
    other = tmp_path / "results.json"
    other.write_text(json.dumps({"experiment": "benign-overfitting", "config": {"n": 50}}))
    assert main(["run", "double-descent-linear", "--config", str(other)]) == 2
    assert "holds a run of 'benign-overfitting'" in capsys.readouterr().err
    other.write_text("[1, 2]")
    assert main(["run", "double-descent-linear", "--config", str(other)]) == 2
    assert "expected a table of key = value, got list" in capsys.readouterr().err
    other.write_text("{")
    assert main(["run", "double-descent-linear", "--config", str(other)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_bad_profile_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "double-descent-linear", "--profile", "medium"])
    assert e.value.code == 2 and "invalid choice: 'medium'" in capsys.readouterr().err


def test_reproduce_with_only_twice_runs_both(tmp_path, no_work):
    assert main(["reproduce", "--only", "double-descent-linear", "--only", "benign-overfitting",
                 "--out", str(tmp_path / "o")]) == 0
    assert [type(c).__name__ for c in no_work] == ["DoubleDescentLinearConfig",
                                                   "BenignOverfittingConfig"]
    no_work.clear()
    assert main(["reproduce", "--only", "benign-overfitting", "double-descent-linear",
                 "--only", "benign-overfitting", "--out", str(tmp_path / "p")]) == 0
    assert len(no_work) == 2


def test_reproduce_with_an_unknown_only_name_exits_2(tmp_path, capsys, no_work):
    out = tmp_path / "o"
    assert main(["reproduce", "--only", "double-descent-linear", "--only", "nope",
                 "--out", str(out)]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
    assert not out.exists() and not no_work


def test_python_api_refuses_bad_values_before_work():
    with pytest.raises(ConfigError, match="double-descent-linear: seed must be >= 0"):
        plan("double-descent-linear", seed=-1)
    with pytest.raises(ConfigError, match="seed must be int, got float 1.5"):
        plan("double-descent-linear", seed=1.5)
    with pytest.raises(ConfigError, match="tolerance must be in"):
        plan("double-descent-linear", values={"tolerance": float("nan")})


def test_every_experiment_validates_its_own_profiles():
    for name in registry.names():
        exp = registry.get(name)
        for profile in ("quick", "full"):
            exp.Config.profile(profile).validate()
        if exp.smoke:
            exp.smoke_config()


def test_the_generic_finite_rule_covers_fields_without_a_declared_check():
    @dataclasses.dataclass
    class Loose(ExperimentConfig):
        rate: float = 0.5
        widths: tuple[float, ...] = (1.0, 2.0)

    with pytest.raises(ConfigError, match="rate must be finite, got inf"):
        Loose(rate=float("inf")).validate()
    with pytest.raises(ConfigError, match=r"widths\[1\] must be finite, got nan"):
        Loose(widths=(1.0, float("nan"))).validate()
