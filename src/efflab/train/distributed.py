"""Data-parallel training with torch.distributed (paper 6, Sec. 3: the full-batch gradient on
many devices).

Each rank holds the whole data set (on its device, airbench style) and works on its own shard:
contiguous, with sizes that differ by at most one, so no sample is dropped or counted twice.
Each rank sums its share of the gradient, already weighted by ``1 / N`` for the global sample
count ``N``, and a single all-reduce (sum) of one flat buffer per step gives every rank the
exact gradient of the mean loss over all ``N`` samples.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, or ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str | torch.device = "cpu") -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU,
    nccl on CUDA, where each process takes GPU ``LOCAL_RANK``). Without ``torchrun`` (no
    ``WORLD_SIZE``) do nothing and return ``(0, 1)``.
    """
    if dist.is_initialized():
        return rank_and_world()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        # one GPU per process: "cuda" then means this rank's GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return rank_and_world()


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous shard of ``n`` samples.

    The first ``n % world_size`` ranks get one sample more; a rank may get none when
    ``n < world_size``. The shards cover ``range(n)`` exactly once.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum ``tensors`` over all ranks in place, with one all-reduce of one flat buffer."""
    _, world = rank_and_world()
    if world == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
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
        dist.broadcast(t.data, src=0)
