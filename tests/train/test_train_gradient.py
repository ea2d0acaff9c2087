"""The full-batch gradient and the gradient regularizer against their slow references, float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from efflab.train import (
    accumulate_gradient,
    full_batch_gradient,
    full_batch_gradient_reference,
    regularized_gradient_reference,
)


def data(n: int, d: int = 5, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=g)


def smooth_mlp(d: int = 5, classes: int = 4, seed: int = 0) -> nn.Module:
    # tanh: the Hessian-vector product is smooth, so finite differences converge cleanly
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(),
                         nn.Linear(12, classes)).double()


def grads_of(model: nn.Module, x, y, **kwargs) -> torch.Tensor:
    for p in model.parameters():
        p.grad = None
    accumulate_gradient(model, x, y, denominator=x.shape[0], **kwargs)
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def cat(gs) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in gs])


@pytest.mark.parametrize("micro", [None, 1, 7, 16, 50])
def test_full_batch_gradient_equals_single_shot(micro):
    x, y = data(50, seed=micro or 0)
    model = smooth_mlp(seed=1)
    ref = cat(full_batch_gradient_reference(model, x, y))
    got, loss = full_batch_gradient(model, x, y, micro_batch_size=micro)
    torch.testing.assert_close(cat(got), ref, rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(nn.functional.cross_entropy(model(x), y).item(), rel=1e-12)


def test_full_batch_gradient_cnn_float32_independent_of_micro_batch():
    """float32 accumulation: the micro-batch size changes only rounding."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 20, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(80, 3))
    ref = cat(full_batch_gradient_reference(model, x, y))
    for micro in (3, 10, 64):
        got, _ = full_batch_gradient(model, x, y, micro_batch_size=micro)
        torch.testing.assert_close(cat(got), ref, rtol=1e-5, atol=1e-6)


def test_not_a_running_mean():
    """The trap of the authors' code: summing micro-batch means with wrong weights. Uneven
    micro-batches (7, 7, 6) must be weighted by their sizes."""
    x, y = data(20)
    model = smooth_mlp()
    got, _ = full_batch_gradient(model, x, y, micro_batch_size=7)
    wrong = sum(cat(full_batch_gradient_reference(model, x[a:a + 7], y[a:a + 7])) / 3
                for a in (0, 7, 14))
    ref = cat(full_batch_gradient_reference(model, x, y))
    torch.testing.assert_close(cat(got), ref, rtol=1e-12, atol=1e-14)
    assert (wrong - ref).abs().max() > 1e-4


def test_batch_norm_statistics_are_per_micro_batch():
    x, y = data(32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 4)).double()
    ref = cat(full_batch_gradient_reference(model, x, y))
    whole, _ = full_batch_gradient(model, x, y)
    torch.testing.assert_close(cat(whole), ref, rtol=1e-12, atol=1e-14)
    ghost, _ = full_batch_gradient(model, x, y, micro_batch_size=8)
    per_block = sum(cat(full_batch_gradient_reference(model, x[a:a + 8], y[a:a + 8])) / 4
                    for a in range(0, 32, 8))
    torch.testing.assert_close(cat(ghost), per_block, rtol=1e-12, atol=1e-14)
    assert (cat(ghost) - ref).abs().max() > 1e-6


@pytest.mark.parametrize("block", [8, 11])
def test_double_backprop_equals_reference(block):
    x, y = data(33, seed=block)
    model = smooth_mlp(seed=2)
    ref = cat(regularized_gradient_reference(model, x, y, grad_reg=0.7, block=block))
    for micro in (None, 3):
        got = grads_of(model, x, y, grad_reg=0.7, grad_reg_block=block,
                       grad_reg_method="double-backprop", micro_batch_size=micro)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-13)


def test_finite_difference_converges_to_double_backprop():
    x, y = data(40, seed=5)
    model = smooth_mlp(seed=3)
    ref = grads_of(model, x, y, grad_reg=0.5, grad_reg_block=10,
                   grad_reg_method="double-backprop")
    plain = grads_of(model, x, y)
    reg_part = ref - plain
    errors = []
    for eps in (1e-2, 1e-4, 1e-6):
        fd = grads_of(model, x, y, grad_reg=0.5, grad_reg_block=10, grad_reg_eps=eps,
                      micro_batch_size=4)
        errors.append(((fd - ref).norm() / reg_part.norm()).item())
    # the paper's eps = 1e-2 is already close; the error is O(eps) until rounding takes over
    assert errors[0] < 0.05
    assert errors[2] < 1e-5
    assert errors[1] < errors[0] / 20


def test_finite_difference_leaves_weights_and_running_stats():
    x, y = data(24)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 4)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain_run = {k: v.clone() for k, v in before.items()}
    grads_of(model, x, y, grad_reg=0.3, grad_reg_block=8)
    after = model.state_dict()
    twin = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 4)).double()
    twin.load_state_dict(plain_run)
    grads_of(twin, x, y, micro_batch_size=8)  # one forward per block, no perturbed pass
    for k in before:
        torch.testing.assert_close(after[k], twin.state_dict()[k], rtol=0, atol=0)
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)


def test_zero_regularizer_is_plain_gradient():
    x, y = data(20)
    model = smooth_mlp()
    torch.testing.assert_close(grads_of(model, x, y, grad_reg=0.0, grad_reg_block=3),
                               cat(full_batch_gradient_reference(model, x, y)), rtol=1e-12,
                               atol=1e-14)


def test_bad_input():
    x, y = data(10)
    model = smooth_mlp()
    with pytest.raises(ValueError, match="micro_batch_size=11 is larger than the data set"):
        full_batch_gradient(model, x, y, micro_batch_size=11)
    with pytest.raises(ValueError, match="data set is empty"):
        full_batch_gradient(model, x[:0], y[:0])
    with pytest.raises(ValueError, match="denominator must be >= the 10 samples"):
        accumulate_gradient(model, x, y, denominator=5)
    with pytest.raises(ValueError, match="grad_reg_method must be"):
        accumulate_gradient(model, x, y, denominator=10, grad_reg=1.0, grad_reg_method="x")
