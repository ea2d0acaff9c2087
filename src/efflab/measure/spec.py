"""Text specs for the command line: ``MODEL_SPEC`` and the input shape.

``MODEL_SPEC`` is a registered model name, optionally followed by ``:`` and comma-separated
``key=value`` options: ``resnet18``, ``mlp:width=256,depth=3``,
``transformer_classifier:depth=4,embed_dim=128,attention=performer``,
``resnet:blocks=[1,1,1,1],widths=[16,32,64,128]``. Values are read as Python literals
(numbers, ``true``/``false``, ``none``, ``[lists]``) and otherwise kept as strings.

The input spec is the shape of one sample without the batch axis: ``40``, ``3x32x32``;
with a vocabulary size the inputs are random token ids below it.
"""

from __future__ import annotations

import ast
from typing import Any

import torch
from torch import nn

from efflab.measure.report import check_fits, measure

_WORDS = {"true": True, "false": False, "none": None}


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (q.strip() for q in parts) if p]


def parse_value(raw: str) -> Any:
    """A Python literal if it is one (``4``, ``0.5``, ``[2,2]``), else the string itself."""
    if raw.lower() in _WORDS:
        return _WORDS[raw.lower()]
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    return tuple(value) if isinstance(value, list) else value


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,..."`` -> ``(name, {key: value})``."""
    name, _, options = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"MODEL_SPEC must start with a model name, got {spec!r}")
    kwargs: dict[str, Any] = {}
    for item in _split_top_level(options):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"model options must be key=value, got {item!r} in {spec!r}")
        kwargs[key.strip()] = parse_value(raw.strip())
    return name, kwargs


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3x32x32"`` -> ``(3, 32, 32)``; every size a positive integer."""
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"input shape must look like 40 or 3x32x32, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"input shape sizes must be >= 1, got {text!r}")
    return shape


def make_inputs(shape: tuple[int, ...], batch_size: int, vocab: int | None = None,
                seed: int = 0) -> torch.Tensor:
    """Random example inputs: standard normal floats, or token ids in ``[0, vocab)``.

    returns: (batch_size, *shape)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    if vocab is None:
        return torch.randn((batch_size, *shape), generator=g)
    if vocab < 1:
        raise ValueError(f"vocab must be >= 1, got {vocab}")
    return torch.randint(0, vocab, (batch_size, *shape), generator=g)


class SpecError(ValueError):
    """A model spec, input shape or vocabulary that does not fit the model (bad input)."""


def _probe(model: nn.Module, sample: torch.Tensor) -> Exception | None:
    model.eval()
    try:
        with torch.inference_mode():
            model(sample)
    except Exception as e:  # noqa: BLE001 - the caller turns it into a message
        return e
    return None


def prepare_spec(model_spec: str, input_shape: str | tuple[int, ...], *, batch_size: int = 8,
                 vocab: int | None = None, seed: int = 0,
                 device: torch.device | str = "cpu") -> tuple[nn.Module, torch.Tensor]:
    """Build the model of ``model_spec`` and example inputs at ``batch_size``, after checking,
    on one sample, that the model accepts inputs of ``input_shape`` (token ids below
    ``vocab``, or floats): every mismatch raises :class:`SpecError` naming the value, and an
    input batch that cannot fit in memory raises :class:`MemoryError`, both before any
    measurement. Weights and inputs are drawn from ``seed``."""
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    if batch_size < 1:
        raise SpecError(f"batch_size must be >= 1, got {batch_size}")
    if vocab is not None and vocab < 1:
        raise SpecError(f"vocab must be >= 1, got {vocab}")
    torch.manual_seed(seed)
    model, name, kwargs = build_from_spec(model_spec)
    if model_spec.startswith("hf:") and vocab is None:
        vocab = int(model.model.config.vocab_size)   # token ids, below the config's vocabulary
    text = "x".join(map(str, shape))
    one = make_inputs(shape, 1, vocab, seed=seed)
    error = _probe(model, one)
    if error is not None:
        if vocab is not None and _probe(model, make_inputs(shape, 1, None, seed)) is None:
            raise SpecError(f"vocab {vocab}: model {name!r} takes float inputs, not token ids "
                            "(leave out --vocab)") from None
        if vocab is None and _probe(model, make_inputs(shape, 1, 2, seed)) is None:
            raise SpecError(f"model {name!r} takes token ids: give their vocabulary size "
                            "(--vocab N)") from None
        raise SpecError(f"input {text}: model {name!r} fails on one sample of shape "
                        f"{tuple(one.shape)} ({type(error).__name__}: {error})") from None
    check_fits((one,), batch_size, torch.device(device))
    return model, make_inputs(shape, batch_size, vocab, seed=seed)


def build_from_spec(model_spec: str) -> tuple[nn.Module, str, dict[str, Any]]:
    """A model by name from :mod:`efflab.models` (``"mlp:width=64"``), or a Hugging Face
    model built from its config (``"hf:gpt2:n_layer=2,attention=performer"``; the ``hf``
    extra; see :func:`efflab.integrations.huggingface.build_measurable`), never downloaded."""
    from efflab.models import create_model

    if model_spec.startswith("hf:"):
        arch, _, rest = model_spec[3:].partition(":")
        _, kwargs = parse_model_spec(f"hf:{rest}")
        try:
            from efflab.integrations.huggingface import build_measurable
        except ImportError as e:
            raise SpecError(f"{model_spec!r} needs the hf extra (pip install 'efflab[hf]'): "
                            f"{e}") from None
        try:
            return build_measurable(arch, **kwargs), f"hf:{arch}", kwargs
        except (TypeError, ValueError) as e:
            raise SpecError(f"{model_spec!r}: {e}") from None
    name, kwargs = parse_model_spec(model_spec)
    try:
        return create_model(name, **kwargs), name, kwargs
    except TypeError as e:
        raise SpecError(f"model {name!r} does not take options {kwargs}: {e}") from None


def measure_spec(model_spec: str, input_shape: str | tuple[int, ...], *, batch_size: int = 8,
                 vocab: int | None = None, seed: int = 0, tokens_per_sample: int | None = None,
                 **measure_options: Any):
    """The cost report of a model given as text: :func:`prepare_spec`, then
    :func:`efflab.measure.measure` (``measure_options`` pass through; with ``vocab`` the
    tokens per sample default to the ids in one sample)."""
    device = measure_options.get("device", "cpu")
    model, inputs = prepare_spec(model_spec, input_shape, batch_size=batch_size, vocab=vocab,
                                 seed=seed, device=device)
    if tokens_per_sample is None and vocab is not None:
        tokens_per_sample = int(inputs[0].numel())
    return measure(model, inputs, name=model_spec, tokens_per_sample=tokens_per_sample,
                   **measure_options)
