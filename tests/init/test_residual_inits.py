"""Fixup, ReZero and SkipInit: each one's defining property; and zero_init_ refusing a model
before changing any of it (issue: an even kernel used to be refused after earlier layers were
rewritten)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from efflab.init import INITS, ResidualGate, ScalarBias, initialize_, register_zero_rule, zero_init_
from efflab.models import create_model


def _resnet(residual: str, batch_norm: bool = False, blocks=(2, 2)):
    return create_model("resnet", blocks=blocks, widths=(4, 8), in_channels=1, num_classes=3,
                        dim=1, batch_norm=batch_norm, residual=residual)


def _blocks(model):
    return [b for stage in model.stages for b in stage]


def _snapshot(model):
    return [t.detach().clone() for t in (*model.parameters(), *model.buffers())]


def _unchanged(model, before):
    return all(torch.equal(a, b) for a, b in zip(before, (*model.parameters(),
                                                          *model.buffers())))


def test_every_residual_scheme_is_reachable_by_name():
    assert {"zero", "kaiming", "xavier", "fixup", "rezero", "skipinit"} == set(INITS)


@pytest.mark.parametrize("init", ["rezero", "skipinit"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_residual_scalar_starts_at_zero_so_every_block_is_its_shortcut(init, batch_norm):
    model = initialize_(_resnet("gate", batch_norm), init, seed=0)
    gates = [m for m in model.modules() if isinstance(m, ResidualGate)]
    assert len(gates) == 4 and all(g.weight.item() == 0.0 for g in gates)
    model.eval()
    x = torch.relu(torch.randn(3, 4, 12))
    first = _blocks(model)[0]                      # identity shortcut: relu(0 + x) = x
    assert torch.equal(first(x), x)
    # the branches themselves are drawn, not zero (only the scalar makes the block an identity)
    assert first.conv1.weight.std() > 0.1 and first.conv2.weight.std() > 0.1
    # and the gate receives a gradient at the first step
    y = torch.randint(0, 3, (6,))
    nn.functional.cross_entropy(model(torch.randn(6, 1, 12)), y).backward()
    assert all(g.weight.grad.abs() > 0 for g in gates)


def test_fixup_scales_the_branches_by_depth_and_zeroes_the_last_layers():
    """Fixup (Zhang et al. 2019, Sec. 3): L branches of m = 2 layers: the first layer is He
    init times L^(-1/(2m-2)) = L^(-1/2), the last one and the classifier start at 0, gates
    at 1, scalar biases at 0."""
    stds = {}
    for blocks in ((1, 1), (8, 8)):
        model = initialize_(create_model("resnet", blocks=blocks, widths=(64, 64),
                                         in_channels=1, dim=1, batch_norm=False,
                                         residual="fixup"), "fixup", seed=0)
        branches = _blocks(model)
        assert len(branches) == sum(blocks)
        for b in branches:
            assert torch.count_nonzero(b.conv2.weight) == 0
            assert torch.count_nonzero(b.conv2.bias) == 0
            assert b.gate.weight.item() == 1.0
        assert torch.count_nonzero(model.fc.weight) == 0 and torch.count_nonzero(model.fc.bias) == 0
        biases = [m for m in model.modules() if isinstance(m, ScalarBias)]
        assert len(biases) == 4 * len(branches) + 2
        assert all(m.bias.item() == 0.0 for m in biases)
        fan_in = 64 * 3
        he = (2 / fan_in) ** 0.5
        std = torch.cat([b.conv1.weight.flatten() for b in branches[1:]]).std().item()
        assert std == pytest.approx(he * len(branches) ** -0.5, rel=0.05)
        stds[len(branches)] = std
        # the stem is not in a branch: plain He init
        stem = model.stem[0].weight
        assert stem.std().item() == pytest.approx((2 / 3) ** 0.5, rel=0.35)
    assert stds[2] / stds[16] == pytest.approx(8 ** 0.5, rel=0.05)


def test_fixup_output_starts_at_zero_and_gradients_reach_every_parameter_by_step_three():
    model = initialize_(_resnet("fixup"), "fixup", seed=1)
    x, y = torch.randn(16, 1, 12), torch.randint(0, 3, (16,))
    assert torch.count_nonzero(model(x)) == 0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reached = set()
    # step 1 moves only the zero classifier, step 2 the zero last layers, step 3 the rest
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        reached |= {n for n, p in model.named_parameters() if p.grad.abs().max() > 0}
        opt.step()
    assert reached == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("init,model,message", [
    ("fixup", lambda: _resnet("fixup", batch_norm=True), "without normalization"),
    ("fixup", lambda: _resnet("plain"), "ResidualGate"),
    ("fixup", lambda: create_model("mlp"), "'branch' attribute"),
    ("rezero", lambda: _resnet("plain"), "rezero_ needs .*ResidualGate"),
    ("skipinit", lambda: create_model("mlp"), "skipinit_ needs .*ResidualGate"),
])
def test_a_model_without_the_needed_structure_is_refused_untouched(init, model, message):
    m = model()
    before = _snapshot(m)
    with pytest.raises(ValueError, match=message):
        initialize_(m, init, seed=0)
    assert _unchanged(m, before)


# ---- zero_init_ refuses before changing anything ---------------------------------------------

def test_even_kernel_after_other_layers_is_refused_before_any_change():
    model = nn.Sequential(nn.Linear(6, 6), nn.Conv1d(2, 2, 3), nn.Conv2d(3, 3, 2))
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"Conv2d\(kernel_size=\(2, 2\)\).*odd kernel sizes"):
        zero_init_(model)
    assert _unchanged(model, before)


def test_zeros_without_parameters_are_refused_before_any_change():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    before = _snapshot(model)
    with pytest.raises(ValueError, match="ReLU holds no parameters"):
        zero_init_(model, zeros=[model[1]])
    assert _unchanged(model, before)


class _Gain(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.gain = nn.Parameter(torch.randn(n))


def test_a_rule_that_fails_half_way_puts_everything_back(monkeypatch):
    from efflab.init import zero as zero_module

    monkeypatch.setattr(zero_module, "_RULES", dict(zero_module._RULES))
    monkeypatch.setattr(zero_module, "_CHECKS", dict(zero_module._CHECKS))

    def rule(module, scale):
        module.gain.data.fill_(7.0)
        raise RuntimeError("rule gave up")

    register_zero_rule(_Gain, rule)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), _Gain(4))
    model[1].running_mean.fill_(3.0)
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="rule gave up"):
        zero_init_(model)
    assert _unchanged(model, before)
    # a declared check refuses before the rule runs at all
    register_zero_rule(_Gain, rule, check=lambda m: (_ for _ in ()).throw(ValueError("no")))
    with pytest.raises(ValueError, match="no"):
        zero_init_(model)
    assert _unchanged(model, before)
