"""Run by test_distributed_scaling.py under torchrun (gloo on loopback, one or several
"nodes"), and imported by it for the single-process side.

``exact OUT``: the regularized full-batch gradient and a short regularized training run, at
sample counts that are not multiples of world size x block (with fixed and with reshuffled
blocks); writes ``OUT/rank<r>.pt``.
``stall OUT``: rank 1 stalls before the first all-reduce; the others must fail with
DistributedError within the timeout (2 s) instead of waiting.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from efflab.train import TrainConfig, full_batch_gradient, init_distributed, train
from efflab.train.distributed import DistributedError, all_reduce_sum_, barrier, shard_bounds
from efflab.train.gradient import accumulate_gradient


def problem(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (n,), generator=g)


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def compute() -> dict[str, object]:
    """What must not depend on the world size (float64)."""
    out: dict[str, object] = {}
    x, y = problem(41)  # 41 = 6 blocks of 6 + 5: a multiple of neither 2 x 6 nor 3 x 6
    for method in ("finite-difference", "double-backprop"):
        g, loss = full_batch_gradient(model(), x, y, grad_reg=0.5, grad_reg_block=6,
                                      grad_reg_method=method, micro_batch_size=4)
        out[f"grad_reg_{method}"], out[f"loss_{method}"] = _flat(g), loss
    m = model(seed=1)
    cfg = TrainConfig(steps=3, batch_size=None, lr=0.3, grad_reg=0.2, grad_reg_block=7)
    res = train(m, (x, y), cfg)
    out["train_params"] = _flat(m.parameters())
    out["train_history"] = res.history
    m = model(seed=1)  # the regularizer's blocks reshuffled at every step: one order per step
    train(m, (x, y), TrainConfig(steps=3, batch_size=None, lr=0.3, grad_reg=0.2,
                                 grad_reg_block=7, shuffle_blocks=True))
    out["train_shuffled_params"] = _flat(m.parameters())
    return out


def refused() -> str:
    """A plain (sample-wise) shard of 41 samples with blocks of 6 must be refused."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    x, y = problem(41)
    a, b = shard_bounds(41, rank, world)
    try:
        accumulate_gradient(model(), x[a:b], y[a:b], denominator=41, grad_reg=0.5,
                            grad_reg_block=6)
    except ValueError as e:
        return str(e)
    return ""


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "exact":
        rank, world = init_distributed("cpu")
        result = compute()
        result["world"] = world
        result["refused"] = refused()
        torch.save(result, f"{out}/rank{rank}.pt")
        barrier()
        torch.distributed.destroy_process_group()
    elif mode == "stall":
        rank, world = init_distributed("cpu", timeout=2.0)
        if rank == 1:
            time.sleep(60)  # torchrun ends this process once rank 0 has failed
        try:
            all_reduce_sum_([torch.ones(3)])
        except DistributedError as e:
            with open(f"{out}/rank{rank}.err", "w") as f:
                f.write(str(e))
            raise
    else:
        raise SystemExit(f"unknown mode {mode!r}")
