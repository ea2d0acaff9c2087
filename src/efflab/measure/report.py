"""The cost report: every efficiency indicator of one model, measured together.

Efficiency Misnomer (arXiv 2110.12894), Sec. 4-5: parameters, FLOPs, latency, throughput and
memory disagree, so report all of them, for inference and for training, with the machine.
:func:`measure` takes one model and example inputs and returns a :class:`CostReport`;
:func:`write_json` and :func:`write_csv` save one or many reports atomically.
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
from efflab.measure.machine import machine_info
from efflab.measure.memory import PeakMemory, cpu_peak_growth, cuda_peak_growth
from efflab.measure.params import ParameterCount, count_parameters
from efflab.measure.steps import (
    LossFn,
    make_inference_step,
    make_step,
    make_train_step,
    resize_batch,
)
from efflab.measure.timing import Timing, synchronizer, time_fn

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

    @property
    def flops_forward_per_sample(self) -> float:
        return self.flops_forward.total / self.batch_size

    @property
    def flops_forward_per_token(self) -> float | None:
        if not self.tokens_per_sample:
            return None
        return self.flops_forward.total / (self.batch_size * self.tokens_per_sample)

    def to_dict(self) -> dict[str, Any]:
        d = to_jsonable(self)
        d["flops_forward_per_sample"] = self.flops_forward_per_sample
        d["flops_forward_per_token"] = self.flops_forward_per_token
        return d

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
        }
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
            ("FLOPs: forward (batch)", _count(self.flops_forward.total)),
            ("FLOPs: forward per sample", _count(self.flops_forward_per_sample)),
        ]
        if self.flops_forward_per_token is not None:
            rows.append(("FLOPs: forward per token", _count(self.flops_forward_per_token)))
        rows += [
            ("FLOPs: training step (batch)", _count(self.flops_train_step.total)),
            ("latency: inference median / p90",
             f"{_ms(self.latency_inference.median_s)} / {_ms(self.latency_inference.p90_s)}"),
            ("latency: training step median / p90",
             f"{_ms(self.latency_train_step.median_s)} / {_ms(self.latency_train_step.p90_s)}"),
        ]
        for t in self.throughput:
            label = f"throughput: {t.mode}, batch {t.batch_size}"
            if t.status != "ok":
                rows.append((label, t.status))
            else:
                text = f"{t.samples_per_s:,.1f} samples/s"
                if t.tokens_per_s is not None:
                    text += f", {t.tokens_per_s:,.0f} tokens/s"
                rows.append((label, text))
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
            memory: bool = True, train_throughput: bool = False) -> CostReport:
    """Measure every cost indicator of ``model`` on ``example_inputs``.

    example_inputs: a tensor or tuple of tensors, batch on dim 0, passed as ``model(*inputs)``.
    ``batch_sizes`` (default: 1 and the example batch) are reached by cycling through the
    examples; a batch size that runs out of memory is recorded as such, the others are still
    measured. ``tokens_per_sample`` (sequence models) adds tokens/s and FLOPs per token.
    ``loss_fn(output) -> scalar`` drives the training step (default: mean square of the
    output). The model is copied (ties preserved) and moved to ``device`` and ``dtype``;
    the original is left as it was. Latency and throughput are medians over ``repeats``
    calls after ``warmup`` ones (the training step uses ``train_repeats``, default half).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, "
                         f"warmup={warmup}")
    if tokens_per_sample is not None and tokens_per_sample < 1:
        raise ValueError(f"tokens_per_sample must be >= 1 or None, got {tokens_per_sample}")
    device = torch.device(device)
    inputs = _as_inputs(example_inputs)
    batch = int(inputs[0].shape[0])
    sizes = sorted({1, batch}) if batch_sizes is None else [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes or [])}")
    train_repeats = max(3, repeats // 2) if train_repeats is None else train_repeats

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

    sync = synchronizer(device)
    latency_inference = time_fn(infer, warmup=warmup, repeats=repeats, sync=sync)
    latency_train = time_fn(train, warmup=warmup, repeats=train_repeats, sync=sync)

    modes = ["inference", "train_step"] if train_throughput else ["inference"]
    points = [throughput_at(work, inputs, b, mode, device, loss_fn, tokens_per_sample,
                            warmup=min(warmup, 2), repeats=max(3, repeats // 2))
              for mode in modes for b in sizes]

    mem_inf = mem_train = None
    if memory:
        mem_inf = peak_memory(work, inputs, "inference", device, loss_fn)
        mem_train = peak_memory(work, inputs, "train_step", device, loss_fn)

    return CostReport(
        name=name, batch_size=batch, input_shapes=[list(x.shape) for x in inputs],
        input_dtypes=[str(x.dtype).replace("torch.", "") for x in inputs],
        tokens_per_sample=tokens_per_sample, params=count_parameters(work),
        flops_forward=flops_fwd, flops_train_step=flops_train,
        latency_inference=latency_inference, latency_train_step=latency_train,
        throughput=points, memory_inference=mem_inf, memory_train_step=mem_train,
        machine=machine_info(device, dtype),
    )


def throughput_at(model: nn.Module, inputs: tuple[torch.Tensor, ...], batch_size: int,
                  mode: str, device: torch.device, loss_fn: LossFn | None = None,
                  tokens_per_sample: int | None = None, warmup: int = 2, repeats: int = 10
                  ) -> ThroughputPoint:
    """Samples/s (and tokens/s) at ``batch_size``; out-of-memory is recorded, not raised."""
    try:
        batch = resize_batch(inputs, batch_size)
        step = (make_inference_step(model, batch) if mode == "inference"
                else make_train_step(model, batch, loss_fn))
        timing = time_fn(step, warmup=warmup, repeats=repeats, sync=synchronizer(device))
    except Exception as e:
        if not is_out_of_memory(e):
            raise MeasureError(f"{mode} at batch size {batch_size} failed on inputs "
                               f"{_describe(inputs)} resized to batch {batch_size}: "
                               f"{type(e).__name__}: {e}") from e
        _release_cached(device)
        return ThroughputPoint(batch_size, mode, OUT_OF_MEMORY, error=f"{type(e).__name__}: {e}")
    samples = batch_size / timing.median_s if timing.median_s > 0 else math.inf
    tokens = samples * tokens_per_sample if tokens_per_sample else None
    return ThroughputPoint(batch_size, mode, "ok", timing.median_s, samples, tokens)


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
