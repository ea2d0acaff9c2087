"""ZerO initialization of whole networks (Zhao et al., TMLR 2022, Algorithms 1 and 2, Section 4).

``zero_init_(model)`` sets every parameter of ``model`` in place, with no randomness:

* ``nn.Linear``: Algorithm 1 (identity / partial identity / scaled Hadamard, see
  :mod:`efflab.init.matrices`), bias 0.
* ``nn.Conv1d/2d/3d``: Algorithm 2: the whole kernel is zeroed and the Algorithm 1 matrix is
  placed at the centre tap, so that the convolution starts as a 1x1 (per group) channel map.
  Kernel sizes must be odd (an even kernel has no centre tap).
* Norm layers (batch, layer, group, instance, RMS norm): weight 1, bias 0, running statistics
  reset.
* ``nn.Embedding``: the (num_embeddings, dim) table gets Algorithm 1 as if it were the weight
  of a Linear dim -> num_embeddings (the tied-output view), so every token starts with a
  distinct nonzero vector while num_embeddings <= 2^ceil(log2 dim); the padding row is 0.
* ``nn.MultiheadAttention`` (PyTorch's): query, key and value projections each by Algorithm 1.

Residual networks (Section 4 of the paper): the last layer of every residual branch and the
final classifier start at zero, so that each block starts as its shortcut and the network as
a chain of identities and Hadamard mixes. A model says where these are: any submodule with an
attribute ``branch_last`` (a module or a tuple of modules) marks the last layer(s) of its
residual branch(es); a network containing such blocks names its final classifier by an
attribute ``classifier``. Both are overridable with ``zero_init_(model, zeros=[...])``.
Width-changing shortcuts (1x1 convolutions or Linears) need nothing special: Algorithm 1 on a
widening map *is* the partial identity with a Hadamard mix.

Gradient flow. With the final classifier at zero, step one updates only the classifier; the
next step reaches every layer except those behind a zero layer, the one after that reaches
the rest (``tests/init`` checks: every parameter of efflab's ResNets, with and without batch
norm, and of the transformer has a nonzero gradient by step 3, with the ordinary ReLU). The
paper's code needed a ReLU whose derivative at 0 is 1 because it zeroed *every* convolution
of a pre-activation network, so that all pre-activations were exactly 0; here only the last
layer of each branch is zero and the other layers carry the signal. efflab's ResNet and MLP
offer that ReLU (``activation="zero_relu"``); on the MNIST-1D ResNets it changed nothing
measurable (docs/zero-init.md).

Symmetry (docs/zero-init.md has the measurements). Rows i and i + 2^k of ``H[:P, :Q]``
coincide whenever Q <= 2^k, so a layer that widens beyond 2^ceil(log2 Q) makes exact copies
of units, and copies get the same gradient (up to rounding) unless a later layer reads them
differently: an MLP 40 -> 256 starts with 64 distinct units and keeps 74 however long it
trains (the output's partial identity reads 10 of them). A single input channel is the
extreme case: the centre tap of a 1 -> C stem is column 0 of H, all ones, so every channel
starts as the same signal.

Batch norm after the branch's last convolution (efflab's post-activation ``BasicBlock``): a
zero convolution followed by batch norm does not give a zero branch that grows gradually,
because batch norm rescales whatever the convolution outputs after its first update to unit
variance (and its gradient at a constant input is multiplied by 1/sqrt(eps)). The branch's
last layer is then the norm layer: its weight starts at 0 and the convolution before it keeps
its Algorithm 2 value, which is what ``BasicBlock.branch_last`` returns.

Unknown module types that hold parameters are refused with an error naming them; add a rule
with :func:`register_zero_rule`. Every check (a rule for each module, odd kernels, layers to
start at zero that hold parameters) runs before any parameter is changed, so a refused model
is left exactly as it was.

The authors' own ResNet (``efflab.models.augskip_resnet``, docs/zero-init.md) is built so
that this one call gives exactly their initialization: its 3x3 convolutions are all branch
ends (whole kernel 0), its width-changing 1x1 shortcuts are a partial-identity convolution
type with its own rule, and its Hadamard transforms are fixed buffers, not parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from efflab.init.matrices import SCALES, Scale, zero_matrix
from efflab.init.scalars import ResidualGate, ScalarBias

#: a rule sets the module's *own* parameters (not its children's) in place
ZeroRule = Callable[[nn.Module, Scale], None]

#: a check raises ValueError for a module its rule cannot handle, changing nothing
ZeroCheck = Callable[[nn.Module], None]

_RULES: dict[type[nn.Module], ZeroRule] = {}
_CHECKS: dict[type[nn.Module], ZeroCheck] = {}


def register_zero_rule(module_type: type[nn.Module], rule: ZeroRule | None = None,
                       check: ZeroCheck | None = None):
    """Teach :func:`zero_init_` a module type: ``rule(module, scale)`` must set every parameter
    that ``module`` holds itself (``module.parameters(recurse=False)``), deterministically.
    ``check(module)``, if given, raises ``ValueError`` for a module the rule cannot handle;
    :func:`zero_init_` runs every check before any rule, so a refused model stays untouched.

    Usable directly, ``register_zero_rule(MyLayer, my_rule)``, or as a decorator,
    ``@register_zero_rule(MyLayer)``. Subclasses of a registered type use its rule unless they
    have their own. Returns the rule.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be a subclass of torch.nn.Module, got {module_type!r}")
    if check is not None and not callable(check):
        raise TypeError(f"check must be callable, got {check!r}")

    def deco(fn: ZeroRule) -> ZeroRule:
        if not callable(fn):
            raise TypeError(f"rule must be callable, got {fn!r}")
        _RULES[module_type] = fn
        if check is None:
            _CHECKS.pop(module_type, None)
        else:
            _CHECKS[module_type] = check
        return fn

    return deco if rule is None else deco(rule)


def zero_rule_for(module: nn.Module) -> ZeroRule | None:
    """The rule :func:`zero_init_` would apply to ``module`` (nearest registered base class)."""
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def _check_for(module: nn.Module) -> ZeroCheck | None:
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _CHECKS.get(cls)
    return None


def check_zero_conv(shape: tuple[int, ...], groups: int = 1) -> None:
    """Raise ``ValueError`` unless Algorithm 2 applies to a kernel of ``shape``
    (out_channels, in_channels // groups, *kernel_size): odd kernel sizes, groups dividing
    out_channels."""
    if len(shape) < 3:
        raise ValueError(f"weight must be (out, in/groups, *kernel), got shape {tuple(shape)}")
    kernel = tuple(shape[2:])
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"ZerO needs odd kernel sizes (a centre tap), got kernel_size={kernel}")
    if groups < 1 or shape[0] % groups:
        raise ValueError(f"groups must divide out_channels={shape[0]}, got groups={groups}")


@torch.no_grad()
def zero_conv_(weight: torch.Tensor, scale: Scale = "orthonormal", groups: int = 1
               ) -> torch.Tensor:
    """Algorithm 2 on a convolution kernel, in place; returns ``weight``.

    weight: (out_channels, in_channels // groups, *kernel_size), any number of spatial axes,
    every kernel size odd. All taps are zeroed; the centre tap gets, for each group, the
    Algorithm 1 matrix (out_channels // groups, in_channels // groups).
    """
    check_zero_conv(tuple(weight.shape), groups)
    kernel = tuple(weight.shape[2:])
    out_ch, in_per_group = weight.shape[:2]
    block = zero_matrix(out_ch // groups, in_per_group, scale, dtype=weight.dtype,
                        device=weight.device)
    weight.zero_()
    centre = tuple(k // 2 for k in kernel)
    # outputs of group g only see inputs of group g, so stacking the per-group blocks along
    # the output axis is the block-diagonal map
    weight[(slice(None), slice(None), *centre)] = block.repeat(groups, 1)
    return weight


def zero_conv_reference(shape: tuple[int, ...], scale: Scale = "orthonormal", groups: int = 1
                        ) -> torch.Tensor:
    """Algorithm 2 tap by tap in float64: W[o, i, *t] = M[o mod (out/groups), i] at the centre
    tap t, 0 elsewhere. Slow; for tests."""
    from efflab.init.matrices import zero_matrix_reference

    out_ch, in_per_group, *kernel = shape
    per_group = out_ch // groups
    m = zero_matrix_reference(per_group, in_per_group, scale)
    w = torch.zeros(shape, dtype=torch.float64)
    centre = [k // 2 for k in kernel]
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in shape]).tolist():
        o, i, *tap = idx
        if tap == centre:
            w[tuple(idx)] = m[o % per_group, i]
    return w


def _check_start_at_zero(module: nn.Module) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"layers to start at zero must be modules, got {type(module).__name__}")
    if not list(module.parameters(recurse=False)):
        raise ValueError(f"{type(module).__name__} holds no parameters of its own, so it cannot "
                         "start at zero; mark the layer itself (e.g. the last Linear, Conv or "
                         "norm layer of the branch)")


@torch.no_grad()
def start_at_zero_(module: nn.Module) -> nn.Module:
    """Set every parameter ``module`` holds itself to 0 (a norm layer then outputs 0 too)."""
    _check_start_at_zero(module)
    for p in module.parameters(recurse=False):
        p.zero_()
    return module


def residual_zeros(model: nn.Module) -> list[nn.Module]:
    """The layers the residual rule starts at zero: every ``branch_last`` of a submodule and,
    when there is at least one, the ``classifier`` of the network(s) holding them."""
    zeros: list[nn.Module] = []
    for sub in model.modules():
        last = getattr(sub, "branch_last", None)
        if last is None:
            continue
        for layer in (last if isinstance(last, (list, tuple)) else (last,)):
            if not isinstance(layer, nn.Module):
                raise TypeError(f"{type(sub).__name__}.branch_last must be a module or a tuple "
                                f"of modules, got {type(layer).__name__}")
            zeros.append(layer)
    if zeros:
        for sub in model.modules():
            head = getattr(sub, "classifier", None)
            if isinstance(head, nn.Module):
                zeros.append(head)
    return zeros


@torch.no_grad()
def zero_init_(model: nn.Module, scale: Scale = "orthonormal",
               zeros: Iterable[nn.Module] | None = None) -> nn.Module:
    """ZerO-initialize ``model`` in place and return it (see the module docstring).

    scale: the Hadamard constant, ``"orthonormal"`` = 2^{-m/2} (default) or ``"paper"`` =
    2^{-(m-1)/2}. zeros: the layers that start at zero; ``None`` finds them through the
    ``branch_last`` / ``classifier`` attributes (:func:`residual_zeros`), ``[]`` zeroes none.
    Raises TypeError for a module type without a rule (see :func:`register_zero_rule`).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    todo = []
    for name, sub in model.named_modules():
        own = [n for n, _ in sub.named_parameters(recurse=False)]
        if not own:
            continue
        rule = zero_rule_for(sub)
        if rule is None:
            kind = type(sub)
            raise TypeError(
                f"zero_init_ has no rule for module type {kind.__module__}.{kind.__qualname__} "
                f"(submodule {name or '<root>'!r}, parameters {own}); register one with "
                f"efflab.init.register_zero_rule({kind.__name__}, rule)")
        todo.append((sub, rule))
    # every module is checked before any is changed, so a refusal leaves the model untouched
    for sub, _ in todo:
        check = _check_for(sub)
        if check is not None:
            check(sub)
    zeros = residual_zeros(model) if zeros is None else list(zeros)
    for layer in zeros:
        _check_start_at_zero(layer)
    # a registered rule without a check may still raise half-way: put everything back then
    saved = [(t, t.detach().clone()) for t in (*model.parameters(), *model.buffers())]
    try:
        for sub, rule in todo:
            rule(sub, scale)
        for layer in zeros:
            start_at_zero_(layer)
    except Exception:
        for t, value in saved:
            t.copy_(value)
        raise
    return model


# ---- the rules for PyTorch's layers -------------------------------------------------------

def _zero_bias(module: nn.Module) -> None:
    if getattr(module, "bias", None) is not None:
        module.bias.zero_()


@register_zero_rule(nn.Linear)
def _linear_rule(module: nn.Linear, scale: Scale) -> None:
    w = module.weight
    w.copy_(zero_matrix(w.shape[0], w.shape[1], scale, dtype=w.dtype, device=w.device))
    _zero_bias(module)


def _conv_check(module: nn.modules.conv._ConvNd) -> None:
    try:
        check_zero_conv(tuple(module.weight.shape), module.groups)
    except ValueError as e:
        raise ValueError(
            f"{type(module).__name__}(kernel_size={module.kernel_size}): {e}") from None


def _conv_rule(module: nn.modules.conv._ConvNd, scale: Scale) -> None:
    zero_conv_(module.weight, scale, groups=module.groups)
    _zero_bias(module)


for _conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_zero_rule(_conv, _conv_rule, check=_conv_check)


def _norm_rule(module: nn.Module, scale: Scale) -> None:
    if getattr(module, "weight", None) is not None:
        module.weight.fill_(1.0)
    _zero_bias(module)
    if hasattr(module, "reset_running_stats"):
        module.reset_running_stats()


for _norm in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm):
    register_zero_rule(_norm, _norm_rule)


@register_zero_rule(ResidualGate)
def _gate_rule(module: ResidualGate, scale: Scale) -> None:
    module.weight.fill_(1.0)


@register_zero_rule(ScalarBias)
def _scalar_bias_rule(module: ScalarBias, scale: Scale) -> None:
    module.bias.zero_()


@register_zero_rule(nn.Embedding)
def _embedding_rule(module: nn.Embedding, scale: Scale) -> None:
    w = module.weight
    w.copy_(zero_matrix(w.shape[0], w.shape[1], scale, dtype=w.dtype, device=w.device))
    if module.padding_idx is not None:
        w[module.padding_idx].zero_()


@register_zero_rule(nn.MultiheadAttention)
def _torch_mha_rule(module: nn.MultiheadAttention, scale: Scale) -> None:
    # the output projection is a child Linear and gets the Linear rule
    e = module.embed_dim
    if module.in_proj_weight is not None:
        w = module.in_proj_weight  # (3 * embed_dim, embed_dim): query, key, value stacked
        for i in range(3):
            w[i * e:(i + 1) * e].copy_(zero_matrix(e, e, scale, dtype=w.dtype, device=w.device))
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
        w = getattr(module, name, None)
        if w is not None:
            w.copy_(zero_matrix(w.shape[0], w.shape[1], scale, dtype=w.dtype, device=w.device))
    for name in ("in_proj_bias", "bias_k", "bias_v"):
        b = getattr(module, name, None)
        if b is not None:
            b.zero_()


__all__ = [
    "ZeroCheck", "ZeroRule", "check_zero_conv", "register_zero_rule", "residual_zeros",
    "start_at_zero_", "zero_conv_", "zero_conv_reference", "zero_init_", "zero_rule_for",
]
