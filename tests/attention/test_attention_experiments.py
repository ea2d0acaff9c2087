"""The attention experiments: their pieces, claims that can fail, and a tiny run of each."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from efflab.attention import draw_random_features, random_feature_map
from efflab.data.listops import ListOpsConfig, load_listops
from efflab.experiments import RunContext, get
from efflab.experiments.base import ConfigError, combine_verdicts
from efflab.experiments.suite import attention_performer_approximation as pa
from efflab.experiments.suite.attention_linformer_spectrum import (
    attention_matrices,
    cumulative_spectrum,
)
from efflab.experiments.suite.lra_listops import LRA_ACCURACY, LRAListOpsConfig
from efflab.io import to_jsonable
from efflab.models import create_model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFLAB_CACHE", str(tmp_path / "cache"))


def _tiny_run(name, tmp_path, **changes):
    exp = get(name)
    config = dataclasses.replace(exp.Config.quick(), **changes)
    config.validate()
    results = exp.run(config, RunContext(device=torch.device("cpu"), outdir=tmp_path))
    json.dumps(to_jsonable(results))
    claims = exp.claims(results, config)
    assert claims and all(c.tolerance for c in claims)
    files = exp.figures(results, config, tmp_path)
    assert files and all((tmp_path / f).stat().st_size > 0 for f in files)
    assert exp.tables(results, config)
    return exp, config, results, claims


# ------------------------------------------------------------------ performer-approximation

TINY_KERNEL = dict(head_dim=4, kernel_features=4, kernel_draws=3000, norms=(0.3, 0.5),
                   angles=4, bootstrap=200, max_relative_se=0.05, seq_len=32, features=(4, 16),
                   input_draws=3,
                   input_stds=(0.5,))


def test_kernel_draws_are_single_calls_laid_side_by_side():
    """simulate_kernel_errors' batched draws: each row of the result is one draw's estimate,
    the same as mapping that draw's own projection."""
    x = torch.tensor([[0.3, 0.1, 0.0, 0.2]], dtype=torch.float64)
    y = torch.tensor([[-0.2, 0.4, 0.1, 0.0]], dtype=torch.float64)
    m, d, draws = 6, 4, 3
    sq = pa.simulate_kernel_errors(x, y, m, draws, "positive", True, seed=7, chunk=draws)
    gen = torch.Generator().manual_seed(7)
    w = draw_random_features(draws * 8, d, True, generator=gen).reshape(draws, 8, d)[:, :m]
    exact = math.exp(float(x @ y.T))
    for i in range(draws):
        est = float(random_feature_map(x, w[i], "positive") @ random_feature_map(y, w[i],
                                                                                   "positive").T)
        assert math.isclose(sq[i, 0], (est - exact) ** 2, rel_tol=1e-9)


@pytest.mark.slow
def test_performer_approximation_tiny_run(tmp_path):
    exp, config, results, claims = _tiny_run("performer-approximation", tmp_path, **TINY_KERNEL)
    assert results["kernel"]["redraw"] == pa.REDRAW and results["kernel"]["m"] == 4
    assert results["attention"]["features"] == [4, 16]
    assert [c.verdict for c in claims[:4]] == ["reproduced"] * 4  # simulation = theory
    assert all(c.kind == "reproduction" for c in claims)


def test_a_wrong_closed_form_is_not_reproduced(monkeypatch):
    config = pa.Config(**TINY_KERNEL)
    right = pa.closed_form_mse
    monkeypatch.setattr(pa, "closed_form_mse", lambda *a: 2 * right(*a))  # a lost 1/2
    kernel = pa.run_kernel_check(config)
    claims = get("performer-approximation").claims({"kernel": kernel, "attention": {}}, config)
    assert [c.verdict for c in claims[:4]] == ["not reproduced"] * 4
    assert combine_verdicts(claims[:4]) == "not reproduced"


def _fabricated_kernel(trig_over_positive: float, log_ratio: float) -> dict:
    est = {"value": trig_over_positive, "lo": 0.9 * trig_over_positive,
           "hi": 1.1 * trig_over_positive, "n": 100, "method": "bootstrap", "level": 0.95}
    ratio = {"value": 1.0, "lo": 0.98, "hi": 1.02, "n": 100, "method": "t", "level": 0.95}
    entry = {"theory": 1.0, "simulated": 1.0, "predicted_relative_se": 0.01, "judged": True,
             "ratio": ratio}
    point = {"r": 1.0, "theta": 0.875 * math.pi, "kernel": 0.4,
             **{label: dict(entry) for label in pa.KERNEL_ESTIMATORS},
             "trig_over_positive": est}
    orth = {"value": log_ratio, "lo": log_ratio - 0.01, "hi": log_ratio + 0.01, "n": 100,
            "method": "bootstrap", "level": 0.95, "points": 1, "theory": -0.1}
    return {"m": 16, "draws": 100, "redraw": pa.REDRAW, "points": [point],
            "log_ratio_orthogonal_over_iid": orth}


@pytest.mark.parametrize("trig_over_positive, log_ratio, expected", [
    (5.0, -0.1, ["reproduced", "reproduced"]),
    (0.5, -0.1, ["not reproduced", "reproduced"]),   # trig better where the kernel is small
    (5.0, 0.1, ["reproduced", "not reproduced"]),    # orthogonal worse than iid
    (1.0, 0.005, ["inconclusive", "inconclusive"]),  # intervals straddle the threshold
])
def test_estimator_orderings_can_fail(trig_over_positive, log_ratio, expected):
    config = pa.Config()
    claims = get("performer-approximation").claims(
        {"kernel": _fabricated_kernel(trig_over_positive, log_ratio), "attention": {}}, config)
    assert [c.verdict for c in claims[4:]] == expected


def test_performer_config_refuses_bad_values():
    for bad in (dict(tolerance=float("nan")), dict(norms=()), dict(kernel_draws=0),
                dict(features=(16, -1)), dict(max_relative_se=0.0)):
        with pytest.raises(ConfigError):
            pa.Config(**bad).validate()


# ------------------------------------------------------------------ linformer-spectrum

def test_cumulative_spectrum_of_known_matrices():
    n = 6
    uniform = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    torch.testing.assert_close(cumulative_spectrum(uniform), torch.ones(n, dtype=torch.float64))
    eye = torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(cumulative_spectrum(eye),
                               torch.arange(1, n + 1, dtype=torch.float64) / n)


def test_attention_matrices_are_read_from_every_layer_with_padding():
    model = create_model("transformer_classifier", vocab_size=16, num_classes=10,
                         max_seq_len=12, embed_dim=16, depth=3, num_heads=2, mlp_dim=16).eval()
    tokens = torch.randint(1, 16, (3, 12), generator=torch.Generator().manual_seed(0))
    tokens[0, 8:] = 0  # padding
    mats = attention_matrices(model, tokens, tokens == 0)
    assert len(mats) == 3 and all(p.shape == (3, 2, 12, 12) for p in mats)
    for p in mats:
        torch.testing.assert_close(p.sum(-1), torch.ones(3, 2, 12, dtype=torch.float64))
        assert (p[0, :, :, 8:] == 0).all()  # no weight on padded keys


TINY_SPECTRUM = dict(min_length=20, max_length=60, num_train=60, num_test=30, embed_dim=8,
                     num_heads=2, mlp_dim=16, steps=2, batch_size=4, eval_examples=3,
                     accuracy_examples=20)


@pytest.mark.slow
def test_linformer_spectrum_tiny_run(tmp_path):
    _, _, results, claims = _tiny_run("linformer-spectrum", tmp_path, **TINY_SPECTRUM)
    tr = np.asarray(results["trained"]["at_index"])
    assert tr.shape == (4, 3, 2) and ((tr > 0) & (tr <= 1 + 1e-9)).all()
    assert np.asarray(results["trained"]["k_mass"]).min() >= 1
    assert len(claims) == 2


def _spectra(values):
    """Fabricated spectra: ``values`` per layer, the same for 4 examples x 2 heads (+ noise)."""
    rng = np.random.default_rng(0)
    at = [(v + 0.001 * rng.standard_normal((4, 2))).tolist() for v in values]
    return {"at_index": at, "at_quarter": at, "k_mass": [[[5, 5]] * 4] * len(values),
            "curves": [[1.0]] * len(values), "grid": [1.0]}


def _spectrum_results(trained, init):
    return {"trained": _spectra(trained), "init": _spectra(init), "eval_lengths": [30] * 4,
            "test_accuracy": 0.3, "majority_accuracy": 0.15, "index_fraction": 0.02,
            "mass": 0.9}


def test_an_untrained_model_or_reversed_depth_trend_is_not_reproduced():
    exp, config = get("linformer-spectrum"), get("linformer-spectrum").Config()
    good = exp.claims(_spectrum_results([0.6, 0.7, 0.8, 0.9], [0.5] * 4), config)
    assert [c.verdict for c in good] == ["reproduced", "reproduced"]
    untrained = _spectrum_results([0.5] * 4, [0.5] * 4)
    untrained["trained"] = copy.deepcopy(untrained["init"])  # trained == init, exactly
    assert exp.claims(untrained, config)[0].verdict == "not reproduced"
    reversed_ = exp.claims(_spectrum_results([0.9, 0.8, 0.7, 0.6], [0.5] * 4), config)
    assert reversed_[1].verdict == "not reproduced"


def test_linformer_spectrum_needs_four_layers():
    with pytest.raises(ConfigError, match="depth"):
        get("linformer-spectrum").Config(depth=2).validate()


# ------------------------------------------------------------------ lra-listops

def test_full_profile_is_lra_base_listops_config():
    full, quick = LRAListOpsConfig.full(), LRAListOpsConfig.quick()
    assert (full.depth, full.embed_dim, full.mlp_dim, full.num_heads) == (6, 512, 2048, 8)
    assert (full.steps, full.batch_size, full.warmup_steps, full.weight_decay) == (5000, 32,
                                                                                   1000, 0.1)
    assert math.isclose(full.lr, 0.05 / math.sqrt(1000))
    assert math.isclose(full.lr * full.min_lr_ratio, 0.05 / math.sqrt(5000))
    assert (full.min_length, full.max_length, full.num_train) == (500, 2000, 96_000)
    assert full.attention_options("linformer") == {"k": 16, "sharing": "key-value"}
    assert full.attention_options("performer") == {"num_features": 2, "redraw_interval": 1}
    assert full.is_lra_setting() and not quick.is_lra_setting()
    assert quick.min_length >= 300  # long enough that softmax attention is not free
    assert ListOpsConfig() == dataclasses.replace(full.data_config(), seed=0)  # LRA's data


@pytest.mark.parametrize("bad", [dict(min_length=700, max_length=600), dict(lr=float("nan")),
                                 dict(attentions=("softmax", "reformer")), dict(attentions=()),
                                 dict(linformer_sharing="all"), dict(dropout=1.0)])
def test_lra_config_refuses_bad_values(bad):
    with pytest.raises(ConfigError):
        dataclasses.replace(LRAListOpsConfig.quick(), **bad).validate()


def _lra_results(accuracies: dict[str, float], reduced: bool, n: int = 2000) -> dict:
    models = [{"attention": a, "options": {}, "test_acc": acc, "test_n": n,
               "test_correct": round(acc * n)} for a, acc in accuracies.items()]
    return {"reduced": reduced, "setting": "test", "majority": {"label": 0, "test_acc": 0.15},
            "models": models}


def test_lra_claims_two_sided_and_ordering_can_fail():
    exp, config = get("lra-listops"), LRAListOpsConfig.full()
    lra = {a: v / 100 for a, v in LRA_ACCURACY.items()}
    ok = exp.claims(_lra_results(lra, reduced=False), config)
    assert [c.verdict for c in ok] == ["reproduced"] * 5
    too_good = exp.claims(_lra_results({**lra, "performer": 0.37}, reduced=False), config)
    assert too_good[2].verdict == "not reproduced"  # two-sided: 37% is not LRA's 18%
    swapped = {"softmax": lra["performer"], "linformer": lra["linformer"],
               "performer": lra["softmax"]}
    claims = exp.claims(_lra_results(swapped, reduced=False), config)
    assert claims[3].verdict == "not reproduced"  # softmax above performer


def test_lra_reduced_claims_against_the_majority_class():
    exp, config = get("lra-listops"), LRAListOpsConfig.quick()
    trained = exp.claims(_lra_results({"softmax": 0.3, "linformer": 0.25, "performer": 0.22},
                                      reduced=True, n=1000), config)
    assert [c.verdict for c in trained] == ["reproduced"] * 3
    untrained = exp.claims(_lra_results({a: 0.10 for a in LRA_ACCURACY}, reduced=True,
                                        n=1000), config)
    assert [c.verdict for c in untrained] == ["not reproduced"] * 3


@pytest.mark.slow
def test_lra_listops_tiny_run(tmp_path):
    _, _, results, claims = _tiny_run(
        "lra-listops", tmp_path, min_length=20, max_length=60, num_train=64, num_val=8,
        num_test=32, embed_dim=8, mlp_dim=16, linformer_k=8, performer_features=8, steps=2,
        batch_size=8, warmup_steps=1, measure_batch=4, measure_repeats=1)
    assert [m["options"] for m in results["models"]] == [
        {}, {"k": 8, "sharing": "headwise"}, {"num_features": 8, "redraw_interval": 100}]
    assert results["reduced"] and len(claims) == 3
    data = load_listops(LRAListOpsConfig.quick().data_config().__class__(
        min_length=20, max_length=60, num_train=64, num_val=8, num_test=32))
    assert data.from_cache  # the run cached its data
