"""Run as a child process by test_train_checkpoint.py (and imported by it): a short training
run that checkpoints every 3 steps and pauses after each step, so that the test can kill it
mid-way. ``python resume_worker.py CHECKPOINT_DIR OUT_FILE``."""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from efflab.train import TrainConfig, train

STEPS = 24


def setup(checkpoint_dir: str | None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    # dropout: the resumed run must also restore the global random state
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    cfg = TrainConfig(steps=STEPS, batch_size=8, lr=0.05, nesterov=True, warmup_steps=4,
                      schedule="cosine", weight_decay=1e-3, checkpoint_dir=checkpoint_dir,
                      checkpoint_every=3 if checkpoint_dir else 0)
    return model, (x, y), cfg


if __name__ == "__main__":
    torch.set_num_threads(1)
    model, data, cfg = setup(sys.argv[1])
    train(model, data, cfg, callback=lambda step, m: time.sleep(0.1))
    torch.save(model.state_dict(), sys.argv[2])
