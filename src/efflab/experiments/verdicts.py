"""Every verdict rule of the suite, in one place.

A claim's verdict is one of ``reproduced``, ``not reproduced``, ``inconclusive`` (the data's
uncertainty straddles the tolerance: more seeds, draws or repeats would settle it) and, for
claims with a graded tolerance, ``partly``. Use these helpers in ``claims()`` instead of
hand-written ``"reproduced" if ... else ...`` chains:

* point rules, for quantities without sampling noise (a closed form, a count):
  :func:`at_least`, :func:`at_most` (both with an optional looser ``partly`` threshold),
  :func:`within`, :func:`ordered`;
* interval rules, for quantities estimated from seeds, draws or timing repeats: build an
  :class:`Estimate` (:func:`mean_interval`, :func:`mean_sem_interval`,
  :func:`bootstrap_interval`, :func:`difference_interval`, :func:`ratio_interval`) and decide with
  :func:`interval_at_least`, :func:`interval_at_most`, :func:`interval_within`,
  :func:`interval_ordered`. They return ``inconclusive`` when the interval straddles the
  threshold, so a claim whose effect is inside the noise never flips with the noise;
* :func:`all_of` combines the verdicts of one claim checked at several points.

A NaN value, threshold or tolerance raises ``ValueError``: it must never produce a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
PARTLY = "partly"

#: the default confidence level of every interval in the suite
LEVEL = 0.95


def _num(name: str, value: float) -> float:
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} is NaN: no verdict can be given")
    return value


# --------------------------------------------------------------------------- point rules
def at_least(value: float, threshold: float, *, partly: float | None = None) -> str:
    """``reproduced`` when ``value >= threshold``; ``partly`` when ``value >= partly`` (a
    looser threshold, if given); else ``not reproduced``."""
    value = _num("value", value)
    if value >= _num("threshold", threshold):
        return REPRODUCED
    if partly is not None and value >= _num("partly", partly):
        return PARTLY
    return NOT_REPRODUCED


def at_most(value: float, threshold: float, *, partly: float | None = None) -> str:
    """``reproduced`` when ``value <= threshold``; ``partly`` when ``value <= partly`` (a
    looser threshold, if given); else ``not reproduced``."""
    value = _num("value", value)
    if value <= _num("threshold", threshold):
        return REPRODUCED
    if partly is not None and value <= _num("partly", partly):
        return PARTLY
    return NOT_REPRODUCED


def within(value: float, target: float, *, rel_tol: float | None = None,
           abs_tol: float | None = None, partly_rel_tol: float | None = None) -> str:
    """``reproduced`` when ``|value - target| <= rel_tol * |target| + abs_tol``; ``partly``
    within the looser ``partly_rel_tol`` if given; else ``not reproduced``."""
    if rel_tol is None and abs_tol is None:
        raise ValueError("within() needs rel_tol or abs_tol")
    err = abs(_num("value", value) - _num("target", target))
    allowed = _num("rel_tol", rel_tol or 0.0) * abs(target) + _num("abs_tol", abs_tol or 0.0)
    if err <= allowed:
        return REPRODUCED
    if partly_rel_tol is not None and err <= _num("partly_rel_tol", partly_rel_tol) * abs(target):
        return PARTLY
    return NOT_REPRODUCED


def ordered(values: Sequence[float], *, decreasing: bool = False, strict: bool = True) -> str:
    """``reproduced`` when ``values`` are increasing (or decreasing) in the given order."""
    vals = [_num(f"values[{i}]", v) for i, v in enumerate(values)]
    if decreasing:
        vals = vals[::-1]
    ok = all((a < b) if strict else (a <= b) for a, b in zip(vals, vals[1:]))
    return REPRODUCED if ok else NOT_REPRODUCED


# --------------------------------------------------------------------------- estimates
@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval ``[lo, hi]`` from ``n`` samples."""

    value: float
    lo: float
    hi: float
    n: int
    method: str  # "t" (mean +- t * standard error), "bootstrap", "exact"
    level: float = LEVEL

    def __post_init__(self) -> None:
        for name in ("value", "lo", "hi"):
            _num(name, getattr(self, name))
        if self.lo > self.hi:
            raise ValueError(f"interval lo {self.lo} > hi {self.hi}")

    def fmt(self, spec: str = ".3g") -> str:
        """``"0.62 [0.60, 0.64] (95% t, n=5)"``."""
        return (f"{self.value:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}] "
                f"({self.level:.0%} {self.method}, n={self.n})")

    def to_dict(self) -> dict[str, float | int | str]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "n": self.n,
                "method": self.method, "level": self.level}


def mean_sem_interval(mean: float, sem: float, n: int, level: float = LEVEL) -> Estimate:
    """A Student-t interval ``mean +- t * sem`` from a mean and its standard error over ``n``
    samples (when only the summary was kept); ``n < 2`` gives an infinitely wide interval."""
    from scipy import stats

    mean, sem = _num("mean", mean), _num("sem", sem)
    if sem < 0:
        raise ValueError(f"sem must be >= 0, got {sem}")
    if n < 2 or not math.isfinite(sem):
        return Estimate(mean, -math.inf, math.inf, int(n), "t", level)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sem)
    return Estimate(mean, mean - half, mean + half, int(n), "t", level)


def _samples(name: str, samples: Sequence[float]) -> np.ndarray:
    x = np.asarray(samples, dtype=float).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty: no estimate can be made")
    if np.isnan(x).any():
        raise ValueError(f"{name} contains NaN: no verdict can be given")
    return x


def mean_interval(samples: Sequence[float], level: float = LEVEL) -> Estimate:
    """Mean with a Student-t interval (mean +- t * sd / sqrt(n)); one sample gives an
    infinitely wide interval, so every interval rule on it is ``inconclusive``."""
    from scipy import stats

    x = _samples("samples", samples)
    m = float(x.mean())
    if x.size == 1:
        return Estimate(m, -math.inf, math.inf, 1, "t", level)
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Estimate(m, m - half, m + half, int(x.size), "t", level)


def difference_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL
                        ) -> Estimate:
    """mean(a) - mean(b) with a Welch t interval (independent samples, unequal variances)."""
    from scipy import stats

    xa, xb = _samples("a", a), _samples("b", b)
    d = float(xa.mean() - xb.mean())
    if xa.size < 2 or xb.size < 2:
        return Estimate(d, -math.inf, math.inf, int(min(xa.size, xb.size)), "welch", level)
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Estimate(d, d, d, int(min(xa.size, xb.size)), "welch", level)
    dof = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    return Estimate(d, d - half, d + half, int(min(xa.size, xb.size)), "welch", level)


def bootstrap_interval(samples: Sequence[float], statistic: Callable[[np.ndarray], float]
                       = np.median, level: float = LEVEL, resamples: int = 2000,
                       seed: int = 0) -> Estimate:
    """A percentile bootstrap interval of ``statistic`` (default: the median), for heavy-tailed
    samples where a t interval on the mean would mislead."""
    x = _samples("samples", samples)
    value = float(statistic(x))
    if x.size == 1:
        return Estimate(value, -math.inf, math.inf, 1, "bootstrap", level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    stats = np.array([statistic(x[i]) for i in idx], dtype=float)
    lo, hi = np.quantile(stats, [0.5 - level / 2, 0.5 + level / 2])
    return Estimate(value, float(min(lo, value)), float(max(hi, value)), int(x.size),
                    "bootstrap", level)


def ratio_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Estimate:
    """The ratio a / b of paired timings with a Student-t interval on the log scale.

    ``a[i]`` and ``b[i]`` are paired (timed in the same round of an interleaved measurement),
    so the round-to-round drift of the machine cancels in ``log(a[i] / b[i])``; the value is
    the geometric mean of the paired ratios and the interval
    ``exp(mean +- t * sd / sqrt(n))`` of those logs. With 3-5 rounds a bootstrap of medians
    covers far less than its nominal level (it cannot be wider than the range of the
    rounds); the t interval keeps its level for log-normal noise (tested by simulation) and
    widens honestly when one round is an outlier. One round gives an infinitely wide interval.
    """
    from scipy import stats

    xa, xb = _samples("a", a), _samples("b", b)
    if xa.size != xb.size:
        raise ValueError(f"paired samples must have equal length, got {xa.size} and {xb.size}")
    if (xb <= 0).any() or (xa <= 0).any():
        raise ValueError("ratio_interval needs positive samples (times, sizes)")
    logs = np.log(xa) - np.log(xb)
    centre = float(logs.mean())
    value = math.exp(centre)
    if xa.size == 1:
        return Estimate(value, -math.inf, math.inf, 1, "t on log ratio", level)
    half = float(stats.t.ppf(0.5 + level / 2, xa.size - 1) * logs.std(ddof=1)
                 / math.sqrt(xa.size))
    return Estimate(value, math.exp(centre - half), math.exp(centre + half), int(xa.size),
                    "t on log ratio", level)


# --------------------------------------------------------------------------- interval rules
def interval_at_least(est: Estimate, threshold: float) -> str:
    """``reproduced`` if the whole interval is >= threshold, ``not reproduced`` if it is all
    below, ``inconclusive`` if it straddles the threshold."""
    t = _num("threshold", threshold)
    if est.lo >= t:
        return REPRODUCED
    if est.hi < t:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def interval_at_most(est: Estimate, threshold: float) -> str:
    t = _num("threshold", threshold)
    if est.hi <= t:
        return REPRODUCED
    if est.lo > t:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def interval_within(est: Estimate, lo: float, hi: float) -> str:
    """``reproduced`` if ``[est.lo, est.hi]`` lies inside ``[lo, hi]``, ``not reproduced`` if
    it is disjoint from it, ``inconclusive`` otherwise."""
    lo, hi = _num("lo", lo), _num("hi", hi)
    if lo > hi:
        raise ValueError(f"tolerance band lo {lo} > hi {hi}")
    if lo <= est.lo and est.hi <= hi:
        return REPRODUCED
    if est.hi < lo or est.lo > hi:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def interval_ordered(estimates: Sequence[Estimate], *, decreasing: bool = False) -> str:
    """Consecutive estimates in the claimed order: ``reproduced`` when every neighbouring pair's
    intervals are separated in that order, ``not reproduced`` when some pair is separated the
    wrong way, ``inconclusive`` when a pair overlaps (and none is reversed)."""
    ests = list(estimates)[::-1] if decreasing else list(estimates)
    verdicts = []
    for a, b in zip(ests, ests[1:]):
        if a.hi < b.lo:
            verdicts.append(REPRODUCED)
        elif a.lo > b.hi:
            verdicts.append(NOT_REPRODUCED)
        else:
            verdicts.append(INCONCLUSIVE)
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    if INCONCLUSIVE in verdicts:
        return INCONCLUSIVE
    return REPRODUCED


def all_of(verdicts: Sequence[str]) -> str:
    """One verdict for a claim judged at several points (every point must hold): ``not
    reproduced`` if any point is, else ``inconclusive`` if any is, else ``partly`` if any is,
    else ``reproduced``."""
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("all_of() needs at least one verdict")
    for v in verdicts:
        if v not in (REPRODUCED, PARTLY, INCONCLUSIVE, NOT_REPRODUCED):
            raise ValueError(f"not a verdict: {v!r}")
    for v in (NOT_REPRODUCED, INCONCLUSIVE, PARTLY):
        if v in verdicts:
            return v
    return REPRODUCED
