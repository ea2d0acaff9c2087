"""`efflab measure MODEL_SPEC`: the subcommand built on a parser of our own."""

import argparse
import json

import pytest
import torch

from efflab.cli.measure import add_parser
from efflab.measure.spec import make_inputs, parse_model_spec, parse_shape


def parser():
    p = argparse.ArgumentParser(prog="efflab")
    add_parser(p.add_subparsers(dest="command"))
    return p


def run(argv):
    args = parser().parse_args(argv)
    return args.func(args)


def test_measure_writes_json_and_csv_and_prints_the_table(tmp_path, capsys):
    rc = run(["measure", "mlp:width=16,depth=1", "--input", "40", "--batch-size", "4",
              "--batch-sizes", "1,4", "--repeats", "2", "--warmup", "1", "--no-memory",
              "--no-peak", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "FLOPs: forward" in out and "mlp:width=16,depth=1" in out
    stem = "mlp_width=16_depth=1"
    data = json.loads((tmp_path / f"{stem}.json").read_text())
    assert data["flops_forward"]["total"] == 2 * 4 * (40 * 16 + 16 * 10)
    assert (tmp_path / f"{stem}.csv").read_text().startswith("name,")
    assert [t["batch_size"] for t in data["throughput"]] == [1, 4]


def test_token_inputs_report_tokens_per_second(tmp_path, capsys):
    rc = run(["measure", "mlp:in_features=12,width=8,depth=1", "--input", "12",
              "--tokens-per-sample", "12", "--batch-size", "2", "--repeats", "1",
              "--warmup", "0", "--no-memory", "--no-peak", "--out", str(tmp_path)])
    assert rc == 0
    assert "tokens/s" in capsys.readouterr().out


def test_transformer_spec_with_token_ids(tmp_path, capsys):
    spec = ("transformer_classifier:depth=1,embed_dim=16,num_heads=2,mlp_dim=32,"
            "max_seq_len=12,pad_id=none,attention_options={'causal':False}")
    rc = run(["measure", spec, "--input", "12", "--vocab", "16", "--batch-size", "2",
              "--repeats", "1", "--warmup", "0", "--no-memory", "--no-peak",
              "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    assert "tokens/s" in capsys.readouterr().out
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    assert data["tokens_per_sample"] == 12 and data["input_dtypes"] == ["int64"]
    per_token = 2 * 4 * 16 * 16 + 2 * 2 * 12 * 16 + 2 * 2 * 16 * 32  # + head, per sample
    assert data["flops_forward_per_token"] == pytest.approx(per_token + 2 * 16 * 10 / 12)


def test_unknown_model_and_bad_option_exit_2_naming_the_value(tmp_path, capsys):
    assert run(["measure", "mlpp", "--input", "40", "--out", str(tmp_path)]) == 2
    assert "unknown model 'mlpp'" in capsys.readouterr().err
    assert run(["measure", "mlp:wdth=3", "--input", "40", "--out", str(tmp_path)]) == 2
    assert "wdth" in capsys.readouterr().err
    assert run(["measure", "mlp", "--input", "4x0", "--out", str(tmp_path)]) == 2
    assert "'4x0'" in capsys.readouterr().err


def test_wrong_input_size_exits_2_naming_the_input_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    rc = run(["measure", "mlp", "--input", "7", "--batch-size", "3", "--no-memory",
              "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "input 7" in err and "(1, 7)" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_vocab_for_a_float_model_and_floats_for_a_token_model_exit_2(tmp_path, capsys):
    assert run(["measure", "mlp", "--input", "40", "--vocab", "16", "--no-memory",
                "--out", str(tmp_path)]) == 2
    assert "vocab 16" in capsys.readouterr().err
    spec = "transformer_classifier:depth=1,embed_dim=16,num_heads=2,mlp_dim=32,max_seq_len=8"
    assert run(["measure", spec, "--input", "8", "--no-memory", "--out", str(tmp_path)]) == 2
    assert "--vocab" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["file", "inside_file"])
def test_bad_out_is_refused_before_the_measurement(tmp_path, capsys, kind, monkeypatch):
    target = tmp_path / "f"
    target.write_text("x")
    out = target if kind == "file" else target / "sub"
    measured = []
    monkeypatch.setattr("efflab.cli.measure.measure", lambda *a, **k: measured.append(1))
    assert run(["measure", "mlp", "--input", "40", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err and not measured
    assert run(["measure", "mlp", "--input", "40", "--out", ""]) == 2


def test_a_batch_of_a_billion_gives_the_out_of_memory_record(tmp_path, capsys):
    rc = run(["measure", "mlp", "--input", "40", "--batch-size", str(10**9), "--no-memory",
              "--out", str(tmp_path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "out of memory at --batch-size 1000000000" in err and "Traceback" not in err
    record = json.loads((tmp_path / "mlp.json").read_text())
    assert record["status"] == "out of memory" and record["batch_size"] == 10**9


def test_a_throughput_batch_of_a_billion_is_recorded_out_of_memory(tmp_path, capsys):
    rc = run(["measure", "mlp:width=8,depth=1", "--input", "40", "--batch-size", "2",
              "--batch-sizes", f"1,{10**9}", "--repeats", "1", "--warmup", "0", "--no-memory",
              "--no-peak", "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "mlp_width=8_depth=1.json").read_text())
    assert [t["status"] for t in data["throughput"]] == ["ok", "out of memory"]


def test_threads_default_to_one_and_are_recorded(tmp_path, capsys):
    rc = run(["measure", "mlp:width=8,depth=1", "--input", "40", "--batch-size", "2",
              "--repeats", "2", "--warmup", "0", "--no-memory", "--no-peak",
              "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "mlp_width=8_depth=1.json").read_text())
    assert data["machine"]["torch_threads"] == 1
    assert data["load"]["threads"] == 1 and data["load"]["loadavg_before"] is not None
    assert run(["measure", "mlp", "--input", "4", "--threads", "100000",
                "--out", str(tmp_path)]) == 2
    assert "--threads" in capsys.readouterr().err


def test_help_text_shows_example(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["measure", "--help"])
    assert "efflab measure resnet18" in capsys.readouterr().out


def test_model_spec_parsing():
    assert parse_model_spec("resnet18") == ("resnet18", {})
    assert parse_model_spec("resnet:blocks=[1,1],widths=[8,16],batch_norm=false") == (
        "resnet", {"blocks": (1, 1), "widths": (8, 16), "batch_norm": False})
    assert parse_model_spec("t:attention=performer,eps=1e-3,x=none") == (
        "t", {"attention": "performer", "eps": 1e-3, "x": None})
    with pytest.raises(ValueError, match="key=value, got 'depth'"):
        parse_model_spec("mlp:depth")
    with pytest.raises(ValueError, match="model name"):
        parse_model_spec(":depth=2")


def test_shapes_and_inputs():
    assert parse_shape("3x32x32") == (3, 32, 32)
    with pytest.raises(ValueError, match="'3xa'"):
        parse_shape("3xa")
    x = make_inputs((5,), 4, vocab=7, seed=1)
    assert x.dtype == torch.int64 and x.shape == (4, 5) and 0 <= x.min() and x.max() < 7
    assert torch.equal(make_inputs((2, 3), 2, seed=3), make_inputs((2, 3), 2, seed=3))
