"""The full-batch-vs-sgd experiment end to end on a tiny configuration."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from efflab.experiments import RunContext, get
from efflab.experiments.base import VERDICTS


def tiny(config):
    return dataclasses.replace(config, seeds=(0, 1), num_samples=600, width=16, sgd_epochs=2,
                               sgd_batch=64, sgd_warmup=2, fb_steps=6, fb_warmup=2,
                               grad_reg_block=128, eval_points=3)


def test_tiny_run_claims_figure_and_resume(tmp_path):
    exp = get("full-batch-vs-sgd")
    cfg = tiny(exp.Config.quick())
    ctx = RunContext(device=torch.device("cpu"), outdir=tmp_path / "a")
    res = exp.run(cfg, ctx)
    rows = res["rows"]
    assert list(rows) == ["sgd", "fb", "fb_longer", "fb_clipped", "fb_regularized"]
    assert rows["sgd"]["steps"] == 2 * math.ceil(480 / 64)
    assert rows["fb"]["steps"] == 2 and rows["fb_longer"]["steps"] == 6
    assert rows["fb_regularized"]["train_config"]["grad_reg"] == cfg.grad_reg
    assert rows["fb_clipped"]["train_config"]["clip_norm"] == cfg.clip_norm
    assert "clip_norm" not in rows["fb_longer"]["train_config"]
    for r in rows.values():
        assert len(r["test_acc"]) == 2 and all(0 <= a <= 100 for a in r["test_acc"])
        assert r["mean"] == pytest.approx(sum(r["test_acc"]) / 2)
        assert all(c[-1][0] == r["steps"] for c in r["curves"])  # evaluated at the last step
    claims = exp.claims(res, cfg)
    assert len(claims) == 3 and all(c.verdict in VERDICTS for c in claims)
    (table,) = exp.tables(res, cfg)
    assert len(table.rows) == 5
    names = exp.figures(res, cfg, tmp_path)
    assert (tmp_path / names[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # same seed, fresh folder: the same numbers; same folder: read back, not recomputed
    again = exp.run(cfg, RunContext(device=torch.device("cpu"), outdir=tmp_path / "b"))
    assert [again["rows"][r]["test_acc"] for r in rows] == [rows[r]["test_acc"] for r in rows]
    resumed = exp.run(cfg, ctx)
    assert [resumed["rows"][r]["wall_s"] for r in rows] == [rows[r]["wall_s"] for r in rows]


def test_config_errors():
    exp = get("full-batch-vs-sgd")
    with pytest.raises(ValueError, match="fb_warmup=300 must be < fb_steps=200"):
        dataclasses.replace(exp.Config.quick(), fb_warmup=300).validate()
    with pytest.raises(ValueError, match="dataset=cifar10 needs cifar_root"):
        dataclasses.replace(exp.Config.quick(), dataset="cifar10").validate()
    with pytest.raises(ValueError, match="dataset must be 'mnist1d' or 'cifar10', got 'svhn'"):
        dataclasses.replace(exp.Config.quick(), dataset="svhn").validate()


def test_cifar10_path_with_augmentation(tmp_path):
    """The full profile's CIFAR-10 branch on a tiny generated folder: resampled crops and flips
    for SGD, fixed augmented copies for full batch."""
    import pickle

    import numpy as np

    from efflab.data.cifar10 import TEST_FILE, TRAIN_FILES
    from efflab.experiments.suite.full_batch_vs_sgd import run_row

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in (*TRAIN_FILES, TEST_FILE):
        blob = {b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                b"labels": rng.integers(0, 10, 8).tolist()}
        (folder / name).write_bytes(pickle.dumps(blob, protocol=2))
    exp = get("full-batch-vs-sgd")
    cfg = dataclasses.replace(exp.Config.quick(), dataset="cifar10", cifar_root=str(tmp_path),
                              model="cnn", width=4, depth=1, augment_pad=2, fb_copies=1,
                              sgd_epochs=1, sgd_batch=20, sgd_warmup=1, fb_steps=2,
                              fb_warmup=1, grad_reg_block=16, eval_points=1)
    cfg.validate()
    c = {k: v for k, v in cfg.to_dict().items() if k not in ("seeds", "seed")}
    sgd = run_row({"row": "sgd", "seed": 0, "device": "cpu", "config": c})
    assert sgd["steps"] == 2  # 40 images, batches of 20
    fb = run_row({"row": "fb_regularized", "seed": 0, "device": "cpu", "config": c})
    plain = run_row({"row": "fb_regularized", "seed": 0, "device": "cpu",
                     "config": {**c, "fb_copies": 0}})
    assert fb["steps"] == plain["steps"] == 2
    for r in (sgd, fb, plain):
        assert all(math.isfinite(v) for v in r["final"].values())
    # the fixed copies change the training set, so the run
    assert fb["final"]["test_loss"] != plain["final"]["test_loss"]
