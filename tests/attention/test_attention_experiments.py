"""The attention experiments: their helpers, and a tiny end-to-end run of each."""

import dataclasses
import json

import torch

from efflab.experiments import RunContext, get
from efflab.experiments.suite.attention_linformer_spectrum import (
    attention_matrices,
    cumulative_spectrum,
    retrieval_batch,
)
from efflab.io import to_jsonable
from efflab.models import create_model


def test_cumulative_spectrum_of_known_matrices():
    n = 6
    uniform = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    torch.testing.assert_close(cumulative_spectrum(uniform), torch.ones(n, dtype=torch.float64))
    eye = torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(cumulative_spectrum(eye),
                               torch.arange(1, n + 1, dtype=torch.float64) / n)


def test_attention_matrices_are_read_from_every_layer():
    model = create_model("transformer_classifier", vocab_size=17, num_classes=8, max_seq_len=12,
                         embed_dim=16, depth=3, num_heads=2, mlp_dim=16, pad_id=None).eval()
    tokens, labels = retrieval_batch(3, 12, torch.Generator().manual_seed(0))
    assert tokens.shape == (3, 12) and int(tokens.max()) <= 16
    assert ((tokens >= 9).sum(1) == 1).all() and torch.equal(tokens.max(1).values - 9, labels)
    mats = attention_matrices(model, tokens)
    assert len(mats) == 3 and all(p.shape == (3, 2, 12, 12) for p in mats)
    for p in mats:
        torch.testing.assert_close(p.sum(-1), torch.ones(3, 2, 12, dtype=torch.float64))


def _tiny_run(name, tmp_path, **changes):
    exp = get(name)
    config = dataclasses.replace(exp.Config.quick(), **changes)
    results = exp.run(config, RunContext(device=torch.device("cpu"), outdir=tmp_path))
    json.dumps(to_jsonable(results))
    claims = exp.claims(results, config)
    assert claims and all(c.tolerance for c in claims)
    files = exp.figures(results, config, tmp_path)
    assert files and all((tmp_path / f).stat().st_size > 0 for f in files)
    assert exp.tables(results, config)
    return results, claims


def test_performer_approximation_tiny(tmp_path):
    results, claims = _tiny_run("performer-approximation", tmp_path, seq_len=32,
                                features=(8, 64), draws=2)
    curves = results["by_input_std"]["0.5"]["curves"]
    # at small inputs the error of the positive estimator falls with m
    assert curves["positive, iid"][1]["mse_mean"] < curves["positive, iid"][0]["mse_mean"]
    assert len(claims) == 3


def test_linformer_spectrum_tiny(tmp_path):
    results, _ = _tiny_run("linformer-spectrum", tmp_path, seq_len=16, depth=2, embed_dim=16,
                           num_heads=2, steps=3, batch_size=4, eval_examples=2)
    assert results["index"] == 4 and len(results["trained_at_index"]) == 2
    assert all(0 < v <= 1 + 1e-9 for v in results["trained_at_index"])
