"""The experiment contract: the seam every reproduction plugs into.

One experiment is one module under ``efflab/experiments/suite/`` holding

* a config dataclass (subclass of :class:`ExperimentConfig`) with ``quick()`` and ``full()``
  profiles,
* a subclass of :class:`Experiment`, decorated with :func:`efflab.experiments.register`, whose
  ``run(config, ctx)`` returns plain data (dicts, lists, numbers, strings),
  ``figures(...)`` writes PNGs, ``tables(...)`` returns :class:`Table` rows for the report, and
  ``claims(...)`` turns the results into :class:`Claim` verdicts: the paper's number, ours,
  and the tolerance that decides.

Claims come in three kinds (``Claim.kind``): ``reproduction`` (a paper's claim, checked against
data we generated: only these decide the experiment's verdict), ``property`` (a check of our own
code or of an identity, which can only fail through a bug: a failed property makes the
experiment ``failed``) and ``measurement`` (a timing or memory figure, shown, never deciding).
Verdict rules live in :mod:`efflab.experiments.verdicts`; field constraints in
:mod:`efflab.experiments.checks`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

import torch

from efflab.experiments.checks import Check, at_least, param
from efflab.seeding import SEED_MAX

#: verdicts of one claim
VERDICTS = ("reproduced", "partly", "inconclusive", "not reproduced")
Verdict = Literal["reproduced", "partly", "inconclusive", "not reproduced"]
#: verdicts of a whole experiment: ``failed`` = it raised, or one of its properties failed
EXPERIMENT_VERDICTS = ("reproduced", "partly", "inconclusive", "not reproduced", "failed")
CLAIM_KINDS = ("reproduction", "property", "measurement")
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
    #: "reproduction" | "property" | "measurement" (see the module docstring)
    kind: str = "reproduction"
    #: the estimate behind ``ours`` when it has one (Estimate.to_dict(): value, lo, hi, n, ...)
    interval: dict[str, Any] | None = None
    #: for ``inconclusive``: what would settle it (more seeds, the full profile, ...)
    settle: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.kind not in CLAIM_KINDS:
            raise ValueError(f"kind must be one of {CLAIM_KINDS}, got {self.kind!r}")
        if self.verdict == "inconclusive" and not self.settle:
            self.settle = "more seeds or repeats, or the full profile"


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


def combine_verdicts(claims: list[Claim]) -> str:
    """The experiment's verdict from its claims.

    A failed property (a bug) -> ``failed``. Otherwise only reproductions count: all reproduced
    -> ``reproduced``; all not reproduced -> ``not reproduced``; reproduced and inconclusive
    only -> ``inconclusive``; any other mix -> ``partly``; no reproduction -> ``not reproduced``.
    """
    if any(c.kind == "property" and c.verdict != "reproduced" for c in claims):
        return "failed"
    verdicts = {c.verdict for c in claims if c.kind == "reproduction"}
    if not verdicts:
        return "not reproduced"
    if verdicts == {"reproduced"}:
        return "reproduced"
    if verdicts == {"not reproduced"}:
        return "not reproduced"
    if verdicts == {"inconclusive"} or verdicts == {"reproduced", "inconclusive"}:
        return "inconclusive"
    return "partly"


@dataclass
class ExperimentConfig:
    """Base of every experiment config. Subclasses add fields (declared with
    :func:`~efflab.experiments.checks.param`) and override the profiles.

    ``ordered_fields``: pairs ``(a, b)`` of field names that must satisfy ``a <= b``.
    """

    seed: int = param(0, "random seed; every random stream is derived from it",
                      check=at_least(0) & Check(lambda v: v <= SEED_MAX, "<= 2**63 - 1"))
    ordered_fields: ClassVar[tuple[tuple[str, str], ...]] = ()

    def validate(self) -> None:
        """Check every field's type and declared constraint, and the ordered pairs; raise
        :class:`ConfigError` naming the field and the value. Subclasses with rules that a
        field constraint cannot express override this and call ``super().validate()``."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints.get(f.name))
            check = f.metadata.get("check")
            if check is not None and not check(value):
                raise ConfigError(f"{f.name} must be {check.text}, got {value!r}")
            if check is None:
                # a float without a declared constraint is still never NaN or infinite: a
                # value no computation can use, and one that would make a tolerance vacuous
                bad = _first_nonfinite(value)
                if bad is not None:
                    where = f.name if bad[0] == "" else f"{f.name}{bad[0]}"
                    raise ConfigError(f"{where} must be finite, got {bad[1]!r}")
        for a, b in self.ordered_fields:
            va, vb = getattr(self, a), getattr(self, b)
            if not va <= vb:
                raise ConfigError(f"{a} must be <= {b}, got {a}={va!r} and {b}={vb!r}")

    @classmethod
    def describe(cls) -> list[dict[str, str]]:
        """One row per field: name, type, default, constraint, meaning (for --print-config)."""
        hints = typing.get_type_hints(cls)
        default = cls()
        rows = []
        for f in dataclasses.fields(cls):
            check = f.metadata.get("check")
            rows.append({"name": f.name, "type": _type_name(hints.get(f.name, Any)),
                         "default": repr(getattr(default, f.name)),
                         "constraint": check.text if check is not None else "",
                         "help": f.metadata.get("help", "")})
        return rows

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

    def with_values(self, values: typing.Mapping[str, Any]) -> ExperimentConfig:
        """A copy with the fields in ``values`` replaced: plain data as read from a TOML or
        JSON file (lists for tuples, ints for floats are converted; strings are parsed as
        ``--set`` values). Unknown keys raise :class:`ConfigError` listing the valid ones.
        The result is not validated: call :meth:`validate`."""
        if not isinstance(values, typing.Mapping):
            raise ConfigError(f"config values must be a table of key = value, got "
                              f"{type(values).__name__}")
        hints = typing.get_type_hints(type(self))
        keys = self.keys()
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in keys:
                raise ConfigError(f"unknown config key {key!r} for {type(self).__name__}; "
                                  f"valid keys: {', '.join(keys)}")
            changes[key] = _coerce(key, value, hints[key])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _first_nonfinite(value: Any, where: str = "") -> tuple[str, float] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    if isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            found = _first_nonfinite(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Plain data (JSON/TOML) -> the field's type, where the conversion is lossless."""
    if isinstance(value, str) and tp is not str and get_origin(tp) is not Literal \
            and not (get_origin(tp) in (typing.Union, types.UnionType) and str in get_args(tp)):
        return parse_value(key, value, tp)
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(key, value, arg)
                except ConfigError:
                    continue
        return value
    if origin in (tuple, list) and isinstance(value, (tuple, list)):
        inner = [a for a in args if a is not Ellipsis]
        items = [_coerce(f"{key}[{i}]", v, inner[0] if len(inner) == 1 or Ellipsis in args
                         else inner[min(i, len(inner) - 1)]) if inner else v
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _check_type(name: str, value: Any, tp: Any) -> None:
    """Refuse values of the wrong type given through the Python API (bool for int, str for
    float, ...); containers are checked element by element."""
    if tp is None:
        return
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            if arg is type(None):
                if value is None:
                    return
                continue
            try:
                _check_type(name, value, arg)
                return
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {list(args)}, got {value!r}")
        return
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{name} must be a {origin.__name__}, got {value!r}")
        inner = [a for a in args if a is not Ellipsis]
        if inner:
            for i, item in enumerate(value):
                _check_type(f"{name}[{i}]", item, inner[0] if len(inner) == 1 or
                            Ellipsis in args else inner[min(i, len(inner) - 1)])
        return
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        raise ConfigError(f"{name} must be {_type_name(tp)}, got {type(value).__name__} "
                          f"{value!r}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _type_name(tp: Any) -> str:
    if get_origin(tp) is not None:  # Literal[...], tuple[int, ...], float | None
        return str(tp).replace("typing.", "").replace("NoneType", "None")
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
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {raw!r}") from None
        if math.isnan(value):
            raise ConfigError(f"{key}: expected a number, got {raw!r} (NaN)")
        return value
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
    ``launcher`` is where sweep points run (``--launcher``; see
    :mod:`efflab.experiments.launchers`), None for the local pool of ``jobs`` workers.
    """

    device: torch.device
    outdir: Path
    profile: str = "quick"
    jobs: int = 1
    launcher: Any = None

    def progress(self, iterable, desc: str = "", total: int | None = None):
        from efflab.progress import progress

        return progress(iterable, desc=desc, total=total)


class Experiment:
    """Base class of a registered experiment. Subclasses set the class attributes below.

    ``smoke``: overrides of the quick profile (``{"trials": 20, "widths": (4, 8)}``; strings
    are parsed like ``--set`` values) that make a run take a second or two while still going
    through ``run``, ``claims``, ``figures`` and ``tables``. The suite's end-to-end test runs
    every registered experiment with them (an experiment that declares none runs its quick
    profile there, as a slow test).
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    checks: ClassVar[str]
    Config: ClassVar[type[ExperimentConfig]]
    #: wall-time budget in seconds per profile, on 2 CPU cores for quick
    budget_s: ClassVar[dict[str, float]] = {"quick": 60.0, "full": 3600.0}
    #: overrides of the quick profile for a seconds-long end-to-end run (see the class doc)
    smoke: ClassVar[dict[str, Any]] = {}
    #: True when even the smoke run takes more than a few seconds (it generates a data set,
    #: say): the end-to-end test then marks it ``slow``
    smoke_slow: ClassVar[bool] = False
    #: what a run keeps busy, for ``efflab reproduce``'s scheduling (docs/reproduce.md,
    #: "Side by side"): ``"jobs"`` (the default, which never oversubscribes the machine: its
    #: sweep points run in ``--jobs`` worker processes) or ``"one"`` (one process on one core:
    #: it does its work itself, or runs its sweep with ``jobs=1``)
    cores: ClassVar[Literal["one", "jobs"]] = "jobs"
    #: True when its claims, tables or figures time things (latency, throughput): ``efflab
    #: reproduce`` then runs it with no other experiment beside it
    timed: ClassVar[bool] = False

    @classmethod
    def cores_busy(cls, jobs: int) -> int:
        """The cores a run with ``jobs`` sweep workers keeps busy (see :attr:`cores`)."""
        if cls.cores not in ("one", "jobs"):
            raise TypeError(f"{cls.__name__}.cores must be 'one' or 'jobs', got {cls.cores!r}")
        return 1 if cls.cores == "one" else max(1, int(jobs))

    @classmethod
    def smoke_config(cls) -> ExperimentConfig:
        """The quick profile with :attr:`smoke` applied, validated."""
        config = cls.Config.quick().with_values(cls.smoke)
        config.validate()
        return config

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
