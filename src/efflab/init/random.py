"""The random initializations ZerO is compared with (Zhao et al., TMLR 2022, Section 5).

``random_init_(model, "kaiming", generator)``: He et al. (2015), weights ~ N(0, 2 / fan_in);
``"xavier"``: Glorot & Bengio (2010), weights ~ N(0, 2 / (fan_in + fan_out)). Biases 0, norm
layers weight 1 / bias 0, embeddings ~ N(0, 1), residual gates 1 and scalar biases 0 (neutral:
see :mod:`efflab.init.residual`). The draws come from ``generator`` only, so a
seeded generator gives the same network whatever else used the global RNG.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from efflab.init.scalars import ResidualGate, ScalarBias

Scheme = Literal["kaiming", "xavier"]
SCHEMES = ("kaiming", "xavier")

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


@torch.no_grad()
def random_init_(model: nn.Module, scheme: Scheme, generator: torch.Generator) -> nn.Module:
    """Re-initialize every Linear, Conv, norm layer, Embedding and residual scalar of
    ``model`` in place; return it. Raises TypeError for other modules that hold parameters,
    before changing any."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    known = (nn.Linear, nn.modules.conv._ConvNd, *_NORMS, ResidualGate, ScalarBias, nn.Embedding)
    for name, sub in model.named_modules():
        if list(sub.parameters(recurse=False)) and not isinstance(sub, known):
            raise TypeError(f"random_init_ has no rule for module type "
                            f"{type(sub).__qualname__} (submodule {name or '<root>'!r})")
    for sub in model.modules():
        if not list(sub.parameters(recurse=False)):
            continue
        if isinstance(sub, (nn.Linear, nn.modules.conv._ConvNd)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(sub.weight, mode="fan_in", nonlinearity="relu",
                                        generator=generator)
            else:
                nn.init.xavier_normal_(sub.weight, generator=generator)
            if sub.bias is not None:
                sub.bias.zero_()
        elif isinstance(sub, _NORMS):
            if getattr(sub, "weight", None) is not None:
                sub.weight.fill_(1.0)
            if getattr(sub, "bias", None) is not None:
                sub.bias.zero_()
            if hasattr(sub, "reset_running_stats"):
                sub.reset_running_stats()
        elif isinstance(sub, ResidualGate):
            sub.weight.fill_(1.0)
        elif isinstance(sub, ScalarBias):
            sub.bias.zero_()
        elif isinstance(sub, nn.Embedding):
            sub.weight.normal_(0.0, 1.0, generator=generator)
            if sub.padding_idx is not None:
                sub.weight[sub.padding_idx].zero_()
    return model


__all__ = ["SCHEMES", "Scheme", "random_init_"]
