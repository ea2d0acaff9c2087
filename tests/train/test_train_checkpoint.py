"""Atomic checkpoints: a real child process killed mid-run resumes to the same weights."""

from __future__ import annotations

import importlib.util
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from efflab.train import CheckpointError, TrainConfig, load_checkpoint, train
from efflab.train.checkpoint import checkpoint_path

WORKER = Path(__file__).with_name("resume_worker.py")


def _worker():
    spec = importlib.util.spec_from_file_location("resume_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_killed_run_resumes_to_same_weights(tmp_path):
    worker = _worker()
    ckpt_dir, out = tmp_path / "ckpt", tmp_path / "weights.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(WORKER), str(ckpt_dir), str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not checkpoint_path(ckpt_dir).exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.01)
        time.sleep(0.25)  # let it run a little past the first checkpoint
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists()
    killed_at = load_checkpoint(ckpt_dir)["step"]
    assert 3 <= killed_at < worker.STEPS and killed_at % 3 == 0

    model, data, cfg = worker.setup(str(ckpt_dir))
    resumed = train(model, data, cfg)
    assert resumed.resumed_from == killed_at
    assert len(resumed.history) == worker.STEPS

    ref_model, ref_data, ref_cfg = worker.setup(None)
    ref = train(ref_model, ref_data, ref_cfg)
    for (k, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), k
    assert resumed.history == ref.history


def test_finished_run_resumes_to_its_end(tmp_path):
    worker = _worker()
    model, data, cfg = worker.setup(str(tmp_path))
    first = train(model, data, cfg)
    again_model, _, _ = worker.setup(str(tmp_path))
    again = train(again_model, data, cfg)
    assert again.resumed_from == worker.STEPS
    assert again.final == pytest.approx(first.final)
    for a, b in zip(model.parameters(), again_model.parameters()):
        assert torch.equal(a, b)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    worker = _worker()
    model, data, cfg = worker.setup(str(tmp_path))
    checkpoint_path(tmp_path).write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint .*checkpoint\.pt is corrupt"):
        train(model, data, cfg)


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "x", "evil": Evil()}, checkpoint_path(tmp_path), pickle_module=pickle)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_checkpoint_of_another_run_is_refused(tmp_path):
    worker = _worker()
    model, data, cfg = worker.setup(str(tmp_path))
    cfg.steps = 6
    train(model, data, cfg)
    cfg2 = TrainConfig(steps=6, batch_size=8, lr=0.5, checkpoint_dir=str(tmp_path),
                       checkpoint_every=3)
    with pytest.raises(CheckpointError, match="belongs to another run"):
        train(model, data, cfg2)
