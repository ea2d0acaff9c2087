"""Verdict rules: point rules, estimates with intervals, interval rules, combining claims."""

import math

import numpy as np
import pytest
from scipy import stats

from efflab.experiments import verdicts as v
from efflab.experiments.base import Claim, combine_verdicts

R, P, I, N = v.REPRODUCED, v.PARTLY, v.INCONCLUSIVE, v.NOT_REPRODUCED
NAN = float("nan")


# -- point rules -----------------------------------------------------------------------------
@pytest.mark.parametrize("value,threshold,partly,expect", [
    (2.0, 1.0, None, R), (1.0, 1.0, None, R), (0.5, 1.0, None, N),
    (0.8, 1.0, 0.7, P), (0.6, 1.0, 0.7, N)])
def test_at_least(value, threshold, partly, expect):
    assert v.at_least(value, threshold, partly=partly) == expect


@pytest.mark.parametrize("value,threshold,partly,expect", [
    (0.5, 1.0, None, R), (1.0, 1.0, None, R), (1.5, 1.0, None, N),
    (1.5, 1.0, 2.0, P), (2.5, 1.0, 2.0, N)])
def test_at_most(value, threshold, partly, expect):
    assert v.at_most(value, threshold, partly=partly) == expect


def test_within_relative_absolute_and_partly():
    assert v.within(1.04, 1.0, rel_tol=0.05) == R
    assert v.within(1.06, 1.0, rel_tol=0.05) == N
    assert v.within(1.08, 1.0, rel_tol=0.05, partly_rel_tol=0.1) == P
    assert v.within(1.2, 1.0, rel_tol=0.05, partly_rel_tol=0.1) == N
    assert v.within(0.009, 0.0, abs_tol=0.01) == R
    assert v.within(-1.04, -1.0, rel_tol=0.05) == R      # relative to |target|
    with pytest.raises(ValueError, match="needs rel_tol or abs_tol"):
        v.within(1.0, 1.0)


def test_ordered():
    assert v.ordered([1, 2, 3]) == R
    assert v.ordered([1, 2, 2]) == N
    assert v.ordered([1, 2, 2], strict=False) == R
    assert v.ordered([3, 2, 1], decreasing=True) == R
    assert v.ordered([3, 1, 2], decreasing=True) == N
    assert v.ordered([5]) == R


@pytest.mark.parametrize("call", [
    lambda: v.at_least(NAN, 1.0), lambda: v.at_least(1.0, NAN),
    lambda: v.at_least(1.0, 2.0, partly=NAN), lambda: v.at_most(NAN, 1.0),
    lambda: v.within(NAN, 1.0, rel_tol=0.1), lambda: v.within(1.0, 1.0, rel_tol=NAN),
    lambda: v.within(1.0, 1.0, abs_tol=NAN), lambda: v.within(1.0, NAN, abs_tol=0.1),
    lambda: v.ordered([1.0, NAN, 3.0]),
    lambda: v.interval_at_least(v.Estimate(1, 0, 2, 3, "t"), NAN),
    lambda: v.interval_within(v.Estimate(1, 0, 2, 3, "t"), NAN, 1.0),
    lambda: v.mean_interval([1.0, NAN]), lambda: v.mean_sem_interval(NAN, 0.1, 5),
    lambda: v.mean_sem_interval(1.0, NAN, 5), lambda: v.bootstrap_interval([NAN, 1.0]),
])
def test_nan_never_gives_a_verdict(call):
    with pytest.raises(ValueError, match="NaN"):
        call()


# -- estimates -------------------------------------------------------------------------------
def test_mean_interval_is_the_student_t_interval():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    est = v.mean_interval(x)
    half = stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2.0
    assert est.value == pytest.approx(3.5)
    assert (est.lo, est.hi) == pytest.approx((3.5 - half, 3.5 + half))
    assert (est.n, est.method, est.level) == (4, "t", 0.95)
    wider = v.mean_interval(x, level=0.99)
    assert wider.lo < est.lo and wider.hi > est.hi


def test_one_sample_is_infinitely_uncertain():
    for est in (v.mean_interval([3.0]), v.bootstrap_interval([3.0]),
                v.difference_interval([1.0], [2.0, 3.0]), v.ratio_interval([1.0], [2.0]),
                v.mean_sem_interval(3.0, 0.1, 1)):
        assert est.lo == -math.inf and est.hi == math.inf
        assert v.interval_at_least(est, 0.0) == I
        assert v.interval_at_most(est, 1e9) == I
        assert v.interval_within(est, -1e9, 1e9) == I


def test_mean_sem_interval_matches_mean_interval():
    x = np.random.default_rng(0).normal(size=12)
    a = v.mean_interval(x)
    b = v.mean_sem_interval(x.mean(), x.std(ddof=1) / np.sqrt(x.size), x.size)
    assert (a.value, a.lo, a.hi) == pytest.approx((b.value, b.lo, b.hi))
    with pytest.raises(ValueError, match="sem must be >= 0"):
        v.mean_sem_interval(1.0, -0.1, 5)


def test_difference_interval_is_welch():
    a, b = [5.0, 6.0, 7.0, 6.5], [1.0, 2.0, 1.5]
    est = v.difference_interval(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert est.value == pytest.approx(np.mean(a) - np.mean(b))
    assert (est.lo, est.hi) == pytest.approx((ci.low, ci.high))
    same = v.difference_interval([2.0, 2.0], [1.0, 1.0])   # no spread at all
    assert (same.lo, same.value, same.hi) == (1.0, 1.0, 1.0)


def test_bootstrap_interval_contains_the_statistic_and_is_reproducible():
    x = np.random.default_rng(1).standard_cauchy(50)
    a, b = v.bootstrap_interval(x, seed=3), v.bootstrap_interval(x, seed=3)
    assert a == b and a.lo <= np.median(x) <= a.hi and a.method == "bootstrap"
    m = v.bootstrap_interval(x, statistic=np.mean, seed=3)
    assert m.value == pytest.approx(x.mean())


@pytest.mark.parametrize("rounds", [3, 5])
def test_ratio_interval_keeps_its_level_on_pure_noise(rounds):
    """Two timings with no true difference and log-normal round noise (sd 10%): the 95%
    interval must contain 1 in about 95% of measurements, so a timing claim on pure noise
    reaches a verdict about 5% of the time (the bootstrap of medians it replaced did in up to
    a third of them at 3 rounds)."""
    rng = np.random.default_rng(11)
    draws = 4000
    a = np.exp(rng.normal(0.0, 0.1, (draws, rounds)))
    b = np.exp(rng.normal(0.0, 0.1, (draws, rounds)))
    covered = 0
    for i in range(draws):
        est = v.ratio_interval(a[i], b[i])
        covered += est.lo <= 1.0 <= est.hi
    assert 0.93 <= covered / draws <= 0.97


def test_ratio_interval_pairs_rounds_and_refuses_bad_samples():
    a = np.array([2.0, 2.2, 1.9, 2.1, 2.0, 2.05])
    b = np.array([1.0, 1.1, 0.95, 1.05, 1.0, 1.02])
    est = v.ratio_interval(a, b)
    assert est.value == pytest.approx(np.exp(np.mean(np.log(a / b))))
    assert est.lo <= est.value <= est.hi and est.lo > 1.5
    # pairing: a drift shared by both members of a round cancels
    drift = np.array([1.0, 3.0, 0.5, 2.0, 1.0, 1.5])
    assert v.ratio_interval(a * drift, b * drift) == est
    one = v.ratio_interval([2.0], [1.0])
    assert one.value == 2.0 and one.lo == -np.inf and one.hi == np.inf
    with pytest.raises(ValueError, match="equal length"):
        v.ratio_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        v.ratio_interval([1.0, 2.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="empty"):
        v.ratio_interval([], [])


def test_estimate_checks_and_prints():
    est = v.Estimate(0.62, 0.6, 0.64, 5, "t")
    assert est.fmt(".2f") == "0.62 [0.60, 0.64] (95% t, n=5)"
    assert est.to_dict() == {"value": 0.62, "lo": 0.6, "hi": 0.64, "n": 5, "method": "t",
                             "level": 0.95}
    with pytest.raises(ValueError, match="lo 2 > hi 1"):
        v.Estimate(1.5, 2, 1, 3, "t")
    with pytest.raises(ValueError, match="NaN"):
        v.Estimate(NAN, 0, 1, 3, "t")


# -- interval rules --------------------------------------------------------------------------
E = v.Estimate


@pytest.mark.parametrize("est,expect", [(E(2, 1.5, 2.5, 5, "t"), R), (E(0, -.5, .5, 5, "t"), N),
                                        (E(1, 0.5, 1.5, 5, "t"), I), (E(1, 1.0, 1.5, 5, "t"), R)])
def test_interval_at_least(est, expect):
    assert v.interval_at_least(est, 1.0) == expect


@pytest.mark.parametrize("est,expect", [(E(0, -.5, .5, 5, "t"), R), (E(2, 1.5, 2.5, 5, "t"), N),
                                        (E(1, 0.5, 1.5, 5, "t"), I)])
def test_interval_at_most(est, expect):
    assert v.interval_at_most(est, 1.0) == expect


@pytest.mark.parametrize("est,expect", [(E(1, .95, 1.05, 5, "t"), R), (E(2, 1.8, 2.2, 5, "t"), N),
                                        (E(1.1, 1.0, 1.2, 5, "t"), I), (E(0, -.2, .2, 5, "t"), N)])
def test_interval_within(est, expect):
    assert v.interval_within(est, 0.9, 1.1) == expect


def test_interval_within_refuses_an_empty_band():
    with pytest.raises(ValueError, match="tolerance band"):
        v.interval_within(E(1, 0, 2, 3, "t"), 2.0, 1.0)


def test_interval_ordered():
    a, b, c = E(1, .9, 1.1, 5, "t"), E(2, 1.9, 2.1, 5, "t"), E(1.95, 1.5, 2.5, 5, "t")
    assert v.interval_ordered([a, b]) == R
    assert v.interval_ordered([b, a]) == N
    assert v.interval_ordered([b, a], decreasing=True) == R
    assert v.interval_ordered([a, c]) == R
    assert v.interval_ordered([b, c]) == I
    assert v.interval_ordered([a, b, a]) == N        # one reversed pair decides


def test_noise_makes_a_claim_inconclusive_not_flipped():
    """An effect of 0.2 measured with unit noise: 3 samples cannot decide, 3000 can."""
    rng = np.random.default_rng(0)
    few = v.mean_interval(0.2 + rng.normal(size=3))
    many = v.mean_interval(0.2 + rng.normal(size=3000))
    assert v.interval_at_least(few, 0.0) == I
    assert v.interval_at_least(many, 0.0) == R
    assert v.interval_at_least(v.mean_interval(-0.2 + rng.normal(size=3000)), 0.0) == N


def test_all_of():
    assert v.all_of([R, R]) == R
    assert v.all_of([R, P]) == P
    assert v.all_of([R, P, I]) == I
    assert v.all_of([I, N, R]) == N
    with pytest.raises(ValueError, match="at least one"):
        v.all_of([])
    with pytest.raises(ValueError, match="not a verdict"):
        v.all_of([R, "sort of"])


# -- claims and the experiment's verdict -----------------------------------------------------
def _c(verdict, kind="reproduction"):
    return Claim("t", "p", "o", "tol", verdict, kind=kind)


@pytest.mark.parametrize("claims,expect", [
    ([_c(R), _c(R)], R), ([_c(N), _c(N)], N), ([_c(R), _c(N)], P), ([_c(R), _c(P)], P),
    ([_c(R), _c(I)], I), ([_c(I)], I), ([_c(I), _c(N)], P), ([], N),
    ([_c(R), _c(N, "measurement")], R),            # measurements never decide
    ([_c(R), _c(R, "property")], R),
    ([_c(R), _c(N, "property")], "failed"),        # a failed property is a bug
    ([_c(R, "property")], N),                      # properties alone reproduce nothing
])
def test_combine_verdicts(claims, expect):
    assert combine_verdicts(claims) == expect


def test_claim_checks_kind_and_verdict_and_fills_settle():
    with pytest.raises(ValueError, match="verdict must be one of"):
        _c("sort of")
    with pytest.raises(ValueError, match="kind must be one of"):
        _c(R, "opinion")
    assert _c(I).settle                     # an inconclusive claim says what would settle it
    assert Claim("t", "p", "o", "tol", I, settle="40 seeds").settle == "40 seeds"
    assert _c(R).settle == ""
