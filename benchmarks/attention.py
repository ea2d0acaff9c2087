"""Speed and memory of attention against sequence length, on the CPU: a thin wrapper.

The benchmark is ``efflab bench attention`` (``efflab.cli.bench``; the machinery lives in
``efflab.measure.attention_bench``). This script runs it with the results folder of the
committed runs as the default ``--out``; every other argument is passed through:

    python benchmarks/attention.py --threads 1 --out benchmarks/results/attention_cpu_t1
    python benchmarks/attention.py --lengths 256 512 --repeats 1 --no-memory --out /tmp/b
"""

from __future__ import annotations

import sys

from efflab.cli import main

DEFAULTS = ["--out", "benchmarks/results/attention_cpu"]

if __name__ == "__main__":
    # argparse keeps the last occurrence of an option: the caller's arguments win
    raise SystemExit(main(["bench", "attention", *DEFAULTS, *sys.argv[1:]]))
