"""Distributed training beyond one node: the regularized gradient does not depend on the world
size (whole blocks per rank), a multi-node c10d rendezvous on loopback gives what one process
gives, and a stalled rank makes the others fail with a clear error within the timeout."""

from __future__ import annotations

import datetime
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from efflab.train.distributed import DEFAULT_TIMEOUT_S, resolve_timeout, shard_bounds

WORKER = Path(__file__).with_name("dist_scaling_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _single():
    spec = importlib.util.spec_from_file_location("dist_scaling_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.compute()


def _assert_same(rank_result, single):
    for key in ("grad_reg_finite-difference", "grad_reg_double-backprop", "train_params",
                "train_shuffled_params"):
        torch.testing.assert_close(rank_result[key], single[key], rtol=1e-10, atol=1e-12)
    for key in ("loss_finite-difference", "loss_double-backprop"):
        assert rank_result[key] == pytest.approx(single[key], rel=1e-12)
    for h_dist, h_one in zip(rank_result["train_history"], single["train_history"],
                             strict=True):
        for k in h_one:
            assert h_dist[k] == pytest.approx(h_one[k], rel=1e-9), k


@pytest.mark.parametrize("n, world, unit", [(41, 2, 6), (41, 3, 6), (1001, 2, 128),
                                            (5, 4, 2), (0, 2, 3), (12, 2, 6), (7, 3, 1)])
def test_shards_of_whole_units_cover_the_data_once(n, world, unit):
    bounds = [shard_bounds(n, r, world, unit=unit) for r in range(world)]
    assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
    for a, _ in bounds:
        assert a % unit == 0 or a == n  # no block of `unit` samples straddles two ranks
    units = [-(-(b - a) // unit) for a, b in bounds]
    assert max(units) - min(units) <= 1
    if unit == 1:  # the plain sample-wise shards
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1


def test_shard_and_timeout_arguments(monkeypatch):
    with pytest.raises(ValueError, match="unit must be >= 1, got 0"):
        shard_bounds(10, 0, 2, unit=0)
    monkeypatch.delenv("EFFLAB_DIST_TIMEOUT_S", raising=False)
    assert resolve_timeout() == DEFAULT_TIMEOUT_S
    assert resolve_timeout(datetime.timedelta(minutes=2)) == 120.0
    for bad in (0, -1.0, float("nan"), float("inf"), "10", True):
        with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
            resolve_timeout(bad)
    monkeypatch.setenv("EFFLAB_DIST_TIMEOUT_S", "45")
    assert resolve_timeout() == 45.0
    monkeypatch.setenv("EFFLAB_DIST_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="EFFLAB_DIST_TIMEOUT_S must be a number of seconds, "
                                         "got 'soon'"):
        resolve_timeout()


def _simulated_ranks(monkeypatch, world, fn):
    """Sum over ranks of what ``fn()`` returns on each rank of ``world``, computed here one
    rank after another (rank_and_world patched, the all-reduce left to this sum)."""
    import efflab.train.distributed as distributed

    monkeypatch.setattr(distributed, "all_reduce_sum_", lambda tensors: None)
    total = None
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank_and_world", lambda r=rank: (r, world))
        part = fn()
        total = part if total is None else [t + p for t, p in zip(total, part)]
    monkeypatch.undo()
    return total


@pytest.mark.parametrize("world", [2, 3, 4, 7])
@pytest.mark.parametrize("method", ["finite-difference", "double-backprop"])
def test_regularized_gradient_does_not_depend_on_the_world_size(monkeypatch, world, method):
    """N = 41 and blocks of 6: a multiple of neither world x block; before the fix ranks cut
    their own blocks and the regularizer changed with the world size."""
    from efflab.train import full_batch_gradient, regularized_gradient_reference

    spec = importlib.util.spec_from_file_location("dist_scaling_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x, y = mod.problem(41)
    kw = dict(grad_reg=0.5, grad_reg_block=6, grad_reg_method=method, micro_batch_size=4)
    one, _ = full_batch_gradient(mod.model(), x, y, **kw)
    many = _simulated_ranks(monkeypatch, world,
                            lambda: full_batch_gradient(mod.model(), x, y, **kw)[0])
    for a, b in zip(many, one, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if method == "double-backprop":  # and both are the regularized gradient itself
        ref = regularized_gradient_reference(mod.model(), x, y, grad_reg=0.5, block=6)
        for a, b in zip(one, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_shard_that_splits_a_block_is_refused(monkeypatch):
    import efflab.train.distributed as distributed
    from efflab.train.gradient import accumulate_gradient

    spec = importlib.util.spec_from_file_location("dist_scaling_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x, y = mod.problem(41)
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 2))
    a, b = shard_bounds(41, 0, 2)  # 21 samples: 3 blocks of 6 and a piece of the fourth
    with pytest.raises(ValueError, match=r"rank 0 of 2 got 21 of the 41 samples, but with "
                                         r"grad_reg > 0 each rank must get whole blocks of "
                                         r"grad_reg_block=6 \(24 samples here\)"):
        accumulate_gradient(mod.model(), x[a:b], y[a:b], denominator=41, grad_reg=0.5,
                            grad_reg_block=6)
    # without the regularizer sample-wise shards are exact, and accepted
    accumulate_gradient(mod.model(), x[a:b], y[a:b], denominator=41)


@pytest.mark.slow
def test_two_nodes_c10d_rendezvous_equal_one_process(tmp_path):
    """Two torchrun launchers, as on two machines: --nnodes=2, c10d rendezvous at an endpoint
    on loopback, one process each."""
    port = _free_port()
    cmds = [[sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
             "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
             "--rdzv-id=efflab-test", f"--node-rank={node}", "--max-restarts=0",
             str(WORKER), "exact", str(tmp_path)] for node in (0, 1)]
    procs = [subprocess.Popen(c, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in cmds]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    single = _single()
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for res in results:
        assert res["world"] == 2
        _assert_same(res, single)
    assert torch.equal(results[0]["train_params"], results[1]["train_params"])


@pytest.mark.slow
def test_stalled_rank_ends_with_a_clear_error(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(WORKER), "stall",
           str(tmp_path)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    message = (tmp_path / "rank0.err").read_text()
    assert message.startswith("rank 0 of 2: all-reduce of 3 values did not complete"), message
    assert "stalled for more than 2 s or died" in message
    assert "DistributedError" in proc.stderr
    assert not (tmp_path / "rank1.err").exists()


def test_checkpoints_by_rank_0_only_and_another_world_size_is_refused(monkeypatch, tmp_path):
    """The training loop on simulated ranks (collectives patched out): rank 1 writes no
    checkpoint, rank 0 does, and a resume on another world size is refused."""
    import efflab.train.loop as loop
    from efflab.train import TrainConfig, train
    from efflab.train.checkpoint import CheckpointError

    spec = importlib.util.spec_from_file_location("dist_scaling_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = mod.problem(20)
    ck = tmp_path / "ck"
    cfg = TrainConfig(steps=2, batch_size=None, lr=0.1, checkpoint_dir=str(ck),
                      checkpoint_every=1)
    monkeypatch.setattr(loop, "all_reduce_sum_", lambda tensors: None)
    monkeypatch.setattr(loop, "broadcast_module_", lambda module: None)
    monkeypatch.setattr(loop, "rank_and_world", lambda: (1, 2))
    train(mod.model(), data, cfg)
    assert not ck.exists() or not any(ck.iterdir())
    monkeypatch.setattr(loop, "rank_and_world", lambda: (0, 2))
    train(mod.model(), data, cfg)
    assert any(ck.iterdir())
    monkeypatch.setattr(loop, "rank_and_world", lambda: (0, 3))
    with pytest.raises(CheckpointError, match="belongs to another run"):
        train(mod.model(), data, cfg)
