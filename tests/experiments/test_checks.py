"""Declared config constraints: the checks, param(), validate(), describe(), with_values()."""

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from efflab.experiments import checks as c
from efflab.experiments.base import ConfigError, ExperimentConfig
from efflab.experiments.checks import param
from efflab.seeding import SEED_MAX

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("check,good,bad", [
    (c.finite, [0, -3, 2.5], [INF, -INF, NAN, "1", True, None]),
    (c.positive, [1, 0.001], [0, -1, INF, NAN, True]),
    (c.nonnegative, [0, 0.0, 5], [-1e-9, INF, NAN]),
    (c.nonempty, [(1,), "a", [0]], [(), "", [], 3]),
    (c.in_range(0, 1), [0, 0.5, 1], [-0.1, 1.1, NAN, INF]),
    (c.in_range(0, 1, lo_open=True, hi_open=True), [0.5], [0, 1]),
    (c.at_least(2), [2, 3], [1.99, NAN, INF, -INF, False]),
    (c.one_of("a", "b"), ["a", "b"], ["c", None]),
    (c.each(c.positive), [(1, 2), ()], [(1, 0), (1, NAN), 5]),
    (c.increasing(), [(1, 2, 3), (4,)], [(1, 1), (2, 1)]),
    (c.increasing(strict=False), [(1, 1, 2)], [(2, 1)]),
    (c.positive & c.at_least(5), [5, 6], [4, 0]),
])
def test_each_check_accepts_good_and_refuses_bad_values(check, good, bad):
    for value in good:
        assert check(value), (check, value)
    for value in bad:
        assert not check(value), (check, value)


def test_check_texts_say_what_is_required():
    assert c.positive.text == "> 0"
    assert c.in_range(0, 1, lo_open=True).text == "in (0, 1]"
    assert (c.nonempty & c.each(c.positive)).text == "non-empty, each > 0"
    assert "Check('> 0')" == repr(c.positive)


def test_a_check_that_raises_counts_as_failed():
    boom = c.Check(lambda v: 1 / v > 0, "inverse positive")
    assert not boom(0)     # ZeroDivisionError: the value fails, the check does not crash
    assert boom(2)


def test_param_stores_help_and_check_and_copies_mutable_defaults():
    @dataclass
    class Cfg(ExperimentConfig):
        widths: list = param([1, 2], "widths", check=c.nonempty)

    a, b = Cfg(), Cfg()
    a.widths.append(3)
    assert b.widths == [1, 2]
    f = {f.name: f for f in fields(Cfg)}["widths"]
    assert f.metadata["help"] == "widths" and f.metadata["check"] is c.nonempty


@dataclass
class _Cfg(ExperimentConfig):
    n: int = param(3, "samples", check=c.at_least(1))
    lr: float = param(0.1, "learning rate", check=c.positive)
    noise: float = param(0.0, "label noise", check=c.in_range(0, 1))
    widths: tuple[int, ...] = param((4, 8), "widths", check=c.nonempty & c.each(c.positive))
    kind: Literal["a", "b"] = param("a", "which")
    scale: float = 1.0                      # no declared check: still finite
    cap: float | None = None
    flag: bool = False
    lo: int = 1
    hi: int = 2
    ordered_fields: ClassVar = (("lo", "hi"),)


def test_valid_config_passes():
    _Cfg().validate()
    _Cfg(n=1, noise=1.0, widths=(1,), kind="b", cap=2.0, lo=2, hi=2).validate()


@pytest.mark.parametrize("changes,message", [
    ({"n": 0}, "n must be >= 1, got 0"),
    ({"lr": NAN}, "lr must be > 0, got nan"),
    ({"lr": INF}, "lr must be > 0, got inf"),
    ({"noise": 1.5}, "noise must be in [0, 1], got 1.5"),
    ({"widths": ()}, "widths must be non-empty, each > 0, got ()"),
    ({"widths": (4, -1)}, "widths must be non-empty, each > 0, got (4, -1)"),
    ({"kind": "c"}, "kind must be one of ['a', 'b'], got 'c'"),
    ({"scale": NAN}, "scale must be finite, got nan"),
    ({"scale": -INF}, "scale must be finite, got -inf"),
    ({"cap": INF}, "cap must be finite, got inf"),
    ({"n": True}, "n must be int, got bool True"),
    ({"n": 2.0}, "n must be int, got float 2.0"),
    ({"lr": "0.1"}, "lr must be float, got str '0.1'"),
    ({"flag": 1}, "flag must be bool, got int 1"),
    ({"widths": (4, 2.5)}, "widths[1] must be int"),
    ({"widths": 4}, "widths must be a tuple, got 4"),
    ({"cap": "x"}, "cap must be"),
    ({"lo": 3}, "lo must be <= hi, got lo=3 and hi=2"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"seed": SEED_MAX + 1}, "seed must be >= 0, <= 2**63 - 1, got 9223372036854775808"),
])
def test_validate_names_the_field_and_the_value(changes, message):
    cfg = _Cfg(**changes)
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert message in str(e.value)


def test_int_is_accepted_for_a_float_field():
    _Cfg(lr=1).validate()


def test_subclass_validate_adds_cross_field_rules():
    @dataclass
    class Pair(ExperimentConfig):
        a: int = param(1, "a", check=c.at_least(0))
        b: int = param(2, "b", check=c.at_least(0))

        def validate(self):
            super().validate()
            if self.a * 2 != self.b:
                raise ConfigError(f"b must be 2 a, got a={self.a}, b={self.b}")

    Pair().validate()
    with pytest.raises(ConfigError, match="a must be >= 0"):   # the base rules run first
        Pair(a=-1, b=-2).validate()
    with pytest.raises(ConfigError, match="b must be 2 a"):
        Pair(a=1, b=3).validate()


def test_describe_gives_type_default_constraint_and_help():
    rows = {r["name"]: r for r in _Cfg.describe()}
    assert list(rows)[0] == "seed"
    assert rows["lr"] == {"name": "lr", "type": "float", "default": "0.1", "constraint": "> 0",
                          "help": "learning rate"}
    assert rows["widths"]["constraint"] == "non-empty, each > 0"
    assert rows["widths"]["default"] == "(4, 8)"
    assert rows["scale"]["constraint"] == "" and rows["scale"]["help"] == ""
    assert "Literal" in rows["kind"]["type"] and "'a'" in rows["kind"]["type"]
    assert rows["seed"]["constraint"] == ">= 0, <= 2**63 - 1"


def test_with_values_converts_plain_data():
    cfg = _Cfg().with_values({"lr": 1, "widths": [2, 3], "cap": None, "kind": "b",
                              "n": "7", "flag": True})
    assert (cfg.lr, cfg.widths, cfg.cap, cfg.kind, cfg.n, cfg.flag) == (
        1.0, (2, 3), None, "b", 7, True)
    assert isinstance(cfg.lr, float) and isinstance(cfg.widths, tuple)
    assert _Cfg().with_values({"cap": "none"}).cap is None
    assert _Cfg(cap=1.0).with_values({}).cap == 1.0
    with pytest.raises(ConfigError, match="unknown config key 'zzz'.*valid keys: seed, n"):
        _Cfg().with_values({"zzz": 1})
    with pytest.raises(ConfigError, match="must be a table"):
        _Cfg().with_values([("n", 1)])
    bad = _Cfg().with_values({"n": 2.5})          # kept as given: validate() refuses it
    with pytest.raises(ConfigError, match="n must be int, got float 2.5"):
        bad.validate()


def test_profiles_default_to_the_base_and_are_checked():
    assert _Cfg.quick() == _Cfg() == _Cfg.full()
    assert _Cfg.profile("full") == _Cfg()
    with pytest.raises(ConfigError, match="profile must be one of"):
        _Cfg.profile("medium")


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_is_either_refused_or_satisfies_its_constraint(x):
    for name, ok in (("lr", lambda v: math.isfinite(v) and v > 0),
                     ("noise", lambda v: 0 <= v <= 1), ("scale", math.isfinite)):
        cfg = _Cfg(**{name: x})
        if ok(x):
            cfg.validate()
        else:
            with pytest.raises(ConfigError, match=name):
                cfg.validate()
