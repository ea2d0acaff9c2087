"""One entry point for the experiments: initialize a model by scheme name."""

from __future__ import annotations

import torch
from torch import nn

from efflab.init.random import SCHEMES, random_init_
from efflab.init.residual import fixup_, rezero_, skipinit_
from efflab.init.zero import zero_init_

#: every initializer by name: ZerO, the random schemes, the residual-network schemes
INITS = ("zero", *SCHEMES, "fixup", "rezero", "skipinit")
_RESIDUAL = {"fixup": fixup_, "rezero": rezero_, "skipinit": skipinit_}


def initialize_(model: nn.Module, init: str, seed: int = 0) -> nn.Module:
    """Initialize ``model`` in place by name and return it.

    ``"zero"``: ZerO (no randomness: ``seed`` is ignored); ``"kaiming"``, ``"xavier"``: random
    schemes; ``"fixup"``, ``"rezero"``, ``"skipinit"``: the residual-network schemes of
    :mod:`efflab.init.residual` (they need a model that declares its residual branches). The
    random draws come from a generator seeded with ``seed``.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "zero":
        return zero_init_(model)
    generator = torch.Generator().manual_seed(int(seed))
    if init in _RESIDUAL:
        return _RESIDUAL[init](model, generator)
    return random_init_(model, init, generator)


__all__ = ["INITS", "initialize_"]
