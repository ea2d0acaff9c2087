"""Speed and memory of attention against sequence length: SDPA, efflab, public ports.

Times forward + backward (fp32, batch 1, 8 heads, head_dim 64, m = 256 Performer features,
Linformer at embed 512 / k = 256) for

* ``noncausal``: SDPA vs efflab ``PerformerAttention`` vs performer-pytorch ``FastAttention``;
* ``causal``:    SDPA(is_causal) vs efflab causal Performer vs performer-pytorch causal
  (its CPU path holds the (n, m, d) prefix sums, so it is only run up to ``--peer-causal-max``);
* ``linformer``: exact ``torch.nn.MultiheadAttention`` vs efflab ``MultiheadAttention
  ("linformer")`` vs the ``linformer`` package's ``LinformerSelfAttention`` (block level).

All in one run, with the thread count fixed, one warm-up call where it is cheap, the
mechanisms alternated inside each repeat, and medians. Peak memory on the CPU is the growth
of the peak resident set of a fresh process over the step (``/proc/self/clear_refs``). Peers
come from the optional extra ``efflab[peers]``; a peer that cannot be imported is recorded as
missing. Writes ``attention_cpu.json`` and ``attention_cpu.png`` into ``--out``.

    python benchmarks/attention.py --out benchmarks/results/attention_cpu_t1 --threads 1
    OMP_WAIT_POLICY=PASSIVE python benchmarks/attention.py --threads 2 \
        --out benchmarks/results/attention_cpu_t2_passive

On a CPU shared with other jobs, OpenMP's default (active) wait policy lets idle worker
threads spin and take the core the main thread needs between parallel regions; code made of
many tensor ops (FAVOR+'s chunked scan, performer-pytorch) then slows down several times
while one big op (SDPA) barely notices. ``OMP_WAIT_POLICY=PASSIVE`` (recorded in the JSON)
removes that artifact for every mechanism alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HEADS, HEAD_DIM, FEATURES, EMBED, LINFORMER_K = 8, 64, 256, 512, 256
CASES = {
    "noncausal": ("sdpa", "efflab", "performer-pytorch"),
    "causal": ("sdpa", "efflab", "performer-pytorch"),
    "linformer": ("torch-mha", "efflab", "linformer"),
}


def make_step(case: str, mech: str, n: int, device: str = "cpu",
              dtype: torch.dtype = torch.float32):
    """A closure running one forward + backward of ``mech`` at length ``n``, or None when the
    peer package is missing. Inputs and modules are built once, outside the closure. Inputs
    are made in ``dtype``; modules stay float32 and, for a half ``dtype``, run under
    ``torch.autocast`` (SDPA then gets bf16 and FlashAttention where there is one)."""
    import torch.nn.functional as F

    from efflab.attention import MultiheadAttention, PerformerAttention

    gen = torch.Generator(device="cpu").manual_seed(0)
    causal = case == "causal"
    if case in ("noncausal", "causal"):
        q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, generator=gen).to(device, dtype)
                   .requires_grad_() for _ in range(3))
        if mech == "sdpa":
            def fn(q, k, v):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        elif mech == "efflab":
            fn = PerformerAttention(HEAD_DIM, FEATURES, causal=causal).to(device)
        else:
            try:
                with _quiet():
                    from performer_pytorch import FastAttention
                    fn = FastAttention(HEAD_DIM, FEATURES, causal=causal).to(device)
            except ImportError:
                return None
        args = (q, k, v)
    else:
        x = torch.randn(1, n, EMBED, generator=gen).to(device, dtype).requires_grad_()
        if mech == "torch-mha":
            mha = torch.nn.MultiheadAttention(EMBED, HEADS, batch_first=True).to(device)

            def fn(x):
                return mha(x, x, x, need_weights=False)[0]
        elif mech == "efflab":
            fn = MultiheadAttention(EMBED, HEADS, "linformer", max_seq_len=n,
                                    k=LINFORMER_K).to(device)
        else:
            try:
                from linformer import LinformerSelfAttention
            except ImportError:
                return None
            fn = LinformerSelfAttention(EMBED, n, k=LINFORMER_K, heads=HEADS).to(device)
        args = (x,)
    half = dtype in (torch.float16, torch.bfloat16)

    def step():
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=half):
            out = fn(*args)
        out.float().square().mean().backward()
        for a in args:
            a.grad = None

    return step


class _quiet:
    """performer-pytorch prints a warning when it builds its causal CPU path."""

    def __enter__(self):
        self._stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115

    def __exit__(self, *exc):
        sys.stdout.close()
        sys.stdout = self._stdout


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(case: str, mech: str, n: int, threads: int) -> dict:
    """Run in a fresh process: peak RSS growth (MiB) of one forward + backward."""
    torch.set_num_threads(threads)
    step = make_step(case, mech, n)
    if step is None:
        return {"missing": True}
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    step()
    return {"peak_mib": (_rss_kib("VmHWM") - before) / 1024}


def measure_memory(case: str, mech: str, n: int, threads: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", case, mech, str(n), "--threads", str(threads)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def time_case(case: str, n: int, repeats: int, warmup: bool) -> dict:
    steps = {m: make_step(case, m, n) for m in CASES[case]}
    steps = {m: s for m, s in steps.items() if s is not None}
    if warmup:
        for s in steps.values():
            s()
    times: dict[str, list[float]] = {m: [] for m in steps}
    for _ in range(repeats):
        for m, s in steps.items():  # alternate: each repeat runs every mechanism once
            t0 = time.perf_counter()
            s()
            times[m].append(time.perf_counter() - t0)
    return {m: {"median_s": statistics.median(t), "all_s": t} for m, t in times.items()}


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default: active)"),
            "load_avg_at_end": os.getloadavg()}


def _targets(results: dict) -> list[dict]:
    """The issue's targets, evaluated on this run's numbers (ratios within one run)."""

    def t(case, n, mech):
        return results.get(case, {}).get(str(n), {}).get("time", {}).get(mech, {}).get("median_s")

    def mem(case, n, mech):
        return results.get(case, {}).get(str(n), {}).get("memory", {}).get(mech, {}).get(
            "peak_mib")

    rows = []

    def add(text, value, ok, goal):
        rows.append({"target": text, "goal": goal,
                     "measured": None if value is None else round(value, 3),
                     "met": None if value is None else bool(ok(value))})

    def ratio(a, b):
        return None if a is None or b is None else a / b

    add("non-causal Performer n=16384: time / performer-pytorch FastAttention",
        ratio(t("noncausal", 16384, "efflab"), t("noncausal", 16384, "performer-pytorch")),
        lambda r: r <= 0.6, "<= 0.6")
    add("non-causal Performer n=16384: SDPA time / ours",
        ratio(t("noncausal", 16384, "sdpa"), t("noncausal", 16384, "efflab")),
        lambda r: r >= 10, ">= 10")
    add("causal Performer n=4096: performer-pytorch causal time / ours",
        ratio(t("causal", 4096, "performer-pytorch"), t("causal", 4096, "efflab")),
        lambda r: r >= 10, ">= 10")
    add("causal Performer n=4096: time / SDPA(is_causal)",
        ratio(t("causal", 4096, "efflab"), t("causal", 4096, "sdpa")),
        lambda r: r <= 1.0, "<= 1.0")
    add("causal Performer n=16384: peak memory (MiB)", mem("causal", 16384, "efflab"),
        lambda r: r <= 2048, "<= 2048")
    add("Linformer n=16384: time / linformer package",
        ratio(t("linformer", 16384, "efflab"), t("linformer", 16384, "linformer")),
        lambda r: r <= 1.0, "<= 1.0")
    add("Linformer n=16384: exact MHA time / ours",
        ratio(t("linformer", 16384, "torch-mha"), t("linformer", 16384, "efflab")),
        lambda r: r >= 8, ">= 8")
    return rows


def plot(results: dict, path: Path, title: str = "attention on CPU (fp32, batch 1, 8 heads, "
         "head_dim 64, m=256, Linformer k=256)", memory_label: str = "peak RSS growth (MiB)"
         ) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for col, case in enumerate(CASES):
        for row, (key, field, label) in enumerate((("time", "median_s", "forward+backward (s)"),
                                                   ("memory", "peak_mib", memory_label))):
            ax = axes[row, col]
            for mech in CASES[case]:
                pts = [(int(n), r[key][mech][field]) for n, r in results.get(case, {}).items()
                       if mech in r.get(key, {}) and r[key][mech].get(field) is not None]
                if pts:
                    ax.plot(*zip(*sorted(pts)), marker="o", label=mech)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{case}: {label}")
            ax.set_xlabel("sequence length n")
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/attention_cpu"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup-max", type=int, default=4096,
                   help="warm up (one untimed call) only up to this length")
    p.add_argument("--peer-causal-max", type=int, default=4096)
    p.add_argument("--exact-max", type=int, default=16384,
                   help="longest n for SDPA / exact MHA (quadratic)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-timeout", type=float, default=600)
    p.add_argument("--child", nargs=3, metavar=("CASE", "MECH", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        case, mech, n = args.child
        print(json.dumps(child_memory(case, mech, int(n), args.threads)))
        return

    from efflab.io import atomic_write_json

    results: dict = {}
    for case in args.cases:
        results[case] = {}
        for n in args.lengths:
            skip = set()
            if n > args.exact_max:
                skip |= {"sdpa", "torch-mha"}
            if case == "causal" and n > args.peer_causal_max:
                skip.add("performer-pytorch")
            saved = CASES[case]
            CASES[case] = tuple(m for m in saved if m not in skip)
            entry = {"time": time_case(case, n, args.repeats, n <= args.warmup_max)}
            if not args.no_memory:
                entry["memory"] = {m: measure_memory(case, m, n, args.threads,
                                                     args.memory_timeout)
                                   for m in CASES[case]}
            CASES[case] = saved
            entry["skipped"] = sorted(skip)
            results[case][str(n)] = entry
            print(case, n, {m: round(v["median_s"], 3) for m, v in entry["time"].items()},
                  {m: round(v.get("peak_mib", -1)) for m, v in entry.get("memory", {}).items()},
                  flush=True)
    report = {
        "benchmark": "attention_cpu",
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "setup": {"dtype": "float32", "batch": 1, "heads": HEADS, "head_dim": HEAD_DIM,
                  "performer_features": FEATURES, "linformer_embed": EMBED,
                  "linformer_k": LINFORMER_K, "repeats": args.repeats, "step": "forward+backward",
                  "memory": "peak RSS growth of a fresh process over one step (VmHWM)"},
        "results": results,
        "targets": _targets(results),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "attention_cpu.json", report)
    plot(results, args.out / "attention_cpu.png")
    for row in report["targets"]:
        print(f"{row['target']}: {row['measured']} (goal {row['goal']}) met={row['met']}")


if __name__ == "__main__":
    main()
