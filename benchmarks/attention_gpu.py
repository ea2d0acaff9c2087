"""GPU speed and memory of attention in bf16 against SDPA (FlashAttention): a thin wrapper.

Runs ``efflab bench attention --device cuda --dtype bfloat16`` (see ``efflab.cli.bench``):
forward + backward under ``torch.autocast(bf16)``, ``max_memory_allocated`` growth, out of
memory recorded per mechanism, and for each mechanism the length from which it is faster
than SDPA / exact attention at every longer length measured (``crossover_n`` in the JSON).
Every other argument is passed through and wins over these defaults:

    python benchmarks/attention_gpu.py --out benchmarks/results/attention_gpu
    python benchmarks/attention_gpu.py --device cpu --dtype float32 --lengths 128 256 --out /tmp/g
"""

from __future__ import annotations

import sys

from efflab.cli import main

DEFAULTS = ["--device", "cuda", "--dtype", "bfloat16", "--sdpa-max", "65536",
            "--peer-causal-max", "8192", "--lengths", "1024", "2048", "4096", "8192", "16384",
            "32768", "65536", "--out", "benchmarks/results/attention_gpu"]

if __name__ == "__main__":
    raise SystemExit(main(["bench", "attention", *DEFAULTS, *sys.argv[1:]]))
