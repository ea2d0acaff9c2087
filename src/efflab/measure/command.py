"""``efflab measure MODEL_SPEC ...``: a cost report from the command line.

The CLI (``efflab.cli``) calls :func:`add_parser` with its subparsers object; the
subcommand builds the model through the registry, measures it with
:func:`efflab.measure.measure`, prints the table and writes JSON and CSV atomically.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import torch

from efflab.measure.report import MeasureError, measure, write_csv, write_json
from efflab.measure.spec import make_inputs, parse_model_spec, parse_shape

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
gives medians and p90 over --repeats calls.
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
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
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
    """Build, measure, print, write. Exit code 0 on success, 2 on bad input, 1 on failure."""
    from efflab.models import create_model

    def fail(code: int, message: str) -> int:
        print(f"efflab measure: error: {message}", file=sys.stderr)
        return code

    try:
        name, kwargs = parse_model_spec(args.model_spec)
        shape = parse_shape(args.input)
        device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto"
            else args.device)
    except (ValueError, RuntimeError) as e:
        return fail(2, str(e))
    if device.type == "cuda" and not torch.cuda.is_available():
        return fail(2, f"--device {args.device!r}: CUDA is not available on this machine")
    if args.batch_size < 1:
        return fail(2, f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None:
        if args.threads < 1:
            return fail(2, f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    tokens = args.tokens_per_sample
    if tokens is None and args.vocab is not None:
        tokens = math.prod(shape)
    torch.manual_seed(args.seed)
    try:
        model = create_model(name, **kwargs)
    except TypeError as e:
        return fail(2, f"model {name!r} does not take options {kwargs}: {e}")
    except ValueError as e:
        return fail(2, str(e))
    try:
        inputs = make_inputs(shape, args.batch_size, args.vocab, seed=args.seed)
        report = measure(model, inputs, name=args.model_spec, device=device, dtype=args.dtype,
                         batch_sizes=args.batch_sizes, tokens_per_sample=tokens,
                         warmup=args.warmup, repeats=args.repeats,
                         memory=not args.no_memory, train_throughput=args.train_throughput)
    except ValueError as e:
        return fail(2, str(e))
    except MeasureError as e:
        return fail(1, str(e))
    print(report.table())
    stem = _file_stem(args.model_spec)
    json_path = write_json(report, args.out / f"{stem}.json")
    csv_path = write_csv(report, args.out / f"{stem}.csv")
    print(f"wrote {json_path} and {csv_path}")
    return 0
