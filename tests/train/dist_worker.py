"""Run by test_train_distributed.py under torchrun (2 CPU processes, gloo on loopback), and
imported by it for the single-process side. Writes what rank ``r`` computed to
``<out>/rank<r>.pt``."""

from __future__ import annotations

import sys

import torch
from torch import nn

from efflab.train import TrainConfig, full_batch_gradient, init_distributed, train


def problem(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (n,), generator=g)


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 10), nn.Tanh(), nn.Linear(10, 3)).double()


def compute() -> dict[str, object]:
    """Everything compared between 1 and 2 processes."""
    out: dict[str, object] = {}
    x, y = problem(37)  # 37 = 19 + 18: shards of unequal size
    g, loss = full_batch_gradient(model(), x, y, micro_batch_size=5)
    out["grad"], out["loss"] = torch.cat([t.reshape(-1) for t in g]), loss
    x2, y2 = problem(36, seed=1)  # 18 + 18: blocks of 6 are the same blocks on 1 or 2 ranks
    g, _ = full_batch_gradient(model(), x2, y2, grad_reg=0.5, grad_reg_block=6)
    out["grad_reg"] = torch.cat([t.reshape(-1) for t in g])
    for name, cfg in {
        "minibatch": TrainConfig(steps=7, batch_size=9, lr=0.1, nesterov=True,
                                 weight_decay=1e-3, micro_batch_size=3),
        "fullbatch": TrainConfig(steps=4, batch_size=None, lr=0.5, warmup_steps=2,
                                 clip_norm=0.5, schedule="cosine"),
    }.items():
        m = model(seed=2)
        res = train(m, (x, y), cfg, eval_data=problem(11, seed=3))
        out[name] = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
        out[name + "_history"] = res.history
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    rank, world = init_distributed("cpu")
    assert world == 2, world
    torch.save(compute(), f"{sys.argv[1]}/rank{rank}.pt")
    # Leave together: a rank that tears gloo down while its peer still holds the connection
    # can make the peer's transport thread abort ("terminate called without an active
    # exception", seen once in 20-odd runs).
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
