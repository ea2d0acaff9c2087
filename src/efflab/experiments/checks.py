"""Declared constraints on config fields, checked by the framework before any work starts.

A config field declares its meaning and its constraint where it is defined::

    @dataclass
    class MyConfig(ExperimentConfig):
        width: int = param(64, "hidden width", check=positive)
        lr: float = param(0.1, "learning rate", check=positive & finite)
        noise: float = param(0.1, "label noise fraction", check=in_range(0, 1))
        widths: tuple[int, ...] = param((8, 16), "widths to sweep", check=nonempty & each(positive))
        ordered_fields: ClassVar = (("min_length", "max_length"),)   # min <= max

``ExperimentConfig.validate()`` (called by the runner before anything is written) checks the
types, every declared constraint and the ordered pairs, and raises :class:`ConfigError` naming
the field and the value. ``efflab run NAME --print-config`` shows the same help and constraints.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any


class Check:
    """A named predicate on a field value; ``a & b`` requires both."""

    def __init__(self, test: Callable[[Any], bool], text: str):
        self._test = test
        self.text = text

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self._test(value))
        except Exception:  # noqa: BLE001 - a value the test cannot even look at fails it
            return False

    def __and__(self, other: Check) -> Check:
        return Check(lambda v: self(v) and other(v), f"{self.text}, {other.text}")

    def __repr__(self) -> str:
        return f"Check({self.text!r})"


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


finite = Check(lambda v: _real(v) and math.isfinite(v), "finite")
positive = Check(lambda v: _real(v) and math.isfinite(v) and v > 0, "> 0")
nonnegative = Check(lambda v: _real(v) and math.isfinite(v) and v >= 0, ">= 0")
nonempty = Check(lambda v: len(v) > 0, "non-empty")


def in_range(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    """``lo <= v <= hi`` (``<`` on an open end); NaN never passes."""
    def test(v: Any) -> bool:
        if not _real(v) or math.isnan(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    text = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return Check(test, text)


def at_least(lo: float) -> Check:
    """A finite number >= ``lo`` (a config value of infinity is never meant)."""
    return Check(lambda v: _real(v) and math.isfinite(v) and v >= lo, f">= {lo}")


def one_of(*choices: Any) -> Check:
    return Check(lambda v: v in choices, f"one of {list(choices)}")


def each(check: Check) -> Check:
    """Every element of a tuple/list passes ``check``."""
    return Check(lambda v: all(check(x) for x in v), f"each {check.text}")


def increasing(strict: bool = True) -> Check:
    def test(v: Sequence[Any]) -> bool:
        pairs = list(zip(v, v[1:]))
        return all((a < b) if strict else (a <= b) for a, b in pairs)
    return Check(test, "strictly increasing" if strict else "non-decreasing")


def param(default: Any, help: str = "", *, check: Check | None = None) -> Any:  # noqa: A002
    """A dataclass field with its one-line meaning and its constraint (see module docstring)."""
    metadata = {"help": help, "check": check}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default),
                                 metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
