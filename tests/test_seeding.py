"""derive_seed: one reproducible, collision-free way to make a seed per random stream."""

import subprocess
import sys

import pytest

from efflab.seeding import SEED_MAX, check_seed, derive_seed


def test_no_keys_returns_the_seed_itself():
    assert derive_seed(0) == 0 and derive_seed(12345) == 12345


def test_derived_seeds_are_deterministic_in_range_and_distinct():
    seeds = {derive_seed(s, "sweep", k) for s in range(20) for k in range(50)}
    assert len(seeds) == 1000                                 # no collisions
    assert all(0 <= x <= SEED_MAX for x in seeds)
    assert derive_seed(3, "a", 1) == derive_seed(3, "a", 1)
    # neighbouring seeds do not give neighbouring streams (the old seed * 1000 + i scheme did)
    assert derive_seed(1, "x", 0) != derive_seed(0, "x", 1000)
    assert derive_seed(0, "a", 1) != derive_seed(0, "a1") != derive_seed(0, ("a", 1))
    assert derive_seed(SEED_MAX, "edge") <= SEED_MAX


def test_derived_seeds_are_the_same_in_another_process():
    """No per-process hash randomization (PYTHONHASHSEED) leaks into derived seeds."""
    code = ("from efflab.seeding import derive_seed; "
            "print(derive_seed(7, 'layer', 3, 0.5, ('x', 2)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123", **_env()}).stdout.strip()
    assert int(out) == derive_seed(7, "layer", 3, 0.5, ("x", 2))


def _env():
    import os
    return {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}


@pytest.mark.parametrize("seed,error,message", [
    (-1, ValueError, r"seed must be in \[0, 2\*\*63 - 1\], got -1"),
    (2**63, ValueError, "got 9223372036854775808"),
    (2**70, ValueError, "seed must be in"),
    (1.0, TypeError, r"seed must be an int, got the float 1.0 \(write 1\)"),
    (1.5, TypeError, "seed must be an int, got float 1.5"),
    (True, TypeError, "got bool True"),
    ("3", TypeError, "got str '3'"),
    (None, TypeError, "got NoneType None"),
])
def test_bad_seeds_are_refused_with_the_value(seed, error, message):
    with pytest.raises(error, match=message):
        check_seed(seed)
    with pytest.raises(error, match=message):
        derive_seed(seed, "k")


def test_check_seed_names_the_argument():
    assert check_seed(5) == 5 and check_seed(SEED_MAX) == SEED_MAX
    with pytest.raises(ValueError, match="point_seed must be"):
        check_seed(-3, "point_seed")
