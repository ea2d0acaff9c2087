"""Utilization against the measured matmul peak, the per-module table, causal useful FLOPs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from efflab.measure import (
    MachinePeak,
    causal_fraction,
    count_flops,
    machine_peak,
    measure,
    module_costs,
    utilization,
)
from efflab.models import create_model


def test_utilization_is_flops_over_time_over_the_peak():
    peak = MachinePeak("cpu", "float32", 1, 1024, matmul_flop_per_s=1e10, copy_bytes=1,
                       copy_bytes_per_s=1e9)
    u = utilization(flops=2e9, median_s=0.5, min_s=0.25, min_bytes=10**6, peak=peak)
    assert u.flop_per_s == 4e9 and u.mfu == pytest.approx(0.4)
    assert u.mfu_best == pytest.approx(0.8)
    assert u.arithmetic_intensity == 2000 and not u.memory_bound  # ridge is 10 FLOP/B
    v = utilization(flops=1e6, median_s=1e-3, min_s=1e-3, min_bytes=10**6, peak=peak)
    assert v.memory_bound and v.bandwidth_utilization == pytest.approx(1.0)


@pytest.mark.slow
def test_one_large_matmul_runs_near_the_peak_and_an_mlp_below_it():
    # the only test that compares two clocks: both figures are best-of repeats of the same
    # GEMM shape taken moments apart, so load slows both; the band is wide for a shared VM
    n = 512
    model = nn.Linear(n, n, bias=False)
    # the peak is cached per process: take it afresh now, not from an earlier test that ran
    # under another load (a stale peak from a busy moment gave 2.6 here)
    machine_peak("cpu", torch.float32, refresh=True)
    r = measure(model, torch.randn(n, n), repeats=5, warmup=1, memory=False, modules=False,
                batch_sizes=[n])
    assert r.peak is not None and r.peak.threads == 1 and r.peak.matmul_flop_per_s > 0
    assert r.flops_forward.total == 2 * n**3
    assert 0.3 < r.utilization_inference.mfu_best < 2.0
    mlp = measure(create_model("mlp", in_features=64, width=64, depth=2), torch.randn(8, 64),
                  repeats=3, warmup=1, memory=False, modules=False)
    assert 0 < mlp.utilization_inference.mfu < 1.0
    assert 0 < mlp.utilization_train_step.mfu < 1.0
    assert machine_peak("cpu", torch.float32) is r.peak  # measured once per process


def test_module_table_splits_forward_and_backward_and_sums_to_the_whole():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    rows = {r.name: r for r in module_costs(model, (torch.randn(5, 4),))}
    first, last = rows["Sequential.0"], rows["Sequential.2"]
    assert first.flops_forward == 2 * 5 * 4 * 8
    assert first.flops_backward == 2 * 5 * 4 * 8  # weight gradient only: input needs none
    assert last.flops_forward == 2 * 5 * 8 * 3 and last.flops_backward == 2 * 2 * 5 * 8 * 3
    whole = rows["Sequential"]
    assert whole.flops_forward == first.flops_forward + last.flops_forward
    assert whole.flops_backward == first.flops_backward + last.flops_backward
    assert first.params == 4 * 8 + 8 and rows["Sequential.1"].params == 0
    # saved for backward: Linear 0 its input (5x4), ReLU its output (5x8), Linear 2 its input
    assert first.activation_bytes == 5 * 4 * 4
    assert rows["Sequential.1"].activation_bytes == 5 * 8 * 4
    assert whole.activation_bytes == (5 * 4 + 5 * 8) * 4  # ReLU output = Linear 2 input


def test_a_module_run_twice_leaves_its_backward_to_the_parent():
    model = create_model("transformer_classifier", vocab_size=16, num_classes=2, max_seq_len=8,
                         embed_dim=16, depth=3, num_heads=2, mlp_dim=32, pad_id=None,
                         share_layers=True)
    rows = module_costs(model, (torch.randint(1, 16, (2, 8)),))
    shared = [r for r in rows if r.calls > 1 and r.flops_forward > 0]
    assert shared and all(r.flops_backward is None for r in shared)
    root = rows[0]
    _, train = count_flops(lambda: model(torch.randint(1, 16, (2, 8))).square().mean()
                           .backward())
    assert root.flops_forward + root.flops_backward == train.total


def test_causal_attention_reports_what_runs_and_the_useful_triangle():
    assert causal_fraction(4, 4) == pytest.approx(10 / 16)
    assert causal_fraction(2, 6) == pytest.approx(3 / 12)
    q = torch.randn(2, 3, 16, 8)
    _, full = count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    _, causal = count_flops(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
    assert causal.total == full.total == 2 * 2 * 3 * 16 * 16 * (8 + 8)
    assert causal.useful_total == pytest.approx(full.total * 136 / 256, abs=1)
    assert full.useful_total == full.total and causal.causal_attention_calls == 1
    lm = create_model("transformer_lm", vocab_size=32, max_seq_len=8, embed_dim=16, depth=1,
                      num_heads=2, mlp_dim=32, pad_id=None)
    r = measure(lm, torch.randint(0, 32, (2, 8)), repeats=1, warmup=0, memory=False,
                peak=False, modules=False)
    assert r.flops_forward.useful_total < r.flops_forward.total
    assert "useful (causal triangle)" in r.table()
