"""``shuffle_blocks`` (the paper's "in practice" row: the regularizer's blocks reshuffled at
every step) and the ``rsqrt`` learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import efflab.train.distributed as distributed
import efflab.train.loop as loop
from efflab.train import TrainConfig, learning_rate, regularized_gradient_reference, train
from efflab.train.loop import block_order


def _problem(n: int = 41, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (n,), generator=g)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def test_block_order_is_a_new_permutation_per_step_and_a_function_of_seed_and_step():
    n, block = 41, 6
    orders = [block_order(n, 7, step) for step in range(4)]
    for o in orders:
        assert o.dtype == torch.int64 and sorted(o.tolist()) == list(range(n))
    assert all(torch.equal(block_order(n, 7, s), orders[s]) for s in range(4))
    # the blocks themselves change (as sets of samples), not just the order within them
    first_blocks = [frozenset(o[:block].tolist()) for o in orders]
    assert len(set(first_blocks)) == 4
    assert not torch.equal(block_order(n, 8, 0), orders[0])  # another seed, other blocks
    assert not torch.equal(orders[0], torch.arange(n))


def _sgd_steps(cfg_kw, steps, x, y):
    """Weights before each step and after the last, of plain GD (no momentum, no decay)."""
    model = _model(1)
    weights = [[p.detach().clone() for p in model.parameters()]]
    cfg = TrainConfig(steps=steps, batch_size=None, lr=0.1, momentum=0.0, **cfg_kw)
    train(model, (x, y), cfg,
          callback=lambda s, m: weights.append([p.detach().clone() for p in m.parameters()]))
    return weights


def test_each_step_is_the_regularized_gradient_of_that_steps_blocks():
    """Step t moves the weights by lr times the regularized gradient over the blocks of
    block_order(n, seed, t), checked against the double-backprop reference in float64; the
    unshuffled blocks would give another gradient."""
    x, y = _problem()
    kw = dict(grad_reg=0.5, grad_reg_block=6, grad_reg_method="double-backprop", seed=3)
    weights = _sgd_steps({**kw, "shuffle_blocks": True}, 3, x, y)
    ref_model = _model(1)
    for step in range(3):
        with torch.no_grad():
            for p, w in zip(ref_model.parameters(), weights[step]):
                p.copy_(w)
        order = block_order(x.shape[0], 3, step)
        ref = _flat(regularized_gradient_reference(ref_model, x[order], y[order], 0.5, 6))
        got = (_flat(weights[step]) - _flat(weights[step + 1])) / 0.1
        torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)
        fixed = _flat(regularized_gradient_reference(ref_model, x, y, 0.5, 6))
        assert (got - fixed).norm() > 1e-4 * ref.norm()
    # and without the option the blocks are the fixed consecutive ones
    plain = _sgd_steps(kw, 1, x, y)
    fixed = _flat(regularized_gradient_reference(_model(1), x, y, 0.5, 6))
    torch.testing.assert_close((_flat(plain[0]) - _flat(plain[1])) / 0.1, fixed, rtol=1e-8,
                               atol=1e-10)


def test_shuffled_blocks_resume_bit_exact(tmp_path):
    x, y = _problem(30)
    kw = dict(steps=5, batch_size=None, lr=0.2, nesterov=True, grad_reg=0.5, grad_reg_block=7,
              shuffle_blocks=True, seed=11)
    ref_model = _model(2)
    ref = train(ref_model, (x, y), TrainConfig(**kw))

    def stop_at_3(step, m):
        if step == 3:
            raise KeyboardInterrupt

    cfg = TrainConfig(**kw, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        train(_model(2), (x, y), cfg, callback=stop_at_3)
    model = _model(2)
    resumed = train(model, (x, y), cfg)
    assert resumed.resumed_from == 2
    assert resumed.history == ref.history
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)


class _Stop(Exception):
    pass


def _first_step_gradient(monkeypatch, rank: int, world: int, cfg: TrainConfig, x, y):
    """This rank's summand of the first step's all-reduced gradient (collectives patched)."""
    seen = []

    def record(tensors):
        seen.append([t.clone() for t in tensors[:-1]])  # the last is the loss sum
        raise _Stop

    monkeypatch.setattr(loop, "all_reduce_sum_", record)
    monkeypatch.setattr(loop, "broadcast_module_", lambda module: None)
    monkeypatch.setattr(loop, "rank_and_world", lambda: (rank, world))
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (rank, world))
    with pytest.raises(_Stop):
        train(_model(1), (x, y), cfg)
    return _flat(seen[0])


@pytest.mark.parametrize("world", [2, 3])
def test_shuffled_blocks_do_not_depend_on_the_world_size(monkeypatch, world):
    """41 samples in blocks of 6 on 2 or 3 simulated ranks: every rank draws the same order and
    takes whole blocks of it (a rank cutting a block is refused by accumulate_gradient), so
    the summed gradient is the one process's. (The real 2-process check is in
    test_distributed_scaling.py.)"""
    x, y = _problem()
    cfg = TrainConfig(steps=2, batch_size=None, grad_reg=0.5, grad_reg_block=6,
                      shuffle_blocks=True, seed=5)
    one = _first_step_gradient(monkeypatch, 0, 1, cfg, x, y)
    many = sum(_first_step_gradient(monkeypatch, r, world, cfg, x, y) for r in range(world))
    torch.testing.assert_close(many, one, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw, match", [
    (dict(shuffle_blocks=True), r"shuffle_blocks=True .* needs grad_reg > 0 and "
                                r"batch_size=None, got grad_reg=0.0, batch_size=None"),
    (dict(shuffle_blocks=True, grad_reg=0.5, batch_size=8),
     r"needs grad_reg > 0 and batch_size=None, got grad_reg=0.5, batch_size=8"),
    (dict(shuffle_blocks="yes", grad_reg=0.5), "shuffle_blocks must be a bool"),
    (dict(schedule="rsqrt"), r"schedule='rsqrt' needs warmup_steps > 0 .* got warmup_steps=0"),
])
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"steps": 3, "batch_size": None, **kw})


def test_rsqrt_schedule_is_the_lra_form():
    """Against the Long Range Arena's "constant * linear_warmup * rsqrt_decay", written out:
    base * min(1, t / w) / sqrt(max(t, w)) with base = lr * sqrt(w), at t = step + 1."""
    for lr, w in ((0.4, 4), (0.05, 1000), (1.0, 1)):
        for step in (0, 1, w - 2, w - 1, w, 2 * w, 10 * w + 3, 5000):
            if step < 0:
                continue
            t = step + 1
            lra = lr * math.sqrt(w) * min(1.0, t / w) / math.sqrt(max(t, w))
            assert learning_rate(step, 20000, lr, w, "rsqrt") == pytest.approx(lra, rel=1e-12)
    # by hand: warmup 0.1, 0.2, 0.3, 0.4; then 0.4 * sqrt(4 / t)
    assert [learning_rate(s, 100, 0.4, 4, "rsqrt") for s in (0, 1, 2, 3)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.4])
    assert learning_rate(15, 100, 0.4, 4, "rsqrt") == pytest.approx(0.2)
    assert learning_rate(99, 100, 0.4, 4, "rsqrt") == pytest.approx(0.08)
    with pytest.raises(ValueError, match="schedule='rsqrt' needs warmup_steps > 0"):
        learning_rate(3, 10, 0.1, 0, "rsqrt")
    x, y = _problem(12)
    res = train(_model(), (x, y), TrainConfig(steps=9, batch_size=None, lr=0.3, warmup_steps=3,
                                              schedule="rsqrt"))
    assert [h["lr"] for h in res.history] == pytest.approx(
        [0.3 * min(1, (s + 1) / 3) * math.sqrt(3 / max(s + 1, 3)) for s in range(9)])
