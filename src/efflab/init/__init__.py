"""Initialization: ZerO (Zhao et al., TMLR 2022) and the random baselines it is compared with.

* :mod:`efflab.init.matrices`: the Sylvester Hadamard matrix, the partial identity and the
  paper's Algorithm 1 for one weight matrix;
* :mod:`efflab.init.zero`: ``zero_init_(model)``, Algorithms 1 and 2 plus the residual rule
  for whole networks, with a registry of per-layer rules;
* :mod:`efflab.init.random`: Kaiming and Xavier initialization from a seeded generator;
* :mod:`efflab.init.residual`: Fixup, ReZero and SkipInit, the residual-network schemes ZerO
  is compared with, and their residual scalars (:mod:`efflab.init.scalars`);
* :func:`initialize_`: any of them by name (what the experiments use).
"""

from efflab.init.by_name import INITS, initialize_
from efflab.init.matrices import (
    SCALES,
    hadamard,
    hadamard_reference,
    hadamard_scale,
    is_power_of_two,
    partial_identity,
    zero_matrix,
    zero_matrix_reference,
)
from efflab.init.random import SCHEMES, random_init_
from efflab.init.residual import (
    fixup_,
    residual_branches,
    residual_gates_,
    rezero_,
    skipinit_,
)
from efflab.init.scalars import ResidualGate, ScalarBias
from efflab.init.zero import (
    check_zero_conv,
    register_zero_rule,
    residual_zeros,
    start_at_zero_,
    zero_conv_,
    zero_conv_reference,
    zero_init_,
    zero_rule_for,
)

__all__ = [
    "INITS", "SCALES", "SCHEMES", "ResidualGate", "ScalarBias", "check_zero_conv", "fixup_",
    "hadamard", "hadamard_reference", "hadamard_scale", "initialize_", "is_power_of_two",
    "partial_identity", "random_init_", "register_zero_rule", "residual_branches",
    "residual_gates_", "residual_zeros", "rezero_", "skipinit_",
    "start_at_zero_", "zero_conv_", "zero_conv_reference", "zero_init_", "zero_matrix",
    "zero_matrix_reference", "zero_rule_for",
]
