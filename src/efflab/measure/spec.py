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
