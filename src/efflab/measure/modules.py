"""Per-module costs: FLOPs (forward and backward, both measured), parameters, activations.

The module tables of other tools (torchinfo, ptflops, fvcore) give forward figures and guess
the backward as twice the forward. Here one training step runs under the FLOP counter
(:mod:`efflab.measure.flops`), which attributes every op, backward ones included, to the
modules whose forward produced it; so a frozen layer, an input that needs no gradient or a
tied weight shows its real backward cost (Efficiency Misnomer, arXiv 2110.12894, Sec. 2:
training cost is not a fixed multiple of inference cost).

Activation memory of a module: the bytes of the tensors autograd saves for the backward pass
while the module's forward runs (``torch.autograd.graph.saved_tensors_hooks``), each storage
counted once per module, parameters excluded. Nested: a parent's figure includes its
children's. It is what the module holds between forward and backward, the part of training
memory that grows with the batch.

Backward FLOPs are attributed through PyTorch's ``ModuleTracker`` (hooks on each module's
inputs and outputs). A module whose forward runs more than once in a step (one dropout
module applied after attention and after the feed-forward, a block shared across layers)
confuses those hooks, so its backward figure is left out (``None``, with ``calls`` saying
why); its parent's figure, which contains it, is still right.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from efflab.measure.flops import count_flops
from efflab.measure.params import count_parameters
from efflab.measure.steps import LossFn, make_train_step


@dataclass
class ModuleCost:
    """One row of the per-module table; ``name`` is the path (``"MLP.layers.0"``)."""

    name: str
    type: str
    depth: int
    params: int
    flops_forward: int
    flops_backward: int | None
    activation_bytes: int
    calls: int = 1


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except (RuntimeError, NotImplementedError):
        return id(t), t.numel() * t.element_size()


def module_costs(model: nn.Module, inputs: tuple[torch.Tensor, ...],
                 loss_fn: LossFn | None = None) -> list[ModuleCost]:
    """Run one training step of ``model`` on ``inputs`` and return a row per module, in
    module-tree order (``model`` itself first). The step updates the weights (plain SGD)."""
    root = type(model).__name__
    named = [(root if not n else f"{root}.{n}", m) for n, m in model.named_modules()]
    param_keys = {_storage_key(p)[0] for p in model.parameters()}
    stack: list[str] = []
    calls: dict[str, int] = {name: 0 for name, _ in named}
    saved: dict[str, dict[int, int]] = {name: {} for name, _ in named}
    handles = []

    def enter(name: str):
        def hook(_module, _args) -> None:
            stack.append(name)
            calls[name] += 1
        return hook

    def leave(_module, _args, _output) -> None:  # a hook that returns None keeps the output
        stack.pop()

    for name, mod in named:
        handles.append(mod.register_forward_pre_hook(enter(name)))
        handles.append(mod.register_forward_hook(leave))

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr, nbytes = _storage_key(t)
        if ptr not in param_keys:
            for name in set(stack):
                saved[name][ptr] = nbytes
        return t

    step = make_train_step(model, inputs, loss_fn)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _, flops = count_flops(step)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, mod in named:
        f = flops.by_module.get(name, {"forward": 0, "backward": 0})
        rows.append(ModuleCost(name=name, type=type(mod).__name__, depth=name.count("."),
                               params=count_parameters(mod).unique,
                               flops_forward=f["forward"],
                               flops_backward=f["backward"] if calls[name] <= 1 else None,
                               activation_bytes=sum(saved[name].values()),
                               calls=calls[name]))
    return rows
