"""The experiment framework and its registry: experiments found by name.

The framework (contract ``base``, verdict rules ``verdicts``, field constraints ``checks``,
``runner``, ``sweep``, ``plotting``) lives in this package; the experiments themselves live in
the subpackage ``efflab.experiments.suite``, one module each, and are discovered
automatically: adding ``efflab/experiments/suite/my_claim.py`` with a class decorated by
:func:`register` is all it takes for ``efflab list`` and ``efflab reproduce`` to see it.
Experiments of other packages register through the entry point group ``efflab.experiments``
(each entry point names a module to import). A module that fails to import is reported
(``broken()``), never silently dropped.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import pkgutil
import traceback

from efflab.experiments.base import (
    Claim,
    ConfigError,
    Experiment,
    ExperimentConfig,
    RunContext,
    Table,
    combine_verdicts,
)

__all__ = [
    "Claim", "ConfigError", "Experiment", "ExperimentConfig", "RunContext", "Table",
    "UnknownExperiment", "broken", "combine_verdicts", "get", "names", "register",
]

_REGISTRY: dict[str, type[Experiment]] = {}
_BROKEN: dict[str, str] = {}
_discovered = False
ENTRY_POINT_GROUP = "efflab.experiments"


class UnknownExperiment(KeyError):
    def __init__(self, name: str, suggestions: list[str]):
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown experiment {name!r}{hint} (see `efflab list`)")

    def __str__(self) -> str:
        return self.args[0]


def register(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: make an experiment reachable by its ``name``."""
    for attr in ("name", "paper", "checks", "Config"):
        if not hasattr(cls, attr):
            raise TypeError(f"experiment {cls.__name__} must define {attr!r}")
    if not issubclass(cls.Config, ExperimentConfig):
        raise TypeError(f"{cls.__name__}.Config must subclass ExperimentConfig")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"experiment name {cls.name!r} is taken by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    from efflab.experiments import suite

    modules = [f"{suite.__name__}.{info.name}" for info in pkgutil.iter_modules(suite.__path__)
               if not info.name.startswith("_")]
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        modules.append(ep.value.split(":")[0])
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a broken module must not hide the others
            _BROKEN[module.removeprefix(f"{suite.__name__}.")] = traceback.format_exc()


def names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def broken() -> dict[str, str]:
    """Experiment modules that failed to import: module name -> traceback."""
    _discover()
    return dict(_BROKEN)


def get(name: str) -> Experiment:
    _discover()
    if name not in _REGISTRY:
        raise UnknownExperiment(name, difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.4))
    return _REGISTRY[name]()
