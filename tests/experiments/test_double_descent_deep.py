"""double-descent-deep: the claims follow the per-seed curves (a peak at the threshold is
reproduced, a curve without a peak is not, an ambiguous one is inconclusive), and a tiny sweep
runs end to end, resumes, and gives the same numbers for the same seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from efflab.experiments import RunContext, get
from efflab.experiments.base import ConfigError, combine_verdicts
from efflab.experiments.suite.double_descent_deep import curve_stats, notebook_widths

WIDTHS = [4, 8, 12, 16, 24, 32, 48, 64, 128]


def _results(test_mean, train_mean, spread=0.003, seeds=3, clean=None):
    """Fabricated per-seed results: the given mean curves (fractions), seeds spread evenly
    over +-spread (a standard error of spread / sqrt(3) with 3 seeds)."""
    offsets = np.linspace(-spread, spread, seeds)

    def curve(test, train):
        te = [[t + o for o in offsets] for t in test]
        tr = [[max(0.0, t) for _ in range(seeds)] for t in train]
        per = {"test_err": te, "train_err": tr}
        c = {"per_seed": per, "test_err": [float(np.mean(v)) for v in te],
             "train_err": [float(np.mean(v)) for v in tr]}
        c["stats"] = curve_stats(WIDTHS, tr, te, 0.001)
        return c
    out = {"widths": WIDTHS, "curves": {repr(0.15): curve(test_mean, train_mean)}}
    if clean is not None:
        out["curves"][repr(0.0)] = curve(*clean)
    return out


TRAIN = [0.6, 0.5, 0.4, 0.3, 0.15, 0.02, 0.0, 0.0, 0.0]  # first 0 at width 48 (index 6)


def _config(**kw):
    exp = get("double-descent-deep")
    return exp, dataclasses.replace(exp.Config.quick(), **{"widths": tuple(WIDTHS), **kw})


def test_a_peak_at_the_threshold_is_reproduced():
    exp, cfg = _config()
    test = [0.68, 0.63, 0.60, 0.58, 0.61, 0.64, 0.66, 0.60, 0.55]
    claims = exp.claims(_results(test, TRAIN), cfg)
    assert [c.verdict for c in claims[:2]] == ["reproduced", "reproduced"]
    assert claims[2].kind == "measurement"  # shortened: compared, not judged
    assert combine_verdicts(claims) == "reproduced"


def test_a_curve_without_a_peak_is_not_reproduced():
    exp, cfg = _config()
    test = [0.68, 0.63, 0.60, 0.58, 0.56, 0.55, 0.54, 0.53, 0.52]  # falls monotonically
    claims = exp.claims(_results(test, TRAIN), cfg)
    assert [c.verdict for c in claims[:2]] == ["not reproduced", "not reproduced"]
    assert combine_verdicts(claims) == "not reproduced"


def test_a_peak_far_from_the_threshold_is_not_reproduced_and_noise_is_inconclusive():
    exp, cfg = _config()
    early = [0.6, 0.5, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # first 0 at width 16
    far = [0.68, 0.63, 0.60, 0.58, 0.59, 0.60, 0.62, 0.66, 0.60]  # peak at 64
    claims = exp.claims(_results(far, early), cfg)
    assert claims[0].verdict == "not reproduced" and claims[1].verdict == "reproduced"
    # a 1-point bump with 3-point seed noise: the peak set spans the whole curve
    noisy = [0.68, 0.63, 0.60, 0.58, 0.585, 0.59, 0.595, 0.59, 0.585]
    claims = exp.claims(_results(noisy, TRAIN, spread=0.03), cfg)
    assert claims[0].verdict == "inconclusive" and claims[0].settle


def test_noise_free_claim_can_fail():
    exp, cfg = _config(clean_sweep=True)
    peak = [0.68, 0.63, 0.60, 0.58, 0.61, 0.64, 0.66, 0.60, 0.55]
    flat = [0.60, 0.55, 0.50, 0.45, 0.43, 0.42, 0.41, 0.40, 0.39]
    ok = exp.claims(_results(peak, TRAIN, clean=(flat, TRAIN)), cfg)
    bad = exp.claims(_results(peak, TRAIN, clean=(peak, TRAIN)), cfg)
    assert ok[-1].verdict == "reproduced" and bad[-1].verdict == "not reproduced"


def test_notebook_grids_and_config_errors():
    assert notebook_widths("mlp") == (2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 47, 61, 80, 104,
                                      135, 177, 230, 300)
    assert len(notebook_widths("cnn")) == 29
    exp = get("double-descent-deep")
    full = exp.Config.full()
    full.validate()
    assert not full.shortened and exp.Config.quick().shortened
    assert (full.n_train, full.n_test, full.epochs, full.grid) == (4000, 12000, 500.0,
                                                                    notebook_widths("mlp"))
    with pytest.raises(ConfigError, match="batch_size must divide n_train"):
        dataclasses.replace(exp.Config.quick(), batch_size=300).validate()
    with pytest.raises(ConfigError, match="widths must"):
        dataclasses.replace(exp.Config.quick(), widths=(8, 4, 16, 32, 64)).validate()
    with pytest.raises(ConfigError, match="model must be"):
        dataclasses.replace(exp.Config.quick(), model="vit").validate()


@pytest.mark.slow
def test_tiny_sweep_end_to_end_and_resume(tmp_path):
    exp, cfg = _config(n_train=200, n_test=200, widths=(2, 4, 8, 16, 32), epochs=1.0,
                       seeds=(0, 1), clean_sweep=True)
    cfg.validate()
    ctx = RunContext(device=torch.device("cpu"), outdir=tmp_path / "a")
    res = exp.run(cfg, ctx)
    noisy = res["curves"][repr(0.15)]
    assert len(noisy["per_seed"]["test_err"][0]) == 2
    assert 0.05 < np.mean(noisy["changed"]) < 0.25  # about 13.5% of the labels change
    assert all(0 <= e <= 1 for e in noisy["test_err"])
    assert res["curves"][repr(0.0)]["changed"] == [0.0] * 5
    claims = exp.claims(res, cfg)
    assert len(claims) == 4
    assert len(exp.tables(res, cfg)) == 2
    assert (tmp_path / exp.figures(res, cfg, tmp_path)[0]).read_bytes()[:4] == b"\x89PNG"
    again = exp.run(cfg, RunContext(device=torch.device("cpu"), outdir=tmp_path / "b"))
    assert again["curves"][repr(0.15)]["test_err"] == noisy["test_err"]
    assert exp.run(cfg, ctx) == res  # read back from the sweep's files


def test_cnn_point_is_the_notebooks_cnn():
    from efflab.experiments.suite.double_descent_deep import deep_point
    from efflab.models import create_model

    net = create_model("mnist1d_cnn", channels=6)
    assert net(torch.randn(3, 40)).shape == (3, 10)
    # conv 1*6*5+6, conv 6*6*3+6 twice, linear 6*5*10+10: the notebook's layer sizes
    assert sum(p.numel() for p in net.parameters()) == 36 + 2 * 114 + 310
    out = deep_point({"model": "cnn", "noise": 0.15, "width": 4, "seed": 0, "n_train": 100,
                      "n_test": 100, "epochs": 1.0, "lr": 0.01, "momentum": 0.9,
                      "batch_size": 50})
    assert out["params"] == 4 * 5 + 4 + 2 * (4 * 4 * 3 + 4) + 4 * 5 * 10 + 10
    assert out["steps"] == 2 and 0 <= out["test_err"] <= 1
