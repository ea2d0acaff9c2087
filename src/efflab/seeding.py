"""One way to derive a seed: ``derive_seed(seed, *keys)``.

Every place that needs an independent random stream (a sweep point, a layer's random features,
a data split, a bootstrap) derives it from the user's seed and the names that identify the
stream, so that streams never collide by accident (seed + 1 of one experiment is seed of the
next) and the same inputs give the same seed on every machine, process and rank.
"""

from __future__ import annotations

import hashlib
import math

#: seeds are non-negative and fit in a signed 64-bit integer (what torch.manual_seed takes)
SEED_MAX = 2**63 - 1


def check_seed(seed: object, name: str = "seed") -> int:
    """Return ``seed`` if it is an int in [0, 2**63 - 1]; else raise naming ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        if isinstance(seed, float) and math.isfinite(seed) and seed.is_integer():
            raise TypeError(f"{name} must be an int, got the float {seed!r} (write {int(seed)})")
        raise TypeError(f"{name} must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{name} must be in [0, 2**63 - 1], got {seed}")
    return seed


def derive_seed(seed: int, *keys: object) -> int:
    """A seed in [0, 2**63 - 1] determined by ``seed`` and ``keys`` (ints, strings, floats,
    tuples of those). ``derive_seed(s)`` with no keys returns ``s`` itself."""
    check_seed(seed)
    if not keys:
        return seed
    text = repr((seed, *keys)).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") & SEED_MAX
