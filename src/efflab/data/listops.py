"""ListOps as Long Range Arena builds it (Tay et al. 2020, arXiv 2011.04006, section 3.1;
the task itself is Nangia & Bowman 2018).

An example is a nested prefix expression over the digits 0-9 with the operators MIN, MAX,
MED (median) and SM (sum modulo 10), e.g. ``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]``;
its label is the value, one of 10 classes. LRA's generator grows a random tree from the root:
a node at depth ``d < max_depth`` is an operator with probability ``p_operator`` (0.25) and
then has ``randint(2, max_args)`` children, otherwise it is a uniform digit; nodes at depth
``max_depth`` are digits. A tree is kept when ``min_length < tokens < max_length`` (strict, as
in LRA), duplicates are dropped, and the unique trees are cut into train / val / test. MED is
``int(np.median(args))``: an even number of arguments takes the floor of the two middle
values' mean, as LRA's ``to_value`` does.

Two generators draw from that one distribution:

* :func:`sample_tree_reference`: LRA's recursion, one node at a time (slow, obviously right);
* :func:`generate_listops`: the same process grown level by level for a batch of trees at
  once in numpy (fast), with the values computed bottom-up level by level.

Their random streams differ, so the tests compare them in distribution; labels are checked
against :func:`evaluate`, an independent stack evaluator of the expression text.

Token ids (:data:`VOCAB`): 0 is padding, digits are 1-10, operators 11-14, ``]`` is 15.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from efflab.io import atomic_save

OPERATORS = ("MIN", "MAX", "MED", "SM")
PAD_ID = 0
DIGIT_IDS = tuple(range(1, 11))
OPERATOR_IDS = tuple(range(11, 11 + len(OPERATORS)))
END_ID = 15
VOCAB: dict[str, int] = {
    "<pad>": PAD_ID,
    **{str(d): DIGIT_IDS[d] for d in range(10)},
    **{f"[{op}": OPERATOR_IDS[i] for i, op in enumerate(OPERATORS)},
    "]": END_ID,
}
VOCAB_SIZE = len(VOCAB)
NUM_CLASSES = 10
_ID_TO_TOKEN = {i: t for t, i in VOCAB.items()}


# ------------------------------------------------------------------ config


@dataclass(frozen=True)
class ListOpsConfig:
    """Generator settings; the defaults are LRA's (section 3.1 and its ``listops.py``)."""

    max_depth: int = 10
    max_args: int = 10
    p_operator: float = 0.25
    min_length: int = 500  # exclusive
    max_length: int = 2000  # exclusive
    num_train: int = 96_000
    num_val: int = 2_000
    num_test: int = 2_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name, lo in (("max_depth", 1), ("max_args", 2), ("min_length", 0),
                         ("max_length", 1), ("num_train", 0), ("num_val", 0), ("num_test", 0),
                         ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
            if value < lo:
                raise ValueError(f"{name} must be >= {lo}, got {value}")
        p = self.p_operator
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
            raise ValueError(f"p_operator must be a number in (0, 1), got {p!r}")
        if self.max_length <= self.min_length + 1:
            raise ValueError(
                "lengths must satisfy 0 <= min_length < max_length - 1 (bounds are exclusive), "
                f"got min_length={self.min_length}, max_length={self.max_length}")
        if self.num_train + self.num_val + self.num_test < 1:
            raise ValueError("num_train + num_val + num_test must be >= 1")

    @property
    def total(self) -> int:
        return self.num_train + self.num_val + self.num_test

    def key(self) -> str:
        """A short hash naming this configuration's cache file."""
        blob = json.dumps({"v": 1, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ------------------------------------------------------------------ tokens and evaluation


def encode(expression: str) -> list[int]:
    """``"[MAX 4 [MIN 2 3 ] ]"`` -> token ids. Tokens are separated by whitespace."""
    ids = []
    for tok in expression.split():
        if tok not in VOCAB or tok == "<pad>":
            raise ValueError(f"unknown ListOps token {tok!r} in expression {expression[:80]!r}")
        ids.append(VOCAB[tok])
    return ids


def decode(ids) -> str:
    """Token ids (padding ignored) -> the expression text."""
    out = []
    for i in (int(x) for x in ids):
        if i == PAD_ID:
            continue
        if i not in _ID_TO_TOKEN:
            raise ValueError(f"unknown ListOps token id {i}")
        out.append(_ID_TO_TOKEN[i])
    return " ".join(out)


def apply_operator(op: str, args: list[int]) -> int:
    """One operator on its argument list, LRA's semantics (MED floors a half-integer)."""
    if not args:
        raise ValueError(f"operator {op} needs at least one argument")
    if op == "MIN":
        return min(args)
    if op == "MAX":
        return max(args)
    if op == "SM":
        return sum(args) % 10
    if op == "MED":
        s = sorted(args)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
    raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS}")


def evaluate(expression: str | list[int]) -> int:
    """Value of one expression (text or token ids), by a stack machine over the tokens.

    Independent of both generators: it reads only the text, so it checks their labels.
    """
    tokens = expression.split() if isinstance(expression, str) else decode(expression).split()
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for pos, tok in enumerate(tokens):
        if result is not None:
            raise ValueError(f"trailing tokens after a complete expression at position {pos}")
        if tok.startswith("["):
            op = tok[1:]
            if op not in OPERATORS:
                raise ValueError(f"unknown operator token {tok!r} at position {pos}")
            stack.append((op, []))
        elif tok == "]":
            if not stack:
                raise ValueError(f"unmatched ']' at position {pos}")
            op, args = stack.pop()
            value = apply_operator(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif tok.isdigit() and len(tok) == 1:
            if stack:
                stack[-1][1].append(int(tok))
            else:
                result = int(tok)
        else:
            raise ValueError(f"unknown ListOps token {tok!r} at position {pos}")
    if stack or result is None:
        raise ValueError(f"incomplete expression: {len(stack)} unclosed operator(s)")
    return result


def tree_depth(expression: str | list[int]) -> int:
    """Number of levels of the tree, root = 1 (a digit under the root sits at level 2)."""
    tokens = expression.split() if isinstance(expression, str) else decode(expression).split()
    depth = deepest = 0
    for tok in tokens:
        if tok.startswith("["):
            depth += 1
            deepest = max(deepest, depth)
        elif tok == "]":
            depth -= 1
        else:
            deepest = max(deepest, depth + 1)
    return deepest


def pad_batch(sequences: list[list[int]] | list[np.ndarray], length: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token sequences with :data:`PAD_ID`.

    Returns tokens (n, length) int64 and key_padding_mask (n, length) bool, True = padding.
    ``length`` defaults to the longest sequence; a longer sequence is an error, not a cut.
    """
    longest = max((len(s) for s in sequences), default=0)
    if length is None:
        length = longest
    if longest > length:
        raise ValueError(f"length={length} is shorter than the longest sequence ({longest})")
    tokens = torch.full((len(sequences), length), PAD_ID, dtype=torch.int64)
    for i, s in enumerate(sequences):
        tokens[i, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    return tokens, tokens == PAD_ID


#: generation gives up after this many chunks in a row without a new unique expression, or
#: after this many drawn trees per requested example
_STALLED_CHUNKS = 8
_MAX_DRAWS_PER_EXAMPLE = 200


# ------------------------------------------------------------------ reference generator


def sample_tree_reference(rng: random.Random, max_depth: int = 10, max_args: int = 10,
                          p_operator: float = 0.25, depth: int = 1) -> list[int]:
    """One tree from LRA's recursion, as token ids (no length filter). Slow and obviously right."""
    if depth < max_depth and rng.random() < p_operator:
        n_args = rng.randint(2, max_args)
        children = [sample_tree_reference(rng, max_depth, max_args, p_operator, depth + 1)
                    for _ in range(n_args)]
        op = rng.randrange(len(OPERATORS))
        return [OPERATOR_IDS[op], *(t for c in children for t in c), END_ID]
    return [DIGIT_IDS[rng.randrange(10)]]


# ------------------------------------------------------------------ fast generator


@dataclass
class _Level:
    """The nodes of one depth for a batch of trees; children of a level follow their parents'
    order, so each operator's arguments are one contiguous run of the next level."""

    tree: np.ndarray  # (m,) index of the tree each node belongs to
    parent: np.ndarray  # (m,) index into the previous level (-1 at the root)
    is_op: np.ndarray  # (m,) bool
    n_children: np.ndarray  # (m,) children actually grown (0 for digits and pruned trees)
    symbol: np.ndarray  # (m,) digit value or operator index


def _grow(rng: np.random.Generator, n_trees: int, cfg: ListOpsConfig
          ) -> tuple[list[_Level], np.ndarray]:
    """Grow ``n_trees`` trees level by level. Returns the levels and an ``alive`` mask: a tree
    is pruned (alive False) once its token count must reach ``max_length``, which it would be
    rejected for anyway; this bounds the work spent on the rare huge trees."""
    levels: list[_Level] = []
    tree = np.arange(n_trees)
    parent = np.full(n_trees, -1)
    alive = np.ones(n_trees, dtype=bool)
    done = np.zeros(n_trees, dtype=np.int64)  # tokens of the levels grown so far
    for depth in range(1, cfg.max_depth + 1):
        m = len(tree)
        if depth < cfg.max_depth:
            is_op = rng.random(m) < cfg.p_operator
        else:
            is_op = np.zeros(m, dtype=bool)
        n_args = np.where(is_op, rng.integers(2, cfg.max_args + 1, m), 0)
        symbol = np.where(is_op, rng.integers(0, len(OPERATORS), m), rng.integers(0, 10, m))
        done += np.bincount(tree, weights=1 + is_op, minlength=n_trees).astype(np.int64)
        # each pending child adds at least one token
        lower = done + np.bincount(tree, weights=n_args, minlength=n_trees).astype(np.int64)
        alive &= lower < cfg.max_length
        n_children = np.where(alive[tree], n_args, 0)
        levels.append(_Level(tree, parent, is_op, n_children, symbol))
        if n_children.sum() == 0:
            break
        parent = np.repeat(np.arange(m), n_children)
        tree = tree[parent]
    return levels, alive


def _group_starts(n_children: np.ndarray) -> np.ndarray:
    """Index of each node's first child in the next level (exclusive cumulative sum)."""
    return np.concatenate([[0], np.cumsum(n_children)[:-1]]).astype(np.int64)


def _sizes_and_values(levels: list[_Level]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token count and value of every node, bottom-up (LRA's ``to_value``, vectorized)."""
    sizes: list[np.ndarray] = [np.empty(0)] * len(levels)
    values: list[np.ndarray] = [np.empty(0)] * len(levels)
    child_size = child_value = None
    for d in range(len(levels) - 1, -1, -1):
        lv = levels[d]
        size = np.where(lv.is_op, 2, 1).astype(np.int64)
        value = np.where(lv.is_op, 0, lv.symbol).astype(np.int64)
        has = lv.n_children > 0
        if has.any():
            starts = _group_starts(lv.n_children)[has]
            counts = lv.n_children[has]
            size[has] += np.add.reduceat(child_size, starts)
            value[has] = _reduce_operators(lv.symbol[has], child_value, starts, counts)
        sizes[d], values[d] = size, value
        child_size, child_value = size, value
    return sizes, values


def _reduce_operators(ops: np.ndarray, child_value: np.ndarray, starts: np.ndarray,
                      counts: np.ndarray) -> np.ndarray:
    """Apply operator ``ops[g]`` to ``child_value[starts[g] : starts[g] + counts[g]]``."""
    mins = np.minimum.reduceat(child_value, starts)
    maxs = np.maximum.reduceat(child_value, starts)
    sums = np.add.reduceat(child_value, starts) % 10
    # median: sort inside each group (values are 0-9, so group * 10 + value sorts both)
    group = np.repeat(np.arange(len(starts)), counts)  # the child level is these groups
    order = np.argsort(group * 10 + child_value, kind="stable")
    ranked = child_value[order]
    lo = ranked[starts + (counts - 1) // 2]
    hi = ranked[starts + counts // 2]
    meds = (lo + hi) // 2
    table = np.stack([mins, maxs, meds, sums])  # order of OPERATORS
    return table[ops, np.arange(len(ops))]


def _linearize(levels: list[_Level], sizes: list[np.ndarray], keep_tree: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Prefix-order tokens of the kept trees. Returns (flat uint8 tokens, offsets (k + 1,))."""
    root_size = sizes[0][keep_tree]
    offsets = np.concatenate([[0], np.cumsum(root_size)]).astype(np.int64)
    flat = np.empty(int(offsets[-1]), dtype=np.uint8)
    rank = np.full(len(keep_tree), -1)
    rank[keep_tree] = np.arange(len(root_size))
    op_ids = np.asarray(OPERATOR_IDS, dtype=np.uint8)
    digit_ids = np.asarray(DIGIT_IDS, dtype=np.uint8)
    pos = np.where(keep_tree, offsets[np.maximum(rank, 0)], -1)  # roots; -1 = not kept
    for d, lv in enumerate(levels):
        if d > 0:
            first_child = _group_starts(levels[d - 1].n_children)
            # position = parent's + 1 (its operator token) + sizes of the earlier siblings
            before = np.concatenate([[0], np.cumsum(sizes[d])[:-1]])
            pos = pos[lv.parent] + 1 + before - before[first_child[lv.parent]]
        kept = keep_tree[lv.tree]
        p, op, sym, size = pos[kept], lv.is_op[kept], lv.symbol[kept], sizes[d][kept]
        flat[p[op]] = op_ids[sym[op]]
        flat[p[~op]] = digit_ids[sym[~op]]
        flat[p[op] + size[op] - 1] = END_ID
    return flat, offsets


def _max_possible_length(cfg: ListOpsConfig) -> int:
    longest = 1
    for _ in range(cfg.max_depth - 1):
        longest = 2 + cfg.max_args * longest
    return longest


#: counts above this are not tracked exactly (every request is far below it)
_COUNT_CAP = 1e30


def count_expressions(max_depth: int, max_args: int, min_length: int, max_length: int) -> float:
    """How many distinct expressions have ``min_length < tokens < max_length`` (exclusive) and
    at most ``max_depth`` levels, each operator with 2..``max_args`` arguments.

    Counted by length: a tree of one level is one of 10 digits (1 token); a tree of ``h``
    levels is also an operator (4 choices) with 2..max_args subtrees of ``h - 1`` levels at
    most, whose lengths add up to ``tokens - 2``. Exact below 2**53; capped at 1e30 (float).
    """
    size = max_length  # lengths 0 .. max_length - 1
    trees = np.zeros(size)
    trees[1] = 10.0
    for _ in range(max_depth - 1):
        seq = trees.copy()  # sequences of j subtrees, j = 1 at first
        total = np.zeros(size)
        for _ in range(max_args - 1):  # j = 2 .. max_args subtrees
            seq = np.minimum(np.convolve(seq, trees)[:size], _COUNT_CAP)
            total += seq
        nxt = np.zeros(size)  # a digit, or an operator over shallower subtrees
        nxt[1] = 10.0
        nxt[2:] = 4 * total[: size - 2]
        trees = np.minimum(nxt, _COUNT_CAP)
    return float(np.minimum(trees[min_length + 1: max_length].sum(), _COUNT_CAP))


def _too_few_expressions(cfg: ListOpsConfig) -> str | None:
    """The error text when fewer distinct expressions exist than ``cfg.total``, naming the
    bounds whose change would make room; None when there are enough."""
    count = count_expressions(cfg.max_depth, cfg.max_args, cfg.min_length, cfg.max_length)
    if count >= cfg.total:
        return None
    options = []
    for name, value in (("max_length", cfg.max_length * 2), ("min_length", cfg.min_length // 2),
                        ("max_depth", cfg.max_depth + 1), ("max_args", cfg.max_args + 1)):
        if getattr(cfg, name) == value:
            continue
        changed = {**asdict(cfg), name: value}
        c = count_expressions(changed["max_depth"], changed["max_args"],
                              changed["min_length"], changed["max_length"])
        if c > count:
            options.append(f"{name}={value} gives {c:.4g}")
    if not options:  # no single bound helps: all of them together
        together = {"max_length": cfg.max_length * 2, "min_length": cfg.min_length // 2,
                    "max_depth": cfg.max_depth + 1, "max_args": cfg.max_args + 1}
        c = count_expressions(together["max_depth"], together["max_args"],
                              together["min_length"], together["max_length"])
        options.append("no single bound helps; together " + ", ".join(
            f"{k}={v}" for k, v in together.items()) + f" give {c:.4g}")
    hint = "; ".join(options) + ")"
    return (f"only {count:.0f} distinct expressions exist with max_depth={cfg.max_depth}, "
            f"max_args={cfg.max_args} and min_length={cfg.min_length} < tokens < "
            f"max_length={cfg.max_length}, but num_train + num_val + num_test = {cfg.total} "
            f"unique ones are requested: request at most {count:.0f}, or widen a bound ("
            + hint)


def generate_listops(cfg: ListOpsConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``cfg.total`` unique expressions with ``min_length < tokens < max_length``.

    Returns ``(flat, offsets, labels)``: expression ``i`` is ``flat[offsets[i]:offsets[i+1]]``
    (uint8 token ids), ``labels`` (total,) int64. Train, val and test are consecutive slices
    in that order, so deduplication over the whole draw keeps the splits disjoint.
    """
    if _max_possible_length(cfg) <= cfg.min_length:
        raise ValueError(
            f"min_length={cfg.min_length} cannot be exceeded: with max_depth={cfg.max_depth} "
            f"and max_args={cfg.max_args} the longest expression has "
            f"{_max_possible_length(cfg)} tokens")
    message = _too_few_expressions(cfg)
    if message:
        raise ValueError(message)
    rng = np.random.default_rng(cfg.seed)
    seen: set[bytes] = set()
    pieces: list[np.ndarray] = []
    labels: list[int] = []
    drawn = before = stalled = 0
    chunk = 8192
    while len(pieces) < cfg.total:
        levels, alive = _grow(rng, chunk, cfg)
        sizes, values = _sizes_and_values(levels)
        keep = alive & (sizes[0] > cfg.min_length) & (sizes[0] < cfg.max_length)
        flat, offsets = _linearize(levels, sizes, keep)
        for i, label in enumerate(values[0][keep]):
            seq = flat[offsets[i]:offsets[i + 1]]
            b = seq.tobytes()
            if b in seen:
                continue
            seen.add(b)
            pieces.append(seq)
            labels.append(int(label))
            if len(pieces) == cfg.total:
                break
        drawn += chunk
        found = len(pieces) - before
        before = len(pieces)
        stalled = stalled + 1 if found == 0 else 0
        # enough distinct expressions exist, but the generator almost never draws the missing
        # ones (the window holds only rare trees, or the common ones are used up)
        if len(pieces) < cfg.total and (stalled >= _STALLED_CHUNKS
                                        or drawn >= _MAX_DRAWS_PER_EXAMPLE * cfg.total
                                        + 1_000_000):
            raise ValueError(
                f"only {len(pieces)} unique expressions of the {cfg.total} requested after "
                f"{drawn} trees drawn ({stalled} chunks in a row found none new): with "
                f"max_depth={cfg.max_depth} and max_args={cfg.max_args}, LRA's generator "
                f"rarely makes trees with {cfg.min_length} < tokens < {cfg.max_length}; "
                f"widen the window (min_length / max_length) or request fewer examples")
        # aim the next chunk at what is still missing, from the acceptance rate so far
        rate = max(len(pieces), 1) / drawn
        missing = cfg.total - len(pieces)
        chunk = int(min(max(1.2 * missing / rate, 4096), 131_072))
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
    flat = np.concatenate(pieces) if pieces else np.empty(0, np.uint8)
    return flat, offsets, np.asarray(labels, dtype=np.int64)


# ------------------------------------------------------------------ data set and cache


@dataclass(frozen=True)
class ListOpsSplit:
    """One split. tokens: (n, seq) int64, padded with PAD_ID to the split's longest
    expression; labels: (n,) int64 in 0-9; lengths: (n,) int64 tokens before padding."""

    tokens: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor

    @property
    def key_padding_mask(self) -> torch.Tensor:
        """(n, seq) bool, True = padding."""
        return self.tokens == PAD_ID

    def __len__(self) -> int:
        return len(self.labels)

    def expression(self, i: int) -> str:
        return decode(self.tokens[i, : int(self.lengths[i])].tolist())


@dataclass(frozen=True)
class ListOpsData:
    """The three splits plus how they were obtained."""

    config: ListOpsConfig
    train: ListOpsSplit
    val: ListOpsSplit
    test: ListOpsSplit
    generation_s: float  # seconds spent generating (0.0 when read from the cache)
    from_cache: bool

    def majority_class(self) -> tuple[int, float]:
        """The most frequent training label and the test accuracy of always predicting it."""
        counts = torch.bincount(self.train.labels, minlength=NUM_CLASSES)
        label = int(counts.argmax())
        acc = float((self.test.labels == label).float().mean()) if len(self.test) else 0.0
        return label, acc


def _split(flat: np.ndarray, offsets: np.ndarray, labels: np.ndarray, lo: int, hi: int
           ) -> ListOpsSplit:
    lengths = np.diff(offsets[lo:hi + 1])
    width = int(lengths.max()) if hi > lo else 0
    tokens = np.full((hi - lo, width), PAD_ID, dtype=np.int64)
    # scatter the flat run of expressions into the padded rows in one step
    row = np.repeat(np.arange(hi - lo), lengths)
    col = np.arange(int(lengths.sum())) - np.repeat(offsets[lo:hi] - offsets[lo], lengths)
    tokens[row, col] = flat[offsets[lo]:offsets[hi]]
    return ListOpsSplit(torch.from_numpy(tokens), torch.as_tensor(labels[lo:hi]),
                        torch.as_tensor(lengths))


def default_cache_dir() -> Path:
    """``$EFFLAB_CACHE/listops`` if set, else ``~/.cache/efflab/listops``."""
    root = os.environ.get("EFFLAB_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "efflab") / "listops"


def load_listops(cfg: ListOpsConfig | None = None, cache_dir: str | os.PathLike | None = None,
                 use_cache: bool = True) -> ListOpsData:
    """Generate (or read back from the cache) the ListOps splits of ``cfg`` (LRA's by default).

    The cache file is keyed by the whole config, written atomically; a file whose stored config
    differs from ``cfg`` is regenerated, never trusted.
    """
    cfg = cfg or ListOpsConfig()
    path = Path(cache_dir or default_cache_dir()) / f"listops-{cfg.key()}.npz"
    arrays = None
    if use_cache and path.exists():
        try:
            with np.load(path) as z:
                if json.loads(str(z["config"])) == asdict(cfg):
                    arrays = (z["flat"], z["offsets"], z["labels"])
        except (OSError, ValueError, KeyError):
            arrays = None  # a damaged cache file is regenerated
    from_cache = arrays is not None
    elapsed = 0.0
    if arrays is None:
        start = time.perf_counter()
        arrays = generate_listops(cfg)
        elapsed = time.perf_counter() - start
        if use_cache:
            flat, offsets, labels = arrays

            def write(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, flat=flat, offsets=offsets, labels=labels,
                             config=np.asarray(json.dumps(asdict(cfg))))

            atomic_save(path, write)
    flat, offsets, labels = arrays
    a, b = cfg.num_train, cfg.num_train + cfg.num_val
    return ListOpsData(cfg, _split(flat, offsets, labels, 0, a),
                       _split(flat, offsets, labels, a, b),
                       _split(flat, offsets, labels, b, cfg.total), elapsed, from_cache)
