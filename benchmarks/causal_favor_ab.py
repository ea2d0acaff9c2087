"""Causal FAVOR+ (the chunkwise fused path) against an older version of itself and SDPA.

Forward + backward of ``blockwise_causal_positive_favor`` as this checkout has it ("new"),
as the git revision ``--old`` had it ("old", loaded from ``git show``), and
``scaled_dot_product_attention(q, k, v, is_causal=True)``, alternated round by round in one
process (issue #21, target 3: a shared machine changes speed between processes, so only the
ratios of one run count); several ``--old`` revisions and ``--chunk`` sizes can be compared in
the same rounds. Times are the process's CPU time by default (one thread: on a shared machine
the time it ran, not the time others had the core). Prints per-length medians and ratios, and
the load average before and after; ``--out`` also writes them as JSON.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/causal_favor_ab.py --lengths 4096 \\
        --rounds 11 --old 6c910dd
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from efflab.attention.performer import causal_blockwise
from efflab.io import atomic_write_json
from efflab.measure.load import read_loadavg

MODULE = "src/efflab/attention/performer/causal_blockwise.py"


def load_old(rev: str):
    """The chunkwise module as it was at git revision ``rev``, as a fresh module object."""
    src = subprocess.run(["git", "show", f"{rev}:{MODULE}"], check=True, capture_output=True,
                         text=True).stdout
    path = Path(tempfile.mkdtemp()) / "causal_blockwise_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("causal_blockwise_old", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fwd_bwd(fn, q, k, v, cot, clock) -> float:
    q.grad = k.grad = v.grad = None
    t0 = clock()
    fn(q, k, v).backward(cot)
    return clock() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--old", nargs="+", default=["main"],
                    help="git revisions of the old sides (the first is the ratios' base)")
    ap.add_argument("--chunk", type=int, nargs="+", default=[64],
                    help="chunk sizes for the new side (the old side uses the first)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--no-sdpa", action="store_true")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: the process's CPU time (one thread: the time it ran, not the "
                         "time other processes had the core), wall: perf_counter")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    olds = {rev: load_old(rev) for rev in args.old}
    base = f"old({args.old[0]})"
    d = 64
    root = d ** -0.25

    def favor(mod, chunk):
        return lambda q, k, v: mod.blockwise_causal_positive_favor(q, k, v, w, None, chunk,
                                                                   root)

    sides = {f"new(chunk={c})": favor(causal_blockwise, c) for c in args.chunk}
    for rev, mod in olds.items():
        sides[f"old({rev})"] = favor(mod, args.chunk[0])
    if not args.no_sdpa:
        sides["sdpa"] = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True)
    load_before = read_loadavg()
    results = {}
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(args.features, d, generator=gen)
    for n in args.lengths:
        q, k, v = (torch.randn(1, args.heads, n, d, generator=gen).requires_grad_()
                   for _ in range(3))
        cot = torch.randn(1, args.heads, n, d, generator=gen)
        times = {name: [] for name in sides}
        for fn in sides.values():  # warm-up
            fwd_bwd(fn, q, k, v, cot, clock)
        names = list(sides)
        for i in range(args.rounds):  # the order rotates: no side always follows another
            for name in names[i % len(names):] + names[:i % len(names)]:
                times[name].append(fwd_bwd(sides[name], q, k, v, cot, clock))
        med = {name: statistics.median(t) for name, t in times.items()}
        results[n] = {"median_s": med, "times_s": times}
        print(f"n = {n}: " + ", ".join(f"{k} {s:.3f} s" for k, s in med.items()))
        for name in sides:
            if name not in (base, "sdpa"):
                line = f"  {name}: /{base} {med[name] / med[base]:.3f}"
                if "sdpa" in med:
                    line += f", /sdpa {med[name] / med['sdpa']:.3f}"
                print(line)
        if "sdpa" in med:
            print(f"  {base}/sdpa {med[base] / med['sdpa']:.3f}")
    load_after = read_loadavg()
    print(f"loadavg before {load_before}, after {load_after}")
    if args.out is not None:
        atomic_write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()},
                              "loadavg_before": load_before, "loadavg_after": load_after,
                              "torch": torch.__version__, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
