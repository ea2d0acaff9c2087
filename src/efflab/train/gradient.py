"""The exact full-batch gradient, accumulated over micro-batches, and the gradient-norm
regularizer of Geiping et al., "Stochastic Training is Not Necessary for Generalization"
(ICLR 2022), Sec. 3.

Fast paths and their references, side by side:

* :func:`accumulate_gradient` adds ``sum_j (m_j / N) grad mean_loss(micro_j)`` into ``.grad``:
  the gradient of the mean loss over ``N`` samples, whatever the micro-batch sizes ``m_j``.
  Reference: :func:`full_batch_gradient_reference`, one ``autograd.grad`` over all the data.
* The regularizer ``R = lam * sum_k (n_k / N) |g_k|^2`` over blocks (``g_k`` the gradient of
  block ``k``'s mean loss) has gradient ``lam * sum_k (n_k / N) 2 H_k g_k``. The fast path
  approximates ``H_k g_k`` by the finite difference ``(g_k(theta + eps u) - g_k(theta)) |g_k| /
  eps`` with ``u = g_k / |g_k|``: one extra forward and backward per block. Reference:
  ``method="double-backprop"``, the exact Hessian-vector product through ``create_graph``.
  Under torch.distributed each rank takes whole blocks (the blocks one process forms), so the
  regularized gradient is the same for every world size; a shard that would split a block
  is refused.

Batch norm: every forward pass sees one micro-batch (or, with the regularizer, one micro-batch
of one block), so batch statistics are per micro-batch ("ghost batch norm" of that size);
running statistics are updated once per micro-batch, and not by the perturbed pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _chunks(n: int, size: int | None) -> list[tuple[int, int]]:
    size = n if size is None else size
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _autocast(device: torch.device, amp: bool):
    # bf16 autocast only where it pays and is supported; on CPU the flag is ignored (and no
    # context is entered at all, which keeps the per-micro-batch overhead down)
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _upcast(loss: torch.Tensor) -> torch.Tensor:
    # a bf16 loss under autocast is scaled in float32; a float64 loss stays float64
    return loss.float() if loss.dtype in (torch.float16, torch.bfloat16) else loss


def _add_grads_(params: list[torch.Tensor], grads: list[torch.Tensor], scale: float = 1.0
                ) -> None:
    for p, g in zip(params, grads):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.add_(g, alpha=scale)


def _micro_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                    weight: float, amp: bool) -> torch.Tensor:
    """Backward of ``weight * mean_loss(x, y)`` into ``.grad``; returns the detached mean loss."""
    with _autocast(x.device, amp):
        loss = loss_fn(model(x), y)
    loss = _upcast(loss)
    (loss * weight).backward()
    return loss.detach()


def _block_gradient(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, loss_fn: LossFn, micro_batch_size: int | None, amp: bool
                    ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gradient of the mean loss over the block ``(x, y)``, accumulated over micro-batches, in
    fresh buffers (``.grad`` is left as it was); and the block's summed loss."""
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    n = x.shape[0]
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    for a, b in _chunks(n, micro_batch_size):
        loss_sum += _micro_backward(model, x[a:b], y[a:b], loss_fn, (b - a) / n, amp) * (b - a)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for p, s in zip(params, saved):
        p.grad = s
    return grads, loss_sum


def accumulate_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        denominator: int, loss_fn: LossFn = nn.functional.cross_entropy,
                        micro_batch_size: int | None = None, grad_reg: float = 0.0,
                        grad_reg_block: int = 128, grad_reg_method: str = "finite-difference",
                        grad_reg_eps: float = 1e-2, augment: Augment | None = None,
                        generator: torch.Generator | None = None, amp: bool = False
                        ) -> torch.Tensor:
    """Add this process's share of the gradient of the (regularized) mean loss into ``.grad``.

    x: (n, *) samples, y: (n,) targets: the part of a batch of ``denominator`` samples that
    this process handles (all of it on one process). ``loss_fn`` must return the mean over
    its micro-batch. Adds ``sum_j (m_j / denominator) grad mean_loss(micro_j)``, plus the
    regularizer's gradient over blocks of ``grad_reg_block`` samples when ``grad_reg > 0``.
    ``augment(x, generator)`` is applied to each micro-batch (each block with the regularizer,
    so that its perturbed pass sees the same augmented samples).

    Returns the summed (not mean) unregularized loss over the ``n`` samples, a 0-dim float64
    tensor, so that shares from several processes add up.
    """
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y must have the same number of samples, got {n} and "
                         f"{y.shape[0]}")
    if denominator < 1 or n > denominator:
        raise ValueError(f"denominator must be >= the {n} samples given, got {denominator}")
    if grad_reg != 0.0:
        _check_block_shard(n, denominator, grad_reg_block)
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    if n == 0:
        return loss_sum
    if grad_reg == 0.0:
        sums = []
        for a, b in _chunks(n, micro_batch_size):
            xb = x[a:b] if augment is None else augment(x[a:b], generator)
            sums.append(_micro_backward(model, xb, y[a:b], loss_fn, (b - a) / denominator, amp)
                        * (b - a))
        return torch.stack(sums).double().sum()
    if grad_reg_method not in ("finite-difference", "double-backprop"):
        raise ValueError("grad_reg_method must be 'finite-difference' or 'double-backprop', "
                         f"got {grad_reg_method!r}")
    params = _params(model)
    for a, b in _chunks(n, grad_reg_block):
        xb = x[a:b] if augment is None else augment(x[a:b], generator)
        weight = (b - a) / denominator
        if grad_reg_method == "double-backprop":
            loss_sum += _double_backprop_block(model, params, xb, y[a:b], loss_fn, weight,
                                               grad_reg, micro_batch_size, amp)
        else:
            loss_sum += _finite_difference_block(model, params, xb, y[a:b], loss_fn, weight,
                                                 grad_reg, grad_reg_eps, micro_batch_size, amp)
    return loss_sum


def _check_block_shard(n: int, denominator: int, block: int) -> None:
    """Under torch.distributed, refuse a shard that is not this rank's share of whole blocks:
    its blocks would not be one process's blocks, and the regularizer (a sum over blocks of
    squared block gradients, not a sum over samples) would change with the world size."""
    from efflab.train.distributed import rank_and_world, shard_bounds

    rank, world = rank_and_world()
    if world == 1:
        return
    a, b = shard_bounds(denominator, rank, world, unit=block)
    if n != b - a:
        raise ValueError(
            f"rank {rank} of {world} got {n} of the {denominator} samples, but with "
            f"grad_reg > 0 each rank must get whole blocks of grad_reg_block={block} "
            f"({b - a} samples here): shard with shard_bounds(n, rank, world, "
            f"unit=grad_reg_block), or the regularizer would depend on the world size")


def _finite_difference_block(model, params, x, y, loss_fn, weight, grad_reg, eps,
                             micro_batch_size, amp) -> torch.Tensor:
    g, loss_sum = _block_gradient(model, params, x, y, loss_fn, micro_batch_size, amp)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in g]))
    _add_grads_(params, g, weight)
    if norm.item() == 0.0:
        return loss_sum  # a zero gradient has no Hessian-vector product to add
    # saved copies, not a subtraction, restore theta bit for bit; and the perturbed pass
    # must not move batch-norm running statistics
    saved = [p.detach().clone() for p in params]
    buffers = [t.clone() for t in model.buffers()]
    with torch.no_grad():
        torch._foreach_add_(params, g, alpha=eps / norm.item())
    g_shift, _ = _block_gradient(model, params, x, y, loss_fn, micro_batch_size, amp)
    with torch.no_grad():
        for t, s in zip([*params, *model.buffers()], [*saved, *buffers]):
            t.copy_(s)
    # grad |g|^2 = 2 H g ~= 2 (g(theta + eps g/|g|) - g(theta)) |g| / eps
    scale = weight * grad_reg * 2.0 * norm.item() / eps
    for p, gs, g0 in zip(params, g_shift, g):
        p.grad.add_(gs - g0, alpha=scale)
    return loss_sum


def _double_backprop_block(model, params, x, y, loss_fn, weight, grad_reg, micro_batch_size,
                           amp) -> torch.Tensor:
    n = x.shape[0]
    g = [torch.zeros_like(p) for p in params]
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    for a, b in _chunks(n, micro_batch_size):
        with _autocast(x.device, amp):
            loss = _upcast(loss_fn(model(x[a:b]), y[a:b]))
        parts = torch.autograd.grad(loss * ((b - a) / n), params, create_graph=True,
                                    allow_unused=True)
        g = [gi + (pi if pi is not None else 0.0) for gi, pi in zip(g, parts)]
        loss_sum = loss_sum + loss.detach() * (b - a)
    penalty = sum((gi * gi).sum() for gi in g)
    # d/dtheta [weight * (mean_loss + grad_reg * |g|^2)], with mean_loss's gradient being g
    total = torch.autograd.grad(penalty, params, allow_unused=True)
    with torch.no_grad():
        for p, gi, ti in zip(params, g, total):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(gi.detach(), alpha=weight)
            if ti is not None:
                p.grad.add_(ti, alpha=weight * grad_reg)
    return loss_sum


def full_batch_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        loss_fn: LossFn = nn.functional.cross_entropy,
                        micro_batch_size: int | None = None, **kwargs
                        ) -> tuple[list[torch.Tensor], float]:
    """The exact gradient of the mean loss over all of ``(x, y)`` (over every rank's shard
    when torch.distributed is initialized: pass each rank the whole data set), and that loss.

    x: (N, *), y: (N,). Replaces ``.grad``; returns copies of the gradients (one per trainable
    parameter, in ``model.parameters()`` order) and the mean loss. ``kwargs`` go to
    :func:`accumulate_gradient` (the regularizer, augmentation, amp).
    """
    from efflab.train.distributed import all_reduce_sum_, rank_and_world, shard_bounds

    n = check_data(x, y, micro_batch_size)
    rank, world = rank_and_world()
    # with the regularizer, whole blocks per rank: the blocks one process would form
    unit = kwargs.get("grad_reg_block", 128) if kwargs.get("grad_reg", 0.0) else 1
    a, b = shard_bounds(n, rank, world, unit=unit)
    params = _params(model)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        else:
            p.grad.zero_()
    loss_sum = accumulate_gradient(model, x[a:b], y[a:b], denominator=n, loss_fn=loss_fn,
                                   micro_batch_size=micro_batch_size, **kwargs)
    grads = [p.grad for p in params]
    loss = loss_sum.reshape(1).to(grads[0].dtype) if grads else loss_sum.reshape(1)
    all_reduce_sum_([*grads, loss])
    return [g.clone() for g in grads], loss.item() / n


def full_batch_gradient_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                                  loss_fn: LossFn = nn.functional.cross_entropy
                                  ) -> list[torch.Tensor]:
    """One forward and one ``autograd.grad`` over all the data: obviously the gradient of the
    mean loss. Memory grows with ``N``; the check for :func:`full_batch_gradient`."""
    return list(torch.autograd.grad(loss_fn(model(x), y), _params(model)))


def regularized_gradient_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                                   grad_reg: float, block: int,
                                   loss_fn: LossFn = nn.functional.cross_entropy
                                   ) -> list[torch.Tensor]:
    """Gradient of ``mean_loss + grad_reg * sum_k (n_k / N) |g_k|^2`` written out directly with
    double backprop over whole blocks: the check for both regularizer methods."""
    params = _params(model)
    n = x.shape[0]
    objective = loss_fn(model(x), y)
    for a in range(0, n, block):
        b = min(a + block, n)
        g = torch.autograd.grad(loss_fn(model(x[a:b]), y[a:b]), params, create_graph=True)
        objective = objective + grad_reg * (b - a) / n * sum((t * t).sum() for t in g)
    return list(torch.autograd.grad(objective, params))


def check_data(x: torch.Tensor, y: torch.Tensor, micro_batch_size: int | None = None) -> int:
    """Validate a data set ``(x (n, *), y (n,))``; return ``n``."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"data must be a pair of tensors (x, y), got ({type(x).__name__}, "
                        f"{type(y).__name__})")
    if x.dim() == 0 or y.dim() == 0:
        raise ValueError(f"x and y need a sample axis, got shapes {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    n = x.shape[0]
    if n == 0:
        raise ValueError("the data set is empty: x has 0 samples")
    if y.shape[0] != n:
        raise ValueError(f"x and y must have the same number of samples, got x: "
                         f"{tuple(x.shape)}, y: {tuple(y.shape)}")
    if micro_batch_size is not None and micro_batch_size > n:
        raise ValueError(f"micro_batch_size={micro_batch_size} is larger than the data set "
                         f"({n} samples)")
    return n
