"""One training loop for mini-batch SGD and full-batch GD (Geiping et al. 2022, Sec. 3).

Both regimes share the optimizer, the schedule (linear warmup, then constant, cosine or
rsqrt), weight decay, clipping, the gradient regularizer, evaluation, logging and
checkpointing; they differ only in which samples make up a step's batch: a fresh slice of a
per-epoch permutation, or the whole training set (reordered at every step with
``shuffle_blocks``, so that the gradient regularizer's blocks change). A step reads top to
bottom in :func:`train`:

    batch -> accumulate_gradient (micro-batches) -> one all-reduce -> clip -> lr -> step.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from efflab.progress import bar, enabled
from efflab.seeding import derive_seed
from efflab.train.checkpoint import (
    CheckpointError,
    check_checkpoint_dir,
    data_fingerprint,
    fingerprint,
    load_checkpoint,
    model_fingerprint,
    save_checkpoint,
)
from efflab.train.config import TrainConfig
from efflab.train.distributed import (
    all_reduce_sum_,
    broadcast_module_,
    rank_and_world,
    shard_bounds,
)
from efflab.train.gradient import Augment, LossFn, accumulate_gradient, check_data
from efflab.train.schedule import learning_rate

Data = tuple[torch.Tensor, torch.Tensor]

# settings that may differ between a run and the run that resumes it
#: set by ``efflab run/reproduce --tensorboard DIR``: every run without its own
#: ``tensorboard_dir`` logs into a fresh subfolder of DIR
TENSORBOARD_ENV = "EFFLAB_TENSORBOARD"

_RESUMABLE = ("eval_every", "checkpoint_dir", "checkpoint_every", "device", "eval_batch_size",
              "log_grad_norm", "tensorboard_dir", "progress")


@dataclass
class TrainResult:
    """``history``: one dict per optimizer step (step, lr, train_loss, grad_norm; at evaluations
    also train_acc, test_loss, test_acc). ``final``: train_loss, train_acc (and test_loss,
    test_acc with eval data) in eval mode after the last step. ``resumed_from``: the step a
    checkpoint was resumed at (0 for a fresh run). ``wall_s``: seconds this call took;
    ``total_wall_s``: seconds of training over every call of a resumed run (saved in the
    checkpoint, so a resume does not under-report the run's time)."""

    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    resumed_from: int = 0
    wall_s: float = 0.0
    total_wall_s: float = 0.0


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.adam_betas,
                                weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.adam_betas,
                             weight_decay=cfg.weight_decay)


def total_steps(n: int, cfg: TrainConfig) -> int:
    """Optimizer steps of the run: ``steps``, or ``epochs`` passes over ``n`` samples (the
    last batch of an epoch may be smaller; a full-batch epoch is one step)."""
    if cfg.steps is not None:
        return int(cfg.steps)
    per_epoch = 1 if cfg.batch_size is None else math.ceil(n / cfg.batch_size)
    return max(1, round(cfg.epochs * per_epoch))


class _Batches:
    """Indices of step ``t``'s batch: slices of a permutation drawn afresh for each epoch from
    a generator seeded by (seed, epoch), so any step's batch is known without replaying the
    run (which makes resuming exact)."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device):
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.per_epoch = math.ceil(n / batch_size)
        self._epoch, self._perm = -1, torch.empty(0)

    def __call__(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "train.batches", epoch))
            self._perm = torch.randperm(self.n, generator=g).to(self.device)
            self._epoch = epoch
        return self._perm[i * self.batch_size:(i + 1) * self.batch_size]


def block_order(n: int, seed: int, step: int) -> torch.Tensor:
    """The order of the ``n`` training samples at full-batch step ``step`` (0-based) with
    ``shuffle_blocks``: the regularizer's blocks are consecutive runs of ``grad_reg_block``
    samples in it. A permutation (int64, on the CPU) drawn from a generator seeded by
    ``derive_seed(seed, "train.blocks", step)``: the same on every rank, machine and resume,
    and new at every step. Under torch.distributed each rank then takes its whole blocks of
    it (``shard_bounds(..., unit=grad_reg_block)``), as of the unshuffled set."""
    g = torch.Generator().manual_seed(derive_seed(seed, "train.blocks", step))
    return torch.randperm(n, generator=g)


@torch.no_grad()
def _eval_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
               loss_fn: LossFn, amp: bool) -> torch.Tensor:
    """(summed loss, correct predictions) over ``(x, y)`` as a float64 tensor of 2."""
    sums = torch.zeros(2, dtype=torch.float64, device=x.device)
    for a in range(0, x.shape[0], batch_size):
        xb, yb = x[a:a + batch_size], y[a:a + batch_size]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and x.device.type == "cuda"):
            out = model(xb)
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        sums[0] += loss_fn(out, yb).double() * xb.shape[0]
        if yb.dtype in (torch.int64, torch.int32) and out.dim() == 2:
            sums[1] += (out.argmax(-1) == yb).sum()
        else:
            sums[1] = math.nan  # accuracy needs class labels and logits
    return sums


def evaluate(model: nn.Module, data: Data, batch_size: int = 1024,
             loss_fn: LossFn = nn.functional.cross_entropy, *, amp: bool = False,
             distributed: bool = False) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` (in eval mode) on ``data = (x (n, *), y (n,))``.

    ``loss_fn`` returns a mean over its batch. With ``distributed=True`` (inside an initialized
    process group, called by every rank) each rank evaluates its shard and the sums are
    all-reduced. The model's train/eval mode is restored afterwards.
    """
    x, y = data
    n = check_data(x, y)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world = rank_and_world() if distributed else (0, 1)
    a, b = shard_bounds(n, rank, world)
    was_training = model.training
    model.eval()
    try:
        sums = _eval_sums(model, x[a:b], y[a:b], batch_size, loss_fn, amp)
    finally:
        model.train(was_training)
    if world > 1:
        all_reduce_sum_([sums])
    return {"loss": sums[0].item() / n, "acc": sums[1].item() / n}


def train(model: nn.Module, data: Data, cfg: TrainConfig, eval_data: Data | None = None,
          loss_fn: LossFn = nn.functional.cross_entropy,
          callback: Callable[[int, nn.Module], Any] | None = None,
          augment: Augment | None = None) -> TrainResult:
    """Train ``model`` in place on ``data = (x (n, *), y (n,))`` as ``cfg`` says.

    ``augment(x_batch, generator) -> x_batch`` is drawn afresh at every step (for fixed
    augmentation, train on pre-drawn copies: :func:`efflab.data.augment.fixed_copies`).
    ``callback(step, model)`` runs after every optimizer step (step counts from 1); a dict it
    returns is merged into that step's history record, which is checkpointed, so what a
    callback measures (validation scores, ranks) survives a resume with the rest.

    ``cfg.tensorboard_dir`` writes the history's scalars for TensorBoard (rank 0);
    ``cfg.progress`` shows a bar with the loss (default: when stderr is a terminal).

    Under ``torchrun`` (a process group initialized, e.g. by
    :func:`efflab.train.distributed.init_distributed`) every rank passes the same full data
    set; each works on its shard of every batch and one all-reduce per step sums the
    gradient, so the run equals the single-process one up to rounding (augmentation draws
    differ per rank). Rank 0 writes the checkpoints.
    """
    t0 = time.perf_counter()
    device = torch.device(cfg.device)
    x, y = data
    n = check_data(x, y, cfg.micro_batch_size if cfg.full_batch else None)
    if cfg.batch_size is not None and cfg.batch_size > n:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the data set ({n} "
                         "samples); use batch_size=None for full-batch training")
    if cfg.micro_batch_size is not None and cfg.batch_size is not None \
            and cfg.micro_batch_size > cfg.batch_size:
        raise ValueError(f"micro_batch_size={cfg.micro_batch_size} is larger than "
                         f"batch_size={cfg.batch_size}")
    if cfg.checkpoint_dir is not None:
        check_checkpoint_dir(cfg.checkpoint_dir)
    x, y = x.to(device), y.to(device)
    if eval_data is not None:
        check_data(*eval_data)
        eval_data = (eval_data[0].to(device), eval_data[1].to(device))
    model.to(device)
    rank, world = rank_and_world()
    broadcast_module_(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = make_optimizer(params, cfg)
    total = total_steps(n, cfg)
    batch_size = n if cfg.full_batch else cfg.batch_size
    batches = None if cfg.full_batch else _Batches(n, batch_size, cfg.seed, device)
    aug_gen = torch.Generator(device=device) if augment is not None else None
    result = TrainResult(steps=total)

    start, earlier_wall = 0, 0.0
    if cfg.checkpoint_dir is not None:
        run_key = fingerprint({k: v for k, v in dataclasses.asdict(cfg).items()
                               if k not in _RESUMABLE} | {"n": n, "world_size": world})
        identity = {"model_fingerprint": model_fingerprint(model),
                    "data_fingerprint": data_fingerprint(x, y)}
        state = load_checkpoint(cfg.checkpoint_dir, map_location=device)
        if state is not None:
            _check_same_run(state, run_key, identity, cfg.checkpoint_dir)
            try:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as e:
                raise CheckpointError(f"checkpoint in {cfg.checkpoint_dir} does not fit this "
                                      f"model: {str(e).splitlines()[0][:300]}") from e
            torch.set_rng_state(state["rng"].cpu())
            result.history = list(state["history"])
            start = result.resumed_from = int(state["step"])
            earlier_wall = float(state.get("wall_s", 0.0))
    writer = _tensorboard(cfg.tensorboard_dir) if rank == 0 else None
    pbar = bar(total, desc="train", show=True) if _show_progress(cfg, rank) else None
    if pbar is not None:
        pbar.update(start)

    def do_eval(record: dict[str, float]) -> None:
        ev = dict(batch_size=cfg.eval_batch_size, loss_fn=loss_fn, amp=cfg.amp,
                  distributed=world > 1)
        tr = evaluate(model, (x, y), **ev)
        record["train_acc"] = tr["acc"]
        record["eval_train_loss"] = tr["loss"]
        if eval_data is not None:
            te = evaluate(model, eval_data, **ev)
            record["test_loss"], record["test_acc"] = te["loss"], te["acc"]

    model.train()
    t_step = time.perf_counter()
    for step in range(start, total):
        if batches is not None:
            idx = batches(step)
        elif cfg.shuffle_blocks:
            idx = block_order(n, cfg.seed, step).to(device)
        else:
            idx = None
        m = n if idx is None else idx.numel()  # the last batch of an epoch may be smaller
        a, b = shard_bounds(m, rank, world, unit=cfg.grad_reg_block if cfg.grad_reg else 1)
        if idx is None:
            xs, ys = x[a:b], y[a:b]
        else:
            xs, ys = x[idx[a:b]], y[idx[a:b]]
        if aug_gen is not None:
            aug_gen.manual_seed(derive_seed(cfg.seed, "train.augment", step, rank))
        for p in params:  # zeros, not None: every rank all-reduces the same buffers
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()
        loss_sum = accumulate_gradient(
            model, xs, ys, denominator=m, loss_fn=loss_fn,
            micro_batch_size=cfg.micro_batch_size, grad_reg=cfg.grad_reg,
            grad_reg_block=cfg.grad_reg_block, grad_reg_method=cfg.grad_reg_method,
            grad_reg_eps=cfg.grad_reg_eps, augment=augment, generator=aug_gen, amp=cfg.amp)
        grads = [p.grad for p in params]
        loss_buf = loss_sum.reshape(1).to(grads[0].dtype)
        all_reduce_sum_([*grads, loss_buf])
        record: dict[str, float] = {"step": step + 1}
        if cfg.clip_norm is not None:
            record["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm).item()
        elif cfg.log_grad_norm:
            record["grad_norm"] = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        lr = learning_rate(step, total, cfg.lr, cfg.warmup_steps, cfg.schedule,
                           cfg.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        record["lr"] = lr
        record["train_loss"] = loss_buf.item() / m
        last = step + 1 == total
        if last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0):
            do_eval(record)
            model.train()
        if callback is not None:
            extra = callback(step + 1, model)
            if isinstance(extra, dict):
                record.update(extra)
        result.history.append(record)
        if writer is not None:  # seconds per step go to TensorBoard only: history stays exact
            now = time.perf_counter()
            _log_scalars(writer, {**record, "step_s": now - t_step})
            t_step = now
        if pbar is not None:
            pbar.set_postfix(loss=f"{record['train_loss']:.4g}", refresh=False)
            pbar.update(1)
        if cfg.checkpoint_every and ((step + 1) % cfg.checkpoint_every == 0 or last) \
                and rank == 0:
            save_checkpoint(cfg.checkpoint_dir, {
                "run": run_key, **identity, "step": step + 1, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                "history": result.history,
                "wall_s": earlier_wall + time.perf_counter() - t0})
    if pbar is not None:
        pbar.close()
    if writer is not None:
        writer.close()

    final_record: dict[str, float] = {}
    if result.history and "train_acc" in result.history[-1]:
        final_record = result.history[-1]
    else:  # resumed at the very end: evaluate now
        do_eval(final_record)
    model.eval()
    result.final = {"train_loss": final_record["eval_train_loss"],
                    "train_acc": final_record["train_acc"]}
    if eval_data is not None:
        result.final["test_loss"] = final_record["test_loss"]
        result.final["test_acc"] = final_record["test_acc"]
    model.train()
    result.wall_s = time.perf_counter() - t0
    result.total_wall_s = earlier_wall + result.wall_s
    return result


def _check_same_run(state: dict[str, Any], run_key: str, identity: dict[str, str],
                    checkpoint_dir: str) -> None:
    """Refuse a checkpoint of another run: other settings, another model, other data."""
    if state.get("run") != run_key:
        raise CheckpointError(
            f"checkpoint in {checkpoint_dir} belongs to another run (settings differ): "
            f"saved {state.get('run')}, now {run_key}")
    for what, now in identity.items():
        saved = state.get(what)
        if saved is not None and saved != now:
            hint = ("model: the module tree or a tensor's shape differs"
                    if what == "model_fingerprint"
                    else "data set: the training data differ (same size, other values)")
            raise CheckpointError(f"checkpoint in {checkpoint_dir} was written for another "
                                  f"{hint}; use another checkpoint_dir or delete it")


def _show_progress(cfg: TrainConfig, rank: int) -> bool:
    return rank == 0 and (enabled() if cfg.progress is None else cfg.progress)


_tb_runs = 0


def _tensorboard(logdir: str | None):
    global _tb_runs
    if logdir is None:
        root = os.environ.get(TENSORBOARD_ENV)
        if not root:
            return None
        _tb_runs += 1
        stamp = time.strftime("%Y%m%d-%H%M%S")
        logdir = os.path.join(root, f"run-{stamp}-pid{os.getpid()}-{_tb_runs}")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch's writer needs the tensorboard package
        raise ImportError("tensorboard_dir needs the tensorboard extra: "
                          "pip install 'efflab[tensorboard]'") from e
    return SummaryWriter(log_dir=str(logdir))


def _log_scalars(writer, record: dict[str, float]) -> None:
    step = int(record["step"])
    for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
            group = "test" if key.startswith("test_") else "train"
            writer.add_scalar(f"{group}/{key.removeprefix('test_')}", value, step)
