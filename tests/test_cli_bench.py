"""``efflab bench attention``: bad input fails before any work (exit 2, the argument named);
a tiny run writes the JSON with every repeat and the plot. No timed assertions."""

import json

import pytest
import torch

from efflab.cli import build_parser, main
from efflab.cli.bench import SCALING_LENGTHS, config_from_args


def _cfg(*argv):
    return config_from_args(build_parser().parse_args(["bench", "attention", *argv]))


def test_the_command_parses_and_selects_cases():
    cfg = _cfg("--lengths", "256", "64", "64", "--repeats", "2")
    assert cfg.lengths == [64, 256] and cfg.repeats == 2
    assert cfg.cases == ["noncausal", "linformer"] and cfg.device == "cpu"
    assert _cfg("--causal").cases == ["causal"]
    assert _cfg("--mechanisms", "linformer").cases == ["linformer"]
    scaling = _cfg("--scaling", "--sdpa-max", "8192")
    assert scaling.cases == ["noncausal", "causal", "linformer"]
    assert scaling.lengths == SCALING_LENGTHS and SCALING_LENGTHS[0] == 1024
    assert SCALING_LENGTHS[-1] == 131072 and scaling.sdpa_max == 8192


@pytest.mark.parametrize("argv, named", [
    (["--lengths", "1"], "--lengths must all be >= 2, got 1"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["--threads", "0"], "--threads must be between 1"),
    (["--sdpa-max", "0"], "--sdpa-max must be >= 1, got 0"),
    (["--device", "tpu"], "--device must be cpu or cuda, got 'tpu'"),
    (["--dtype", "float16"], "--dtype must be one of float32, bfloat16, got 'float16'"),
    (["--mechanisms", "flash"], "--mechanisms: unknown 'flash'"),
    (["--causal", "--mechanisms", "linformer"], "--mechanisms linformer with --causal"),
    (["--scaling", "--causal"], "--causal with --scaling"),
    (["--peak-n", "0"], "--peak-n must be >= 1, got 0"),
    (["--out", ""], "--out must name a folder"),
])
def test_bad_input_exits_2_naming_the_argument(argv, named, tmp_path, capsys):
    args = ["bench", "attention", "--lengths", "64", *argv]
    if "--out" not in argv:
        args += ["--out", str(tmp_path / "never")]
    assert main(args) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_cuda_requested_without_cuda_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu"
    assert main(["bench", "attention", "--device", "cuda", "--dtype", "bfloat16",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not available" in err and not out.exists()


def test_a_non_integer_length_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "attention", "--lengths", "1k"])
    assert e.value.code == 2 and "--lengths" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_run_writes_json_with_every_repeat_and_the_plot(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "attention", "--lengths", "64", "128", "256", "--repeats", "1",
                 "--mechanisms", "sdpa", "favor", "mha", "linformer", "--sdpa-max", "128",
                 "--peak-n", "128", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ratios to sdpa" in printed and "util" in printed
    report = json.loads((out / "attention_cpu.json").read_text())
    assert (out / "attention_cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["torch_version"] == torch.__version__ and report["threads"] == 1
    assert report["date_utc"] and report["machine"]["cpu_model"]
    assert len(report["load"]["loadavg_before"]) == 3 and report["load"]["loadavg_after"]
    assert isinstance(report["unreliable"], list) and report["load"]["samples"] >= 1
    assert report["matmul_peak"]["flop_per_s"] > 0 and len(report["matmul_peak"]["runs"]) == 2
    assert "four n x m x d products" in report["flop_formulas"]["favor"]
    res = report["results"]["noncausal"]
    assert set(res) == {"64", "128", "256"}
    assert len(res["64"]["time"]["favor"]["all_s"]) == 1  # every repeat is kept
    assert "sdpa" in res["256"]["skipped"] and "sdpa" not in res["256"]["time"]
    assert res["64"]["memory"]["favor"]["peak_mib"] > 0
    favor = report["summary"]["noncausal"]["mechanisms"]["favor"]
    assert [r["n"] for r in favor["per_n"]] == [64, 128, 256]
    assert favor["time_slope"] is not None and favor["memory_slope"] is not None
    assert favor["per_n"][2]["ratio_to_baseline"] is None  # no sdpa at 256
    assert 0 < favor["per_n"][0]["utilization"]
    assert "linformer" in report["summary"]["linformer"]["mechanisms"]


def test_help_shows_examples_that_run_as_copied(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "examples:\n  efflab bench attention" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["bench", "attention", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "examples:" in out and "--sdpa-max" in out
    example = next(line.split("efflab ", 1)[1] for line in out.splitlines()
                   if "--no-memory --out" in line)
    cfg = config_from_args(build_parser().parse_args(example.split()))
    assert cfg.lengths == [256, 512, 1024] and cfg.repeats == 1 and not cfg.memory
