"""Speed, memory and utilization of attention against sequence length (``efflab bench attention``).

What is compared, all forward + backward (batch 1, 8 heads, head_dim 64, m = 256 FAVOR+
features; Linformer at embed 512, k = 256, as in Performer Sec. 4 and Linformer Sec. 5):

* case ``noncausal`` (q/k/v level): ``sdpa`` (``F.scaled_dot_product_attention``), ``favor``
  (efflab ``PerformerAttention``), ``performer-pytorch`` (its ``FastAttention``);
* case ``causal``: the same three, causal (SDPA ``is_causal``), and ``favor-prefix-sum``, the
  earlier fused causal path of efflab (``favor_attention(causal_algorithm="prefix-sum")``), so
  that old and new are timed in one run;
* case ``linformer`` (block level): ``mha`` (exact ``torch.nn.MultiheadAttention``),
  ``linformer`` (efflab ``MultiheadAttention("linformer")``), ``linformer-pkg`` (the
  ``linformer`` package's ``LinformerSelfAttention``).

The peers come from the optional extra ``efflab[peers]``; one that cannot be imported is
recorded as missing. Every figure of a run is taken in that run: the mechanisms of one length
are timed interleaved (``efflab.measure.timing.interleaved_times``: rounds, order rotated), the
machine's load is sampled after every timed call, and the matmul peak (``efflab.measure.peak``)
is timed at the start and at the end of the run; utilization is achieved FLOP/s (the
formulas in :data:`FLOP_FORMULAS`, useful FLOPs) over the better of the two peaks.

Memory is measured on a step of the same module: on the CPU the peak-RSS growth of a fresh
process (``efflab.measure.memory.cpu_peak_growth``), on CUDA the allocator's peak growth.
Scaling is summarised by the least-squares slope of log time (log memory) against log n:
1 for linear, 2 for quadratic.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from efflab.measure.load import LoadSampler, load_reasons
from efflab.measure.machine import machine_info, usable_cores
from efflab.measure.memory import cpu_peak_growth, cuda_peak_growth
from efflab.measure.peak import matmul_peak
from efflab.measure.report import is_out_of_memory
from efflab.measure.steps import make_train_step
from efflab.measure.timing import interleaved_times, synchronizer, time_fn

HEADS, HEAD_DIM, FEATURES, EMBED, LINFORMER_K = 8, 64, 256, 512, 256

#: case -> (baseline, efflab mechanism, peer); the baseline is what every ratio is taken to
CASES: dict[str, tuple[str, ...]] = {
    "noncausal": ("sdpa", "favor", "performer-pytorch"),
    "causal": ("sdpa", "favor", "performer-pytorch", "favor-prefix-sum"),
    "linformer": ("mha", "linformer", "linformer-pkg"),
}
MECHANISMS = ("sdpa", "favor", "performer-pytorch", "favor-prefix-sum", "mha", "linformer",
              "linformer-pkg")
QUADRATIC = ("sdpa", "mha")
PEERS = ("performer-pytorch", "linformer-pkg")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

#: useful FLOPs of one forward + backward, per batch element; a product of an (a x b) and a
#: (b x c) matrix counts 2abc, the backward of a product is two products (2x the forward);
#: element-wise work (feature exponentials, softmax, normalizers) is not counted
FLOP_FORMULAS = {
    "favor": "heads * 3 * 4 * 2nmd: forward = four n x m x d products per head (q and k "
             "features q W^T, k W^T; phi(K)^T V; phi(Q) (phi(K)^T V)), backward twice that; "
             "the same count for the causal form (prefix sums; within-chunk terms not counted)",
    "performer-pytorch": "as favor (the same algorithm)",
    "favor-prefix-sum": "as favor (causal only: the earlier fused path on whole feature "
                        "matrices, kept to time old against new in one run)",
    "sdpa": "heads * 3 * 2 * 2n^2 d: forward = QK^T and PV (n x n x d each), backward twice "
            "that; causal: half (the masked upper triangle is not useful work)",
    "linformer": "3 * (8ne^2 + 8nke): forward = q, k, v and output projections (4 n x e x e), "
                 "E K and F V (2 k x n x e), QK'^T and PV' over all heads (2 n x k x e), "
                 "backward twice that",
    "linformer-pkg": "as linformer (the same products)",
    "mha": "3 * (8ne^2 + 4n^2 e): the four projections and QK^T, PV over all heads, "
           "backward twice that",
}


def flops(mech: str, n: int, causal: bool = False, *, heads: int = HEADS,
          head_dim: int = HEAD_DIM, features: int = FEATURES, embed: int = EMBED,
          k: int = LINFORMER_K) -> float:
    """Useful FLOPs of one forward + backward of ``mech`` at length ``n`` (batch 1); see
    :data:`FLOP_FORMULAS`."""
    if mech not in MECHANISMS:
        raise ValueError(f"mech must be one of {MECHANISMS}, got {mech!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if mech in ("favor", "performer-pytorch", "favor-prefix-sum"):
        return heads * 3 * 4 * 2.0 * n * features * head_dim
    if mech == "sdpa":
        return heads * 3 * 2 * 2.0 * n * n * head_dim * (0.5 if causal else 1.0)
    if mech in ("linformer", "linformer-pkg"):
        return 3 * (8.0 * n * embed**2 + 8.0 * n * k * embed)
    return 3 * (8.0 * n * embed**2 + 4.0 * n * n * embed)


def utilization(flop_count: float, seconds: float, peak_flop_per_s: float) -> float:
    """Achieved FLOP/s (``flop_count / seconds``) as a fraction of the matmul peak."""
    if seconds <= 0 or peak_flop_per_s <= 0:
        raise ValueError(f"seconds and peak_flop_per_s must be > 0, got seconds={seconds}, "
                         f"peak_flop_per_s={peak_flop_per_s}")
    return flop_count / seconds / peak_flop_per_s


def loglog_slope(ns: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) against log(n): 1 for linear growth, 2 for
    quadratic; ``None`` with fewer than two distinct lengths or a non-positive value."""
    pts = [(float(n), float(v)) for n, v in zip(ns, values) if v is not None]
    if len({n for n, _ in pts}) < 2 or any(n <= 0 or v <= 0 for n, v in pts):
        return None
    x, y = np.log([n for n, _ in pts]), np.log([v for _, v in pts])
    return float(np.polyfit(x, y, 1)[0])


def crossover(per_n: dict[int, dict[str, float | None]], mech: str,
              baseline: str) -> int | None:
    """Shortest n from which ``mech`` is faster than ``baseline`` at every longer n measured
    (``per_n``: n -> {mechanism: seconds}); where the baseline did not run (too long, out of
    memory) ``mech`` counts as faster. ``None`` if it is not faster at the longest n."""
    best = None
    for n in sorted(per_n, reverse=True):
        t = per_n[n]
        if t.get(mech) is None:
            break
        if t.get(baseline) is not None and t[baseline] <= t[mech]:
            break
        best = n
    return best


# -- the work ------------------------------------------------------------------------------
class _Quiet:
    """performer-pytorch prints a warning when it builds its causal CPU path."""

    def __enter__(self) -> None:
        self._stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115

    def __exit__(self, *exc: object) -> None:
        sys.stdout.close()
        sys.stdout = self._stdout


class SDPA(nn.Module):
    """``F.scaled_dot_product_attention`` as a module (so the memory probe can ship it)."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


class PrefixSumFavor(nn.Module):
    """Causal FAVOR+ by the earlier fused prefix-sum path (``causal_algorithm="prefix-sum"``)
    with the projection of ``performer``: the old side of the old-against-new timing."""

    def __init__(self, performer: nn.Module) -> None:
        super().__init__()
        self.performer = performer

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from efflab.attention import favor_attention

        p = self.performer
        return favor_attention(q, k, v, p.projection, causal=True, chunk_size=p.chunk_size,
                               causal_algorithm="prefix-sum")


class SelfAttention(nn.Module):
    """``torch.nn.MultiheadAttention`` used as self-attention, returning only the output."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


class AttentionStep(nn.Module):
    """One mechanism with its inputs held as parameters, so that a training step (forward,
    mean-square loss, backward, gradients released) computes the gradients of the inputs
    too, as attention inside a network does; a half ``dtype`` runs under autocast (SDPA then
    gets FlashAttention where the device has it)."""

    def __init__(self, mechanism: nn.Module, inputs: tuple[torch.Tensor, ...],
                 dtype: torch.dtype) -> None:
        super().__init__()
        self.mechanism = mechanism
        self.inputs = nn.ParameterList([nn.Parameter(x) for x in inputs])
        self.autocast = dtype in (torch.float16, torch.bfloat16)
        self.dtype = dtype

    def forward(self) -> torch.Tensor:
        device_type = self.inputs[0].device.type
        with torch.autocast(device_type, dtype=self.dtype, enabled=self.autocast):
            return self.mechanism(*self.inputs)


def build(case: str, mech: str, n: int, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32) -> AttentionStep | None:
    """The :class:`AttentionStep` of ``mech`` in ``case`` at length ``n`` (inputs drawn with
    seed 0), or ``None`` when the peer package is not installed. Modules stay float32; the
    inputs are made in ``dtype``."""
    if mech not in CASES.get(case, ()):
        raise ValueError(f"mechanism {mech!r} is not part of case {case!r} "
                         f"(case {case!r} has {CASES.get(case)})")
    from efflab.attention import MultiheadAttention, PerformerAttention

    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    causal = case == "causal"
    if case in ("noncausal", "causal"):
        inputs = tuple(torch.randn(1, HEADS, n, HEAD_DIM, generator=gen).to(device, dtype)
                       for _ in range(3))
        if mech == "sdpa":
            module: nn.Module = SDPA(causal)
        elif mech == "favor":
            module = PerformerAttention(HEAD_DIM, FEATURES, causal=causal)
        elif mech == "favor-prefix-sum":
            module = PrefixSumFavor(PerformerAttention(HEAD_DIM, FEATURES, causal=True))
        else:
            try:
                with _Quiet():
                    from performer_pytorch import FastAttention
                    module = FastAttention(HEAD_DIM, FEATURES, causal=causal)
            except ImportError:
                return None
    else:
        inputs = (torch.randn(1, n, EMBED, generator=gen).to(device, dtype),)
        if mech == "mha":
            module = SelfAttention(nn.MultiheadAttention(EMBED, HEADS, batch_first=True))
        elif mech == "linformer":
            # k <= n: at a tiny smoke length the projection cannot be longer than the sequence
            module = MultiheadAttention(EMBED, HEADS, "linformer", max_seq_len=n,
                                        k=min(LINFORMER_K, n))
        else:
            try:
                from linformer import LinformerSelfAttention
            except ImportError:
                return None
            module = LinformerSelfAttention(EMBED, n, k=min(LINFORMER_K, n), heads=HEADS)
    return AttentionStep(module.to(device), inputs, dtype)


def make_step(case: str, mech: str, n: int, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> Callable[[], Any] | None:
    """A closure running one forward + backward of ``mech`` at length ``n`` (see
    :func:`build`), or ``None`` when the peer is missing."""
    bench = build(case, mech, n, device, dtype)
    return None if bench is None else make_train_step(bench, ())


# -- one run -------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    """What ``efflab bench attention`` runs (checked by the CLI before any work)."""

    lengths: list[int]
    cases: list[str]
    mechanisms: list[str] = field(default_factory=lambda: list(MECHANISMS))
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    repeats: int = 3
    warmup_max: int = 4096          # one untimed call first only up to this n (CPU)
    sdpa_max: int = 16384           # longest n for the quadratic baselines (sdpa, mha)
    peer_causal_max: int = 4096     # performer-pytorch causal holds (n, m, d) prefix sums
    memory: bool = True
    memory_timeout_s: float = 600.0
    peak_n: int | None = None       # matmul size for the peak (default 2048 CPU, 8192 GPU)


def _skipped(cfg: BenchConfig, case: str, mech: str, n: int) -> str | None:
    if mech in QUADRATIC and n > cfg.sdpa_max:
        return f"n > --sdpa-max {cfg.sdpa_max}"
    if mech == "favor-prefix-sum" and n > cfg.sdpa_max:
        return f"n > --sdpa-max {cfg.sdpa_max} (the old path, timed where the baselines are)"
    if case == "causal" and mech == "performer-pytorch" and n > cfg.peer_causal_max:
        return f"n > peer-causal-max {cfg.peer_causal_max} (its CPU path holds (n, m, d))"
    return None


def _peak(device: torch.device, dtype: torch.dtype, n: int) -> dict[str, float]:
    size, rate = matmul_peak(device, dtype, n=n, repeats=3)
    return {"n": size, "flop_per_s": rate}


def _memory(bench: AttentionStep, step: Callable[[], Any], device: torch.device,
            timeout_s: float) -> dict[str, Any]:
    try:
        if device.type == "cuda":
            return {"peak_mib": cuda_peak_growth(step, device) / 2**20,
                    "method": "cuda: max_memory_allocated growth over the step"}
        pm = cpu_peak_growth(bench, (), "train_step", timeout_s=timeout_s)
    except Exception as e:  # noqa: BLE001 - an out-of-memory is a result, not a crash
        if not is_out_of_memory(e):
            raise
        return {"peak_mib": None, "error": "out of memory"}
    if pm.bytes is None:
        return {"peak_mib": None, "error": pm.note}
    return {"peak_mib": pm.bytes / 2**20, "method": pm.method}


def _time_one_by_one(steps: dict[str, Callable[[], Any]], repeats: int,
                     sync: Callable[[], None], sampler: LoadSampler,
                     errors: dict[str, str]) -> dict[str, Any]:
    """Fallback after an out-of-memory in the interleaved rounds (a GPU holding the caches
    of several mechanisms): each mechanism alone, one out-of-memory recorded per mechanism."""
    timings = {}
    for mech, step in steps.items():
        try:
            timings[mech] = time_fn(step, warmup=0, repeats=repeats, sync=sync,
                                    sampler=sampler)
        except Exception as e:  # noqa: BLE001
            if not is_out_of_memory(e):
                raise
            errors[mech] = "out of memory"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return timings


def run_length(cfg: BenchConfig, case: str, n: int, sampler: LoadSampler) -> dict[str, Any]:
    """Time (and measure the memory of) every selected mechanism of ``case`` at length ``n``."""
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    sync = synchronizer(device)
    entry: dict[str, Any] = {"time": {}, "memory": {}, "missing": [], "skipped": {},
                             "errors": {}}
    benches: dict[str, AttentionStep] = {}
    steps: dict[str, Callable[[], Any]] = {}
    warm = device.type == "cuda" or n <= cfg.warmup_max
    for mech in CASES[case]:
        if mech not in cfg.mechanisms:
            continue
        why = _skipped(cfg, case, mech, n)
        if why:
            entry["skipped"][mech] = why
            continue
        try:
            bench = build(case, mech, n, device, dtype)
            if bench is None:
                entry["missing"].append(mech)
                continue
            step = make_train_step(bench, ())
            if warm:  # one untimed call (also finds an out-of-memory before the timing)
                time_fn(step, warmup=0, repeats=1, sync=sync)
        except Exception as e:  # noqa: BLE001 - record it, keep the other mechanisms
            if not is_out_of_memory(e):
                raise
            entry["errors"][mech] = "out of memory"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        benches[mech], steps[mech] = bench, step
    if steps:
        try:
            timings = interleaved_times(steps, rounds=cfg.repeats, repeats=1, warmup=0,
                                        sync=sync, sampler=sampler)
        except Exception as e:  # noqa: BLE001 - the mechanisms together did not fit
            if not is_out_of_memory(e):
                raise
            timings = _time_one_by_one(steps, cfg.repeats, sync, sampler, entry["errors"])
        for mech, t in timings.items():
            entry["time"][mech] = {"median_s": t.median_s, "min_s": t.min_s,
                                   "spread": t.spread, "all_s": t.times_s}
    if cfg.memory:
        for mech, bench in benches.items():
            entry["memory"][mech] = _memory(bench, steps[mech], device, cfg.memory_timeout_s)
    benches.clear()
    steps.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return entry


def summarize(results: dict[str, dict[int, dict[str, Any]]], peak_flop_per_s: float
              ) -> dict[str, Any]:
    """Per case and mechanism: ratio to the baseline (and, for efflab's mechanism, to the
    public port of the same method where it was timed) and utilization at every n, fitted
    slopes of log time and log memory against log n, and the crossover length."""
    out: dict[str, Any] = {}
    for case, per_n in results.items():
        baseline, ours, peer = CASES[case][:3]
        times = {n: {m: v["median_s"] for m, v in e["time"].items()} for n, e in per_n.items()}
        mems = {n: {m: v.get("peak_mib") for m, v in e["memory"].items()}
                for n, e in per_n.items()}
        mechs = [m for m in CASES[case] if any(m in t for t in times.values())]
        case_out: dict[str, Any] = {"baseline": baseline, "peer": peer, "mechanisms": {}}
        for mech in mechs:
            rows = []
            for n in sorted(per_n):
                t = times[n].get(mech)
                if t is None:
                    continue
                base = times[n].get(baseline)
                other = times[n].get(peer) if mech == ours else None
                f = flops(mech, n, case == "causal")
                rows.append({"n": n, "median_s": t, "ratio_to_baseline":
                             None if base is None else t / base,
                             "ratio_to_peer": None if other is None else t / other,
                             "gflop": f / 1e9, "gflop_per_s": f / t / 1e9,
                             "utilization": utilization(f, t, peak_flop_per_s),
                             "peak_mib": mems[n].get(mech)})
            case_out["mechanisms"][mech] = {
                "per_n": rows,
                "time_slope": loglog_slope([r["n"] for r in rows],
                                           [r["median_s"] for r in rows]),
                "memory_slope": loglog_slope([r["n"] for r in rows if r["peak_mib"]],
                                             [r["peak_mib"] for r in rows if r["peak_mib"]]),
                "crossover_n": None if mech == baseline else crossover(times, mech, baseline),
            }
        out[case] = case_out
    return out


def run(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole benchmark: the report as plain data (see the module docstring)."""
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    torch.set_num_threads(cfg.threads)
    peak_n = cfg.peak_n or (2048 if device.type == "cpu" else 8192)
    sampler = LoadSampler(usable_cores(), cfg.threads).start()
    peaks = [_peak(device, dtype, peak_n)]
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for case in cfg.cases:
        results[case] = {}
        for n in cfg.lengths:
            entry = run_length(cfg, case, n, sampler)
            results[case][n] = entry
            if progress is not None:
                progress(f"{case} n={n}: " + ", ".join(
                    f"{m} {v['median_s']:.3g} s" for m, v in entry["time"].items()))
    peaks.append(_peak(device, dtype, peak_n))
    load = sampler.stop()
    peak = max(p["flop_per_s"] for p in peaks)
    return {
        "benchmark": "attention",
        "date_utc": machine_info(device, dtype)["date_utc"],
        "machine": machine_info(device, dtype),
        "torch_version": torch.__version__,
        "threads": cfg.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default: active)"),
        "load": load.summary(),
        # a busy machine (more runnable tasks than cores) makes every timing, the peak too,
        # unreliable: utilization can even exceed 1 when the peak's GEMM was the unlucky one
        "unreliable": load_reasons(load),
        "config": asdict(cfg),
        "setup": {"batch": 1, "heads": HEADS, "head_dim": HEAD_DIM, "features": FEATURES,
                  "linformer_embed": EMBED, "linformer_k": LINFORMER_K,
                  "step": "forward + mean-square loss + backward (gradients of inputs and "
                          "weights), interleaved rounds, medians"},
        "matmul_peak": {"runs": peaks, "flop_per_s": peak,
                        "note": "best of 3 calls of an n x n GEMM, at the start and at the "
                                "end of the run; utilization uses the better one"},
        "flop_formulas": FLOP_FORMULAS,
        "results": {case: {str(n): e for n, e in per_n.items()}
                    for case, per_n in results.items()},
        "summary": summarize(results, peak),
    }


# -- presentation --------------------------------------------------------------------------
def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(report: dict[str, Any]) -> str:
    """The printed table: time, ratio to the baseline, GFLOP/s, utilization, memory."""
    peak = report["matmul_peak"]["flop_per_s"]
    lines = [f"matmul peak {peak / 1e9:.1f} GFLOP/s ({report['machine']['device_name']}, "
             f"{report['config']['dtype']}, {report['threads']} thread(s)); "
             f"load {report['load']['loadavg_before']} -> {report['load']['loadavg_after']}"]
    lines += [f"UNRELIABLE timings: {why}" for why in report["unreliable"]]
    for case, cs in report["summary"].items():
        lines.append(f"\n{case} (ratios to {cs['baseline']}; x peer: to {cs['peer']})")
        lines.append(f"{'mechanism':<18} {'n':>7} {'time s':>9} {'x base':>7} {'x peer':>7} "
                     f"{'GFLOP/s':>8} {'util':>6} {'MiB':>8}")
        for mech, ms in cs["mechanisms"].items():
            for r in ms["per_n"]:
                lines.append(f"{mech:<18} {r['n']:>7} {_fmt(r['median_s']):>9} "
                             f"{_fmt(r['ratio_to_baseline'], '.2f'):>7} "
                             f"{_fmt(r.get('ratio_to_peer'), '.2f'):>7} "
                             f"{_fmt(r['gflop_per_s'], '.1f'):>8} "
                             f"{_fmt(r['utilization'], '.1%'):>6} "
                             f"{_fmt(r['peak_mib'], '.0f'):>8}")
            line = (f"{'':<18} slope of log time {_fmt(ms['time_slope'], '.2f')}, "
                    f"of log memory {_fmt(ms['memory_slope'], '.2f')}")
            if mech != cs["baseline"]:
                line += (f"; faster than {cs['baseline']} from n = {ms['crossover_n']} on"
                         if ms["crossover_n"] else
                         f"; not faster than {cs['baseline']} at the longest n")
            lines.append(line)
        notes: dict[str, set[str]] = {}
        for e in report["results"][case].values():
            for mech in e["missing"]:
                notes.setdefault(mech, set()).add("not installed (pip install 'efflab[peers]')")
            for mech, why in {**e["skipped"], **e["errors"]}.items():
                notes.setdefault(mech, set()).add(why)
        for mech, why in notes.items():
            lines.append(f"{mech}: {'; '.join(sorted(why))}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: os.PathLike | str) -> None:
    """Log-log plot: time (top) and memory (bottom) against n per case, fitted slopes in the
    legend; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from efflab.io import atomic_save

    cases = list(report["summary"])
    fig, axes = plt.subplots(2, max(1, len(cases)), figsize=(4.8 * max(1, len(cases)), 8),
                             squeeze=False)
    for col, case in enumerate(cases):
        for row, (key, slope, label) in enumerate(
                (("median_s", "time_slope", "forward + backward (s)"),
                 ("peak_mib", "memory_slope", "peak memory growth (MiB)"))):
            ax = axes[row, col]
            for mech, ms in report["summary"][case]["mechanisms"].items():
                pts = [(r["n"], r[key]) for r in ms["per_n"] if r[key]]
                if pts:
                    ax.plot(*zip(*pts), marker="o",
                            label=f"{mech} (slope {_fmt(ms[slope], '.2f')})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{case}: {label}")
            ax.set_xlabel("sequence length n")
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"attention, {m['device_name']}, {report['config']['dtype']}, "
                 f"{report['threads']} thread(s), torch {report['torch_version']}, "
                 f"{report['date_utc']}", fontsize=10)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
