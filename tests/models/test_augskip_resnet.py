"""The ZerO authors' augmented-skip ResNet (efflab.models.augskip_resnet) and zero_init_ on it:
the construction of their released CIFAR code, checked piece by piece."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from efflab.init import hadamard_reference, initialize_, zero_init_
from efflab.models import create_model, list_models
from efflab.models.augskip_resnet import (
    AugSkipBlock,
    ChannelHadamard,
    HadamardShortcut,
    PartialIdentityConv1d,
    PartialIdentityConv2d,
    centre_tap,
    channel_hadamard,
    channel_hadamard_reference,
    conv_with_skip,
    conv_with_skip_reference,
)


def _net(dim=2, batch_norm=True, in_channels=1, blocks=(1, 2), widths=(4, 8), **kw):
    return create_model("augskip_resnet", blocks=blocks, widths=widths, in_channels=in_channels,
                        num_classes=3, dim=dim, batch_norm=batch_norm, **kw)


def _input(dim, in_channels=1, n=6):
    return torch.randn(n, in_channels, *([8] * dim))


def test_registered_by_name():
    assert {"augskip_resnet", "augskip_resnet18"} <= set(list_models())
    model = create_model("augskip_resnet18", width=8)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_channel_hadamard_matches_the_per_channel_sum_in_float64_with_gradients():
    torch.manual_seed(0)
    h = hadamard_reference(8) / 8 ** 0.5
    for shape in ((3, 8, 5), (2, 8, 4, 3), (0, 8, 4)):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        y, y_ref = channel_hadamard(x, h), channel_hadamard_reference(x_ref, h)
        assert torch.allclose(y, y_ref, atol=1e-12)
        g = torch.randn(shape, dtype=torch.float64)
        (y * g).sum().backward()
        (y_ref * g).sum().backward()
        assert torch.allclose(x.grad, x_ref.grad, atol=1e-12)
    # orthogonal: it preserves the channel norm
    x = torch.randn(4, 8, 5, dtype=torch.float64)
    assert torch.allclose(channel_hadamard(x, h).norm(dim=1), x.norm(dim=1))


def test_centre_tap_is_a_one_by_one_convolution():
    torch.manual_seed(0)
    m = torch.randn(4, 3, dtype=torch.float64)
    k = centre_tap(m, (3, 5))
    assert k.shape == (4, 3, 3, 5)
    assert torch.equal(k[:, :, 1, 2], m) and torch.count_nonzero(k) == torch.count_nonzero(m)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    assert torch.allclose(F.conv2d(x, k, padding=(1, 2)), torch.einsum("oi,bihw->bohw", m, x))
    with pytest.raises(ValueError, match=r"kernel_size must be odd.*\(3, 2\)"):
        centre_tap(m, (3, 2))


@pytest.mark.parametrize("dim,stride,bias,skip_bias", [
    (1, 1, True, True), (1, 2, False, True), (2, 2, True, False), (2, 1, False, False)])
def test_conv_with_skip_matches_two_convolutions_in_float64_with_gradients(
        dim, stride, bias, skip_bias):
    torch.manual_seed(0)
    conv = (nn.Conv1d if dim == 1 else nn.Conv2d)(3, 4, 3, stride=stride, padding=1,
                                                  bias=bias).double()
    for n, length in ((5, 9), (0, 8), (2, 1)):        # odd length, empty batch, length 1
        x = torch.randn(n, 3, *[length] * dim, dtype=torch.float64, requires_grad=True)
        skip = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        sb = torch.randn(4, dtype=torch.float64, requires_grad=True) if skip_bias else None
        leaves = [x, skip, *conv.parameters()] + ([sb] if skip_bias else [])
        y = conv_with_skip(conv, x, skip, sb)
        y_ref = conv_with_skip_reference(conv, x, skip, sb)
        assert y.shape == y_ref.shape and torch.allclose(y, y_ref, atol=1e-12)
        g = torch.randn_like(y)
        grads = torch.autograd.grad((y * g).sum(), leaves, allow_unused=True)
        grads_ref = torch.autograd.grad((y_ref * g).sum(), leaves, allow_unused=True)
        for a, b in zip(grads, grads_ref):
            assert torch.allclose(a, b, atol=1e-12)
    with pytest.raises(ValueError, match="zero padding k // 2"):
        conv_with_skip(nn.Conv1d(3, 4, 3, padding=0), torch.randn(1, 3, 5), torch.randn(4, 3))


def _fused_and_reference(dim, batch_norm, **kw):
    torch.manual_seed(0)
    net = _net(dim, batch_norm, in_channels=3, blocks=(1, 2, 1), widths=(4, 8, 16), **kw)
    ref = _net(dim, batch_norm, in_channels=3, blocks=(1, 2, 1), widths=(4, 8, 16),
               fused=False, **kw)
    net, ref = net.double(), ref.double()
    for p in net.parameters():          # random values: every term of the sums matters
        p.data.normal_(0.0, 0.3)
    ref.load_state_dict(net.state_dict())
    return net, ref


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("activation", ["zero_relu", "relu"])
def test_fused_network_equals_the_module_by_module_reference(dim, batch_norm, activation):
    """The fused stem and shortcuts (one convolution each) against the modules run one by one,
    float64, random weights, train mode (batch statistics): outputs and every gradient."""
    net, ref = _fused_and_reference(dim, batch_norm, activation=activation)
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x = torch.randn(6, 3, *[9] * dim, dtype=torch.float64)
    x[:, :, ::4] = 0.0                 # exact zeros reach the ReLUs
    y, y_ref = net(x), ref(x)
    scale = float(y_ref.detach().abs().max())
    assert scale > 0 and torch.allclose(y, y_ref, rtol=1e-10, atol=1e-10 * scale)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-9 * float(q.grad.abs().max())
                              ), name
    if batch_norm:                      # the same running statistics were recorded
        for a, b in zip(net.buffers(), ref.buffers()):
            assert torch.allclose(a.double(), b.double(), rtol=1e-10, atol=1e-12)


def test_fused_network_is_the_default_and_keeps_the_authors_initialization():
    net = zero_init_(_net(1, True))
    assert net.fused and all(b.fused for b in net.modules() if isinstance(b, AugSkipBlock))
    ref = _net(1, True, fused=False)
    ref.load_state_dict(net.state_dict())
    net.eval()
    ref.eval()
    x = _input(1)
    # at ZerO's start the stem is exactly its skip: the fused convolution gives the same
    stem = conv_with_skip(net.stem_conv, x, net.stem_skip.as_matrix())
    assert torch.allclose(stem, ref.stem_conv(x) + ref.stem_skip(x), atol=1e-6)
    assert torch.equal(net(x), ref(x))   # both exactly 0: the classifier starts at zero


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_hadamards_are_fixed_buffers_not_parameters(dim, batch_norm):
    model = _net(dim, batch_norm)
    hadamards = [m for m in model.modules() if isinstance(m, ChannelHadamard)]
    assert len(hadamards) == 2                      # stem skip, one widening shortcut
    for m in hadamards:
        assert list(m.parameters(recurse=False)) == []
        assert "matrix" in dict(m.named_buffers())
    params = {id(p) for p in model.parameters()}
    assert all(id(m.matrix) not in params for m in hadamards)
    # no initializer and no optimizer step changes them
    before = [m.matrix.clone() for m in hadamards]
    initialize_(model, "kaiming", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(_input(dim)), torch.randint(0, 3, (6,))).backward()
    opt.step()
    zero_init_(model)
    assert all(torch.equal(a, m.matrix) for a, m in zip(before, hadamards))


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_zero_init_gives_exactly_the_authors_initialization(dim, batch_norm):
    """Their code: every conv 0 (stem and both 3x3 convs of every block), every 1x1 shortcut
    conv the partial identity eye(out, in), the Linear 0, batch norm 1 / 0."""
    model = _net(dim, batch_norm)
    for p in model.parameters():
        p.data.normal_()
    zero_init_(model)
    for name, m in model.named_modules():
        if isinstance(m, (PartialIdentityConv1d, PartialIdentityConv2d)):
            assert torch.equal(m.weight.reshape(m.weight.shape[:2]),
                               torch.eye(*m.weight.shape[:2])), name
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            assert all(torch.count_nonzero(p) == 0 for p in m.parameters()), name
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight)), name
            assert torch.count_nonzero(m.bias) == 0, name
    # every trainable value is 0 or 1 (their code's own check)
    for name, p in model.named_parameters():
        assert set(torch.unique(p.detach()).tolist()) <= {0.0, 1.0}, name


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_every_block_is_its_skip_at_initialization(dim, batch_norm):
    model = zero_init_(_net(dim, batch_norm))
    model.eval()
    blocks = [m for m in model.modules() if isinstance(m, AugSkipBlock)]
    assert len(blocks) == 3
    for b in blocks:
        c = b.conv1.in_channels
        x = torch.randn(5, c, *([8] * dim))
        if b.shortcut is None:
            assert torch.equal(b(x), x)
        else:
            # I* then the fixed normalized Hadamard, applied to bn1(relu(x))
            h = b.bn1(b.act(x))[(slice(None), slice(None), *[slice(None, None, 2)] * dim)]
            out_ch = b.conv1.out_channels
            padded = F.pad(h, (0, 0) * dim + (0, out_ch - c))
            expected = channel_hadamard_reference(padded, hadamard_reference(out_ch).float()
                                                  / out_ch ** 0.5)
            assert torch.allclose(b(x), expected, atol=1e-6)
    # the stem starts as its skip: zero-pad the channels, then the Hadamard transform
    x = _input(dim)
    stem = model.stem_conv(x) + model.stem_skip(x)
    expected = channel_hadamard_reference(F.pad(x, (0, 0) * dim + (0, 3)),
                                          hadamard_reference(4).float() / 2)
    assert torch.allclose(stem, expected, atol=1e-6)
    # and the network outputs 0: the classifier starts at zero
    assert torch.count_nonzero(model(x)) == 0


@pytest.mark.parametrize("activation", ["zero_relu", "relu"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_gradients_reach_every_layer_from_step_two(activation, batch_norm):
    """With a zero classifier no gradient can pass it at step one (W_fc^T g = 0): the first
    step moves exactly the classifier. At step two every convolution (all of them zero but
    the shortcuts) gets a gradient through the skips; a block's batch norm whose only reader
    is a zero convolution follows at step three."""
    torch.manual_seed(0)
    model = zero_init_(_net(2, batch_norm, activation=activation))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reached = []
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        reached.append({n for n, p in model.named_parameters() if p.grad.abs().max() > 0})
        opt.step()
    names = {n for n, _ in model.named_parameters()}
    assert reached[0] == {"fc.weight", "fc.bias"}
    convs = {f"{n}.weight" for n, m in model.named_modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d))}
    assert len(convs) == 8 and convs <= reached[1]
    # only norms whose every output enters a zero convolution wait for step three
    late = names - reached[1]
    assert all(".bn1." in n or ".bn2." in n for n in late)
    assert reached[1] | reached[2] == names


def test_partial_identity_convolutions_are_refused_if_not_one_by_one():
    conv = PartialIdentityConv2d(2, 4, 3)
    before = conv.weight.clone()
    with pytest.raises(ValueError, match=r"must be a 1x1 convolution.*kernel_size=\(3, 3\)"):
        zero_init_(nn.Sequential(nn.Linear(3, 3), conv))
    assert torch.equal(conv.weight, before)


def test_shortcut_strides_and_widens():
    s = HadamardShortcut(4, 8, stride=2, dim=1, bias=False)
    assert s(torch.randn(2, 4, 10)).shape == (2, 8, 5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(widths=(6, 8)), r"widths must be powers of two.*\[6, 8\]"),
    (dict(in_channels=5), r"in_channels must be an int in \[1, widths\[0\]=4\], got 5"),
    (dict(dim=3), "dim must be 1 or 2, got 3"),
    (dict(blocks=(1,)), "must be non-empty and of the same length"),
    (dict(activation="gelu"), r"activation must be one of .*'gelu'"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _net(**kwargs)


def test_one_channel_input_starts_with_two_features_and_training_separates_them():
    """Symmetry breaking (docs/zero-init.md): the stem gives every channel the same signal
    (row 0 of H is all ones) and the widening shortcut's Hadamard turns 8 equal channels into
    2 nonzero ones of 16; yet training separates them, because the gradients coming back
    through the Hadamard differ from channel to channel."""
    from efflab.experiments.suite.zero_vs_random import distinct_features

    torch.manual_seed(0)
    model = zero_init_(_net(1, True, widths=(8, 16)))
    x, y = torch.randn(64, 1, 16), torch.randint(0, 3, (64,))
    assert distinct_features(model, x) == (2, 12)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(10):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    distinct, dead = distinct_features(model, x)
    assert distinct >= 6 and dead == 0
