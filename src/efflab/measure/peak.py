"""The machine's own limits: matmul peak FLOP/s and copy bandwidth, and a model's utilization.

Efficiency Misnomer (arXiv 2110.12894), Sec. 2 and 5: FLOPs and wall-clock time only say how
far a model is from what the hardware can do when both are set against the hardware's limit.
Vendor peaks do not apply to one thread of a shared VM, so the limit is *measured*, on the
device, in the report's dtype and with the report's thread count:

* :func:`matmul_peak`: FLOP/s of a large square GEMM (``n = 1024`` on CPU, ``4096`` on a GPU),
  ``2·n³`` FLOPs per call (the same convention as :mod:`efflab.measure.flops`), the best of
  ``repeats`` calls (the machine's capability, not its average mood);
* :func:`copy_bandwidth`: bytes/s of a large tensor copy (read + write), best of ``repeats``.

Model FLOP utilization (MFU) is achieved FLOP/s (counted FLOPs over median time) divided by
the matmul peak: between 0 and 1 for ordinary models, near 1 for a model that is one large
matmul. Work whose arithmetic intensity (FLOPs per byte of the smallest traffic it needs:
weights and inputs read, outputs written) is below the machine's ridge point (peak FLOP/s
over bandwidth) is memory-bound; for it the report adds that traffic's bandwidth utilization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from efflab.measure.timing import synchronizer, time_fn


@dataclass
class MachinePeak:
    """Measured limits of one device, dtype and thread count."""

    device: str
    dtype: str
    threads: int
    matmul_n: int
    matmul_flop_per_s: float
    copy_bytes: int
    copy_bytes_per_s: float

    @property
    def ridge_flop_per_byte(self) -> float:
        """Arithmetic intensity above which work can be compute-bound on this machine."""
        return self.matmul_flop_per_s / self.copy_bytes_per_s


@dataclass
class Utilization:
    """Achieved rates of one step against a :class:`MachinePeak` (rates in /s)."""

    flop_per_s: float
    mfu: float                     # flop_per_s / peak matmul FLOP/s (median time)
    mfu_best: float                # the same with the fastest repeat
    min_bytes: int                 # weights + inputs read, outputs written (lower bound)
    arithmetic_intensity: float    # FLOPs / min_bytes
    memory_bound: bool             # intensity below the machine's ridge point
    bandwidth_utilization: float | None = None  # min_bytes / time / copy bandwidth


_CACHE: dict[tuple, MachinePeak] = {}


def _default_n(device: torch.device) -> int:
    return 1024 if device.type == "cpu" else 4096


def matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *,
                n: int | None = None, repeats: int = 5, warmup: int = 1) -> tuple[int, float]:
    """``(n, FLOP/s)`` of ``A @ B`` for ``n x n`` matrices, best of ``repeats`` calls."""
    device = torch.device(device)
    n = _default_n(device) if n is None else n
    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be >= 1, got n={n}, repeats={repeats}")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    t = time_fn(lambda: torch.mm(a, b, out=out), warmup=warmup, repeats=repeats,
                sync=synchronizer(device))
    return n, 2.0 * n**3 / t.min_s


def copy_bandwidth(device: torch.device | str = "cpu", *, nbytes: int = 64 * 2**20,
                   repeats: int = 5, warmup: int = 1) -> tuple[int, float]:
    """``(bytes, bytes/s)`` of copying a ``nbytes`` tensor (read once, written once)."""
    device = torch.device(device)
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), warmup=warmup, repeats=repeats,
                sync=synchronizer(device))
    moved = 2 * src.numel() * src.element_size()
    return moved, moved / t.min_s


def machine_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 *, refresh: bool = False) -> MachinePeak:
    """The measured :class:`MachinePeak` at torch's current thread count; measured once per
    process and (device, dtype, threads) unless ``refresh``."""
    device = torch.device(device)
    key = (str(device), dtype, torch.get_num_threads())
    if refresh or key not in _CACHE:
        n, flops = matmul_peak(device, dtype)
        nbytes, bandwidth = copy_bandwidth(device)
        _CACHE[key] = MachinePeak(str(device), str(dtype).replace("torch.", ""),
                                  torch.get_num_threads(), n, flops, nbytes, bandwidth)
    return _CACHE[key]


def utilization(flops: float, median_s: float, min_s: float, min_bytes: int,
                peak: MachinePeak) -> Utilization:
    """Achieved FLOP/s of ``flops`` done in ``median_s`` against ``peak`` (see module)."""
    if median_s <= 0 or min_s <= 0:
        raise ValueError(f"times must be > 0, got median_s={median_s}, min_s={min_s}")
    rate = flops / median_s
    intensity = flops / min_bytes if min_bytes > 0 else float("inf")
    bound = intensity < peak.ridge_flop_per_byte
    return Utilization(
        flop_per_s=rate, mfu=rate / peak.matmul_flop_per_s,
        mfu_best=flops / min_s / peak.matmul_flop_per_s, min_bytes=int(min_bytes),
        arithmetic_intensity=intensity, memory_bound=bound,
        bandwidth_utilization=(min_bytes / median_s / peak.copy_bytes_per_s) if bound else None)
