"""Multilayer perceptrons, width-parametrized (double descent, ZerO, full-batch GD)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from efflab.models import register_model


class _ZeroReLUFunction(torch.autograd.Function):
    """relu(x) forward; backward lets the gradient through where x >= 0 (torch: x > 0)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x >= 0).to(grad.dtype)


def zero_relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU whose derivative at 0 is 1 (ZerO's authors' ``Zero_Relu``, Zhao et al. 2022).

    Same values as ``torch.relu``. A unit whose pre-activation is exactly 0, as channels that a
    Hadamard mix cancels are under ZerO initialization, still passes gradient; with
    ``torch.relu`` (derivative 0 there) such a unit never receives one and stays 0 for good.

    Computed as ``x.clamp_min(0)``: one native operation whose derivative is ``[x >= 0]``
    (torch's clamp passes the gradient at the bound), so 1 at 0, and correct at +-inf.
    Faster, forward and backward, than the Python autograd function
    :func:`zero_relu_reference`, which the tests hold it equal to, zeros and infinities
    included.
    """
    return x.clamp_min(0)


def zero_relu_reference(x: torch.Tensor) -> torch.Tensor:
    """:func:`zero_relu` with its derivative written out (an autograd function). For tests."""
    return _ZeroReLUFunction.apply(x)


class ZeroReLU(nn.Module):
    """Module form of :func:`zero_relu`. x: any shape -> same shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return zero_relu(x)


_ACTIVATIONS = {"relu": nn.ReLU, "zero_relu": ZeroReLU, "gelu": nn.GELU, "tanh": nn.Tanh,
                "identity": nn.Identity}


class MLP(nn.Module):
    """``in_features -> hidden[0] -> ... -> hidden[-1] -> out_features`` with an activation
    between layers. Inputs with more than two dimensions are flattened after the batch axis.

    x: (batch, *) -> (batch, out_features)
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int,
                 activation: str = "relu", bias: bool = True):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        for h in hidden:
            if int(h) < 1:
                raise ValueError(f"hidden widths must be >= 1, got {list(hidden)}")
        dims = [in_features, *[int(h) for h in hidden], out_features]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < len(dims) - 2:
                layers.append(_ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


@register_model("mlp")
def mlp(in_features: int = 40, width: int = 100, depth: int = 2, num_classes: int = 10,
        activation: str = "relu", bias: bool = True) -> MLP:
    """``depth`` hidden layers of ``width`` units (MNIST-1D defaults: 40 inputs, 10 classes)."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    return MLP(in_features, [width] * depth, num_classes, activation=activation, bias=bias)
