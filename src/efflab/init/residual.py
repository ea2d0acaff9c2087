"""The residual-network initializations ZerO is compared with: Fixup, ReZero and SkipInit.

* **Fixup** (Zhang, Dauphin & Ma, ICLR 2019, "Fixup initialization: residual learning without
  normalization", Section 3): for L residual branches of m weight layers each, (1) the
  classifier and the last layer of every branch start at 0; (2) the other branch layers get
  the standard (Kaiming) initialization scaled by ``L^(-1/(2m-2))``; (3) a scalar multiplier
  (start 1) per branch and scalar biases (start 0) before every convolution, linear layer and
  activation. Meant for networks without normalization: a model with batch norm is refused.
* **ReZero** (Bachlechner et al., 2020, "ReZero is all you need", Section 3):
  ``x_{i+1} = x_i + alpha_i F(x_i)`` with a trainable scalar ``alpha_i`` that starts at 0; the
  branch layers keep the standard initialization.
* **SkipInit** (De & Smith, NeurIPS 2020, "Batch normalization biases residual blocks towards
  the identity function", Section 4): a trainable scalar at the end of every residual branch,
  started at 0 (or at most 1/sqrt(depth)), as a replacement for batch norm. At ``alpha=0``
  it is the same initialization as ReZero on the same network; the two papers differ in what
  they pair it with (ReZero: transformers and no normalization; SkipInit: ResNets whose batch
  norm it replaces), which is the network's choice, not the initializer's.

Every one of them needs the network to say where its residual branches are: a block with a
``branch`` attribute (its weight layers in order, the last one ending the branch) and,
for the scalars, :class:`ResidualGate` / :class:`ScalarBias` submodules. The network's
``classifier`` attribute names the final layer (as for ZerO's residual rule). Every check is
done before any parameter changes, so a refused model is left untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from efflab.init.random import random_init_
from efflab.init.scalars import ResidualGate, ScalarBias


def residual_branches(model: nn.Module) -> list[tuple[nn.Module, tuple[nn.Module, ...]]]:
    """Every (block, its branch's weight layers in order) declared through ``branch``."""
    found = []
    for sub in model.modules():
        branch = getattr(sub, "branch", None)
        if branch is None:
            continue
        layers = tuple(branch) if isinstance(branch, (list, tuple)) else (branch,)
        for layer in layers:
            if not (isinstance(layer, nn.Module) and getattr(layer, "weight", None) is not None):
                raise TypeError(f"{type(sub).__name__}.branch must hold layers with a weight, "
                                f"got {type(layer).__name__}")
        found.append((sub, layers))
    return found


def _gates(model: nn.Module) -> list[ResidualGate]:
    return [m for m in model.modules() if isinstance(m, ResidualGate)]


def _classifier(model: nn.Module) -> nn.Module | None:
    for sub in model.modules():
        head = getattr(sub, "classifier", None)
        if isinstance(head, nn.Module):
            return head
    return None


@torch.no_grad()
def fixup_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Fixup initialization of ``model`` in place (see the module docstring); returns it.

    Needs ``branch`` on every residual block, a :class:`ResidualGate` per branch, the
    ``classifier`` attribute, and no batch norm. The scaled layers are drawn from
    ``generator`` (Kaiming normal, fan-in; Fixup's own code uses fan-out, a constant factor
    per layer that the scaling rule does not depend on).
    """
    branches = residual_branches(model)
    if not branches:
        raise ValueError(f"fixup_ needs residual blocks that declare their layers through a "
                         f"'branch' attribute; {type(model).__name__} has none")
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    if norms:
        raise ValueError(f"fixup_ is for networks without normalization (Zhang et al. 2019); "
                         f"{type(model).__name__} has batch norm at {norms[:3]}: build it with "
                         "batch_norm=False")
    if len(_gates(model)) < len(branches):
        raise ValueError(f"fixup_ needs a ResidualGate (scalar multiplier) in each of the "
                         f"{len(branches)} residual branches, found {len(_gates(model))}: "
                         "build the model with residual='fixup'")
    head = _classifier(model)
    if head is None:
        raise ValueError(f"fixup_ needs the final layer named by a 'classifier' attribute; "
                         f"{type(model).__name__} has none")
    random_init_(model, "kaiming", generator)
    depth = len(branches)
    for _, layers in branches:
        m = len(layers)
        factor = depth ** (-1.0 / (2 * m - 2)) if m > 1 else 1.0
        for layer in layers[:-1]:
            layer.weight.mul_(factor)
        layers[-1].weight.zero_()
        if getattr(layers[-1], "bias", None) is not None:
            layers[-1].bias.zero_()
    for p in head.parameters():
        p.zero_()
    return model


@torch.no_grad()
def residual_gates_(model: nn.Module, generator: torch.Generator, alpha: float = 0.0,
                    name: str = "residual_gates_") -> nn.Module:
    """Kaiming initialization, then every :class:`ResidualGate` set to ``alpha``. With
    ``alpha = 0`` every residual block starts as its shortcut. Returns ``model``."""
    alpha = float(alpha)
    if not alpha == alpha or abs(alpha) == float("inf"):
        raise ValueError(f"alpha must be finite, got {alpha!r}")
    gates = _gates(model)
    if not gates:
        raise ValueError(f"{name} needs residual blocks with a ResidualGate (scalar "
                         f"multiplier on the branch); {type(model).__name__} has none: build "
                         "it with residual='gate'")
    random_init_(model, "kaiming", generator)
    for g in gates:
        g.weight.fill_(alpha)
    return model


def rezero_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """ReZero (Bachlechner et al. 2020): Kaiming branches, every residual gate at 0."""
    return residual_gates_(model, generator, 0.0, name="rezero_")


def skipinit_(model: nn.Module, generator: torch.Generator, alpha: float = 0.0) -> nn.Module:
    """SkipInit (De & Smith 2020): Kaiming branches, every residual gate at ``alpha``
    (the paper: 0, or at most 1/sqrt(number of blocks))."""
    return residual_gates_(model, generator, alpha, name="skipinit_")


__all__ = ["ResidualGate", "ScalarBias", "fixup_", "residual_branches", "residual_gates_",
           "rezero_", "skipinit_"]
