"""ListOps generator (LRA section 3.1): labels, bounds, splits, distribution, cache, tokens."""

from __future__ import annotations

import json
import random
from dataclasses import asdict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from efflab.data import listops as lo
from efflab.data.listops import (
    END_ID,
    PAD_ID,
    ListOpsConfig,
    apply_operator,
    count_expressions,
    decode,
    encode,
    evaluate,
    generate_listops,
    load_listops,
    pad_batch,
    sample_tree_reference,
    tree_depth,
)

SMALL = ListOpsConfig(max_depth=10, max_args=10, min_length=40, max_length=300,
                      num_train=300, num_val=60, num_test=60, seed=3)


@pytest.fixture(scope="module")
def small_data():
    return generate_listops(SMALL)


def _sequences(flat, offsets):
    return [flat[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


# ------------------------------------------------------------------ evaluator


def test_evaluator_on_hand_computed_expressions():
    assert evaluate("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]") == 5
    assert evaluate("[SM 9 8 7 ]") == 4  # 24 mod 10
    assert evaluate("[MIN 7 [MAX 2 9 ] 8 ]") == 7
    assert evaluate("[MED 3 8 1 6 ]") == 4  # (3 + 6) / 2 = 4.5, floored as int(np.median)
    assert evaluate("[MED 1 2 ]") == 1
    assert evaluate("[SM [SM 5 5 ] [MED 9 9 0 ] ]") == 9
    assert evaluate("7") == 7


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=10))
def test_operators_match_lra_numpy_semantics(args):
    assert apply_operator("MED", args) == int(np.median(args))
    assert apply_operator("SM", args) == int(np.sum(args) % 10)
    assert apply_operator("MIN", args) == min(args)
    assert apply_operator("MAX", args) == max(args)


@pytest.mark.parametrize("bad", ["[MAX 1 2", "[MAX 1 2 ] ]", "[FOO 1 ]", "1 2", "]", "[MAX 1 12 ]"])
def test_evaluator_rejects_malformed_expressions(bad):
    with pytest.raises(ValueError):
        evaluate(bad)


def test_tree_depth_counts_levels():
    assert tree_depth("5") == 1
    assert tree_depth("[MAX 1 2 ]") == 2
    assert tree_depth("[MAX 1 [MIN 2 [SM 3 4 ] ] ]") == 4


# ------------------------------------------------------------------ generated data


def test_labels_match_independent_evaluator(small_data):
    flat, offsets, labels = small_data
    seqs = _sequences(flat, offsets)
    assert len(seqs) == SMALL.total
    assert [evaluate(s) for s in seqs] == labels.tolist()


def test_length_and_depth_bounds_hold(small_data):
    flat, offsets, _ = small_data
    lengths = np.diff(offsets)
    assert lengths.min() > SMALL.min_length and lengths.max() < SMALL.max_length
    depths = [tree_depth(s) for s in _sequences(flat, offsets)]
    assert max(depths) <= SMALL.max_depth
    assert max(depths) >= 6  # deep trees do occur, so the bound is exercised
    # well-formed prefix expressions: as many operators as closing brackets
    for s in _sequences(flat, offsets):
        assert sum(t in lo.OPERATOR_IDS for t in s) == s.count(END_ID)


def test_depth_limit_is_enforced_when_it_binds():
    cfg = ListOpsConfig(max_depth=3, max_args=10, min_length=12, max_length=60,
                        num_train=100, num_val=0, num_test=0, seed=1)
    flat, offsets, labels = generate_listops(cfg)
    depths = [tree_depth(s) for s in _sequences(flat, offsets)]
    assert max(depths) == 3
    assert [evaluate(s) for s in _sequences(flat, offsets)] == labels.tolist()


def test_splits_are_disjoint_and_sized(tmp_path):
    data = load_listops(SMALL, cache_dir=tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (300, 60, 60)
    sets = [{data_split.expression(i) for i in range(len(data_split))}
            for data_split in (data.train, data.val, data.test)]
    assert [len(s) for s in sets] == [300, 60, 60]  # no duplicates inside a split either
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    for split in (data.train, data.val, data.test):
        assert split.tokens.dtype == torch.int64
        assert torch.equal(split.key_padding_mask.sum(1),
                           split.tokens.shape[1] - split.lengths)
        for i in range(0, len(split), 17):
            assert evaluate(split.expression(i)) == int(split.labels[i])


def test_same_seed_same_data_other_seed_other_data():
    cfg = ListOpsConfig(max_depth=6, min_length=20, max_length=100,
                        num_train=50, num_val=10, num_test=10, seed=5)
    a = generate_listops(cfg)
    b = generate_listops(cfg)
    c = generate_listops(ListOpsConfig(**{**asdict(cfg), "seed": 6}))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0][: len(c[0])], c[0][: len(a[0])])


# ------------------------------------------------------------------ fast vs reference


def test_fast_generator_matches_reference_in_distribution():
    """Unfiltered trees: length and value distributions of the level-by-level numpy grower
    and LRA's recursion agree (two-sample KS and chi-square at fixed seeds)."""
    cfg = ListOpsConfig(max_depth=5, max_args=6, min_length=0, max_length=10**9)
    n = 6000
    levels, alive = lo._grow(np.random.default_rng(0), n, cfg)
    sizes, values = lo._sizes_and_values(levels)
    assert alive.all()
    rng = random.Random(0)
    ref = [sample_tree_reference(rng, cfg.max_depth, cfg.max_args, cfg.p_operator)
           for _ in range(n)]
    ref_len = np.array([len(t) for t in ref])
    assert stats.ks_2samp(sizes[0], ref_len).pvalue > 1e-3
    # the fraction of one-digit trees is 1 - p_operator in both
    assert abs((sizes[0] == 1).mean() - 0.75) < 0.03 and abs((ref_len == 1).mean() - 0.75) < 0.03
    op_rooted = sizes[0] > 1
    fast_vals = np.bincount(values[0][op_rooted], minlength=10)
    ref_vals = np.bincount([evaluate(t) for t in ref if len(t) > 1], minlength=10)
    assert stats.chi2_contingency(np.stack([fast_vals, ref_vals])).pvalue > 1e-3


def test_fast_values_and_linearization_agree_with_evaluator():
    cfg = ListOpsConfig(max_depth=7, max_args=8, min_length=0, max_length=10**9)
    levels, _ = lo._grow(np.random.default_rng(1), 2000, cfg)
    sizes, values = lo._sizes_and_values(levels)
    keep = np.ones(2000, dtype=bool)
    flat, offsets = lo._linearize(levels, sizes, keep)
    seqs = _sequences(flat, offsets)
    assert [len(s) for s in seqs] == sizes[0].tolist()
    assert [evaluate(s) for s in seqs] == values[0].tolist()


def test_filtered_lengths_match_reference_with_pruning():
    """With a length window, pruning of long trees must not bias what is kept."""
    cfg = ListOpsConfig(max_depth=6, max_args=6, min_length=25, max_length=70,
                        num_train=1500, num_val=0, num_test=0, seed=2)
    flat, offsets, _ = generate_listops(cfg)
    rng = random.Random(2)
    ref: set[tuple[int, ...]] = set()
    while len(ref) < 1500:
        t = sample_tree_reference(rng, cfg.max_depth, cfg.max_args, cfg.p_operator)
        if cfg.min_length < len(t) < cfg.max_length:
            ref.add(tuple(t))
    assert stats.ks_2samp(np.diff(offsets), [len(t) for t in ref]).pvalue > 1e-3


def test_pruning_keeps_lengths_just_below_the_upper_bound():
    """A window right under max_length: every allowed length occurs, as often as in LRA's
    recursion (pruning one token too early would drop the longest)."""
    cfg = ListOpsConfig(max_depth=6, max_args=6, min_length=60, max_length=64,
                        num_train=400, num_val=0, num_test=0, seed=4)
    lengths = np.diff(generate_listops(cfg)[1])
    rng = random.Random(4)
    ref: list[int] = []
    while len(ref) < 400:
        t = sample_tree_reference(rng, cfg.max_depth, cfg.max_args, cfg.p_operator)
        if cfg.min_length < len(t) < cfg.max_length:
            ref.append(len(t))
    table = np.stack([np.bincount(lengths, minlength=64)[61:], np.bincount(ref, minlength=64)[61:]])
    assert (table[0] > 0).all()
    assert stats.chi2_contingency(table).pvalue > 1e-3


# ------------------------------------------------------------------ cache


def test_cache_round_trip_and_stale_file_is_not_trusted(tmp_path):
    cfg = ListOpsConfig(max_depth=6, min_length=20, max_length=100,
                        num_train=40, num_val=5, num_test=5, seed=9)
    first = load_listops(cfg, cache_dir=tmp_path)
    assert not first.from_cache
    second = load_listops(cfg, cache_dir=tmp_path)
    assert second.from_cache and second.generation_s == 0.0
    assert torch.equal(first.train.tokens, second.train.tokens)
    assert torch.equal(first.test.labels, second.test.labels)
    # a file under this config's name but holding another config's data is regenerated
    path = tmp_path / f"listops-{cfg.key()}.npz"
    other = {**asdict(cfg), "seed": 10}
    with open(path, "wb") as f:
        np.savez(f, flat=np.zeros(3, np.uint8), offsets=np.array([0, 3]), labels=np.array([0]),
                 config=np.asarray(json.dumps(other)))
    third = load_listops(cfg, cache_dir=tmp_path)
    assert not third.from_cache and torch.equal(third.train.tokens, first.train.tokens)
    path.write_bytes(b"not an npz file")
    fourth = load_listops(cfg, cache_dir=tmp_path)
    assert not fourth.from_cache and torch.equal(fourth.val.tokens, first.val.tokens)


def test_majority_class_is_the_most_frequent_training_label(tmp_path):
    data = load_listops(SMALL, cache_dir=tmp_path)
    label, acc = data.majority_class()
    counts = [int((data.train.labels == c).sum()) for c in range(10)]
    assert counts[label] == max(counts)
    assert acc == pytest.approx(sum(int(y) == label for y in data.test.labels) / len(data.test))


# ------------------------------------------------------------------ tokens and errors


def test_encode_decode_round_trip_and_padding():
    text = "[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]"
    ids = encode(text)
    assert decode(ids) == text
    assert ids[0] == lo.VOCAB["[MAX"] and ids[-1] == END_ID and ids[1] == lo.VOCAB["4"]
    tokens, mask = pad_batch([ids, encode("[SM 1 2 ]")])
    assert tokens.shape == (2, len(ids)) and mask.shape == tokens.shape
    assert mask[1].tolist() == [False] * 4 + [True] * (len(ids) - 4)
    assert (tokens[mask] == PAD_ID).all() and not mask[0].any()
    assert decode(tokens[1].tolist()) == "[SM 1 2 ]"
    with pytest.raises(ValueError, match="length=3"):
        pad_batch([ids], length=3)
    with pytest.raises(ValueError, match="'FOO'"):
        encode("[MAX FOO ]")


@pytest.mark.parametrize("kwargs, name", [
    ({"max_depth": 0}, "max_depth"), ({"max_args": 1}, "max_args"),
    ({"p_operator": 1.5}, "p_operator"), ({"min_length": 10, "max_length": 11}, "min_length"),
    ({"num_train": -1}, "num_train"), ({"min_length": float("nan")}, "min_length"),
    ({"max_length": 2000.0}, "max_length"), ({"max_depth": True}, "max_depth"),
    ({"p_operator": float("nan")}, "p_operator"), ({"seed": -1}, "seed"),
    ({"num_test": "5"}, "num_test"),
])
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ListOpsConfig(**kwargs)


def test_impossible_length_window_is_a_clear_error():
    cfg = ListOpsConfig(max_depth=2, max_args=4, min_length=10, max_length=20,
                        num_train=5, num_val=0, num_test=0)
    with pytest.raises(ValueError, match="min_length=10 cannot be exceeded"):
        generate_listops(cfg)


def _brute_force_count(max_depth, max_args, min_length, max_length):
    """Distinct trees by direct recursion over (levels, tokens): an independent count."""
    from functools import lru_cache

    @lru_cache(None)
    def trees(levels, tokens):
        n = 10 if tokens == 1 else 0
        if levels > 1 and tokens >= 4:
            @lru_cache(None)
            def runs(j, rest):
                if j == 0:
                    return 1 if rest == 0 else 0
                return sum(trees(levels - 1, t) * runs(j - 1, rest - t)
                           for t in range(1, rest + 1))
            n += 4 * sum(runs(j, tokens - 2) for j in range(2, max_args + 1))
        return n

    return sum(trees(max_depth, t) for t in range(min_length + 1, max_length))


@pytest.mark.parametrize("bounds", [(1, 10, 0, 5), (2, 3, 0, 10), (3, 3, 3, 14), (3, 4, 5, 20),
                                    (4, 2, 0, 30)])
def test_count_of_distinct_expressions_matches_brute_force(bounds):
    assert count_expressions(*bounds) == _brute_force_count(*bounds)


def test_a_request_of_exactly_every_expression_succeeds_and_one_more_is_refused_at_once(
        monkeypatch):
    # depth 2, two arguments, 4 tokens: 4 operators x 10 x 10 digits = 400 expressions
    every = ListOpsConfig(max_depth=2, max_args=2, min_length=3, max_length=5, num_train=300,
                          num_val=50, num_test=50, seed=1)
    assert count_expressions(2, 2, 3, 5) == 400
    flat, offsets, labels = generate_listops(every)
    assert len({flat[offsets[i]:offsets[i + 1]].tobytes() for i in range(400)}) == 400

    def no_drawing(*args, **kwargs):
        raise AssertionError("an impossible request must be refused before any draw")

    monkeypatch.setattr(lo, "_grow", no_drawing)
    too_many = ListOpsConfig(max_depth=2, max_args=2, min_length=3, max_length=5,
                             num_train=401, num_val=0, num_test=0)
    with pytest.raises(ValueError, match=r"only 400 distinct.*= 401.*no single bound helps; "
                       r"together max_length=10.* give 5\.636e\+06"):
        generate_listops(too_many)
    empty = ListOpsConfig(max_depth=3, max_args=2, min_length=1, max_length=4, num_train=1,
                          num_val=0, num_test=0)
    with pytest.raises(ValueError, match="only 0 distinct.*max_length=8 gives"):
        generate_listops(empty)


def test_a_window_the_generator_almost_never_reaches_stops_with_advice(monkeypatch):
    # many distinct expressions of 110-121 tokens exist at depth 3, but LRA's process
    # (an operator with probability 0.25) essentially never grows one
    cfg = ListOpsConfig(max_depth=3, max_args=10, min_length=110, max_length=122,
                        num_train=50, num_val=0, num_test=0)
    assert count_expressions(3, 10, 110, 122) > 1e6
    monkeypatch.setattr(lo, "_STALLED_CHUNKS", 2)
    with pytest.raises(ValueError, match="widen the window"):
        generate_listops(cfg)
