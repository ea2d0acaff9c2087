"""performer-backward-compatibility: the pieces, a tiny run, and claims that can fail."""

import pytest
import torch

from efflab.experiments import get as get_experiment
from efflab.experiments.base import RunContext, combine_verdicts
from efflab.experiments.suite.performer_backward_compatibility import (
    Config,
    load_corpus,
    recovery_step,
)


def _fabricated(swap_steps, scratch_steps, swapped_start=2.5, fresh=5.5, finetune=80,
                scratch_budget=200):
    """Results in the shape run() writes, with the recovery numbers chosen by the test."""
    seeds = []
    for i, (a, b) in enumerate(zip(swap_steps, scratch_steps)):
        curve = {"step": [0], "loss": [swapped_start], "accuracy": [0.3], "seconds": [1.0]}
        seeds.append({
            "seed": i, "fresh_loss": fresh, "fresh_accuracy": 0.0, "softmax_final_loss": 2.3,
            "threshold": 2.35, "weights_kept": True,
            "added_state": ["transformer.h.0.attn.efflab_attention.projection"],
            "curves": {"softmax": curve, "swapped": curve, "scratch": curve},
            "recovery": {"swapped": {"steps": a, "recovered": a <= finetune},
                         "scratch": {"steps": b, "recovered": b <= scratch_budget}}})
    return {"seeds": seeds, "corpus": {"python": "3.11", "bytes": 1, "sha256": "0" * 64},
            "loadavg_at_start": None}


def test_claims_can_come_out_reproduced_and_not_reproduced():
    exp, config = get_experiment("performer-backward-compatibility"), Config()
    good = exp.claims(_fabricated([10, 20, 10], [210, 210, 190]), config)
    assert combine_verdicts(good) == "reproduced"
    # no transfer effect: the swapped model takes as long as training from scratch, starts
    # as badly as a fresh model, and needs more than the fine-tuning budget
    bad = exp.claims(_fabricated([90, 90, 90], [50, 55, 60], swapped_start=5.6), config)
    assert [c.verdict for c in bad if c.kind == "reproduction"] == ["not reproduced"] * 3
    assert combine_verdicts(bad) == "not reproduced"
    # seeds that disagree: inconclusive, never a verdict decided by noise
    noisy = exp.claims(_fabricated([5, 70, 30], [210, 40, 200]), config)
    assert {c.verdict for c in noisy if c.kind == "reproduction"} >= {"inconclusive"}


def test_a_changed_weight_fails_the_property():
    exp = get_experiment("performer-backward-compatibility")
    results = _fabricated([10, 20, 10], [210, 210, 190])
    results["seeds"][1]["weights_kept"] = False
    assert combine_verdicts(exp.claims(results, Config())) == "failed"


def test_recovery_step_is_the_first_eval_under_the_threshold_or_censored():
    curve = {"step": [0, 10, 20, 30], "loss": [3.0, 2.5, 2.2, 2.1]}
    assert recovery_step(curve, 2.3, budget=30, eval_every=10) == (20, True)
    assert recovery_step(curve, 2.0, budget=30, eval_every=10) == (40, False)


def test_corpus_is_the_stdlib_files_and_bad_names_are_refused():
    data, info = load_corpus(("keyword.py", "bisect.py"))
    assert data.dtype == torch.long and 0 <= int(data.min()) and int(data.max()) < 256
    assert info["bytes"] == data.numel() and len(info["sha256"]) == 64
    with pytest.raises(ValueError, match="'no_such_module.py' is not in the standard library"):
        load_corpus(("no_such_module.py",))
    with pytest.raises(ValueError, match="n_embd must be a multiple of n_head 4, got 30"):
        Config(n_embd=30).validate()


@pytest.mark.slow
def test_a_tiny_run_writes_curves_for_the_three_models(tmp_path):
    exp = get_experiment("performer-backward-compatibility")
    config = Config(files=("keyword.py", "bisect.py", "heapq.py"), seq_len=16, batch=2,
                    n_layer=1, n_embd=16, n_head=2, num_features=8, pretrain_steps=4,
                    finetune_steps=2, scratch_steps=4, eval_every=2, eval_windows=4,
                    seeds=(0, 1))
    config.validate()
    ctx = RunContext(device=torch.device("cpu"), outdir=tmp_path)
    results = exp.run(config, ctx)
    again = exp.run(config, ctx)
    for s, t in zip(results["seeds"], again["seeds"]):  # same seed, same numbers
        for run in ("softmax", "swapped", "scratch"):
            assert s["curves"][run]["loss"] == t["curves"][run]["loss"]
    s = results["seeds"][0]
    assert s["curves"]["softmax"]["step"] == [0, 2, 4]
    assert s["curves"]["swapped"]["step"] == [0, 2]
    assert s["weights_kept"] and s["added_state"]
    # the swapped model starts from the trained weights: not at the fresh model's loss
    assert s["curves"]["swapped"]["loss"][0] != s["fresh_loss"]
    claims = exp.claims(results, config)
    assert {c.kind for c in claims} == {"reproduction", "measurement", "property"}
    assert exp.figures(results, config, tmp_path) == ["performer_backward_compatibility.png"]
    assert (tmp_path / "performer_backward_compatibility.png").stat().st_size > 0
    assert exp.tables(results, config)[0].rows[0][0] == 0
