"""The training loop: the agreed API, both regimes, schedule, clipping, evaluation, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from efflab.train import (
    TrainConfig,
    evaluate,
    full_batch_gradient_reference,
    learning_rate,
    total_steps,
    train,
)
from efflab.train.loop import _Batches


def blobs(n: int = 96, d: int = 6, classes: int = 3, seed: int = 0, dtype=torch.float32):
    """Well-separated Gaussian blobs: a problem any working loop learns."""
    g = torch.Generator().manual_seed(seed)
    centers = 4.0 * torch.randn(classes, d, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g, dtype=dtype)
    return x, y


def tiny_mlp(d: int = 6, classes: int = 3, seed: int = 0, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, classes)).to(dtype)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("batch_size", [16, None])
def test_learns_and_reports(batch_size):
    x_all, y_all = blobs(n=160)
    x, y, xt, yt = x_all[:96], y_all[:96], x_all[96:], y_all[96:]
    model = tiny_mlp()
    cfg = TrainConfig(steps=60, batch_size=batch_size, lr=0.1, eval_every=20)
    res = train(model, (x, y), cfg, eval_data=(xt, yt))
    assert len(res.history) == 60 and [h["step"] for h in res.history] == list(range(1, 61))
    assert {"test_acc", "train_acc", "test_loss"} <= set(res.history[19])
    assert "test_acc" not in res.history[18]
    assert res.final["train_acc"] > 0.9 and res.final["test_acc"] > 0.85
    assert res.history[-1]["train_loss"] < 0.5 * res.history[0]["train_loss"]
    ev = evaluate(model, (xt, yt))
    assert ev["acc"] == pytest.approx(res.final["test_acc"])
    assert ev["loss"] == pytest.approx(res.final["test_loss"], rel=1e-6)


@pytest.mark.parametrize("batch_size", [10, None])
def test_same_seed_same_run(batch_size):
    x, y = blobs()
    cfg = TrainConfig(steps=15, batch_size=batch_size, lr=0.05, seed=3)
    m1, m2 = tiny_mlp(), tiny_mlp()
    r1, r2 = train(m1, (x, y), cfg), train(m2, (x, y), cfg)
    assert torch.equal(flat(m1), flat(m2))
    assert r1.history == r2.history
    if batch_size is not None:  # a different seed draws different batches
        m3 = tiny_mlp()
        train(m3, (x, y), TrainConfig(steps=15, batch_size=batch_size, lr=0.05, seed=4))
        assert not torch.equal(flat(m1), flat(m3))


def test_full_batch_step_is_exact_gradient_descent():
    """Plain GD (no momentum): theta_1 = theta_0 - lr * grad of the mean loss over all data."""
    x, y = blobs(n=50, dtype=torch.float64)
    model = tiny_mlp(dtype=torch.float64)
    ref = tiny_mlp(dtype=torch.float64)
    g = full_batch_gradient_reference(ref, x, y)
    expected = torch.cat([(p - 0.3 * gi).detach().reshape(-1)
                          for p, gi in zip(ref.parameters(), g)])
    res = train(model, (x, y), TrainConfig(steps=1, batch_size=None, micro_batch_size=7, lr=0.3,
                                           momentum=0.0))
    torch.testing.assert_close(flat(model), expected, rtol=1e-12, atol=1e-13)
    loss = nn.functional.cross_entropy(ref(x), y).item()
    assert res.history[0]["train_loss"] == pytest.approx(loss, rel=1e-12)


def test_micro_batches_do_not_change_mini_batch_training():
    x, y = blobs(n=64, dtype=torch.float64)
    base = dict(steps=12, batch_size=16, lr=0.1, nesterov=True, weight_decay=1e-3,
                warmup_steps=3, schedule="cosine")
    m1, m2 = tiny_mlp(dtype=torch.float64), tiny_mlp(dtype=torch.float64)
    train(m1, (x, y), TrainConfig(**base))
    train(m2, (x, y), TrainConfig(**base, micro_batch_size=5))
    torch.testing.assert_close(flat(m1), flat(m2), rtol=1e-10, atol=1e-12)


def test_batch_of_whole_set_equals_full_batch():
    """A mini-batch of all n samples, shuffled, is the full batch: same run up to rounding."""
    x, y = blobs(n=40, dtype=torch.float64)
    m1, m2 = tiny_mlp(dtype=torch.float64), tiny_mlp(dtype=torch.float64)
    train(m1, (x, y), TrainConfig(steps=5, batch_size=40, lr=0.2, optimizer="adam"))
    train(m2, (x, y), TrainConfig(steps=5, batch_size=None, lr=0.2, optimizer="adam"))
    torch.testing.assert_close(flat(m1), flat(m2), rtol=1e-9, atol=1e-11)


def test_batches_cover_each_epoch_once():
    batches = _Batches(n=23, batch_size=5, seed=0, device=torch.device("cpu"))
    assert batches.per_epoch == 5
    for epoch in range(3):
        idx = torch.cat([batches(epoch * 5 + i) for i in range(5)])
        assert sorted(idx.tolist()) == list(range(23))
    first = torch.cat([batches(i) for i in range(5)])
    second = torch.cat([batches(5 + i) for i in range(5)])
    assert not torch.equal(first, second)  # reshuffled every epoch


def test_epochs_count_steps():
    cfg = TrainConfig(epochs=2.5, batch_size=10)
    assert total_steps(95, cfg) == round(2.5 * 10)
    assert total_steps(95, TrainConfig(epochs=3, batch_size=None)) == 3
    x, y = blobs(n=30)
    res = train(tiny_mlp(), (x, y), TrainConfig(epochs=1.5, batch_size=8, lr=0.01))
    assert len(res.history) == 6  # 4 batches per epoch (8, 8, 8, 6) -> 1.5 epochs = 6 steps


def test_schedule_values():
    # warmup: linear from lr/warmup to lr; cosine: lr at the first step after warmup,
    # half of it midway
    assert learning_rate(0, 100, 0.4, warmup_steps=4) == pytest.approx(0.1)
    assert learning_rate(3, 100, 0.4, warmup_steps=4) == pytest.approx(0.4)
    assert learning_rate(50, 100, 0.4, warmup_steps=4) == pytest.approx(0.4)
    assert learning_rate(4, 104, 0.4, 4, "cosine") == pytest.approx(0.4)
    assert learning_rate(54, 104, 0.4, 4, "cosine") == pytest.approx(0.2)
    assert learning_rate(103, 104, 0.4, 4, "cosine") == pytest.approx(
        0.2 * (1 + math.cos(math.pi * 99 / 100)))
    assert learning_rate(54, 104, 0.4, 4, "cosine", min_lr_ratio=0.5) == pytest.approx(0.3)
    x, y = blobs(n=20)
    res = train(tiny_mlp(), (x, y), TrainConfig(steps=10, batch_size=None, lr=0.4,
                                                warmup_steps=2, schedule="cosine"))
    assert [h["lr"] for h in res.history] == pytest.approx(
        [learning_rate(s, 10, 0.4, 2, "cosine") for s in range(10)])


def test_clipping_bounds_the_step():
    """With plain GD, a clipped step moves the weights by lr * clip_norm exactly."""
    x, y = blobs(n=30, dtype=torch.float64)
    model = tiny_mlp(dtype=torch.float64)
    before = flat(model)
    g = torch.cat([t.reshape(-1) for t in full_batch_gradient_reference(model, x, y)])
    clip = 0.1 * g.norm().item()
    res = train(model, (x, y), TrainConfig(steps=1, batch_size=None, lr=0.5, momentum=0.0,
                                           clip_norm=clip))
    torch.testing.assert_close(before - flat(model), 0.5 * clip * g / g.norm(), rtol=1e-5,
                               atol=1e-12)
    assert res.history[0]["grad_norm"] == pytest.approx(g.norm().item(), rel=1e-10)


def test_callback_sees_every_step():
    x, y = blobs(n=20)
    seen = []
    train(tiny_mlp(), (x, y), TrainConfig(steps=4, batch_size=5, lr=0.1),
          callback=lambda step, model: seen.append((step, model.training)))
    assert seen == [(1, True), (2, True), (3, True), (4, True)]


def test_token_inputs_and_other_loss():
    """x is any tensor with a sample axis (token ids here); loss_fn is the caller's."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 8, (48, 5), generator=g)
    y = (x == 3).any(1).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(8, 8), nn.Flatten(), nn.Linear(40, 2))
    calls = []

    def loss_fn(out, target):
        calls.append(out.shape[0])
        return nn.functional.cross_entropy(out, target, label_smoothing=0.1)

    res = train(model, (x, y), TrainConfig(steps=40, batch_size=None, micro_batch_size=16,
                                           optimizer="adamw", lr=0.05), loss_fn=loss_fn)
    assert res.final["train_acc"] > 0.9
    assert calls[:3] == [16, 16, 16]


def test_evaluate_matches_hand_computation():
    x, y = blobs(n=37)
    model = tiny_mlp()
    out = model(x)
    ev = evaluate(model, (x, y), batch_size=8)
    assert ev["acc"] == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert ev["loss"] == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of steps and epochs"),
    (dict(steps=3, epochs=1.0), "exactly one of steps and epochs"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=1, optimizer="lion"), "optimizer must be one of"),
    (dict(steps=1, schedule="linear"), "schedule must be one of"),
    (dict(steps=1, batch_size=0), "batch_size must be None or a positive integer, got 0"),
    (dict(steps=1, clip_norm=0.0), "clip_norm must be None or > 0"),
    (dict(steps=1, grad_reg_method="magic"), "grad_reg_method must be one of"),
    (dict(steps=1, checkpoint_every=5), "needs a checkpoint_dir"),
    (dict(steps=1, optimizer="adam", nesterov=True), "nesterov needs"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_bad_data_errors():
    x, y = blobs(n=20)
    model = tiny_mlp()
    with pytest.raises(ValueError, match="micro_batch_size=32 is larger than the data set"):
        train(model, (x, y), TrainConfig(steps=1, batch_size=None, micro_batch_size=32))
    with pytest.raises(ValueError, match="batch_size=64 is larger than the data set"):
        train(model, (x, y), TrainConfig(steps=1, batch_size=64))
    with pytest.raises(ValueError, match="data set is empty"):
        train(model, (x[:0], y[:0]), TrainConfig(steps=1, batch_size=None))
    with pytest.raises(ValueError, match=r"same number of samples, got x: \(20, 6\), y: \(19,\)"):
        train(model, (x, y[:19]), TrainConfig(steps=1, batch_size=4))


def test_augmentation_is_resampled_every_step_and_seeded():
    x, y = blobs(n=24)
    drawn = []

    def augment(xb, generator):
        noise = torch.randn(xb.shape, generator=generator)
        drawn.append(noise)
        return xb + 0.1 * noise

    cfg = TrainConfig(steps=3, batch_size=None, micro_batch_size=12, lr=0.1)
    m1 = tiny_mlp()
    train(m1, (x, y), cfg, augment=augment)
    assert len(drawn) == 6  # once per micro-batch per step
    assert not torch.equal(drawn[0], drawn[2])  # a new draw at the next step
    first = list(drawn)
    drawn.clear()
    m2 = tiny_mlp()
    train(m2, (x, y), cfg, augment=augment)
    assert all(torch.equal(a, b) for a, b in zip(first, drawn))
    assert torch.equal(flat(m1), flat(m2))
    m3 = tiny_mlp()
    train(m3, (x, y), cfg)
    assert not torch.equal(flat(m1), flat(m3))


def test_regularized_training_methods_agree():
    """A few full-batch steps with the regularizer: finite differences track double backprop,
    and the regularizer changes the run."""
    x, y = blobs(n=32, dtype=torch.float64)
    runs = {}
    for method in ("finite-difference", "double-backprop", None):
        model = tiny_mlp(dtype=torch.float64)
        cfg = TrainConfig(steps=5, batch_size=None, lr=0.2, grad_reg=0.0 if method is None
                          else 0.5, grad_reg_block=8, grad_reg_eps=1e-5,
                          grad_reg_method=method or "finite-difference")
        train(model, (x, y), cfg)
        runs[method] = flat(model)
    fd, db, plain = runs["finite-difference"], runs["double-backprop"], runs[None]
    assert (fd - db).norm() < 1e-4 * (db - plain).norm()


def test_partial_last_batch_is_its_own_mean():
    """10 samples, batches of 4: step 3 takes the 2 left over, and must follow the mean
    gradient of those 2 (not 2/4 of it)."""
    x, y = blobs(n=10, dtype=torch.float64)
    model = tiny_mlp(dtype=torch.float64)
    snapshots = [flat(model)]
    res = train(model, (x, y), TrainConfig(steps=3, batch_size=4, lr=0.3, momentum=0.0),
                callback=lambda step, m: snapshots.append(flat(m)))
    idx = _Batches(n=10, batch_size=4, seed=0, device=torch.device("cpu"))(2)
    assert idx.numel() == 2
    ref = tiny_mlp(dtype=torch.float64)
    torch.nn.utils.vector_to_parameters(snapshots[2], ref.parameters())
    g = torch.cat([t.reshape(-1) for t in full_batch_gradient_reference(ref, x[idx], y[idx])])
    torch.testing.assert_close(snapshots[3], snapshots[2] - 0.3 * g, rtol=1e-12, atol=1e-13)
    loss = nn.functional.cross_entropy(ref(x[idx]), y[idx]).item()
    assert res.history[2]["train_loss"] == pytest.approx(loss, rel=1e-12)
