"""CPU peak memory from a fresh process: it sees activations and gradients that exist."""

import torch
from torch import nn

from efflab.measure import cpu_peak_growth


def test_training_step_holds_gradients_the_size_of_the_weights():
    # 36 MB of weights, far above the few MiB of one-time library buffers of a fresh process
    layer = nn.Linear(3000, 3000)
    weight_bytes = sum(p.numel() * p.element_size() for p in layer.parameters())
    x = torch.randn(4, 3000)
    train = cpu_peak_growth(layer, (x,), "train_step")
    infer = cpu_peak_growth(layer, (x,), "inference")
    assert train.bytes is not None and infer.bytes is not None, (train, infer)
    # the step's gradients, the size of the weights (RSS counts whole pages, and malloc may
    # reuse a little freed memory: within 10% below, and no more than half again above)
    assert 0.9 * weight_bytes <= train.bytes <= 1.5 * weight_bytes
    assert infer.bytes < weight_bytes / 10  # inference allocates no gradient
    assert "fresh process" in train.method


def test_bigger_batch_means_bigger_activations():
    model = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 256))
    small = cpu_peak_growth(model, (torch.randn(2, 256),), "inference")
    big = cpu_peak_growth(model, (torch.randn(2048, 256),), "inference")
    activation = 2048 * 2048 * 4  # the hidden layer of the big batch: 16 MiB
    assert big.bytes - small.bytes >= activation / 2


def test_unpicklable_loss_is_reported_not_raised():
    model = nn.Linear(3, 2)
    result = cpu_peak_growth(model, (torch.randn(2, 3),), "train_step",
                             loss_fn=lambda out: out.sum())
    assert result.bytes is None
    assert result.note.startswith("not measured")


def test_failure_inside_the_child_is_reported():
    model = nn.Linear(3, 2)
    result = cpu_peak_growth(model, (torch.randn(2, 5),), "inference")  # wrong width
    assert result.bytes is None
    assert "RuntimeError" in result.note
