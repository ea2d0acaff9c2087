"""`efflab measure hf:ARCH:...`: the cost report covers Hugging Face models built from a
config (never downloaded)."""

import json

import pytest

from efflab.cli import main
from efflab.measure.spec import SpecError, measure_spec


def test_measure_by_name_counts_the_attention_of_a_hf_model():
    spec = "hf:gpt2:n_layer=1,n_embd=32,n_head=2,n_positions=64"
    r = measure_spec(spec, "16", batch_size=2, repeats=2, memory=False, peak=False)
    # one GPT-2 block at d = 32 over 16 tokens, batch 2: q, k, v, out projections (4 d^2),
    # the MLP (8 d^2) and the two attention products (2 n d), plus the tied LM head (256 d)
    b, n, d, vocab = 2, 16, 32, 256
    expected = 2 * b * n * (12 * d * d + 2 * n * d + vocab * d)
    assert r.flops_forward.total == expected


def test_measure_cli_takes_a_hf_spec_and_refuses_a_bad_one(tmp_path, capsys):
    out = tmp_path / "m"
    code = main(["measure", "hf:llama:num_hidden_layers=1,hidden_size=32,num_attention_heads=4,"
                 "num_key_value_heads=2,intermediate_size=64", "--input", "8",
                 "--batch-size", "2", "--repeats", "2", "--no-memory", "--no-peak",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    files = list(out.rglob("*.json"))
    assert files and json.loads(files[0].read_text())
    with pytest.raises(SpecError, match="arch must be one of"):
        measure_spec("hf:t5", "8", batch_size=1, repeats=1, memory=False, peak=False)
