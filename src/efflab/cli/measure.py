"""``efflab measure MODEL_SPEC ...``: a cost report from the command line.

``efflab.cli`` calls :func:`add_parser` with its subparsers object. Every argument is
checked before the measurement starts (the output folder, the model spec, that the model
accepts the input shape and the token ids or floats, that the input batch fits in memory);
then :func:`efflab.measure.measure` runs, the table is printed and JSON and CSV are written
atomically. Exit codes: 0 done, 2 bad input (nothing measured, nothing written), 1 the
measurement failed or ran out of memory (an out-of-memory record is written).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import torch

from efflab.experiments.runner import OutputError, check_output_dir
from efflab.io import atomic_write_json
from efflab.measure.machine import machine_info, usable_cores
from efflab.measure.report import (
    OUT_OF_MEMORY,
    MeasureError,
    is_out_of_memory,
    measure,
    write_csv,
    write_json,
)
from efflab.measure.spec import parse_model_spec, parse_shape, prepare_spec

EPILOG = """\
examples:
  efflab measure mlp --input 40 --batch-size 32
  efflab measure resnet18:width=16 --input 3x32x32 --batch-sizes 1,8,32
  efflab measure transformer_classifier:depth=4,embed_dim=128,pad_id=none --input 256 \\
      --vocab 16 --batch-sizes 1,8,32 --out results/measure

MODEL_SPEC is a registered model name, optionally with options after a colon
(name:key=value,key=value; lists as [1,2]). --input is the shape of one sample without
the batch axis; with --vocab the inputs are token ids and tokens/s is reported.
Writes OUT/<model>.json and OUT/<model>.csv. Times on a shared CPU are noisy: the report
gives medians, p90 and the spread over --repeats calls, records the machine's load, and
marks a figure [unreliable: ...] when its spread or the load says so. Timings use one
thread unless --threads says otherwise.
"""


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--batch-sizes must be positive, got {text!r}")
    return sizes


def _dtype(text: str) -> torch.dtype:
    dtype = getattr(torch, text, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise argparse.ArgumentTypeError(
            f"--dtype must be a floating dtype such as float32, bfloat16, got {text!r}")
    return dtype


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``measure`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "measure", help="cost report of one model: parameters, FLOPs, latency, throughput, "
                        "memory, machine",
        description="Measure every efficiency indicator of one model on this machine "
                    "(Efficiency Misnomer, arXiv 2110.12894).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_spec", metavar="MODEL_SPEC",
                   help="registered model name with options, e.g. mlp:width=256,depth=3")
    p.add_argument("--input", required=True, metavar="SHAPE",
                   help="shape of one sample without the batch axis, e.g. 40 or 3x32x32")
    p.add_argument("--vocab", type=int, default=None, metavar="N",
                   help="inputs are token ids in [0, N) (sequence models)")
    p.add_argument("--tokens-per-sample", type=int, default=None, metavar="N",
                   help="tokens in one sample, for tokens/s (default with --vocab: the "
                        "number of ids in one sample)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="batch of the FLOP, latency and memory figures (default 8)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=None, metavar="B1,B2,...",
                   help="batch sizes of the throughput sweep (default: 1 and --batch-size)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (default cpu)")
    p.add_argument("--dtype", type=_dtype, default=torch.float32,
                   help="floating dtype of weights and float inputs (default float32)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls (default 20)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads while measuring (default 1, as `efflab run`)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--no-peak", action="store_true",
                   help="skip the machine's matmul peak (and the utilization figures)")
    p.add_argument("--modules", action="store_true",
                   help="print the per-module table (it is always in the JSON)")
    p.add_argument("--train-throughput", action="store_true",
                   help="also sweep training-step throughput over the batch sizes")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the inputs")
    p.add_argument("--out", type=Path, default=Path("efflab-measure"),
                   help="folder for <model>.json and <model>.csv (default ./efflab-measure)")
    p.set_defaults(func=run_measure)
    return p


def _file_stem(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec).strip("_") or "model"


def run_measure(args: argparse.Namespace) -> int:
    """Check, build, measure, print, write. Exit code 0 on success, 2 on bad input, 1 on
    failure (out of memory included)."""

    def fail(code: int, message: str) -> int:
        print(f"efflab measure: error: {message}", file=sys.stderr)
        return code

    try:
        parse_model_spec(args.model_spec)
        parse_shape(args.input)
        device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto"
            else args.device)
    except (ValueError, RuntimeError) as e:
        return fail(2, str(e))
    if device.type == "cuda" and not torch.cuda.is_available():
        return fail(2, f"--device {args.device!r}: CUDA is not available on this machine")
    for flag, value in (("--batch-size", args.batch_size), ("--repeats", args.repeats)):
        if value < 1:
            return fail(2, f"{flag} must be >= 1, got {value}")
    if args.warmup < 0:
        return fail(2, f"--warmup must be >= 0, got {args.warmup}")
    if args.vocab is not None and args.vocab < 1:
        return fail(2, f"--vocab must be >= 1, got {args.vocab}")
    if args.tokens_per_sample is not None and args.tokens_per_sample < 1:
        return fail(2, f"--tokens-per-sample must be >= 1, got {args.tokens_per_sample}")
    if not 1 <= args.threads <= usable_cores():
        return fail(2, f"--threads must be between 1 and the {usable_cores()} usable core(s), "
                       f"got {args.threads}")
    if str(args.out) in ("", "."):
        return fail(2, f"--out must name a folder, got {str(args.out)!r}")
    try:
        out = check_output_dir(args.out)
    except OutputError as e:
        return fail(2, str(e))
    stem = _file_stem(args.model_spec)
    torch.set_num_threads(args.threads)
    try:
        model, inputs = prepare_spec(args.model_spec, args.input, batch_size=args.batch_size,
                                     vocab=args.vocab, seed=args.seed, device=device)
    except MemoryError as e:
        return _out_of_memory(args, out / f"{stem}.json", device, e, fail)
    except ValueError as e:
        return fail(2, str(e))
    tokens = args.tokens_per_sample
    if tokens is None and args.vocab is not None:
        tokens = math.prod(inputs.shape[1:])
    try:
        report = measure(model, inputs, name=args.model_spec, device=device, dtype=args.dtype,
                         batch_sizes=args.batch_sizes, tokens_per_sample=tokens,
                         warmup=args.warmup, repeats=args.repeats, threads=args.threads,
                         memory=not args.no_memory, train_throughput=args.train_throughput,
                         peak=not args.no_peak)
    except ValueError as e:
        return fail(2, str(e))
    except MeasureError as e:
        if is_out_of_memory(e.__cause__ or e):
            return _out_of_memory(args, out / f"{stem}.json", device, e, fail)
        return fail(1, str(e))
    print(report.table())
    if args.modules:
        print()
        print(report.module_table())
    json_path = write_json(report, out / f"{stem}.json")
    csv_path = write_csv(report, out / f"{stem}.csv")
    print(f"wrote {json_path} and {csv_path}")
    return 0


def _out_of_memory(args: argparse.Namespace, path: Path, device: torch.device,
                   error: BaseException, fail) -> int:
    """The record of a batch that does not fit: written, and exit code 1."""
    record = {"name": args.model_spec, "batch_size": args.batch_size, "status": OUT_OF_MEMORY,
              "error": f"{type(error).__name__}: {error}",
              "machine": machine_info(device, args.dtype)}
    atomic_write_json(path, record)
    return fail(1, f"{OUT_OF_MEMORY} at --batch-size {args.batch_size}: {error} "
                   f"(record written to {path})")
