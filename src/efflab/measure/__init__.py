"""Cost reports: every efficiency indicator of a model, measured together, honestly.

Implements the recommendations of *The Efficiency Misnomer* (Dehghani et al., arXiv
2110.12894, Sec. 4-5): parameters (tied and shared tensors counted once), FLOPs measured by
running the model (forward and a whole training step; ops without a formula listed),
latency (warm-up, device synchronization, median and p90), throughput over batch sizes,
peak memory (CUDA allocator statistics; on CPU the resident-set growth of a fresh process)
and the machine they came from.

    >>> from efflab.measure import measure
    >>> report = measure(model, torch.randn(32, 40), name="mlp")
    >>> print(report.table())
"""

from efflab.measure.flops import CONVENTION, FlopCount, count_flops
from efflab.measure.machine import machine_info
from efflab.measure.memory import PeakMemory, cpu_peak_growth, cuda_peak_growth
from efflab.measure.params import ParameterCount, count_parameters
from efflab.measure.report import (
    OUT_OF_MEMORY,
    CostReport,
    MeasureError,
    ThroughputPoint,
    is_out_of_memory,
    measure,
    peak_memory,
    throughput_at,
    write_csv,
    write_json,
)
from efflab.measure.steps import default_loss, make_inference_step, make_train_step
from efflab.measure.timing import Timing, synchronizer, time_fn

__all__ = [
    "CONVENTION", "OUT_OF_MEMORY", "CostReport", "FlopCount", "MeasureError", "ParameterCount",
    "PeakMemory", "ThroughputPoint", "Timing", "count_flops", "count_parameters",
    "cpu_peak_growth", "cuda_peak_growth", "default_loss", "is_out_of_memory", "machine_info",
    "make_inference_step", "make_train_step", "measure", "peak_memory", "synchronizer",
    "throughput_at", "time_fn", "write_csv", "write_json",
]
