"""The experiment contract: the seam every reproduction plugs into.

One experiment is one module under ``efflab/experiments/`` holding

* a config dataclass (subclass of :class:`ExperimentConfig`) with ``quick()`` and ``full()``
  profiles,
* a subclass of :class:`Experiment`, decorated with :func:`efflab.experiments.register`, whose
  ``run(config, ctx)`` returns plain data (dicts, lists, numbers, strings),
  ``figures(...)`` writes PNGs, ``tables(...)`` returns :class:`Table` rows for the report, and
  ``claims(...)`` turns the results into :class:`Claim` verdicts: the paper's number, ours,
  and the tolerance that decides.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

import torch

VERDICTS = ("reproduced", "partly", "not reproduced")
Verdict = Literal["reproduced", "partly", "not reproduced"]
PROFILES = ("quick", "full")


class ConfigError(ValueError):
    """A ``--set`` override or a profile name that does not fit the experiment's config."""


@dataclass
class Claim:
    """One claim of a paper, checked: what it says, its number, ours, the tolerance, the verdict."""

    text: str
    paper: str
    ours: str
    tolerance: str
    verdict: Verdict

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass
class Table:
    """A table for the report: ``rows`` are lists of cells, one per column."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.title!r}: row {i} has {len(row)} cells, "
                    f"expected {len(self.columns)} (columns {self.columns})"
                )


def combine_verdicts(claims: list[Claim]) -> Verdict:
    """All claims reproduced -> reproduced; none -> not reproduced; otherwise partly."""
    if not claims:
        return "not reproduced"
    verdicts = {c.verdict for c in claims}
    if verdicts == {"reproduced"}:
        return "reproduced"
    if verdicts == {"not reproduced"}:
        return "not reproduced"
    return "partly"


def verdict_within(value: float, target: float, rel_tol: float, partly_tol: float | None = None
                   ) -> Verdict:
    """``reproduced`` when ``|value - target| <= rel_tol * |target|``; ``partly`` within the
    looser ``partly_tol`` (if given); else ``not reproduced``."""
    err = abs(value - target)
    if err <= rel_tol * abs(target):
        return "reproduced"
    if partly_tol is not None and err <= partly_tol * abs(target):
        return "partly"
    return "not reproduced"


@dataclass
class ExperimentConfig:
    """Base of every experiment config. Subclasses add fields and override the profiles."""

    seed: int = 0

    @classmethod
    def quick(cls) -> ExperimentConfig:
        """Small enough for a laptop CPU within the experiment's quick budget."""
        return cls()

    @classmethod
    def full(cls) -> ExperimentConfig:
        """The paper's scale, or as close as one machine allows (a GPU where it says so)."""
        return cls()

    @classmethod
    def profile(cls, name: str) -> ExperimentConfig:
        if name not in PROFILES:
            raise ConfigError(f"profile must be one of {PROFILES}, got {name!r}")
        return cls.quick() if name == "quick" else cls.full()

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> ExperimentConfig:
        """A copy with ``key=value`` strings applied, each value parsed to the field's type."""
        hints = typing.get_type_hints(type(self))
        changes: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set takes key=value, got {item!r}")
            key, raw = item.split("=", 1)
            key = key.strip()
            if key not in hints or key not in self.keys():
                raise ConfigError(
                    f"unknown config key {key!r} for {type(self).__name__}; "
                    f"valid keys: {', '.join(self.keys())}"
                )
            changes[key] = parse_value(key, raw.strip(), hints[key])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def parse_value(key: str, raw: str, tp: Any) -> Any:
    """Parse ``raw`` as type ``tp`` (int, float, bool, str, Literal, Optional, tuple/list)."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() == "none" and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(key, raw, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {raw!r}")
    if origin is Literal:
        for choice in args:
            if str(choice) == raw:
                return choice
        raise ConfigError(f"{key}: expected one of {list(args)}, got {raw!r}")
    if origin in (tuple, list):
        inner = args[0] if args else str
        parts = [p for p in raw.strip("()[]").split(",") if p.strip()]
        values = [parse_value(key, p.strip(), inner) for p in parts]
        return tuple(values) if origin is tuple else values
    if tp is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{key}: expected bool (true/false), got {raw!r}")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected int, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {raw!r}") from None
    if tp is str:
        return raw
    raise ConfigError(f"{key}: cannot set a field of type {_type_name(tp)} from the command line")


@dataclass
class RunContext:
    """What the runner hands an experiment: where to write, on which device, which profile.

    ``outdir`` is the experiment's working folder. It is renamed into place only when the run
    ends, and an interrupted run finds the same folder again when it is started with the same
    ``--out``: sweeps can keep finished points there (one file each, written atomically and
    keyed by their own config) and resume with only the missing ones.
    ``jobs`` is the number of worker processes the user allows (``--jobs``).
    """

    device: torch.device
    outdir: Path
    profile: str = "quick"
    jobs: int = 1

    def progress(self, iterable, desc: str = "", total: int | None = None):
        from efflab.progress import progress

        return progress(iterable, desc=desc, total=total)


class Experiment:
    """Base class of a registered experiment. Subclasses set the class attributes below."""

    name: ClassVar[str]
    paper: ClassVar[str]
    checks: ClassVar[str]
    Config: ClassVar[type[ExperimentConfig]]
    #: wall-time budget in seconds per profile, on 2 CPU cores for quick
    budget_s: ClassVar[dict[str, float]] = {"quick": 60.0, "full": 3600.0}

    def run(self, config: ExperimentConfig, ctx: RunContext) -> dict[str, Any]:
        raise NotImplementedError

    def figures(self, results: dict[str, Any], config: ExperimentConfig, outdir: Path
                ) -> list[str]:
        """Write PNG figures into ``outdir``; return their file names."""
        return []

    def tables(self, results: dict[str, Any], config: ExperimentConfig) -> list[Table]:
        return []

    def claims(self, results: dict[str, Any], config: ExperimentConfig) -> list[Claim]:
        raise NotImplementedError
