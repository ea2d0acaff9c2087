"""The ZerO authors' ResNet: pre-activation blocks with augmented skip connections and fixed
Hadamard transforms (Zhao et al., TMLR 2022, Section 4; built as in their released CIFAR code,
``cifar/augskip_resnet.py`` and ``cifar/skip_connection.py`` of jiaweizzhao/ZerO-initialization).

What makes ZerO work on a residual network is this network, not Algorithm 2 at the centre
tap of a standard ResNet (docs/zero-init.md measures the difference):

* **Augmented skips.** Every 3x3 convolution has its own identity skip, ``x + conv(x)``, and
  ZerO starts the whole kernel at 0, so at initialization every block is the identity.
* **Width or stride changes.** The first convolution's skip is then a strided 1x1
  convolution started at the partial identity I* (:class:`PartialIdentityConv2d`), followed
  by a *fixed* normalized Hadamard transform over channels (:class:`ChannelHadamard`, a
  buffer, never trained). The Hadamard mix is what breaks the symmetry between channels: the
  channels that I* fills with zeros receive combinations of all the others.
* **Stem.** A 3x3 convolution started at 0 plus a fixed skip that pads the input channels
  with zeros to the stem width and applies the fixed Hadamard (:class:`PaddedHadamardSkip`),
  so even a one-channel input reaches every stem channel, with signs that differ by channel.
* **Order.** The authors' pre-activation order is ReLU then batch norm (``bn(relu(x))``)
  before each convolution; the width-changing shortcut reads that normalized activation, the
  identity skip the raw input. After the last stage: ReLU, batch norm, global average pool,
  and a linear classifier started at 0.
* **ReLU.** The authors' ``Zero_Relu`` passes gradient 1 at exactly 0 (``activation=
  "zero_relu"``, the default here); ``"relu"`` gives torch's.

Widths must be powers of two (the Sylvester Hadamard transform); the stem width must be at
least the number of input channels. ``batch_norm=False`` replaces every batch norm by the
identity (and gives the convolutions biases).

``zero_init_(model)`` gives exactly the authors' initialization in one call: the network
declares its 3x3 convolutions as branch ends (``branch_last``) and its classifier, the
shortcut convolutions have their own ZerO rule (partial identity, registered below), batch
norms get weight 1 and bias 0, and the Hadamard matrices are buffers that no initializer
touches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from efflab.init import hadamard, is_power_of_two, partial_identity, register_zero_rule
from efflab.models import register_model
from efflab.models.mlp import ZeroReLU

_ACTIVATIONS = {"relu": nn.ReLU, "zero_relu": ZeroReLU}


def channel_hadamard(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Mix the channels of ``x`` by ``matrix``: ``y[:, j] = sum_i x[:, i] * matrix[i, j]``.

    x: (batch, channels, *spatial); matrix: (channels, channels) -> (batch, channels, *spatial)
    """
    return torch.matmul(x.movedim(1, -1), matrix).movedim(-1, 1)


def channel_hadamard_reference(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """:func:`channel_hadamard` as a sum over input channels, one output channel at a time.
    Slow; for tests."""
    out = torch.zeros_like(x)
    for j in range(matrix.shape[1]):
        for i in range(matrix.shape[0]):
            out[:, j] += matrix[i, j] * x[:, i]
    return out


def centre_tap(matrix: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """A convolution kernel that is ``matrix`` at its centre tap and 0 elsewhere: with padding
    ``k // 2`` it is the 1x1 convolution by ``matrix`` (same stride, same output positions).

    matrix: (out, in); kernel_size: odd sizes, one per spatial axis -> (out, in, *kernel_size)
    """
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"kernel_size must be odd to have a centre tap, got {tuple(kernel_size)}")
    pad = []
    for k in reversed(kernel_size):
        pad += [k // 2, k // 2]
    return F.pad(matrix.reshape(*matrix.shape, *[1] * len(kernel_size)), pad)


def conv_with_skip(conv: nn.modules.conv._ConvNd, x: torch.Tensor, skip: torch.Tensor,
                   skip_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(x) + (skip-as-1x1-convolution)(x) + skip_bias`` as one convolution: the skip
    matrix is added to the kernel's centre tap (a 1x1 convolution with the conv's stride reads
    exactly the centre tap's positions when the conv pads by ``k // 2``). Gradients reach
    ``conv``'s parameters and, through ``skip``, whatever ``skip`` was computed from.

    conv: odd kernel, padding k // 2, groups 1; x: (batch, in, *s); skip: (out, in);
    skip_bias: (out,) or None -> (batch, out, *s / stride)
    """
    if conv.groups != 1 or list(conv.padding) != [k // 2 for k in conv.kernel_size] \
            or any(d != 1 for d in conv.dilation) or conv.padding_mode != "zeros":
        raise ValueError(f"conv_with_skip needs a convolution with zero padding k // 2, no "
                         f"dilation and no groups, got {conv!r}")
    weight = conv.weight + centre_tap(skip.to(conv.weight.dtype), conv.kernel_size)
    bias = conv.bias
    if skip_bias is not None:
        bias = skip_bias if bias is None else bias + skip_bias
    fn = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
    return fn(x, weight, bias, conv.stride, conv.padding)


def conv_with_skip_reference(conv: nn.modules.conv._ConvNd, x: torch.Tensor,
                             skip: torch.Tensor, skip_bias: torch.Tensor | None = None
                             ) -> torch.Tensor:
    """:func:`conv_with_skip` as two convolutions and a sum. For tests."""
    fn = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
    one_by_one = skip.reshape(*skip.shape, *[1] * len(conv.kernel_size)).to(x.dtype)
    return conv(x) + fn(x, one_by_one, skip_bias, conv.stride)


class ChannelHadamard(nn.Module):
    """The fixed normalized Hadamard transform over channels, ``H_C / sqrt(C)`` (orthogonal
    and symmetric), held as a buffer so that no optimizer or initializer changes it.
    x: (batch, channels, *spatial) -> same shape."""

    def __init__(self, channels: int):
        super().__init__()
        if not is_power_of_two(channels):
            raise ValueError(f"channels must be a power of two for the Hadamard transform, "
                             f"got {channels!r}")
        self.register_buffer("matrix", hadamard(channels) / math.sqrt(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_hadamard(x, self.matrix.to(x.dtype))


class PaddedHadamardSkip(nn.Module):
    """The stem's fixed skip: pad ``in_channels`` with zero channels to ``out_channels``, then
    the Hadamard transform. Holds no parameters. x: (batch, in, *s) -> (batch, out, *s)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if in_channels > out_channels:
            raise ValueError(f"the stem width must be >= the input channels, got "
                             f"in_channels={in_channels}, out_channels={out_channels}")
        self.pad = out_channels - in_channels
        self.hadamard = ChannelHadamard(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = (0, 0) * (x.dim() - 2)
        return self.hadamard(F.pad(x, (*spatial, 0, self.pad)))

    def as_matrix(self) -> torch.Tensor:
        """The skip as one (out, in) channel map: the padded channels are zero, so only the
        first ``in`` rows of the Hadamard matrix act, transposed (``y = M^T x``)."""
        return self.hadamard.matrix[: self.hadamard.matrix.shape[0] - self.pad].T


class PartialIdentityConv1d(nn.Conv1d):
    """A 1x1 convolution that ZerO starts at the partial identity I* (not Algorithm 1's
    Hadamard: the fixed :class:`ChannelHadamard` after it does the mixing)."""


class PartialIdentityConv2d(nn.Conv2d):
    """2-D form of :class:`PartialIdentityConv1d`."""


def _partial_identity_check(module: nn.modules.conv._ConvNd) -> None:
    if any(k != 1 for k in module.kernel_size) or module.groups != 1:
        raise ValueError(f"{type(module).__name__} must be a 1x1 convolution without groups, "
                         f"got kernel_size={module.kernel_size}, groups={module.groups}")


def _partial_identity_rule(module: nn.modules.conv._ConvNd, scale: str) -> None:
    w = module.weight
    eye = partial_identity(w.shape[0], w.shape[1], dtype=w.dtype, device=w.device)
    w.copy_(eye.reshape(w.shape))
    if module.bias is not None:
        module.bias.zero_()


for _conv in (PartialIdentityConv1d, PartialIdentityConv2d):
    register_zero_rule(_conv, _partial_identity_rule, check=_partial_identity_check)


class HadamardShortcut(nn.Module):
    """Width- or stride-changing shortcut: a strided 1x1 :class:`PartialIdentityConv2d` (or 1d)
    then the fixed :class:`ChannelHadamard`. x: (batch, in, *s) -> (batch, out, *s / stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dim: int, bias: bool):
        super().__init__()
        conv = PartialIdentityConv1d if dim == 1 else PartialIdentityConv2d
        self.conv = conv(in_channels, out_channels, 1, stride=stride, bias=bias)
        self.hadamard = ChannelHadamard(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hadamard(self.conv(x))

    def as_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The shortcut as one (out, in) channel map and its bias: ``M^T I*`` and ``M^T b``
        (differentiable in the 1x1 convolution's weight and bias; M is fixed)."""
        m = self.hadamard.matrix.to(self.conv.weight.dtype)
        bias = None if self.conv.bias is None else m.T @ self.conv.bias
        return m.T @ self.conv.weight.flatten(1), bias


def _norm(dim: int, channels: int, batch_norm: bool) -> nn.Module:
    if not batch_norm:
        return nn.Identity()
    return (nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(channels)


class AugSkipBlock(nn.Module):
    """Pre-activation block with an augmented skip around each convolution::

        h   = bn1(relu(x))
        out = conv1(h) + (shortcut(h) if the shape changes else x)
        out = conv2(bn2(relu(out))) + out

    ``branch_last = (conv1, conv2)``: ZerO starts both kernels at 0, so the block starts as
    its skip (the identity, or I* then the Hadamard transform).

    ``fused=True`` computes ``conv1(h) + shortcut(h)`` as one convolution whose centre tap
    carries the shortcut's channel map (:func:`conv_with_skip`; the same parameters, the same
    function); ``fused=False`` runs the modules one by one, the reference.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dim: int = 2,
                 batch_norm: bool = True, activation: str = "zero_relu", fused: bool = True):
        super().__init__()
        self.fused = fused
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        self.act = _ACTIVATIONS[activation]()
        self.bn1 = _norm(dim, in_ch, batch_norm)
        self.conv1 = conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn2 = _norm(dim, out_ch, batch_norm)
        self.conv2 = conv(out_ch, out_ch, 3, stride=1, padding=1, bias=not batch_norm)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = HadamardShortcut(in_ch, out_ch, stride, dim, bias=not batch_norm)

    @property
    def branch_last(self) -> tuple[nn.Module, nn.Module]:
        return (self.conv1, self.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn1(self.act(x))
        if self.shortcut is None:
            out = self.conv1(h) + x
        elif self.fused:
            out = conv_with_skip(self.conv1, h, *self.shortcut.as_matrix())
        else:
            out = self.conv1(h) + self.shortcut(h)
        return self.conv2(self.bn2(self.act(out))) + out


class AugSkipResNet(nn.Module):
    """Stem (zero conv + padded Hadamard skip, relu, bn), stages of :class:`AugSkipBlock`
    (stride 2 at each new stage), relu, bn, global average pool, linear classifier.

    ``fused=True`` (default) folds the fixed skips of the stem and of every widening block
    into the centre tap of the convolution beside them (one convolution instead of two plus a
    channel matmul); ``fused=False`` is the module-by-module reference. Parameters, buffers
    and values are the same either way.

    x: (batch, channels, length) for dim=1 (a (batch, length) input gets a channel axis),
    (batch, channels, height, width) for dim=2 -> (batch, num_classes)
    """

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2),
                 widths: Sequence[int] = (64, 128, 256, 512), in_channels: int = 3,
                 num_classes: int = 10, dim: int = 2, batch_norm: bool = True,
                 activation: str = "zero_relu", fused: bool = True):
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {dim!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {activation!r}")
        blocks, widths = list(blocks), list(widths)
        if not blocks or len(blocks) != len(widths):
            raise ValueError(f"blocks {blocks} and widths {widths} must be non-empty and of the "
                             "same length")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in blocks):
            raise ValueError(f"blocks must be ints >= 0, got {blocks}")
        bad = [w for w in widths if not is_power_of_two(w)]
        if bad:
            raise ValueError(f"widths must be powers of two (the Hadamard transforms), "
                             f"got widths={widths}")
        if not isinstance(in_channels, int) or not 1 <= in_channels <= widths[0]:
            raise ValueError(f"in_channels must be an int in [1, widths[0]={widths[0]}], "
                             f"got {in_channels!r}")
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        self.dim = dim
        self.fused = fused
        self.act = _ACTIVATIONS[activation]()
        self.stem_conv = conv(in_channels, widths[0], 3, padding=1, bias=not batch_norm)
        self.stem_skip = PaddedHadamardSkip(in_channels, widths[0])
        self.stem_bn = _norm(dim, widths[0], batch_norm)
        stages, c = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layer = []
            for j in range(n):
                layer.append(AugSkipBlock(c, w, stride=2 if (i > 0 and j == 0) else 1, dim=dim,
                                          batch_norm=batch_norm, activation=activation,
                                          fused=fused))
                c = w
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.final_bn = _norm(dim, c, batch_norm)
        self.fc = nn.Linear(c, num_classes)

    @property
    def branch_last(self) -> nn.Module:
        """The stem convolution (ZerO starts it at 0: the stem starts as its Hadamard skip)."""
        return self.stem_conv

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.dim + 1:
            x = x.unsqueeze(1)
        if self.fused:
            h = conv_with_skip(self.stem_conv, x, self.stem_skip.as_matrix())
        else:
            h = self.stem_conv(x) + self.stem_skip(x)
        h = self.stem_bn(self.act(h))
        h = self.final_bn(self.act(self.stages(h)))
        return self.fc(h.flatten(2).mean(-1))


@register_model("augskip_resnet")
def augskip_resnet(blocks: Sequence[int] = (2, 2, 2, 2),
                   widths: Sequence[int] = (64, 128, 256, 512), in_channels: int = 3,
                   num_classes: int = 10, dim: int = 2, batch_norm: bool = True,
                   activation: str = "zero_relu", fused: bool = True) -> AugSkipResNet:
    """The ZerO authors' augmented-skip pre-activation ResNet, any depth and widths."""
    return AugSkipResNet(blocks, widths, in_channels, num_classes, dim, batch_norm, activation,
                         fused)


@register_model("augskip_resnet18")
def augskip_resnet18(in_channels: int = 3, num_classes: int = 10, batch_norm: bool = True,
                     width: int = 64, activation: str = "zero_relu", fused: bool = True
                     ) -> AugSkipResNet:
    """The authors' CIFAR-10 network (blocks 2, 2, 2, 2; widths 64 to 512 at width 64)."""
    return AugSkipResNet((2, 2, 2, 2), (width, 2 * width, 4 * width, 8 * width), in_channels,
                         num_classes, 2, batch_norm, activation, fused)


__all__ = ["AugSkipBlock", "AugSkipResNet", "ChannelHadamard", "HadamardShortcut",
           "PaddedHadamardSkip", "PartialIdentityConv1d", "PartialIdentityConv2d",
           "augskip_resnet", "augskip_resnet18", "centre_tap", "channel_hadamard",
           "channel_hadamard_reference", "conv_with_skip", "conv_with_skip_reference"]
