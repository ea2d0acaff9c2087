"""Learning-rate schedules: linear warmup, then constant or cosine (paper 6, Sec. 3.1)."""

from __future__ import annotations

import math


def learning_rate(step: int, total_steps: int, lr: float, warmup_steps: int = 0,
                  schedule: str = "constant", min_lr_ratio: float = 0.0) -> float:
    """The learning rate of optimizer step ``step`` (0-based) out of ``total_steps``.

    Warmup rises linearly to ``lr`` over ``warmup_steps`` steps (step 0 already takes
    ``lr / warmup_steps``, so no step is wasted at zero). After warmup ``"cosine"`` decays from
    ``lr`` towards ``min_lr_ratio * lr``, which it would reach one step after the last (so the
    last step still moves).
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step must be in [0, {total_steps}), got {step}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        span = total_steps - warmup_steps
        t = (step - warmup_steps) / span
        floor = min_lr_ratio * lr
        return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
