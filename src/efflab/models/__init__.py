"""Networks built by name through one registry, timm style: ``create_model("resnet18", ...)``.

Model modules in this package are found automatically; each registers its factories with
:func:`register_model`. The CLI, the experiments and the benchmarks all build models here.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_discovered = False


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a factory function under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS and _MODELS[name].__qualname__ != fn.__qualname__:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def list_models() -> list[str]:
    _discover()
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` with keyword options."""
    _discover()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (registered: {', '.join(sorted(_MODELS))})")
    return _MODELS[name](**kwargs)


__all__ = ["create_model", "list_models", "register_model"]
