"""``efflab bench attention ...``: speed, memory and utilization of attention against n.

``efflab.cli`` calls :func:`add_parser` with its subparsers object. Every argument is checked
before any work starts (exit code 2, the message naming the argument and the value); then
:func:`efflab.measure.attention_bench.run` runs, the table is printed, and
``OUT/attention_<device>.json`` and ``.png`` are written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from efflab.experiments.runner import OutputError, check_output_dir
from efflab.io import atomic_write_json
from efflab.measure import attention_bench as ab
from efflab.measure.machine import usable_cores

LENGTHS = [1024, 2048, 4096, 8192, 16384]
SCALING_LENGTHS = [1024 * 2**i for i in range(8)]  # 1K ... 128K, doubling

EPILOG = """\
examples:
  efflab bench attention --lengths 256 512 1024 --repeats 1 --no-memory --out /tmp/bench
  efflab bench attention --threads 1 --out benchmarks/results/attention_cpu_t1
  efflab bench attention --causal --mechanisms sdpa favor --lengths 4096 16384
  efflab bench attention --scaling --sdpa-max 16384 --out benchmarks/results/attention_scaling
  efflab bench attention --device cuda --dtype bfloat16 --lengths 1024 4096 16384 65536

Cases: without --causal the non-causal q/k/v mechanisms (sdpa, favor, performer-pytorch) and
the Linformer block (mha, linformer, linformer-pkg); --causal: the causal q/k/v mechanisms
(Linformer has no causal form); --scaling: all three cases over 1K ... 128K tokens, the
quadratic baselines (sdpa, mha) only up to --sdpa-max. Ratios are to sdpa (mha for the
Linformer block); utilization is achieved FLOP/s over the matmul peak timed in the same run
(FLOP formulas in the JSON). Peers (performer-pytorch, linformer-pkg) run when the optional
extra efflab[peers] is installed. On a shared CPU the figures are noisy: the load before
and after, and every repeat, are in the JSON.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``bench`` (with its one benchmark, ``attention``) to an argparse subparsers."""
    bench = subparsers.add_parser("bench", help="benchmarks: attention speed, memory and "
                                                "utilization against sequence length",
                                  description="Benchmarks of efflab's mechanisms.",
                                  epilog="examples:\n  efflab bench attention --lengths 256 "
                                         "512 --repeats 1 --no-memory --out /tmp/bench",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    sub.required = True
    p = sub.add_parser("attention", help="attention: time, memory, utilization vs n",
                       description="Forward + backward time and peak memory of attention "
                                   "against sequence length, with ratios to SDPA and to the "
                                   "matmul peak.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=None, metavar="N",
                   help=f"sequence lengths (default {LENGTHS}; with --scaling 1024 ... 131072)")
    p.add_argument("--causal", action="store_true",
                   help="causal attention (sdpa is_causal, causal FAVOR+, performer-pytorch)")
    p.add_argument("--scaling", action="store_true",
                   help="scaling mode: non-causal, causal and Linformer, 1K ... 128K tokens")
    p.add_argument("--mechanisms", nargs="+", default=None, metavar="NAME",
                   help=f"subset of {', '.join(ab.MECHANISMS)} (default all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default="float32",
                   help="float32 or bfloat16 (autocast; default float32)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved timed rounds per length (default 3)")
    p.add_argument("--sdpa-max", type=int, default=16384, metavar="N",
                   help="longest n for the quadratic baselines sdpa and mha (default 16384)")
    p.add_argument("--warmup-max", type=int, default=4096, metavar="N",
                   help="one untimed call first only up to this n on the CPU (default 4096; "
                        "always on CUDA)")
    p.add_argument("--peer-causal-max", type=int, default=4096, metavar="N",
                   help="longest n for performer-pytorch causal, whose CPU path holds "
                        "(n, m, d) prefix sums (default 4096)")
    p.add_argument("--peak-n", type=int, default=None, metavar="N",
                   help="size of the square GEMM timed for the peak (default 2048 CPU, "
                        "8192 CUDA)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--memory-timeout", type=float, default=600.0, metavar="S",
                   help="seconds allowed for one memory probe (default 600)")
    p.add_argument("--out", type=Path, default=Path("efflab-bench"),
                   help="folder for attention_<device>.json and .png (default ./efflab-bench)")
    p.set_defaults(func=run_bench_attention)
    return p


class _BadInput(ValueError):
    pass


def config_from_args(args: argparse.Namespace) -> ab.BenchConfig:
    """The checked :class:`BenchConfig`; raises ``_BadInput`` naming the argument."""
    if args.device not in ("cpu", "cuda"):
        raise _BadInput(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise _BadInput(f"--device cuda: CUDA is not available here (torch {torch.__version__}"
                        f", CUDA build {torch.version.cuda}); run with --device cpu, or on a "
                        "machine with a GPU and a CUDA build of torch")
    if args.dtype not in ab.DTYPES:
        raise _BadInput(f"--dtype must be one of {', '.join(ab.DTYPES)}, got {args.dtype!r}")
    lengths = args.lengths or (SCALING_LENGTHS if args.scaling else LENGTHS)
    bad = [n for n in lengths if n < 2]
    if bad:
        raise _BadInput(f"--lengths must all be >= 2, got {bad[0]}")
    for flag, value in (("--repeats", args.repeats), ("--sdpa-max", args.sdpa_max),
                        ("--peer-causal-max", args.peer_causal_max)):
        if value < 1:
            raise _BadInput(f"{flag} must be >= 1, got {value}")
    if args.warmup_max < 0:
        raise _BadInput(f"--warmup-max must be >= 0, got {args.warmup_max}")
    if args.peak_n is not None and args.peak_n < 1:
        raise _BadInput(f"--peak-n must be >= 1, got {args.peak_n}")
    if not args.memory_timeout > 0:
        raise _BadInput(f"--memory-timeout must be > 0, got {args.memory_timeout}")
    if not 1 <= args.threads <= usable_cores():
        raise _BadInput(f"--threads must be between 1 and the {usable_cores()} usable "
                        f"core(s), got {args.threads}")
    if args.scaling and args.causal:
        raise _BadInput("--causal with --scaling: the scaling mode runs the causal case "
                        "already; drop --causal")
    mechs = args.mechanisms or list(ab.MECHANISMS)
    unknown = [m for m in mechs if m not in ab.MECHANISMS]
    if unknown:
        raise _BadInput(f"--mechanisms: unknown {unknown[0]!r}; choose from "
                        f"{', '.join(ab.MECHANISMS)}")
    if args.scaling:
        cases = list(ab.CASES)
    elif args.causal:
        cases = ["causal"]
        blocks = [m for m in (args.mechanisms or []) if m not in ab.CASES["causal"]]
        if blocks:
            raise _BadInput(f"--mechanisms {blocks[0]} with --causal: the Linformer block "
                            "has no causal form; drop one of them")
    else:
        cases = ["noncausal", "linformer"]
    cases = [c for c in cases if any(m in mechs for m in ab.CASES[c])]
    if not cases:  # pragma: no cover - every mechanism belongs to some case
        raise _BadInput(f"--mechanisms {mechs}: none runs in the selected cases")
    return ab.BenchConfig(
        lengths=sorted(set(lengths)), cases=cases, mechanisms=list(dict.fromkeys(mechs)),
        device=args.device, dtype=args.dtype, threads=args.threads, repeats=args.repeats,
        warmup_max=args.warmup_max, sdpa_max=args.sdpa_max,
        peer_causal_max=args.peer_causal_max, memory=not args.no_memory,
        memory_timeout_s=args.memory_timeout, peak_n=args.peak_n)


def run_bench_attention(args: argparse.Namespace) -> int:
    """Check, run, print, write. Exit code 0 on success, 2 on bad input."""
    try:
        cfg = config_from_args(args)
        if str(args.out) in ("", "."):
            raise _BadInput(f"--out must name a folder, got {str(args.out)!r}")
        out = check_output_dir(args.out)
    except (_BadInput, OutputError) as e:
        print(f"efflab bench attention: error: {e}", file=sys.stderr)
        return 2
    print(f"efflab bench attention: {', '.join(cfg.cases)}, n = {cfg.lengths}, "
          f"{cfg.device} {cfg.dtype}, {cfg.threads} thread(s), {cfg.repeats} repeat(s)",
          flush=True)
    report = ab.run(cfg, progress=lambda line: print("  " + line, flush=True))
    print()
    print(ab.table(report))
    stem = f"attention_{cfg.device}"
    json_path = atomic_write_json(out / f"{stem}.json", report)
    png_path = out / f"{stem}.png"
    ab.plot(report, png_path)
    print(f"\nwrote {json_path} and {png_path}")
    return 0
