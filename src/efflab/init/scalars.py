"""The residual scalars of Fixup, ReZero and SkipInit (see :mod:`efflab.init.residual`):
a trainable multiplier on a residual branch and a trainable scalar bias. Every initializer
knows them: ``random_init_`` and ``zero_init_`` leave the gate at 1 and the bias at 0 (neutral),
ReZero and SkipInit start the gate at 0."""

from __future__ import annotations

import torch
from torch import nn


class ResidualGate(nn.Module):
    """A trainable scalar multiplying a residual branch: ``x -> weight * x``.
    ReZero and SkipInit start it at 0, Fixup at 1 (and every other initializer at 1, so the
    gate is neutral unless an initializer says otherwise). x: any shape -> same shape."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class ScalarBias(nn.Module):
    """A trainable scalar added to its input (Fixup's biases): ``x -> x + bias``; starts at 0
    under every initializer. x: any shape -> same shape."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


__all__ = ["ResidualGate", "ScalarBias"]
