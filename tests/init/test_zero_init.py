"""zero_init_ on layers and whole networks: Algorithm 2, the residual rule, gradient flow,
determinism, refusals (Zhao et al. 2022, Algorithms 1-2, Section 4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from efflab.init import (
    random_init_,
    register_zero_rule,
    zero_conv_,
    zero_conv_reference,
    zero_init_,
    zero_matrix_reference,
)
from efflab.models import create_model


def _resnet(batch_norm: bool, dim: int = 1, in_channels: int = 1):
    return create_model("resnet", blocks=(2, 1), widths=(4, 8), in_channels=in_channels,
                        num_classes=3, dim=dim, batch_norm=batch_norm)


# ---- Algorithm 2: convolutions --------------------------------------------------------------

@pytest.mark.parametrize("shape,groups", [
    ((4, 4, 3), 1), ((6, 3, 5), 1), ((2, 5, 3, 3), 1), ((8, 3, 3, 5), 1), ((4, 4, 1, 3, 3), 1),
    ((6, 2, 3), 3), ((4, 1, 3, 3), 4),
])
def test_conv_matches_tap_by_tap_reference(shape, groups):
    w = torch.randn(shape, dtype=torch.float64)   # nonzero junk everywhere before the init
    zero_conv_(w, groups=groups)
    assert torch.equal(w, zero_conv_reference(shape, groups=groups))


def test_conv_centre_tap_holds_the_matrix_and_every_other_tap_is_zero():
    conv = nn.Conv2d(3, 6, kernel_size=(3, 5), bias=True)
    zero_init_(conv)
    w = conv.weight.detach().double()
    assert torch.allclose(w[:, :, 1, 2], zero_matrix_reference(6, 3), atol=1e-7)
    off = w.clone()
    off[:, :, 1, 2] = 0
    assert torch.count_nonzero(off) == 0
    assert torch.count_nonzero(conv.bias) == 0


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_square_conv_starts_as_the_identity_map(dim):
    conv = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dim - 1](5, 5, 3, padding=1)
    zero_init_(conv)
    x = torch.randn(2, 5, *([6] * dim))
    assert torch.allclose(conv(x), x, atol=1e-6)


@pytest.mark.parametrize("kernel", [2, (3, 4), (4, 3)])
def test_even_kernel_is_refused_with_its_size(kernel):
    conv = nn.Conv2d(3, 3, kernel)
    with pytest.raises(ValueError, match=r"odd kernel sizes.*kernel_size="):
        zero_init_(conv)


# ---- whole networks ---------------------------------------------------------------------------

def test_mlp_layers_follow_algorithm1():
    model = zero_init_(create_model("mlp", in_features=40, width=100, depth=2, num_classes=10))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(100, 40), (100, 100), (10, 100)]
    for m in linears:
        p, q = m.weight.shape
        assert torch.allclose(m.weight.double(), zero_matrix_reference(p, q), atol=1e-7)
        assert torch.count_nonzero(m.bias) == 0


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("dim", [1, 2])
def test_resnet_parameters_take_a_handful_of_values(batch_norm, dim):
    model = zero_init_(_resnet(batch_norm, dim=dim, in_channels=3))
    for name, p in model.named_parameters():
        values = torch.unique(p.detach())
        assert len(values) <= 3, (name, values)          # {0, 1} or {0, +c, -c}
        assert len(torch.unique(values[values != 0].abs())) <= 1, (name, values)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_resnet_starts_as_its_shortcuts_with_a_zero_classifier(batch_norm):
    model = zero_init_(_resnet(batch_norm))
    blocks = [b for stage in model.stages for b in stage]
    for b in blocks:
        last = b.branch_last
        assert isinstance(last, nn.BatchNorm1d if batch_norm else nn.Conv1d)
        assert all(torch.count_nonzero(p) == 0 for p in last.parameters())
    assert torch.count_nonzero(model.fc.weight) == 0
    # an identity-shortcut block passes its input through unchanged
    x = torch.relu(torch.randn(5, 4, 16))
    assert torch.allclose(blocks[0](x), x)
    # the width-changing shortcut is the partial identity with a Hadamard mix (1x1 kernel)
    conv = blocks[2].shortcut[0]
    assert torch.allclose(conv.weight[:, :, 0].double(), zero_matrix_reference(8, 4), atol=1e-7)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_gradients_reach_every_parameter_within_three_steps(batch_norm):
    """Step 1 can only move the zero classifier; steps 2-3 must reach all the others, with the
    ordinary ReLU (ReLU'(0) = 0)."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 24), torch.randint(0, 3, (32,))
    model = zero_init_(_resnet(batch_norm))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first: dict[str, int] = {}
    for step in (1, 2, 3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for name, p in model.named_parameters():
            if name not in first and p.grad.abs().max() > 0:
                first[name] = step
        opt.step()
    names = [n for n, _ in model.named_parameters()]
    assert [n for n in names if first.get(n) == 1] == ["fc.weight", "fc.bias"]
    assert set(first) == set(names), set(names) - set(first)


def test_mlp_gets_gradients_in_every_layer_at_step_one():
    torch.manual_seed(0)
    model = zero_init_(create_model("mlp", in_features=40, width=64, depth=3, num_classes=10))
    F.cross_entropy(model(torch.randn(16, 40)), torch.randint(0, 10, (16,))).backward()
    for name, p in model.named_parameters():
        assert p.grad.abs().max() > 0, name


def test_single_channel_stem_sends_one_signal_to_every_channel():
    """A documented limit: Algorithm 2 uses only the centre tap, so a 1-channel input reaches
    every stem channel as the same signal (column 0 of H is all ones)."""
    model = zero_init_(_resnet(batch_norm=False))
    h = model.stem(torch.randn(3, 1, 20))
    assert torch.allclose(h, h[:, :1].expand_as(h))
    assert h.abs().max() > 0


def test_zero_init_is_deterministic_without_any_seed():
    torch.manual_seed(1)
    a = zero_init_(_resnet(batch_norm=True, dim=2, in_channels=3))
    torch.manual_seed(2)
    b = zero_init_(_resnet(batch_norm=True, dim=2, in_channels=3))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- rules and refusals -----------------------------------------------------------------------

class _Scaler(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.gain = nn.Parameter(torch.randn(n))

    def forward(self, x):
        return x * self.gain


def test_unknown_module_is_refused_by_name_and_left_untouched():
    model = nn.Sequential(nn.Linear(4, 4), _Scaler(4))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TypeError, match=r"no rule for module type .*_Scaler.*'1'.*\['gain'\]"
                                        r".*register_zero_rule\(_Scaler, rule\)"):
        zero_init_(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_registered_rule_is_used(monkeypatch):
    from efflab.init import zero as zero_module

    monkeypatch.setattr(zero_module, "_RULES", dict(zero_module._RULES))
    register_zero_rule(_Scaler, lambda m, scale: m.gain.data.fill_(1.0))
    model = zero_init_(nn.Sequential(nn.Linear(4, 4), _Scaler(4)))
    x = torch.randn(3, 4)
    assert torch.allclose(model(x), x)
    with pytest.raises(TypeError, match="module_type must be a subclass"):
        register_zero_rule(int, lambda m, s: None)


def test_bad_scale_and_non_module_are_refused():
    with pytest.raises(ValueError, match=r"scale must be one of .*'half'"):
        zero_init_(nn.Linear(2, 2), scale="half")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got Tensor"):
        zero_init_(torch.zeros(2))


def test_explicit_zeros_override_and_must_hold_parameters():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    zero_init_(model, zeros=[model[2]])
    assert torch.count_nonzero(model[2].weight) == 0
    assert torch.equal(model[0].weight, torch.eye(4))
    with pytest.raises(ValueError, match="ReLU holds no parameters"):
        zero_init_(model, zeros=[model[1]])


def test_norm_embedding_and_torch_attention_rules():
    bn = nn.BatchNorm1d(3)
    bn.running_mean.fill_(5.0)
    ln, emb = nn.LayerNorm(6), nn.Embedding(10, 4, padding_idx=0)
    mha, table = nn.MultiheadAttention(8, 2), nn.Embedding(9, 6)
    for m in (bn, ln, emb, mha, table):
        for p in m.parameters():
            p.data.normal_()
        zero_init_(m)
    assert torch.equal(bn.weight, torch.ones(3)) and torch.count_nonzero(bn.bias) == 0
    assert torch.count_nonzero(bn.running_mean) == 0
    assert torch.equal(ln.weight, torch.ones(6)) and torch.count_nonzero(ln.bias) == 0
    # the (10, 4) table is Algorithm 1 on a (10, 4) matrix; the padding row is 0
    expected = zero_matrix_reference(10, 4)
    expected[0] = 0
    assert torch.allclose(emb.weight.double(), expected, atol=1e-7)
    # rows are distinct up to 2^ceil(log2 dim) = 8 tokens, then repeat (documented)
    rows = table.weight.tolist()
    assert len({tuple(r) for r in rows[:8]}) == 8 and rows[8] == rows[0]
    for i in range(3):
        assert torch.equal(mha.in_proj_weight[8 * i:8 * (i + 1)], torch.eye(8))
    assert torch.equal(mha.out_proj.weight, torch.eye(8))


def test_random_init_is_seeded_and_scaled():
    def make(seed, scheme):
        return random_init_(nn.Linear(400, 300), scheme, torch.Generator().manual_seed(seed))

    assert torch.equal(make(0, "kaiming").weight, make(0, "kaiming").weight)
    assert not torch.equal(make(0, "kaiming").weight, make(1, "kaiming").weight)
    assert make(0, "kaiming").weight.std().item() == pytest.approx((2 / 400) ** 0.5, rel=0.03)
    assert make(0, "xavier").weight.std().item() == pytest.approx((2 / 700) ** 0.5, rel=0.03)
    with pytest.raises(ValueError, match="scheme must be one of"):
        random_init_(nn.Linear(2, 2), "orthogonal", torch.Generator())
