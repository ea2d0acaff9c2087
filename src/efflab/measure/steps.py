"""The two pieces of work every indicator is measured on: an inference call and a training step.

One definition serves the FLOP counter, the clock and the memory probe (Efficiency
Misnomer, arXiv 2110.12894, Sec. 4: report training and inference cost separately, for the
same work).

* inference: ``model.eval()``, ``torch.inference_mode()``, one forward pass;
* training step: ``model.train()``, forward, loss, backward, plain SGD update, gradients
  released (``set_to_none``) so that every step starts from the same memory state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

LossFn = Callable[[Any], torch.Tensor]


def first_float_tensor(output: Any) -> torch.Tensor:
    """The first floating-point tensor in a model output (a tensor, tuple, list or dict)."""
    if isinstance(output, torch.Tensor):
        if output.is_floating_point():
            return output
    elif isinstance(output, Mapping):
        for v in output.values():
            try:
                return first_float_tensor(v)
            except TypeError:
                continue
    elif isinstance(output, Sequence) and not isinstance(output, str):
        for v in output:
            try:
                return first_float_tensor(v)
            except TypeError:
                continue
    raise TypeError(f"model output holds no floating-point tensor: got {type(output).__name__}")


def default_loss(output: Any) -> torch.Tensor:
    """Mean square of the output: reaches every parameter that the output depends on, and
    costs only element-wise work, so the step's FLOPs are the model's forward and backward."""
    return first_float_tensor(output).float().square().mean()


def resize_batch(inputs: tuple[torch.Tensor, ...], batch_size: int) -> tuple[torch.Tensor, ...]:
    """The example inputs with ``batch_size`` rows (dim 0), cycling through the examples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = inputs[0].shape[0]
    index = torch.arange(batch_size, device=inputs[0].device) % n
    return tuple(x.index_select(0, index) for x in inputs)


def make_inference_step(model: nn.Module, inputs: tuple[torch.Tensor, ...]
                        ) -> Callable[[], Any]:
    def step() -> Any:
        model.eval()
        with torch.inference_mode():
            return model(*inputs)

    return step


def make_train_step(model: nn.Module, inputs: tuple[torch.Tensor, ...],
                    loss_fn: LossFn | None = None, lr: float = 1e-3) -> Callable[[], Any]:
    loss_fn = default_loss if loss_fn is None else loss_fn
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr) if params else None

    def step() -> Any:
        model.train()
        loss = loss_fn(model(*inputs))
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def make_step(kind: str, model: nn.Module, inputs: tuple[torch.Tensor, ...],
              loss_fn: LossFn | None = None) -> Callable[[], Any]:
    """``kind`` is ``"inference"`` or ``"train_step"``."""
    if kind == "inference":
        return make_inference_step(model, inputs)
    if kind == "train_step":
        return make_train_step(model, inputs, loss_fn)
    raise ValueError(f"kind must be 'inference' or 'train_step', got {kind!r}")
