"""The result record: what the runner writes as ``results.json`` and the report reads back.

One typed record per run (:class:`ResultRecord`), with the experiment's claims as
:class:`~efflab.experiments.base.Claim` and its tables as :class:`~efflab.experiments.base.Table`.
:func:`load_record` reads a ``results.json`` and checks its shape field by field, so a file
that was edited by hand or written by something else is refused with its path and the reason
(:class:`RecordError`), never half-read: the report lists it as unreadable and builds the rest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from efflab.experiments.base import (
    CLAIM_KINDS,
    EXPERIMENT_VERDICTS,
    Claim,
    Table,
    combine_verdicts,
)
from efflab.io import atomic_write_json, to_jsonable

RESULTS = "results.json"
#: version of the record's layout; a reader refuses records of a newer one
FORMAT = 1
STATUSES = ("ok", "failed")


class RecordError(ValueError):
    """A ``results.json`` that cannot be read as a result record: says where and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass
class ResultRecord:
    """One run of one experiment, as saved in ``OUT/NAME/results.json``.

    ``status`` is ``ok`` (the experiment ran; its ``verdict`` comes from its claims) or
    ``failed`` (it raised: ``error`` holds the traceback, ``verdict`` is ``failed``).
    ``config`` is the exact config (plain data): ``efflab run NAME --config results.json``
    runs it again. ``environment`` is :func:`efflab.measure.machine.machine_info` plus the
    numpy version and the git commit. ``table_files``: the tables as CSV files beside it.
    ``ran_beside``: the experiments that ran at the same time (then ``wall_time_s`` was
    measured beside them).
    """

    experiment: str
    paper: str
    checks: str
    profile: str
    status: str
    seed: int | None
    config: dict[str, Any]
    results: Any
    claims: list[Claim]
    verdict: str
    tables: list[Table]
    figures: list[str]
    error: str | None
    environment: dict[str, Any]
    budget_s: float | None
    wall_time_s: float
    started: str
    finished: str
    table_files: list[str] = field(default_factory=list)
    #: the experiments that ran at the same time on this machine (``efflab reproduce
    #: --parallel``): the wall time is then not that of a run alone
    ran_beside: list[str] = field(default_factory=list)
    format: int = FORMAT

    # -- derived figures the report and the terminal summary show ------------------------
    def claims_of(self, kind: str) -> list[Claim]:
        if kind not in CLAIM_KINDS:
            raise ValueError(f"kind must be one of {CLAIM_KINDS}, got {kind!r}")
        return [c for c in self.claims if c.kind == kind]

    @property
    def reproductions_passed(self) -> tuple[int, int]:
        """(reproduced, total) over the claims of kind ``reproduction``."""
        rep = self.claims_of("reproduction")
        return sum(c.verdict == "reproduced" for c in rep), len(rep)

    @property
    def over_budget(self) -> bool:
        return self.budget_s is not None and self.wall_time_s > self.budget_s

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    def save(self, folder: str | os.PathLike) -> Path:
        return atomic_write_json(Path(folder) / RESULTS, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, where: str | os.PathLike = RESULTS) -> ResultRecord:
        """Check ``data`` (parsed JSON) field by field; raise :class:`RecordError` naming the
        first field that does not fit."""
        return _parse(data, where)


def experiment_verdict(status: str, claims: list[Claim]) -> str:
    """``failed`` when the run raised, else :func:`combine_verdicts` of its claims."""
    return "failed" if status != "ok" else combine_verdicts(claims)


def load_record(path: str | os.PathLike) -> ResultRecord:
    """Read and check one ``results.json``; :class:`RecordError` says what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise RecordError(path, "is a folder, not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(path, f"cannot be read: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise RecordError(path, f"is not valid JSON: {e}") from None
    return _parse(data, path)


# -- parsing ---------------------------------------------------------------------------------
def _parse(data: Any, where: str | os.PathLike) -> ResultRecord:
    def fail(reason: str) -> RecordError:
        return RecordError(where, reason)

    if not isinstance(data, dict):
        raise fail(f"must hold a JSON object, got {_kind(data)}")
    fmt = data.get("format", FORMAT)
    if not _is_int(fmt) or fmt > FORMAT:
        raise fail(f"format {fmt!r} is not one this efflab reads (<= {FORMAT})")

    def get(key: str, check, what: str, default: Any = ..., required: bool = True) -> Any:
        value = data.get(key)
        if value is None:
            if default is not ...:
                return default
            if not required:
                return None
            raise fail(f"{key!r} is missing" if key not in data else f"{key!r} is null")
        if not check(value):
            raise fail(f"{key!r} must be {what}, got {_kind(value)} {_short(value)}")
        return value

    is_str = lambda v: isinstance(v, str)  # noqa: E731
    is_num = lambda v: _is_num(v)  # noqa: E731
    experiment = get("experiment", lambda v: is_str(v) and v != "", "a non-empty string")
    status = get("status", lambda v: v in STATUSES, f"one of {list(STATUSES)}")
    claims_raw = get("claims", lambda v: isinstance(v, list), "a list", default=[])
    claims = [_claim(c, i, fail) for i, c in enumerate(claims_raw)]
    tables_raw = get("tables", lambda v: isinstance(v, list), "a list", default=[])
    tables = [_table(t, i, fail) for i, t in enumerate(tables_raw)]
    verdict = get("verdict", lambda v: v in EXPERIMENT_VERDICTS,
                  f"one of {list(EXPERIMENT_VERDICTS)} or null", default="")
    del verdict  # checked, then recomputed: the verdict always follows from the claims
    expected = experiment_verdict(status, claims)
    budget = get("budget_s", lambda v: is_num(v), "a number or null", required=False)
    return ResultRecord(
        experiment=experiment,
        paper=get("paper", is_str, "a string", default=""),
        checks=get("checks", is_str, "a string", default=""),
        profile=get("profile", is_str, "a string", default="?"),
        status=status,
        seed=get("seed", _is_int, "an integer or null", required=False),
        config=get("config", lambda v: isinstance(v, dict), "an object", default={}),
        results=data.get("results"),
        claims=claims, verdict=expected, tables=tables,
        figures=get("figures", lambda v: isinstance(v, list) and all(map(_safe_name, v)),
                    "a list of file names inside the folder", default=[]),
        error=get("error", is_str, "a string or null", required=False),
        environment=get("environment", lambda v: isinstance(v, dict), "an object",
                        default={}),
        budget_s=None if budget is None or not math.isfinite(budget) else float(budget),
        wall_time_s=float(get("wall_time_s", lambda v: is_num(v) and v >= 0,
                              "a number >= 0", default=0.0)),
        started=get("started", is_str, "a string", default=""),
        finished=get("finished", is_str, "a string", default=""),
        table_files=get("table_files", lambda v: isinstance(v, list) and all(map(_safe_name, v)),
                        "a list of file names inside the folder", default=[]),
        ran_beside=get("ran_beside", lambda v: isinstance(v, list) and all(map(is_str, v)),
                       "a list of experiment names", default=[]),
        format=int(fmt),
    )


_CLAIM_TEXT = ("text", "paper", "ours", "tolerance", "verdict")


def _claim(c: Any, i: int, fail) -> Claim:
    if not isinstance(c, dict):
        raise fail(f"claims[{i}] must be an object, got {_kind(c)}")
    for key in _CLAIM_TEXT:
        if key not in c:
            raise fail(f"claims[{i}] has no {key!r}")
        if not isinstance(c[key], str):
            raise fail(f"claims[{i}].{key} must be a string, got {_kind(c[key])} "
                       f"{_short(c[key])}")
    kind = c.get("kind", "reproduction")
    interval = c.get("interval")
    if interval is not None and not (isinstance(interval, dict) and all(
            k in interval and (interval[k] is None or _is_num(interval[k]))
            for k in ("value", "lo", "hi"))):
        raise fail(f"claims[{i}].interval must be an object with value, lo and hi, got "
                   f"{_short(interval)}")
    settle = c.get("settle") or ""
    if not isinstance(settle, str):
        raise fail(f"claims[{i}].settle must be a string, got {_kind(settle)}")
    try:
        return Claim(*(c[k] for k in _CLAIM_TEXT), kind=kind, interval=interval, settle=settle)
    except ValueError as e:
        raise fail(f"claims[{i}]: {e}") from None


def _table(t: Any, i: int, fail) -> Table:
    if not isinstance(t, dict):
        raise fail(f"tables[{i}] must be an object, got {_kind(t)}")
    title, columns, rows = t.get("title"), t.get("columns"), t.get("rows")
    if not isinstance(title, str):
        raise fail(f"tables[{i}].title must be a string, got {_kind(title)}")
    if not isinstance(columns, list) or not isinstance(rows, list) or \
            not all(isinstance(r, list) for r in rows):
        raise fail(f"tables[{i}] needs 'columns' (a list) and 'rows' (a list of lists)")
    note = t.get("note") or ""
    try:
        return Table(title, [str(c) for c in columns], rows, str(note))
    except ValueError as e:
        raise fail(f"tables[{i}]: {e}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _safe_name(v: Any) -> bool:
    """A plain relative file name inside the result folder (no '..', no absolute path)."""
    return isinstance(v, str) and v != "" and not os.path.isabs(v) and \
        ".." not in Path(v).parts and "\\" not in v


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(v),
                                                                        type(v).__name__)


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
