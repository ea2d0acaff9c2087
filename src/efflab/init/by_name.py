"""One entry point for the experiments: initialize a model by scheme name."""

from __future__ import annotations

import torch
from torch import nn

from efflab.init.random import SCHEMES, random_init_
from efflab.init.zero import zero_init_

INITS = ("zero", *SCHEMES)


def initialize_(model: nn.Module, init: str, seed: int = 0) -> nn.Module:
    """``init`` = ``"zero"`` (ZerO, no randomness: ``seed`` is ignored) or a random scheme
    (``"kaiming"``, ``"xavier"``) drawn from a generator seeded with ``seed``."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "zero":
        return zero_init_(model)
    return random_init_(model, init, torch.Generator().manual_seed(int(seed)))


__all__ = ["INITS", "initialize_"]
