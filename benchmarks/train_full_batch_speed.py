"""Speed of the full-batch gradient pass (efflab.train.full_batch_gradient) against a bare
forward/backward loop over the same micro-batches (paper 6 needs thousands of such passes).

The issue's target: ours >= 0.95x the bare loop's throughput. Both run in one process on the
same model and data, alternating (bare, ours, bare, ours, ...) after a warm-up; the ratio is
the median of the per-pair ratios, from wall time and from the process's CPU time (one torch
thread: on a machine shared with other jobs, CPU time is the less disturbed of the two).
Memory: peak RSS growth (Linux VmHWM, reset just before) of a fresh process that computes
one full-batch gradient at each micro-batch size (it should follow the micro-batch, not N).

    python benchmarks/train_full_batch_speed.py [--threads 1] [--repeats 15] [--device cpu]

Writes benchmarks/results/train_full_batch_speed[_<device>].json and .png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from efflab.io import atomic_write_json
from efflab.models import create_model
from efflab.train import full_batch_gradient

RESULTS = Path(__file__).resolve().parent / "results"


def cases(device: str) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor, int]]:
    """name -> (model, x, y, micro_batch_size): MNIST-1D-sized MLP and CNN, CIFAR-sized ResNet."""
    g = torch.Generator().manual_seed(0)
    big = device != "cpu"
    out = {}
    torch.manual_seed(0)
    out["mlp-256 mnist1d (4000x40)"] = (
        create_model("mlp", width=256, depth=2), torch.randn(4000, 40, generator=g),
        torch.randint(0, 10, (4000,), generator=g), 500)
    out["cnn-32 mnist1d (4000x40)"] = (
        create_model("cnn", width=32, depth=3), torch.randn(4000, 40, generator=g),
        torch.randint(0, 10, (4000,), generator=g), 500)
    n, width = (10000, 64) if big else (512, 8)
    out[f"resnet18-w{width} cifar ({n}x3x32x32)"] = (
        create_model("resnet18", width=width), torch.randn(n, 3, 32, 32, generator=g),
        torch.randint(0, 10, (n,), generator=g), 1000 if big else 128)
    return {k: (m.to(device), x.to(device), y.to(device), mb) for k, (m, x, y, mb) in out.items()}


def bare_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, micro: int) -> None:
    """The baseline: what any training loop does per micro-batch, and nothing else."""
    model.zero_grad(set_to_none=False)
    for a in range(0, x.shape[0], micro):
        nn.functional.cross_entropy(model(x[a:a + micro]), y[a:a + micro]).backward()


def ours_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, micro: int) -> None:
    full_batch_gradient(model, x, y, micro_batch_size=micro)


def timed(fn, *args, device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    if device != "cpu":
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    fn(*args)
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - t, time.process_time() - c


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def speed(repeats: int, device: str) -> list[dict]:
    """Per case: throughputs and the ratio ours / bare, from wall time and (on the CPU) from
    process CPU time, which other jobs on a shared machine disturb far less."""
    rows = []
    clocks = ("wall", "cpu") if device == "cpu" else ("wall",)
    for name, (model, x, y, micro) in cases(device).items():
        for _ in range(2):  # warm-up: allocator, kernels, caches
            bare_pass(model, x, y, micro)
            ours_pass(model, x, y, micro)
        bare, ours = [], []
        for _ in range(repeats):
            bare.append(timed(bare_pass, model, x, y, micro, device=device))
            ours.append(timed(ours_pass, model, x, y, micro, device=device))
        n = x.shape[0]
        row = {"case": name, "n": n, "micro_batch": micro}
        for k, clock in enumerate(clocks):
            b = [t[k] for t in bare]
            o = [t[k] for t in ours]
            q1, med, q3 = _quartiles([bi / oi for bi, oi in zip(b, o)])  # throughput ratio
            row.update({f"bare_samples_per_s_{clock}": n / statistics.median(b),
                        f"ours_samples_per_s_{clock}": n / statistics.median(o),
                        f"ratio_{clock}": med, f"ratio_{clock}_q1": q1,
                        f"ratio_{clock}_q3": q3})
        rows.append(row)
        print(f"{name:36s} " + "  ".join(
            f"{c}: bare {row[f'bare_samples_per_s_{c}']:8.0f}/s ours "
            f"{row[f'ours_samples_per_s_{c}']:8.0f}/s ratio {row[f'ratio_{c}']:.3f}"
            for c in clocks), flush=True)
    return rows


_MEMORY_CHILD = """
import ctypes, gc, sys, torch
torch.set_num_threads(1)
from efflab.models import create_model
from efflab.train import full_batch_gradient

def status(key):  # kB
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

n, micro = int(sys.argv[1]), int(sys.argv[2])
g = torch.Generator().manual_seed(0)
x = torch.randn(n, 40, generator=g); y = torch.randint(0, 10, (n,), generator=g)
torch.manual_seed(0); model = create_model("mlp", width=1024, depth=2)
# warm-up: first-call costs (kernel code paged in, library pools) are not the micro-batch's;
# then free the warm-up's gradients and hand freed heap pages back, so they are re-counted
full_batch_gradient(model, x, y, micro_batch_size=micro)
model.zero_grad(set_to_none=True)
gc.collect()
ctypes.CDLL(None).malloc_trim(0)
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
full_batch_gradient(model, x, y, micro_batch_size=micro)
print((status("VmHWM:") - before) / 1024)
"""


def memory(n: int = 32768) -> list[dict]:
    rows = []
    for micro in (n, n // 4, n // 16, n // 64):
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(n), str(micro)],
                             capture_output=True, text=True, check=True)
        mib = float(out.stdout.strip().splitlines()[-1])
        rows.append({"n": n, "micro_batch": micro, "peak_rss_growth_mib": mib})
        print(f"memory: n={n} micro={micro:6d}  peak RSS growth {mib:8.1f} MiB", flush=True)
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    rows = result["speed"]
    names = [r["case"] for r in rows]
    clocks = [c for c in ("cpu", "wall") if f"ratio_{c}" in rows[0]]
    height = 0.8 / len(clocks)
    for k, clock in enumerate(clocks):
        pos = [i + (k - (len(clocks) - 1) / 2) * height for i in range(len(rows))]
        med = [r[f"ratio_{clock}"] for r in rows]
        axes[0].barh(pos, med, height, color=f"C{k}", label=f"{clock} time")
        axes[0].errorbar(med, pos, xerr=[[m - r[f"ratio_{clock}_q1"] for m, r in zip(med, rows)],
                                         [r[f"ratio_{clock}_q3"] - m for m, r in zip(med, rows)]],
                         fmt="none", color="k", capsize=3)
    axes[0].set_yticks(range(len(rows)), names)
    axes[0].axvline(0.95, color="tab:red", ls="--", label="target 0.95")
    axes[0].axvline(1.0, color="gray", lw=0.8)
    axes[0].set_xlabel("throughput: full_batch_gradient / bare loop (median, quartiles)")
    axes[0].set_xlim(0, 1.5)
    axes[0].legend(loc="upper right", fontsize=8)
    mem = result.get("memory", [])
    if mem:
        axes[1].loglog([r["micro_batch"] for r in mem], [r["peak_rss_growth_mib"] for r in mem],
                       "o-")
        axes[1].set_xlabel(f"micro-batch size (N = {mem[0]['n']} samples)")
        axes[1].set_ylabel("peak RSS growth (MiB)")
        axes[1].set_title("memory follows the micro-batch")
    fig.suptitle(f"full-batch gradient pass, {result['device_name']}, "
                 f"{result['threads']} thread(s), {result['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.machine()} CPU ({os.cpu_count()} cores)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else cpu_name())
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    result = {"benchmark": "train_full_batch_speed", "date": now,
              "device": args.device, "device_name": device_name, "threads": args.threads,
              "torch": torch.__version__, "repeats": args.repeats,
              "load_average_at_start": os.getloadavg(),
              "speed": speed(args.repeats, args.device)}
    if not args.no_memory and args.device == "cpu":
        result["memory"] = memory()
    suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    stem = args.out / f"train_full_batch_speed{suffix}"
    atomic_write_json(stem.with_suffix(".json"), result)
    plot(result, stem.with_suffix(".png"))
    print(json.dumps({"worst_ratio": {c: min(r[f"ratio_{c}"] for r in result["speed"])
                                      for c in ("cpu", "wall") if f"ratio_{c}" in
                                      result["speed"][0]}}))


if __name__ == "__main__":
    main()
