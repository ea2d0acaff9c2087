"""A small convolutional classifier for 1-D signals (MNIST-1D) or images, width-parametrized."""

from __future__ import annotations

import torch
from torch import nn

from efflab.models import register_model


class ConvNet(nn.Module):
    """``depth`` conv-ReLU layers of ``width`` channels (stride 2 after the first), global
    average pooling, a linear head. ``dim`` picks 1-D (signals) or 2-D (images) convolutions.

    x: (batch, length) or (batch, channels, length) for dim=1;
    (batch, channels, height, width) for dim=2 -> (batch, num_classes)
    """

    def __init__(self, in_channels: int = 1, width: int = 32, depth: int = 3,
                 num_classes: int = 10, kernel_size: int = 3, dim: int = 1):
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {dim}")
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(depth):
            layers += [conv(c, width, kernel_size, stride=1 if i == 0 else 2,
                            padding=kernel_size // 2), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.dim + 1:
            x = x.unsqueeze(1)
        h = self.features(x)
        return self.head(h.flatten(2).mean(-1))


@register_model("cnn")
def cnn(in_channels: int = 1, width: int = 32, depth: int = 3, num_classes: int = 10,
        kernel_size: int = 3, dim: int = 1) -> ConvNet:
    return ConvNet(in_channels, width, depth, num_classes, kernel_size, dim)


class MNIST1DConvNet(nn.Module):
    """The CNN of the MNIST-1D deep double descent notebook (Greydanus,
    ``notebooks/deep-double-descent.ipynb``): three stride-2 1-D convolutions of ``channels``
    channels (kernels 5, 3, 3; padding 1) with ReLUs, flattened into one linear layer. The
    width that is swept is ``channels``.

    x: (batch, length) or (batch, 1, length) -> (batch, num_classes)
    """

    def __init__(self, channels: int = 16, length: int = 40, num_classes: int = 10):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        out = length
        for k in (5, 3, 3):
            out = (out + 2 - k) // 2 + 1
        if out < 1:
            raise ValueError(f"length must leave at least one position after three stride-2 "
                             f"convolutions, got length={length}")
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(channels * out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(1))


@register_model("mnist1d_cnn")
def mnist1d_cnn(channels: int = 16, length: int = 40, num_classes: int = 10) -> MNIST1DConvNet:
    return MNIST1DConvNet(channels, length, num_classes)
