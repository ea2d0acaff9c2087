"""The training configuration shared by mini-batch SGD and full-batch GD (paper 6, Sec. 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from efflab.seeding import check_seed
from efflab.train.schedule import SCHEDULES

OPTIMIZERS = ("sgd", "adam", "adamw")
GRAD_REG_METHODS = ("finite-difference", "double-backprop")


@dataclass
class TrainConfig:
    """How to train. Exactly one of ``steps`` and ``epochs`` is set (epochs may be fractional).

    ``batch_size=None`` is full-batch gradient descent: every step uses the exact gradient of
    the mean loss over the whole training set, accumulated over micro-batches of
    ``micro_batch_size`` samples (which bounds memory, never the result). With a mini-batch
    ``batch_size``, ``micro_batch_size`` splits each batch the same way.

    ``grad_reg`` adds ``grad_reg * sum_k (n_k / N) |grad L_k|^2`` to the loss, where the
    ``L_k`` are the mean losses of blocks of ``grad_reg_block`` samples of the batch (a plain
    mean over blocks when they are equal): the explicit regularizer of Geiping et al. (2022,
    Sec. 3.3). Its gradient ``2 H_k g_k`` is computed either by a finite difference of block
    gradients at ``theta + grad_reg_eps * g_k / |g_k|`` (one extra forward and backward per
    block, the paper's method) or by double backprop (the exact check).

    ``shuffle_blocks=True`` (full batch with ``grad_reg > 0``) reorders the training set before
    the blocks are cut, with a new permutation at every step, a function of ``(seed, step)``
    only (:func:`efflab.train.loop.block_order`): the paper's "in practice" row, where the
    regularizer's blocks are reshuffled at every step. Without it the blocks are the same
    consecutive samples at every step. (Mini-batches need no option: their blocks are cut
    from a fresh random batch at every step.)

    ``schedule``: ``"constant"``, ``"cosine"`` (to ``min_lr_ratio * lr``) or ``"rsqrt"``
    (inverse square root after the warmup, which it needs): see
    :func:`efflab.train.schedule.learning_rate`.
    """

    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = 128
    micro_batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    clip_norm: float | None = None
    grad_reg: float = 0.0
    grad_reg_block: int = 128
    grad_reg_method: str = "finite-difference"
    shuffle_blocks: bool = False
    eval_every: int = 0
    amp: bool = False
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    # options beyond the agreed API
    grad_reg_eps: float = 1e-2
    eval_batch_size: int = 1024
    adam_betas: tuple[float, float] = (0.9, 0.999)
    min_lr_ratio: float = 0.0
    log_grad_norm: bool = True
    #: write scalars (loss, accuracy, lr, gradient norm, seconds per step) for TensorBoard here
    #: (rank 0 only; needs the ``tensorboard`` extra)
    tensorboard_dir: str | None = None
    #: a progress bar with the loss: None = when stderr is a terminal (and not --quiet)
    progress: bool | None = None

    def __post_init__(self) -> None:
        self._check_numbers()
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(
                f"exactly one of steps and epochs must be set, got steps={self.steps}, "
                f"epochs={self.epochs}")
        if self.steps is not None and (int(self.steps) != self.steps or self.steps < 1):
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs!r}")
        for name in ("batch_size", "micro_batch_size"):
            v = getattr(self, name)
            if v is not None and (int(v) != v or v < 1):
                raise ValueError(f"{name} must be None or a positive integer, got {v!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.grad_reg_method not in GRAD_REG_METHODS:
            raise ValueError(f"grad_reg_method must be one of {GRAD_REG_METHODS}, "
                             f"got {self.grad_reg_method!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got momentum="
                             f"{self.momentum!r}, weight_decay={self.weight_decay!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError(f"nesterov needs optimizer='sgd' and momentum > 0, got optimizer="
                             f"{self.optimizer!r}, momentum={self.momentum!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be None or > 0, got {self.clip_norm!r}")
        if self.grad_reg < 0:
            raise ValueError(f"grad_reg must be >= 0, got {self.grad_reg!r}")
        if self.shuffle_blocks and not (self.grad_reg > 0 and self.full_batch):
            raise ValueError(
                f"shuffle_blocks=True reshuffles the gradient regularizer's blocks of a full "
                f"batch: it needs grad_reg > 0 and batch_size=None, got grad_reg="
                f"{self.grad_reg!r}, batch_size={self.batch_size!r}")
        if self.schedule == "rsqrt" and self.warmup_steps < 1:
            raise ValueError(f"schedule='rsqrt' needs warmup_steps > 0 (it decays as "
                             f"sqrt(warmup_steps / t)), got warmup_steps={self.warmup_steps!r}")
        if self.grad_reg_block < 1:
            raise ValueError(f"grad_reg_block must be >= 1, got {self.grad_reg_block!r}")
        if not self.grad_reg_eps > 0:
            raise ValueError(f"grad_reg_eps must be > 0, got {self.grad_reg_eps!r}")
        if self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError(f"eval_every and checkpoint_every must be >= 0, got eval_every="
                             f"{self.eval_every!r}, checkpoint_every={self.checkpoint_every!r}")
        if self.checkpoint_every > 0 and self.checkpoint_dir is None:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} needs a checkpoint_dir")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")

    def _check_numbers(self) -> None:
        """Types and finiteness first: NaN slips through every ``<`` comparison below."""
        ints = ("steps", "batch_size", "micro_batch_size", "warmup_steps", "grad_reg_block",
                "eval_every", "checkpoint_every", "eval_batch_size")
        for name in ints:
            v = getattr(self, name)
            if v is None and name in ("steps", "batch_size", "micro_batch_size"):
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
        floats = ("epochs", "lr", "momentum", "weight_decay", "clip_norm", "grad_reg",
                  "grad_reg_eps", "min_lr_ratio")
        for name in floats:
            v = getattr(self, name)
            if v is None and name in ("epochs", "clip_norm"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        for name in ("nesterov", "amp", "log_grad_norm", "shuffle_blocks"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ValueError(f"progress must be None or a bool, got {self.progress!r}")
        try:
            check_seed(self.seed)
        except (TypeError, ValueError) as e:
            raise ValueError(str(e)) from None
        if len(self.adam_betas) != 2 or not all(
                isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")

    @property
    def full_batch(self) -> bool:
        return self.batch_size is None
