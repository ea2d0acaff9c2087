"""GPU speed and memory of attention in bf16: SDPA (FlashAttention) vs efflab vs public ports.

The same cases as ``benchmarks/attention.py`` (batch 1, 8 heads, head_dim 64, m = 256 Performer
features; Linformer at embed 512, k = 256), forward + backward, inputs in bf16 and every
mechanism under ``torch.autocast(bf16)`` (efflab's Performer accumulates in float32 inside).
Times are CUDA-event medians after warm-up; memory is ``max_memory_allocated`` growth over the
step. For each case it records the shortest length from which ours is faster than SDPA /
exact attention at every longer length measured (the crossover). Writes
``attention_gpu.json`` and ``attention_gpu.png`` into ``--out``.

    python benchmarks/attention_gpu.py --out benchmarks/results/attention_gpu

``--device cpu --dtype float32 --lengths 128 256`` runs the same code on a CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attention as shared  # noqa: E402  (benchmarks/attention.py: cases, steps, plot)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "float32": torch.float32}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(step, device: str) -> float:
    if device != "cuda":
        import time

        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000


def _memory(step, device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def run_case(case: str, n: int, device: str, dtype: torch.dtype, repeats: int, warmup: int,
             skip: set[str]) -> dict:
    entry: dict = {"time": {}, "memory": {}, "errors": {}}
    steps = {}
    for mech in shared.CASES[case]:
        if mech in skip:
            continue
        try:
            step = shared.make_step(case, mech, n, device, dtype)
            if step is None:
                entry["errors"][mech] = "peer not installed"
                continue
            for _ in range(warmup):
                step()
            _sync(device)
            steps[mech] = step
        except torch.cuda.OutOfMemoryError:
            entry["errors"][mech] = "out of memory"
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
    times: dict[str, list[float]] = {m: [] for m in steps}
    for _ in range(repeats):
        for mech, step in list(steps.items()):
            try:
                times[mech].append(_time(step, device))
            except torch.cuda.OutOfMemoryError:
                entry["errors"][mech] = "out of memory"
                steps.pop(mech)
    for mech, step in steps.items():
        entry["time"][mech] = {"median_s": statistics.median(times[mech]), "all_s": times[mech]}
        try:
            mib = _memory(step, device)
        except torch.cuda.OutOfMemoryError:
            mib = None
        if mib is not None:
            entry["memory"][mech] = {"peak_mib": mib}
    steps.clear()
    if device == "cuda":
        torch.cuda.empty_cache()
    return entry


def crossover(per_n: dict, ours: str, baseline: str) -> int | None:
    """Shortest n from which ``ours`` is faster than ``baseline`` at every longer n measured
    (where the baseline ran out of memory, ours counts as faster)."""
    best = None
    for n in sorted(per_n, key=int, reverse=True):
        t = per_n[n]["time"]
        if ours not in t:
            break
        if baseline in t and t[baseline]["median_s"] <= t[ours]["median_s"]:
            break
        best = int(n)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--lengths", type=int, nargs="+",
                   default=[1024, 2048, 4096, 8192, 16384, 32768, 65536])
    p.add_argument("--cases", nargs="+", default=list(shared.CASES), choices=list(shared.CASES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peer-causal-max", type=int, default=8192,
                   help="performer-pytorch's causal fallback holds (n, m, d) prefix sums")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for a smoke test")
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    results: dict = {}
    for case in args.cases:
        results[case] = {}
        for n in args.lengths:
            skip = {"performer-pytorch"} if case == "causal" and n > args.peer_causal_max else set()
            entry = run_case(case, n, args.device, dtype, args.repeats, args.warmup, skip)
            entry["skipped"] = sorted(skip)
            results[case][str(n)] = entry
            print(case, n, {m: round(v["median_s"] * 1000, 2) for m, v in entry["time"].items()},
                  "ms", entry["errors"] or "", flush=True)
    baseline = {"noncausal": "sdpa", "causal": "sdpa", "linformer": "torch-mha"}
    device_name = (torch.cuda.get_device_name() if args.device == "cuda"
                   else shared.machine()["cpu"])
    report = {
        "benchmark": "attention_gpu",
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"device": device_name, "torch": torch.__version__,
                    "cuda": torch.version.cuda},
        "setup": {"dtype": args.dtype, "autocast": dtype != torch.float32, "batch": 1,
                  "heads": shared.HEADS, "head_dim": shared.HEAD_DIM,
                  "performer_features": shared.FEATURES, "linformer_embed": shared.EMBED,
                  "linformer_k": shared.LINFORMER_K, "repeats": args.repeats,
                  "warmup": args.warmup, "step": "forward+backward",
                  "memory": "torch.cuda.max_memory_allocated growth over one step"},
        "results": results,
        "crossover_n": {case: crossover(results[case], "efflab", baseline[case])
                        for case in results},
    }
    from efflab.io import atomic_write_json

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "attention_gpu.json", report)
    shared.plot(results, args.out / "attention_gpu.png",
                title=f"attention on {device_name} ({args.dtype}, batch 1, 8 heads, head_dim 64, "
                      f"m=256, Linformer k=256)", memory_label="peak allocated growth (MiB)")
    print("crossover n (ours faster than SDPA / exact from here on):", report["crossover_n"])


if __name__ == "__main__":
    main()
