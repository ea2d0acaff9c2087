"""Learning-rate schedules: linear warmup, then constant, cosine (paper 6, Sec. 3.1) or inverse
square root (the Transformer's, as the Long Range Arena configs use it)."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "rsqrt")


def learning_rate(step: int, total_steps: int, lr: float, warmup_steps: int = 0,
                  schedule: str = "constant", min_lr_ratio: float = 0.0) -> float:
    """The learning rate of optimizer step ``step`` (0-based) out of ``total_steps``.

    Warmup rises linearly to ``lr`` over ``warmup_steps`` steps (step 0 already takes
    ``lr / warmup_steps``, so no step is wasted at zero). After warmup ``"cosine"`` decays from
    ``lr`` towards ``min_lr_ratio * lr``, which it would reach one step after the last (so the
    last step still moves).

    ``"rsqrt"``: with ``t = step + 1`` and ``w = warmup_steps`` (which must be > 0),
    ``lr * min(1, t / w) * sqrt(w / max(t, w))``: the same linear warmup, peak ``lr`` at the
    last warmup step, then ``lr * sqrt(w / t)``; ``total_steps`` and ``min_lr_ratio`` play no
    part. It is the Long Range Arena's ``factors = "constant * linear_warmup * rsqrt_decay"``
    (google-research/long-range-arena, ``lra_benchmarks/utils/train_utils.py``,
    ``create_learning_rate_scheduler``: ``min(1, step / warmup) / sqrt(max(step, warmup))``)
    with its constant ``= lr * sqrt(w)``, i.e. its ``rsqrt_normalized_decay`` with constant
    ``lr``, read one step later (its step 0 has learning rate 0).
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step must be in [0, {total_steps}), got {step}")
    if schedule == "rsqrt":
        if warmup_steps < 1:
            raise ValueError(f"schedule='rsqrt' needs warmup_steps > 0 (its decay is "
                             f"sqrt(warmup_steps / t)), got warmup_steps={warmup_steps}")
        t = step + 1
        return lr * min(1.0, t / warmup_steps) * math.sqrt(warmup_steps / max(t, warmup_steps))
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        span = total_steps - warmup_steps
        t = (step - warmup_steps) / span
        floor = min_lr_ratio * lr
        return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
