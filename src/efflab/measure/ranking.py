"""Do two cost indicators rank models the same way? Kendall's tau and ranking flips.

Efficiency Misnomer (arXiv 2110.12894), Sec. 4: the paper compares indicators by how they
rank a set of models. :func:`kendall_matrix` gives Kendall's tau-b between every pair of
indicators; :func:`ranking_flips` lists the pairs of models that two indicators order in
opposite ways, each by a factor beyond a margin that timing noise cannot reach.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np


def kendall_matrix(values: dict[str, list[float]]) -> tuple[list[str], list[list[float]]]:
    """Kendall's tau-b between every pair of indicators (NaN where a column has gaps)."""
    from scipy.stats import kendalltau

    keys = list(values)
    tau = [[1.0 if a == b else float("nan") for b in keys] for a in keys]
    for (i, a), (j, b) in itertools.combinations(enumerate(keys), 2):
        x, y = np.asarray(values[a], float), np.asarray(values[b], float)
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.sum() >= 3:
            t = float(kendalltau(x[keep], y[keep]).statistic)
            tau[i][j] = tau[j][i] = t
    return keys, tau


def ranking_flips(names: list[str], cost_a: list[float], cost_b: list[float], margin: float
                  ) -> list[dict[str, Any]]:
    """Pairs (x, y) where x costs at least ``1 + margin`` times y by indicator a, yet y costs
    at least ``1 + margin`` times x by indicator b; strongest disagreement first."""
    flips = []
    for i, j in itertools.permutations(range(len(names)), 2):
        ra, rb = cost_a[i] / cost_a[j], cost_b[j] / cost_b[i]
        if ra >= 1 + margin and rb >= 1 + margin:
            flips.append({"costlier_by_a": names[i], "costlier_by_b": names[j],
                          "ratio_a": ra, "ratio_b": rb, "score": math.log(ra) + math.log(rb)})
    return sorted(flips, key=lambda f: -f["score"])
