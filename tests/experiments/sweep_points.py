"""Point functions of the sweep and launcher tests, in a module of their own so that worker
processes of every launcher (a spawn pool, Ray workers, Submitit jobs) can import them; the
tests put this folder on PYTHONPATH for them."""

from __future__ import annotations

import os
import time
from pathlib import Path


def square(point):
    """Logs every computation (one line per call) so tests can count recomputations."""
    with open(point["log"], "a") as f:
        f.write(f"{point['i']}\n")
    return {"i": point["i"], "square": point["i"] ** 2, "tag": point.get("tag")}


def blocking(point):
    """Point 0 blocks (until killed) unless the release file exists; the others are instant."""
    if point["i"] == 0 and not Path(point["release"]).exists():
        Path(point["pidfile"]).write_text(str(os.getpid()))
        time.sleep(120)
    return square(point)


def failing(point):
    if point["i"] == 2:
        raise RuntimeError("point 2 failed on purpose")
    return square(point)


def sleeper(point):
    """Writes its pid, then sleeps: a worker that outlives its parent would stay."""
    Path(point["dir"], f"worker-{point['i']}.pid").write_text(str(os.getpid()))
    time.sleep(point.get("sleep", 120))
    return point["i"]


def trained(point):
    """A few float32 gradient steps from the point's seed: results to compare bit for bit."""
    import torch

    g = torch.Generator().manual_seed(point["seed"])
    x = torch.randn(32, 6, generator=g)
    y = x @ torch.randn(6, 1, generator=g) + 0.1 * torch.randn(32, 1, generator=g)
    w = torch.zeros(6, 1, requires_grad=True)
    for _ in range(20):
        loss = ((x @ w - y) ** 2).mean()
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= point["lr"] * grad
    return {"loss": loss.item(), "w": w.detach().reshape(-1).tolist(),
            "log": square(point)["i"]}


def noop(point):
    """For the overhead benchmark: a point that does (almost) nothing."""
    return point["i"]


def dies_once(point):
    """Its process dies (as on a lost node) the first time, unless ``point["died"]`` exists;
    the second attempt computes."""
    marker = Path(point["died"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return square(point)
