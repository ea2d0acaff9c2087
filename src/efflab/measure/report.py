"""The cost report: every efficiency indicator of one model, measured together.

Efficiency Misnomer (arXiv 2110.12894), Sec. 4-5: parameters, FLOPs, latency, throughput and
memory disagree, so report all of them, for inference and for training, with the machine.
:func:`measure` takes one model and example inputs and returns a :class:`CostReport`;
:func:`write_json` and :func:`write_csv` save one or many reports atomically.

Timings are taken with a fixed thread count (one unless asked, as ``efflab run``), the load
of the machine is recorded around them, and a figure whose spread or load makes it unreliable
is marked as such (:mod:`efflab.measure.load`), in the table and in the JSON
(``unreliable``: figure -> reasons). Utilization is set against the machine's own measured
matmul peak (:mod:`efflab.measure.peak`).
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from efflab.io import atomic_write_json, atomic_write_text, to_jsonable
from efflab.measure.flops import CONVENTION, FlopCount, count_flops
from efflab.measure.load import LoadRecord, LoadSampler, assess
from efflab.measure.machine import machine_info, usable_cores
from efflab.measure.memory import PeakMemory, cpu_peak_growth, cuda_peak_growth
from efflab.measure.modules import ModuleCost, module_costs
from efflab.measure.params import ParameterCount, count_parameters
from efflab.measure.peak import MachinePeak, Utilization, machine_peak, utilization
from efflab.measure.steps import (
    LossFn,
    make_inference_step,
    make_step,
    make_train_step,
    resize_batch,
)
from efflab.measure.timing import Timing, interleaved_times, synchronizer, time_fn

OUT_OF_MEMORY = "out of memory"


class MeasureError(RuntimeError):
    """The model could not be measured on the inputs given (the cause is chained)."""


@dataclass
class ThroughputPoint:
    """Inference (or training) throughput at one batch size; ``status`` is ``"ok"`` or
    ``"out of memory"`` (then the rates are ``None`` and ``error`` holds the message)."""

    batch_size: int
    mode: str
    status: str
    median_s: float | None = None
    samples_per_s: float | None = None
    tokens_per_s: float | None = None
    error: str = ""
    spread: float | None = None


@dataclass
class CostReport:
    """All indicators of one model on one machine. Times in seconds, memory in bytes."""

    name: str
    batch_size: int
    input_shapes: list[list[int]]
    input_dtypes: list[str]
    tokens_per_sample: int | None
    params: ParameterCount
    flops_forward: FlopCount
    flops_train_step: FlopCount
    latency_inference: Timing
    latency_train_step: Timing
    throughput: list[ThroughputPoint] = field(default_factory=list)
    memory_inference: PeakMemory | None = None
    memory_train_step: PeakMemory | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    flop_convention: str = CONVENTION
    load: LoadRecord | None = None
    #: timed figure -> reasons it is unreliable (spread, machine load, falling throughput)
    unreliable: dict[str, list[str]] = field(default_factory=dict)
    peak: MachinePeak | None = None
    utilization_inference: Utilization | None = None
    utilization_train_step: Utilization | None = None
    modules: list[ModuleCost] = field(default_factory=list)

    @property
    def flops_forward_per_sample(self) -> float:
        return self.flops_forward.total / self.batch_size

    @property
    def flops_forward_per_token(self) -> float | None:
        if not self.tokens_per_sample:
            return None
        return self.flops_forward.total / (self.batch_size * self.tokens_per_sample)

    @property
    def reliable(self) -> bool:
        return not self.unreliable

    def to_dict(self) -> dict[str, Any]:
        d = to_jsonable(self)
        d["flops_forward_per_sample"] = self.flops_forward_per_sample
        d["flops_forward_per_token"] = self.flops_forward_per_token
        d["reliable"] = self.reliable
        if self.load is not None:
            d["load"] = to_jsonable(self.load.summary())
            d["load"]["runnable_samples"] = self.load.runnable_samples
        return d

    def _flag(self, figure: str) -> str:
        reasons = self.unreliable.get(figure)
        return f"  [unreliable: {'; '.join(reasons)}]" if reasons else ""

    def module_table(self, max_depth: int = 3) -> str:
        """The per-module rows as an indented text table (modules deeper than ``max_depth``
        left out)."""
        head = ("module", "params", "fwd FLOPs", "bwd FLOPs", "saved activations")
        rows = [head]
        for r in self.modules:
            if r.depth > max_depth:
                continue
            bwd = _short(r.flops_backward) if r.flops_backward is not None else (
                f"(in parent: {r.calls} calls)")
            rows.append(("  " * r.depth + r.name.rsplit(".", 1)[-1] + f" ({r.type})",
                         _short(r.params), _short(r.flops_forward), bwd,
                         _bytes_short(r.activation_bytes)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(row, widths)))
                         for row in rows)

    def flat(self) -> dict[str, Any]:
        """One CSV row: scalar indicators only, named ``<indicator>_<unit>``."""
        p = self.params
        row: dict[str, Any] = {
            "name": self.name,
            "batch_size": self.batch_size,
            "tokens_per_sample": self.tokens_per_sample,
            "params_total": p.total,
            "params_unique": p.unique,
            "params_trainable": p.trainable,
            "params_embedding": p.embedding,
            "params_non_embedding": p.non_embedding,
            "flops_forward": self.flops_forward.total,
            "flops_train_step": self.flops_train_step.total,
            "flops_forward_per_sample": self.flops_forward_per_sample,
            "flops_forward_per_token": self.flops_forward_per_token,
            "uncounted_ops_forward": _ops_cell(self.flops_forward.uncounted_ops),
            "uncounted_ops_train_step": _ops_cell(self.flops_train_step.uncounted_ops),
            "latency_inference_median_s": self.latency_inference.median_s,
            "latency_inference_p90_s": self.latency_inference.p90_s,
            "latency_train_step_median_s": self.latency_train_step.median_s,
            "latency_train_step_p90_s": self.latency_train_step.p90_s,
            "latency_inference_spread": self.latency_inference.spread,
            "latency_train_step_spread": self.latency_train_step.spread,
            "flops_forward_useful": self.flops_forward.useful_total,
            "reliable": self.reliable,
            "unreliable": " | ".join(f"{k}: {'; '.join(v)}" for k, v in self.unreliable.items()),
        }
        for label, u in (("inference", self.utilization_inference),
                         ("train_step", self.utilization_train_step)):
            row[f"mfu_{label}"] = None if u is None else u.mfu
        if self.peak is not None:
            row["peak_matmul_flop_per_s"] = self.peak.matmul_flop_per_s
            row["peak_copy_bytes_per_s"] = self.peak.copy_bytes_per_s
        if self.load is not None:
            row["loadavg_before"] = (self.load.loadavg_before or [None])[0]
            row["loadavg_after"] = (self.load.loadavg_after or [None])[0]
        for t in self.throughput:
            key = f"throughput_{t.mode}_bs{t.batch_size}"
            row[f"{key}_samples_per_s"] = t.samples_per_s if t.status == "ok" else t.status
            if self.tokens_per_sample:
                row[f"{key}_tokens_per_s"] = t.tokens_per_s if t.status == "ok" else t.status
        for label, mem in (("inference", self.memory_inference),
                           ("train_step", self.memory_train_step)):
            row[f"memory_{label}_peak_bytes"] = None if mem is None else mem.bytes
        for key in ("device", "device_name", "usable_cores", "torch_threads", "dtype",
                    "torch_version", "efflab_version"):
            row[key] = self.machine.get(key)
        return row

    def table(self) -> str:
        """A two-column text table for the terminal."""
        p, m = self.params, self.machine
        rows: list[tuple[str, str]] = [
            ("model", self.name),
            ("inputs", ", ".join(f"{tuple(s)} {d}" for s, d in
                                 zip(self.input_shapes, self.input_dtypes))),
            ("machine", f"{m.get('device_name')} ({m.get('device')}), "
                        f"{m.get('torch_threads')} torch thread(s), "
                        f"torch {m.get('torch_version')}, {m.get('dtype')}"),
            ("parameters: unique", _count(p.unique)),
            ("parameters: total (each registration)", _count(p.total)),
            ("parameters: trainable", _count(p.trainable)),
            ("parameters: embedding / non-embedding",
             f"{_count(p.embedding)} / {_count(p.non_embedding)}"),
            ("load", self.load.text() if self.load is not None else "not recorded"),
            ("FLOPs: forward (batch)", _count(self.flops_forward.total)),
            ("FLOPs: forward per sample", _count(self.flops_forward_per_sample)),
        ]
        if self.flops_forward_per_token is not None:
            rows.append(("FLOPs: forward per token", _count(self.flops_forward_per_token)))
        if self.flops_forward.causal_attention_calls:
            rows.append(("FLOPs: forward, useful (causal triangle)",
                         _count(self.flops_forward.useful_total)))
        li, lt = self.latency_inference, self.latency_train_step
        rows += [
            ("FLOPs: training step (batch)", _count(self.flops_train_step.total)),
            ("latency: inference median / p90 (spread)",
             f"{_ms(li.median_s)} / {_ms(li.p90_s)} ({li.spread:.0%})"
             + self._flag("latency_inference")),
            ("latency: training step median / p90 (spread)",
             f"{_ms(lt.median_s)} / {_ms(lt.p90_s)} ({lt.spread:.0%})"
             + self._flag("latency_train_step")),
        ]
        for t in self.throughput:
            label = f"throughput: {t.mode}, batch {t.batch_size}"
            if t.status != "ok":
                rows.append((label, t.status))
            else:
                text = f"{t.samples_per_s:,.1f} samples/s"
                if t.tokens_per_s is not None:
                    text += f", {t.tokens_per_s:,.0f} tokens/s"
                rows.append((label, text + self._flag(f"throughput_{t.mode}")))
        if self.peak is not None:
            pk = self.peak
            rows.append(("machine peak: matmul / copy",
                         f"{pk.matmul_flop_per_s / 1e9:,.1f} GFLOP/s ({pk.matmul_n}^3 GEMM, "
                         f"{pk.dtype}, {pk.threads} thread(s)) / "
                         f"{pk.copy_bytes_per_s / 1e9:,.1f} GB/s"))
        for label, u, fig in (("inference", self.utilization_inference, "latency_inference"),
                              ("training step", self.utilization_train_step,
                               "latency_train_step")):
            if u is not None:
                text = (f"{u.mfu:.1%} of peak ({u.flop_per_s / 1e9:,.2f} GFLOP/s; best repeat "
                        f"{u.mfu_best:.1%})")
                if u.memory_bound:
                    text += (f"; memory-bound ({u.arithmetic_intensity:.1f} FLOP/B), "
                             f"{u.bandwidth_utilization:.1%} of copy bandwidth")
                rows.append((f"utilization: {label}", text + self._flag(fig)))
        for label, mem in (("inference", self.memory_inference),
                           ("training step", self.memory_train_step)):
            if mem is not None:
                rows.append((f"peak memory: {label}",
                             _bytes(mem.bytes) if mem.bytes is not None else mem.note))
        unc = self.flops_forward.uncounted_ops
        rows.append(("uncounted ops (forward)", _ops_cell(unc) or "none"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines.append(f"FLOP convention: {self.flop_convention}")
        if self.unreliable:
            lines.append("UNRELIABLE timings (see [unreliable: ...] above): rerun with fewer "
                         "other jobs, more --repeats, or --threads 1")
        mem_methods = {mem.method for mem in (self.memory_inference, self.memory_train_step)
                       if mem is not None}
        if mem_methods:
            lines.append("memory: " + "; ".join(sorted(mem_methods)))
        return "\n".join(lines)


def _ops_cell(ops: dict[str, int]) -> str:
    return "; ".join(f"{op} x{calls}" for op, calls in ops.items())


def _count(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3f} {unit} ({x:,.0f})"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"


def _short(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:,.0f}"


def _bytes_short(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB ({n:,} B)"


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or a CPU allocator failure."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    msg = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        s in msg for s in ("out of memory", "can't allocate memory", "not enough memory"))


def _release_cached(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _as_inputs(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(
        example_inputs)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise TypeError("example_inputs must be a tensor or a sequence of tensors, got "
                        f"{[type(x).__name__ for x in inputs] or 'an empty sequence'}")
    batches = {x.shape[0] if x.dim() else None for x in inputs}
    if len(batches) != 1 or None in batches:
        raise ValueError("every example input must have the same batch size on dim 0, got "
                         f"shapes {[tuple(x.shape) for x in inputs]}")
    return inputs


def _describe(inputs: tuple[torch.Tensor, ...]) -> str:
    return ", ".join(f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}" for x in inputs)


def measure(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], *,
            name: str = "model", device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32, batch_sizes: Sequence[int] | None = None,
            tokens_per_sample: int | None = None, loss_fn: LossFn | None = None,
            warmup: int = 3, repeats: int = 20, train_repeats: int | None = None,
            memory: bool = True, train_throughput: bool = False, threads: int | None = 1,
            peak: bool = True, modules: bool = True) -> CostReport:
    """Measure every cost indicator of ``model`` on ``example_inputs``.

    example_inputs: a tensor or tuple of tensors, batch on dim 0, passed as ``model(*inputs)``.
    ``batch_sizes`` (default: 1 and the example batch) are reached by cycling through the
    examples and timed interleaved (rounds, order rotated); a batch size that runs out of
    memory (or whose inputs alone would not fit) is recorded as such, the others are still
    measured. ``tokens_per_sample`` (sequence models) adds tokens/s and FLOPs per token.
    ``loss_fn(output) -> scalar`` drives the training step (default: mean square of the
    output). The model is copied (ties preserved) and moved to ``device`` and ``dtype``;
    the original is left as it was. Latency and throughput are medians over ``repeats``
    calls after ``warmup`` ones (the training step uses ``train_repeats``, default half).
    ``threads``: torch CPU threads while measuring (default 1, as ``efflab run``; ``None``
    leaves torch's setting), restored afterwards. ``peak``: measure the machine's matmul peak
    and copy bandwidth (once per process) and report utilization. ``modules``: the
    per-module table (one extra training step under the counter).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, "
                         f"warmup={warmup}")
    if tokens_per_sample is not None and tokens_per_sample < 1:
        raise ValueError(f"tokens_per_sample must be >= 1 or None, got {tokens_per_sample}")
    if threads is not None and not 1 <= threads <= max(usable_cores(), 1):
        raise ValueError(f"threads must be between 1 and the {usable_cores()} usable core(s), "
                         f"or None, got {threads}")
    device = torch.device(device)
    inputs = _as_inputs(example_inputs)
    batch = int(inputs[0].shape[0])
    sizes = sorted({1, batch}) if batch_sizes is None else [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes or [])}")
    train_repeats = max(3, repeats // 2) if train_repeats is None else train_repeats
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _measure(model, inputs, name, device, dtype, sizes, tokens_per_sample, loss_fn,
                        warmup, repeats, train_repeats, memory, train_throughput, peak, modules)
    finally:
        torch.set_num_threads(old_threads)


def _measure(model, inputs, name, device, dtype, sizes, tokens_per_sample, loss_fn, warmup,
             repeats, train_repeats, memory, train_throughput, peak, modules) -> CostReport:
    batch = int(inputs[0].shape[0])
    work = copy.deepcopy(model).to(device=device, dtype=dtype)
    inputs = tuple(x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
                   for x in inputs)
    infer = make_inference_step(work, inputs)
    train = make_train_step(work, inputs, loss_fn)
    try:
        _, flops_fwd = count_flops(infer)
    except Exception as e:
        raise MeasureError(f"model {name!r} failed on example inputs {_describe(inputs)} "
                           f"(inference, device {device}): {type(e).__name__}: {e}") from e
    try:
        _, flops_train = count_flops(train)
    except Exception as e:
        raise MeasureError(f"model {name!r} failed a training step on example inputs "
                           f"{_describe(inputs)} (device {device}): {type(e).__name__}: {e}"
                           ) from e
    rows = module_costs(work, inputs, loss_fn) if modules else []

    sync = synchronizer(device)
    sampler = LoadSampler(usable_cores(), torch.get_num_threads()).start()
    machine_peak_ = machine_peak(device, dtype) if peak else None
    latency_inference = time_fn(infer, warmup=warmup, repeats=repeats, sync=sync,
                                sampler=sampler)
    latency_train = time_fn(train, warmup=warmup, repeats=train_repeats, sync=sync,
                            sampler=sampler)
    modes = ["inference", "train_step"] if train_throughput else ["inference"]
    points = throughput_sweep(work, inputs, sizes, modes, device, loss_fn, tokens_per_sample,
                              warmup=min(warmup, 2), rounds=max(3, repeats // 2),
                              sampler=sampler)
    load = sampler.stop()

    mem_inf = mem_train = None
    if memory:
        mem_inf = peak_memory(work, inputs, "inference", device, loss_fn)
        mem_train = peak_memory(work, inputs, "train_step", device, loss_fn)

    params = count_parameters(work)
    util_inf = util_train = None
    if machine_peak_ is not None:
        io_bytes = sum(x.numel() * x.element_size() for x in inputs)
        out = infer()
        out_bytes = sum(t.numel() * t.element_size() for t in _tensors(out))
        util_inf = _utilization(flops_fwd.total, latency_inference,
                                params.unique_bytes + io_bytes + out_bytes, machine_peak_)
        # forward reads the weights, backward reads them again and writes their gradients,
        # the update reads and writes them: at least 5 passes over the weights
        util_train = _utilization(flops_train.total, latency_train,
                                  5 * params.unique_bytes + io_bytes, machine_peak_)
    curves = {f"throughput_{mode}": [(t.batch_size, t.samples_per_s) for t in points
                                     if t.mode == mode and t.status == "ok"]
              for mode in modes}
    spreads = {"latency_inference": latency_inference.spread,
               "latency_train_step": latency_train.spread}
    for t in points:
        if t.spread is not None:
            key = f"throughput_{t.mode}"
            spreads[key] = max(spreads.get(key, 0.0), t.spread)
    return CostReport(
        name=name, batch_size=batch, input_shapes=[list(x.shape) for x in inputs],
        input_dtypes=[str(x.dtype).replace("torch.", "") for x in inputs],
        tokens_per_sample=tokens_per_sample, params=params,
        flops_forward=flops_fwd, flops_train_step=flops_train,
        latency_inference=latency_inference, latency_train_step=latency_train,
        throughput=points, memory_inference=mem_inf, memory_train_step=mem_train,
        machine=machine_info(device, dtype), load=load,
        unreliable=assess(spreads, load, curves), peak=machine_peak_,
        utilization_inference=util_inf, utilization_train_step=util_train, modules=rows,
    )


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for o in output for t in _tensors(o)]
    return []


def _utilization(flops: int, timing: Timing, min_bytes: int, peak: MachinePeak
                 ) -> Utilization | None:
    if timing.median_s <= 0 or timing.min_s <= 0:
        return None
    return utilization(flops, timing.median_s, timing.min_s, min_bytes, peak)


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (CPU: ``MemAvailable``), or None."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    return None


def batch_bytes(inputs: tuple[torch.Tensor, ...], batch_size: int) -> int:
    """Bytes of the inputs resized to ``batch_size`` rows, and of the row index doing it."""
    per_row = sum(x[:1].numel() * x.element_size() for x in inputs)
    return batch_size * (per_row + 8)


def check_fits(inputs: tuple[torch.Tensor, ...], batch_size: int, device: torch.device
               ) -> None:
    """Raise :class:`MemoryError` (an out-of-memory condition, see :func:`is_out_of_memory`)
    when the inputs alone at ``batch_size`` exceed the memory ``device`` has left: such a
    batch is recorded as out of memory without touching the machine's memory."""
    need, have = batch_bytes(inputs, batch_size), available_memory(device)
    if have is not None and need > have:
        raise MemoryError(f"inputs at batch size {batch_size} need {need / 2**30:,.1f} GiB, "
                          f"{have / 2**30:,.1f} GiB available on {device}")


def throughput_sweep(model: nn.Module, inputs: tuple[torch.Tensor, ...],
                     batch_sizes: Sequence[int], modes: Sequence[str], device: torch.device,
                     loss_fn: LossFn | None = None, tokens_per_sample: int | None = None,
                     warmup: int = 2, rounds: int = 10, sampler: LoadSampler | None = None
                     ) -> list[ThroughputPoint]:
    """Samples/s (and tokens/s) at every batch size and mode, the batch sizes of one mode
    timed interleaved (``rounds`` rounds, one call each, order rotated); out-of-memory is
    recorded per point, not raised."""
    points: dict[tuple[str, int], ThroughputPoint] = {}
    for mode in modes:
        steps = {}
        for b in batch_sizes:
            try:
                check_fits(inputs, b, device)
                batch = resize_batch(inputs, b)
                step = (make_inference_step(model, batch) if mode == "inference"
                        else make_train_step(model, batch, loss_fn))
                for _ in range(max(warmup, 1)):  # an out-of-memory shows here, not mid-sweep
                    step()
                synchronizer(device)()
                steps[b] = step
            except Exception as e:
                if not is_out_of_memory(e):
                    raise MeasureError(f"{mode} at batch size {b} failed on inputs "
                                       f"{_describe(inputs)} resized to batch {b}: "
                                       f"{type(e).__name__}: {e}") from e
                _release_cached(device)
                points[mode, b] = ThroughputPoint(b, mode, OUT_OF_MEMORY,
                                                  error=f"{type(e).__name__}: {e}")
        times = interleaved_times(steps, rounds=rounds, repeats=1, warmup=0,
                                  sync=synchronizer(device), sampler=sampler)
        for b, timing in times.items():
            points[mode, b] = _point(b, mode, timing, tokens_per_sample)
    return [points[mode, b] for mode in modes for b in batch_sizes]


def _point(batch_size: int, mode: str, timing: Timing, tokens_per_sample: int | None
           ) -> ThroughputPoint:
    samples = batch_size / timing.median_s if timing.median_s > 0 else math.inf
    tokens = samples * tokens_per_sample if tokens_per_sample else None
    return ThroughputPoint(batch_size, mode, "ok", timing.median_s, samples, tokens,
                           spread=timing.spread)


def throughput_at(model: nn.Module, inputs: tuple[torch.Tensor, ...], batch_size: int,
                  mode: str, device: torch.device, loss_fn: LossFn | None = None,
                  tokens_per_sample: int | None = None, warmup: int = 2, repeats: int = 10
                  ) -> ThroughputPoint:
    """Samples/s (and tokens/s) at one ``batch_size``; out-of-memory is recorded, not raised."""
    return throughput_sweep(model, inputs, [batch_size], [mode], device, loss_fn,
                            tokens_per_sample, warmup=warmup, rounds=repeats)[0]


def peak_memory(model: nn.Module, inputs: tuple[torch.Tensor, ...], kind: str,
                device: torch.device, loss_fn: LossFn | None = None) -> PeakMemory:
    """Peak memory growth of one step: allocator statistics on CUDA, a fresh process on CPU."""
    if device.type == "cuda":
        try:
            n = cuda_peak_growth(make_step(kind, model, inputs, loss_fn), device)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            _release_cached(device)
            return PeakMemory(None, "cuda: max_memory_allocated growth", OUT_OF_MEMORY)
        return PeakMemory(n, "cuda: max_memory_allocated growth")
    if device.type == "cpu":
        return cpu_peak_growth(model, inputs, kind, loss_fn)
    return PeakMemory(None, f"{device.type}: none", f"not measured on {device.type}")


def write_json(reports: CostReport | Sequence[CostReport], path: str | Path) -> Path:
    """One report as an object, several as a list; written atomically."""
    if isinstance(reports, CostReport):
        return atomic_write_json(path, reports.to_dict())
    return atomic_write_json(path, [r.to_dict() for r in reports])


def write_csv(reports: CostReport | Sequence[CostReport], path: str | Path) -> Path:
    """One row per report (columns: the union of :meth:`CostReport.flat` keys); atomic."""
    rows = [reports.flat()] if isinstance(reports, CostReport) else [r.flat() for r in reports]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return atomic_write_text(path, buf.getvalue())
