"""Data-parallel training with torch.distributed (paper 6, Sec. 3: the full-batch gradient on
many devices).

Each rank holds the whole data set (on its device, airbench style) and works on its own shard:
contiguous, with sizes that differ by at most one, so no sample is dropped or counted twice.
Each rank sums its share of the gradient, already weighted by ``1 / N`` for the global sample
count ``N``, and a single all-reduce (sum) of one flat buffer per step gives every rank the
exact gradient of the mean loss over all ``N`` samples. With the gradient-norm regularizer the
shards are made of whole regularizer blocks (``shard_bounds(..., unit=block)``), so every rank
count sees the very blocks one process sees and the regularized gradient does not depend on
the world size.

Every collective runs under the group's timeout (:data:`DEFAULT_TIMEOUT_S`, or the ``timeout``
given to :func:`init_distributed`): a rank that stalls or dies makes the others fail with
:class:`DistributedError` naming the operation, instead of waiting for ever.
"""

from __future__ import annotations

import datetime
import math
import os

import torch
import torch.distributed as dist

#: seconds a rank waits for the others (rendezvous, every collective) before giving up;
#: ``EFFLAB_DIST_TIMEOUT_S`` overrides it. Long enough for a slow first step of a large model
#: (a full-batch step is one collective after every rank's whole share of the work), short
#: enough that a stalled job is noticed within minutes, not torch's 30.
DEFAULT_TIMEOUT_S = 600.0

_timeout_s: float | None = None  # of the group this module joined


class DistributedError(RuntimeError):
    """A collective or the rendezvous failed: another rank stalled past the timeout or died."""


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, or ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_timeout(timeout: float | datetime.timedelta | None = None) -> float:
    """The timeout in seconds: ``timeout``, else ``$EFFLAB_DIST_TIMEOUT_S``, else the default."""
    source = "timeout"
    if timeout is None:
        env = os.environ.get("EFFLAB_DIST_TIMEOUT_S")
        if env is None:
            return DEFAULT_TIMEOUT_S
        source = "EFFLAB_DIST_TIMEOUT_S"
        try:
            timeout = float(env)
        except ValueError:
            raise ValueError(f"EFFLAB_DIST_TIMEOUT_S must be a number of seconds, got "
                             f"{env!r}") from None
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"{source} must be a positive, finite number of seconds, got "
                         f"{timeout!r}")
    return float(timeout)


def init_distributed(device: str | torch.device = "cpu",
                     timeout: float | datetime.timedelta | None = None) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU,
    nccl on CUDA, where each process takes GPU ``LOCAL_RANK``). Without ``torchrun`` (no
    ``WORLD_SIZE``) do nothing and return ``(0, 1)``.

    ``timeout`` (seconds or a timedelta; default ``$EFFLAB_DIST_TIMEOUT_S`` or
    :data:`DEFAULT_TIMEOUT_S`) bounds the rendezvous and every collective. Single-node and
    multi-node runs are the same call: torchrun's ``--nnodes``, ``--rdzv-backend=c10d`` and
    ``--rdzv-endpoint`` only change the environment this reads.
    """
    global _timeout_s
    seconds = resolve_timeout(timeout)
    if dist.is_initialized():
        return rank_and_world()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        # one GPU per process: "cuda" then means this rank's GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend=backend,
                                timeout=datetime.timedelta(seconds=seconds))
    except RuntimeError as e:  # the store's and the backend's errors both derive from it
        raise DistributedError(
            f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE')}: joining "
            f"the process group ({backend}) failed within {seconds:g} s: a rank did not "
            f"arrive or the rendezvous endpoint is unreachable: {_last_line(e)}") from e
    _timeout_s = seconds
    return rank_and_world()


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _collective(what: str, collective, *args, **kwargs):
    """Run ``collective`` (a torch.distributed function); its failure becomes a
    :class:`DistributedError` that says which operation, on which rank, after how long."""
    try:
        return collective(*args, **kwargs)
    except RuntimeError as e:
        rank, world = rank_and_world()
        timeout = f"{_timeout_s:g} s" if _timeout_s is not None else "the group's timeout"
        raise DistributedError(
            f"rank {rank} of {world}: {what} did not complete: another rank stalled for more "
            f"than {timeout} or died (set the timeout with init_distributed(timeout=...) or "
            f"EFFLAB_DIST_TIMEOUT_S): {_last_line(e)}") from e


def barrier() -> None:
    """Wait for every rank (under the group's timeout); nothing without a process group."""
    if rank_and_world()[1] > 1:
        _collective("barrier", dist.barrier)


def shard_bounds(n: int, rank: int, world_size: int, unit: int = 1) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous shard of ``n`` samples.

    The samples are cut into units of ``unit`` (the last one may be shorter) and the units
    dealt out contiguously: the first ``units % world_size`` ranks get one unit more; a rank
    may get none when there are fewer units than ranks. The shards cover ``range(n)`` exactly
    once, and every shard starts at a multiple of ``unit``, so blocks of ``unit`` samples
    (the gradient regularizer's) never straddle two ranks.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if unit < 1:
        raise ValueError(f"unit must be >= 1, got {unit}")
    units = -(-n // unit)
    base, extra = divmod(units, world_size)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return min(start * unit, n), min(stop * unit, n)


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum ``tensors`` over all ranks in place, with one all-reduce of one flat buffer."""
    _, world = rank_and_world()
    if world == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    _collective(f"all-reduce of {flat.numel()} values", dist.all_reduce, flat,
                op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        k = t.numel()
        t.copy_(flat[offset:offset + k].view_as(t))
        offset += k


def broadcast_module_(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so all start from the same weights."""
    _, world = rank_and_world()
    if world == 1:
        return
    for t in [*module.parameters(), *module.buffers()]:
        _collective("broadcast of the model from rank 0", dist.broadcast, t.data, src=0)
