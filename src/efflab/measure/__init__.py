"""Cost reports: every efficiency indicator of a model, measured together, honestly.

Implements the recommendations of *The Efficiency Misnomer* (Dehghani et al., arXiv
2110.12894, Sec. 4-5): parameters (tied and shared tensors counted once), FLOPs measured by
running the model (forward and a whole training step; ops without a formula listed),
latency (warm-up, device synchronization, median and p90), throughput over batch sizes,
peak memory (CUDA allocator statistics; on CPU the resident-set growth of a fresh process)
and the machine they came from, its measured limits (matmul peak, copy bandwidth) and the
utilization they imply, the machine's load while it was timed, and a per-module table.

    >>> from efflab.measure import measure
    >>> report = measure(model, torch.randn(32, 40), name="mlp")
    >>> print(report.table())
"""

from efflab.measure.flops import CONVENTION, FlopCount, causal_fraction, count_flops
from efflab.measure.load import LoadRecord, LoadSampler, assess
from efflab.measure.machine import machine_info
from efflab.measure.memory import PeakMemory, cpu_peak_growth, cuda_peak_growth
from efflab.measure.modules import ModuleCost, module_costs
from efflab.measure.params import ParameterCount, count_parameters
from efflab.measure.peak import MachinePeak, Utilization, machine_peak, matmul_peak, utilization
from efflab.measure.ranking import kendall_matrix, ranking_flips
from efflab.measure.report import (
    OUT_OF_MEMORY,
    CostReport,
    MeasureError,
    ThroughputPoint,
    is_out_of_memory,
    measure,
    peak_memory,
    throughput_at,
    throughput_sweep,
    write_csv,
    write_json,
)
from efflab.measure.spec import SpecError, measure_spec, prepare_spec
from efflab.measure.steps import default_loss, make_inference_step, make_train_step
from efflab.measure.timing import (
    Timing,
    interleaved_latency,
    interleaved_times,
    synchronizer,
    time_fn,
)

__all__ = [
    "CONVENTION", "OUT_OF_MEMORY", "CostReport", "FlopCount", "LoadRecord", "LoadSampler",
    "MachinePeak", "MeasureError", "ModuleCost", "ParameterCount", "PeakMemory", "SpecError",
    "ThroughputPoint", "Timing", "Utilization", "assess", "causal_fraction", "count_flops",
    "count_parameters", "cpu_peak_growth", "cuda_peak_growth", "default_loss",
    "interleaved_latency", "interleaved_times", "is_out_of_memory", "kendall_matrix",
    "machine_info", "machine_peak", "make_inference_step", "make_train_step", "matmul_peak",
    "measure", "measure_spec", "module_costs", "peak_memory", "prepare_spec", "ranking_flips",
    "synchronizer", "throughput_at", "throughput_sweep", "time_fn", "utilization",
    "write_csv", "write_json",
]
