"""Two CPU processes under torchrun (gloo, loopback) compute what one process computes."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from efflab.train import shard_bounds

WORKER = Path(__file__).with_name("dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_module():
    spec = importlib.util.spec_from_file_location("dist_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("n, world", [(37, 2), (5, 3), (2, 4), (0, 2), (100, 7)])
def test_shards_cover_data_exactly_once(n, world):
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_errors():
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        shard_bounds(10, 2, 2)


def test_two_processes_equal_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(WORKER),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = _worker_module().compute()
    for key in ("grad", "grad_reg", "minibatch", "fullbatch"):
        for r in ranks:
            torch.testing.assert_close(r[key], single[key], rtol=1e-10, atol=1e-12)
        # both ranks hold the same weights, bit for bit
        assert torch.equal(ranks[0][key], ranks[1][key])
    assert ranks[0]["loss"] == pytest.approx(single["loss"], rel=1e-10)
    for key in ("minibatch_history", "fullbatch_history"):
        for h2, h1 in zip(ranks[0][key], single[key]):
            assert h2.keys() == h1.keys()
            for k in h1:
                assert h2[k] == pytest.approx(h1[k], rel=1e-9), (key, k)
