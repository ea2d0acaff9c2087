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
              "--out", str(tmp_path)])
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
              "--warmup", "0", "--no-memory", "--out", str(tmp_path)])
    assert rc == 0
    assert "tokens/s" in capsys.readouterr().out


def test_transformer_spec_with_token_ids(tmp_path, capsys):
    spec = ("transformer_classifier:depth=1,embed_dim=16,num_heads=2,mlp_dim=32,"
            "max_seq_len=12,pad_id=none,attention_options={'causal':False}")
    rc = run(["measure", spec, "--input", "12", "--vocab", "16", "--batch-size", "2",
              "--repeats", "1", "--warmup", "0", "--no-memory", "--out", str(tmp_path)])
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


def test_model_that_fails_on_the_input_exits_1_with_the_shape(tmp_path, capsys):
    rc = run(["measure", "mlp", "--input", "7", "--batch-size", "3", "--no-memory",
              "--out", str(tmp_path)])
    assert rc == 1
    assert "(3, 7)" in capsys.readouterr().err


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
