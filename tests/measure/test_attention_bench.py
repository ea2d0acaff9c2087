"""efflab.measure.attention_bench: FLOP formulas, utilization, log-log slopes, crossover, the
mechanisms it times (no timed assertions: speed lives in the benchmark's JSON)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from efflab.attention import PerformerAttention
from efflab.measure import attention_bench as ab


def test_favor_flops_match_the_issue_count_and_utilization_arithmetic():
    # four n x m x d products per head forward, twice that backward: 24 n m d per head
    f = ab.flops("favor", 16384)
    assert f == 8 * 24 * 16384 * 256 * 64
    assert f / 1e9 == pytest.approx(51.54, abs=0.01)
    # 51.5 GFLOP in 1.12 s against a 160 GFLOP/s peak: 46 GFLOP/s, 29 % of the peak
    assert ab.utilization(f, 1.12, 160e9) == pytest.approx(0.2876, abs=1e-3)
    assert ab.flops("performer-pytorch", 4096) == ab.flops("favor", 4096, causal=True)


def test_quadratic_and_linformer_flop_formulas():
    n, d, h, e, k = 1024, 64, 8, 512, 256
    assert ab.flops("sdpa", n) == h * 12 * n * n * d
    assert ab.flops("sdpa", n, causal=True) == ab.flops("sdpa", n) / 2
    assert ab.flops("linformer", n) == 3 * (8 * n * e * e + 8 * n * k * e)
    assert ab.flops("mha", n) == 3 * (8 * n * e * e + 4 * n * n * e)
    assert ab.flops("linformer-pkg", n) == ab.flops("linformer", n)
    # doubling n: linear mechanisms double, the quadratic term quadruples
    assert ab.flops("favor", 2 * n) == 2 * ab.flops("favor", n)
    assert ab.flops("sdpa", 2 * n) == 4 * ab.flops("sdpa", n)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mech must be one of"):
        ab.flops("flash", 16)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        ab.flops("favor", 0)
    with pytest.raises(ValueError, match="seconds"):
        ab.utilization(1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="not part of case"):
        ab.build("linformer", "sdpa", 16)


def test_loglog_slope_on_synthetic_data():
    ns = [1024 * 2**i for i in range(8)]
    assert ab.loglog_slope(ns, [3e-6 * n for n in ns]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noisy = [2e-9 * n**2 * math.exp(rng.normal(0, 0.05)) for n in ns]
    assert ab.loglog_slope(ns, noisy) == pytest.approx(2.0, abs=0.05)
    # a constant cost plus a linear one bends the fit below 1 at short lengths
    assert ab.loglog_slope(ns[:3], [1.0 + 1e-6 * n for n in ns[:3]]) < 0.1
    assert ab.loglog_slope([1024], [1.0]) is None
    assert ab.loglog_slope([1024, 2048, 4096], [1.0, None, 16.0]) == pytest.approx(2.0)
    assert ab.loglog_slope([1024, 2048], [1.0, 0.0]) is None


def test_crossover_is_the_length_from_which_a_mechanism_stays_faster():
    times = {1024: {"sdpa": 1.0, "favor": 2.0}, 2048: {"sdpa": 3.0, "favor": 2.5},
             4096: {"sdpa": 4.0, "favor": 5.0}, 8192: {"sdpa": 20.0, "favor": 10.0},
             16384: {"favor": 20.0}}  # sdpa not run: counts as slower
    assert ab.crossover(times, "favor", "sdpa") == 8192
    times[4096]["favor"] = 3.9
    assert ab.crossover(times, "favor", "sdpa") == 2048
    times[16384] = {"sdpa": 19.0, "favor": 20.0}
    assert ab.crossover(times, "favor", "sdpa") is None


def test_the_timed_modules_compute_attention_and_its_input_gradients():
    bench = ab.build("causal", "sdpa", 32)
    q, k, v = bench.inputs
    assert torch.equal(bench(), F.scaled_dot_product_attention(q, k, v, is_causal=True))
    favor = ab.build("noncausal", "favor", 32)
    assert isinstance(favor.mechanism, PerformerAttention) and not favor.mechanism.causal
    block = ab.build("linformer", "linformer", 32)
    assert block().shape == (1, 32, ab.EMBED)
    favor().square().mean().backward()
    # the inputs are parameters: the step computes their gradients, as inside a network
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in favor.inputs)
    again = ab.build("noncausal", "favor", 32)  # same seed, same inputs
    assert all(torch.equal(a.detach(), b.detach()) for a, b in zip(favor.inputs, again.inputs))


def test_a_missing_peer_is_none_not_an_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_peers(name, *args, **kwargs):
        if name in ("performer_pytorch", "linformer"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peers)
    assert ab.build("noncausal", "performer-pytorch", 16) is None
    assert ab.make_step("linformer", "linformer-pkg", 16) is None


def test_the_old_causal_path_times_the_same_attention_as_the_new():
    # favor-prefix-sum is the old side of the old-against-new timing: same inputs, same
    # projection, the same attention up to rounding
    new, old = ab.build("causal", "favor", 40), ab.build("causal", "favor-prefix-sum", 40)
    assert all(torch.equal(a, b) for a, b in zip(new.inputs, old.inputs))
    old.mechanism.performer.projection.copy_(new.mechanism.projection)  # each module draws its own
    torch.testing.assert_close(new(), old(), rtol=1e-4, atol=1e-5)
    assert ab.flops("favor-prefix-sum", 40, True) == ab.flops("favor", 40, True)
    cfg = ab.BenchConfig(lengths=[64], cases=["causal"], sdpa_max=32)
    assert "sdpa-max" in ab._skipped(cfg, "causal", "favor-prefix-sum", 64)


def test_summary_gives_efflab_against_the_peer_in_the_same_rounds():
    def entry(times):
        return {"time": {m: {"median_s": t} for m, t in times.items()}, "memory": {}}

    results = {"linformer": {1024: entry({"mha": 2.0, "linformer": 0.5, "linformer-pkg": 1.25}),
                             2048: entry({"mha": 8.0, "linformer": 1.0})}}
    rows = {m: ms["per_n"] for m, ms in
            ab.summarize(results, 1e10)["linformer"]["mechanisms"].items()}
    assert rows["linformer"][0]["ratio_to_peer"] == 0.4
    assert rows["linformer"][0]["ratio_to_baseline"] == 0.25
    assert rows["linformer"][1]["ratio_to_peer"] is None      # the peer was not timed there
    assert rows["mha"][0]["ratio_to_peer"] is None            # only efflab's mechanism
    assert rows["linformer-pkg"][0]["ratio_to_peer"] is None
