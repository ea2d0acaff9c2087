"""CIFAR-style residual networks (He et al. 2016), 1-D or 2-D, with or without batch norm.

``resnet18`` is the CIFAR-10 variant (3x3 stem, no max-pool) used by the full-batch GD and
ZerO papers; ``resnet`` takes any number of blocks per stage, so that very deep networks
without batch norm (ZerO's claim) are one keyword away.

``residual`` chooses what the residual branch carries for the residual-network initializers of
:mod:`efflab.init.residual`: ``"plain"`` (nothing), ``"gate"`` (a trainable scalar on the
branch: ReZero, SkipInit) or ``"fixup"`` (the gate plus Fixup's scalar biases before each
convolution, activation and the classifier). The ZerO authors' own ResNet, which is a
different network, is :mod:`efflab.models.augskip_resnet`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from efflab.init import ResidualGate, ScalarBias
from efflab.models import register_model
from efflab.models.mlp import ZeroReLU

_ACTIVATIONS = {"relu": nn.ReLU, "zero_relu": ZeroReLU}
RESIDUALS = ("plain", "gate", "fixup")


def _maybe(flag: bool, make) -> nn.Module:
    return make() if flag else nn.Identity()


def _conv(dim: int):
    return nn.Conv1d if dim == 1 else nn.Conv2d


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


def _norm(dim: int, channels: int, batch_norm: bool) -> nn.Module:
    if not batch_norm:
        return nn.Identity()
    return (nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(channels)


class BasicBlock(nn.Module):
    """conv3-norm-relu-conv3-norm plus a shortcut, then relu.

    ``branch_last`` is the last layer of the residual branch, which ZerO starts at zero: the
    second norm layer with batch norm (a zero convolution before a batch norm would be
    rescaled to unit variance after its first update), else the second convolution.
    ``branch`` is the branch's two convolutions in order (what Fixup scales and zeroes).
    The shortcut is a strided 1x1 convolution (+ norm) when the shape changes.
    ``residual="gate"`` multiplies the branch by a trainable scalar; ``"fixup"`` adds Fixup's
    scalar biases (Zhang et al. 2019, Figure 1): ``conv1(x + b1a)``, ``relu(. + b1b)``,
    ``conv2(. + b2a)``, ``gate * . + b2b``, and the shortcut reads ``x + b1a``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dim: int = 2,
                 batch_norm: bool = True, activation: str = "relu", residual: str = "plain"):
        super().__init__()
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
        conv = _conv(dim)
        fixup = residual == "fixup"
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = (
            _maybe(fixup, ScalarBias) for _ in range(4))
        self.conv1 = conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = _norm(dim, out_ch, batch_norm)
        self.conv2 = conv(out_ch, out_ch, 3, stride=1, padding=1, bias=not batch_norm)
        self.bn2 = _norm(dim, out_ch, batch_norm)
        self.gate = _maybe(residual != "plain", ResidualGate)
        self.act = _activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                conv(in_ch, out_ch, 1, stride=stride, bias=not batch_norm),
                _norm(dim, out_ch, batch_norm),
            )

    @property
    def branch_last(self) -> nn.Module:
        return self.bn2 if isinstance(self.bn2, nn.modules.batchnorm._BatchNorm) else self.conv2

    @property
    def branch(self) -> tuple[nn.Module, nn.Module]:
        return (self.conv1, self.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bias1a(x)
        h = self.act(self.bias1b(self.bn1(self.conv1(x))))
        h = self.bias2b(self.gate(self.bn2(self.conv2(self.bias2a(h)))))
        return self.act(h + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, stages of :class:`BasicBlock` (stride 2 at each new stage), global pool, fc.

    x: (batch, channels, length) for dim=1 (a (batch, length) input gets a channel axis),
    (batch, channels, height, width) for dim=2 -> (batch, num_classes)
    """

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2),
                 widths: Sequence[int] = (64, 128, 256, 512), in_channels: int = 3,
                 num_classes: int = 10, dim: int = 2, batch_norm: bool = True,
                 activation: str = "relu", residual: str = "plain"):
        super().__init__()
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {dim}")
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks {list(blocks)} and widths {list(widths)} must be non-empty "
                             "and of the same length")
        conv = _conv(dim)
        self.dim = dim
        self.stem = nn.Sequential(
            conv(in_channels, widths[0], 3, padding=1, bias=not batch_norm),
            _norm(dim, widths[0], batch_norm), _maybe(residual == "fixup", ScalarBias),
            _activation(activation),
        )
        stages = []
        c = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layer = []
            for j in range(n):
                layer.append(BasicBlock(c, w, stride=2 if (i > 0 and j == 0) else 1, dim=dim,
                                        batch_norm=batch_norm, activation=activation,
                                        residual=residual))
                c = w
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.fc_bias = _maybe(residual == "fixup", ScalarBias)
        self.fc = nn.Linear(c, num_classes)

    @property
    def classifier(self) -> nn.Module:
        """The final classifier (ZerO starts it at zero in residual networks)."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.dim + 1:
            x = x.unsqueeze(1)
        h = self.stages(self.stem(x))
        return self.fc(self.fc_bias(h.flatten(2).mean(-1)))


@register_model("resnet")
def resnet(blocks: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
           in_channels: int = 3, num_classes: int = 10, dim: int = 2,
           batch_norm: bool = True, activation: str = "relu", residual: str = "plain"
           ) -> ResNet:
    """``activation="zero_relu"``: ReLU with derivative 1 at 0 (for ZerO initialization);
    ``residual``: ``"plain"``, ``"gate"`` (ReZero, SkipInit), ``"fixup"``."""
    return ResNet(blocks, widths, in_channels, num_classes, dim, batch_norm, activation,
                  residual)


@register_model("resnet18")
def resnet18(in_channels: int = 3, num_classes: int = 10, batch_norm: bool = True,
             width: int = 64, activation: str = "relu") -> ResNet:
    """CIFAR-10 ResNet-18 (11.2M parameters at width 64)."""
    return ResNet((2, 2, 2, 2), (width, 2 * width, 4 * width, 8 * width), in_channels,
                  num_classes, dim=2, batch_norm=batch_norm, activation=activation)
