"""Theory of overparameterized learning: closed forms and the solvers they describe.

``linear_regression``: min-norm least squares and the finite-sample risk of Belkin, Hsu and
Xu (2019), as surveyed in "A Farewell to the Bias-Variance Tradeoff?" (arXiv 2109.02355, §7).
"""

from efflab.theory.linear_regression import (
    asymptotic_excess_risk,
    bhx_risk,
    effective_ranks,
    min_norm_least_squares,
    min_norm_least_squares_reference,
    min_norm_risk_equivalent,
    simulate_min_norm_risk,
)

__all__ = [
    "asymptotic_excess_risk",
    "bhx_risk",
    "effective_ranks",
    "min_norm_least_squares",
    "min_norm_least_squares_reference",
    "min_norm_risk_equivalent",
    "simulate_min_norm_risk",
]
