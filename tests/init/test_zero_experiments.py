"""The ZerO experiments on tiny configs: what they measure, and how their claims decide."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from efflab.experiments import RunContext, get
from efflab.experiments.suite.zero_vs_random import LABELS, distinct_features
from efflab.init import zero_init_
from efflab.models import create_model
from efflab.models.mlp import zero_relu, zero_relu_reference


def test_zero_relu_has_relu_values_and_derivative_one_at_zero():
    x = torch.tensor([-2.0, -0.0, 0.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    y = zero_relu(x)
    assert torch.equal(y, torch.relu(x.detach()))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"activation must be one of .*'swish'"):
        create_model("resnet", activation="swish")


def test_zero_relu_equals_its_autograd_reference_in_float64_zeros_included():
    torch.manual_seed(0)
    for shape in ((0, 3), (4, 5, 6)):
        x = torch.randn(shape, dtype=torch.float64)
        x[..., ::3] = 0.0                                    # exact zeros, where they differ
        if x.numel():
            x.view(-1)[1], x.view(-1)[2] = -math.inf, math.inf
        x_ref = x.clone().requires_grad_(True)
        x.requires_grad_(True)
        y, y_ref = zero_relu(x), zero_relu_reference(x_ref)
        assert torch.equal(y, y_ref)
        g = torch.randn(shape, dtype=torch.float64)
        (y * g).sum().backward()
        (y_ref * g).sum().backward()
        assert torch.equal(x.grad, x_ref.grad)
        assert torch.equal(x.grad, g * (x.detach() >= 0))


def test_resnet_activation_option_is_used_everywhere():
    model = create_model("resnet", blocks=(1, 1), widths=(4, 8), in_channels=1, dim=1,
                         activation="zero_relu")
    names = {type(m).__name__ for m in model.modules()}
    assert "ZeroReLU" in names and "ReLU" not in names


def test_low_rank_experiment_counts_the_rank_of_w_minus_i(tmp_path):
    exp = get("zero-low-rank")
    config = dataclasses.replace(exp.Config.quick(), width=16, depth=2, steps=4,
                                 num_samples=300, inits=("zero", "kaiming"), wide_width=48,
                                 wide_steps=3, conv_steps=2, conv_widths=(4, 8))
    config.validate()
    results = exp.run(config, RunContext(device=torch.device("cpu"), outdir=tmp_path))
    zero, kaiming = results["runs"]["zero"]["ranks"], results["runs"]["kaiming"]["ranks"]
    assert list(zero) == ["net.2"]                      # the one square (16 x 16) layer
    assert len(zero["net.2"]) == 5                      # steps 0..4
    assert zero["net.2"][0] == 0 and kaiming["net.2"][0] == 16
    # step 1 back-propagates through the 10 x 16 partial identity: rank <= 10 classes
    assert 0 < zero["net.2"][1] <= 10
    verdicts = {c.text: c.verdict for c in exp.claims(results, config)}
    assert verdicts["Under random initialization W - I is full rank from the start"] \
        == "reproduced"
    # Theorem 1: the partial-identity start leaves units 40..47 dead, so W - I of the square
    # layer never gains rank beyond 40
    t1 = results["theorem1"]
    assert max(max(v) for v in t1["partial_identity"]["ranks"].values()) <= 40
    assert results["conv"]["zero"]["stable_rank"][0] == 0.0        # every kernel starts at 0
    assert results["conv"]["kaiming"]["stable_rank"][0] > 1.0
    assert exp.figures(results, config, tmp_path) == ["zero_low_rank.png",
                                                      "zero_low_rank_theorem1_conv.png"]
    assert (tmp_path / "zero_low_rank.png").stat().st_size > 0


def _deep_results(zero_acc, kaiming_acc, depths=(2, 32)):
    runs = [{"depth": d, "init": i, "seed": 0, "final_train_loss": 1.0,
             "test_acc": (zero_acc if i == "zero" else kaiming_acc) if d == depths[-1] else 0.9}
            for d in depths for i in ("zero", "kaiming", "fixup")]
    return {"runs": runs}


@pytest.mark.parametrize("zero_acc,kaiming_acc,verdicts", [
    (0.9, 0.1, ["reproduced", "reproduced"]),        # ZerO trains, Kaiming fails
    (0.9, 0.9, ["reproduced", "not reproduced"]),    # both train: no depth limit shown
    (0.1, 0.1, ["not reproduced", "reproduced"]),    # ZerO fails too
])
def test_deep_claims_decide_by_the_stated_threshold(zero_acc, kaiming_acc, verdicts):
    exp = get("zero-deep-no-bn")
    config = dataclasses.replace(exp.Config.quick(), depths=(2, 32))
    claims = exp.claims(_deep_results(zero_acc, kaiming_acc), config)
    assert [c.verdict for c in claims] == verdicts
    assert all(c.kind == "reproduction" for c in claims)


def test_deep_experiment_runs_tiny_and_draws_its_figure(tmp_path):
    exp = get("zero-deep-no-bn")
    config = dataclasses.replace(exp.Config.quick(), depths=(2, 4), width=4, steps=2,
                                 warmup_steps=0, inits=("zero", "kaiming", "fixup", "rezero"))
    config.validate()
    results = exp.run(config, RunContext(device=torch.device("cpu"), outdir=tmp_path))
    assert {(r["depth"], r["init"]) for r in results["runs"]} == {
        (d, i) for d in (2, 4) for i in ("zero", "kaiming", "fixup", "rezero")}
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in results["runs"])
    assert exp.figures(results, config, tmp_path) == ["zero_deep_no_bn.png"]
    assert len(exp.claims(results, config)) == 2


def _vs_results(zero, kaiming, task="digits"):
    from efflab.experiments.suite.zero_vs_random import _summary

    runs = [{"task": task, "init": i, "seed": s, "test_acc": a}
            for i, accs in (("zero", zero), ("kaiming", kaiming)) for s, a in enumerate(accs)]
    return {"runs": runs, "summary": _summary(runs), "cifar10": "not run",
            "determinism": {"identical": True, "max_abs_diff": 0.0, "device": "cpu",
                            "epochs": 1.0}}


@pytest.mark.parametrize("zero,kaiming,verdict", [
    ([0.30, 0.28, 0.31], [0.97, 0.96, 0.98], "not reproduced"),   # the centre-tap failure
    ([0.965, 0.97, 0.968], [0.97, 0.972, 0.969], "reproduced"),
    ([0.99, 0.98, 0.985], [0.97, 0.972, 0.969], "reproduced"),    # better is fine
    ([0.90, 0.97, 0.99], [0.97, 0.972, 0.969], "inconclusive"),   # the seeds disagree
])
def test_zero_vs_random_claim_can_come_out_each_way(zero, kaiming, verdict):
    exp = get("zero-vs-random")
    claims = exp.claims(_vs_results(zero, kaiming), exp.Config.quick())
    repro = [c for c in claims if c.kind == "reproduction"]
    assert len(repro) == 1 and repro[0].verdict == verdict
    assert repro[0].interval["lo"] <= repro[0].interval["value"] <= repro[0].interval["hi"]
    prop = [c for c in claims if c.kind == "property"]
    assert len(prop) == 1 and prop[0].verdict == "reproduced"


def test_zero_vs_random_determinism_failure_is_a_failed_property():
    from efflab.experiments.base import combine_verdicts

    exp = get("zero-vs-random")
    results = _vs_results([0.97] * 3, [0.97, 0.971, 0.969])
    results["determinism"].update(identical=False, max_abs_diff=1e-7)
    assert combine_verdicts(exp.claims(results, exp.Config.quick())) == "failed"


def test_zero_vs_random_runs_every_init_on_both_tasks_tiny(tmp_path):
    exp = get("zero-vs-random")
    config = dataclasses.replace(exp.Config.quick(), seeds=(0, 1), mnist1d_seeds=(0, 1, 2),
                                 widths=(4, 8),
                                 digits_epochs=0.1, mnist1d_epochs=0.1, mnist1d_samples=200,
                                 mnist1d_inits=("zero", "kaiming"), determinism_epochs=0.1)
    config.validate()
    results = exp.run(config, RunContext(device=torch.device("cpu"), outdir=tmp_path))
    assert set(results["summary"]["digits"]) == set(LABELS)
    assert set(results["summary"]["mnist1d"]) == {"zero", "kaiming"}
    # each task its own seeds: 2 on the digits, 3 on MNIST-1D
    assert {r["seed"] for r in results["runs"] if r["task"] == "digits"} == {0, 1}
    assert {r["seed"] for r in results["runs"] if r["task"] == "mnist1d"} == {0, 1, 2}
    assert results["determinism"]["identical"]
    assert exp.figures(results, config, tmp_path) == ["zero_vs_random.png"]
    assert [c.kind for c in exp.claims(results, config)] == ["reproduction"] * 2 + ["property"]


@pytest.mark.parametrize("key,value", [("widths", (6, 8)), ("digits_inits", ("he",)),
                                       ("seeds", ()), ("tolerance", float("nan"))])
def test_zero_vs_random_bad_config_is_refused_before_work(key, value):
    from efflab.experiments.base import ConfigError

    config = dataclasses.replace(get("zero-vs-random").Config.quick(), **{key: value})
    with pytest.raises(ConfigError, match=key):
        config.validate()


def test_low_rank_claims_can_fail():
    exp = get("zero-low-rank")
    config = dataclasses.replace(exp.Config.quick(), width=16)
    full = [16] * 5
    results = {"width": 16, "runs": {
        "zero": {"ranks": {"l": full}, "stable_ranks": {"l": [0.0, 9.0, 9.0]}},
        "kaiming": {"ranks": {"l": full}, "stable_ranks": {"l": [9.0, 9.0, 9.0]}}},
        "theorem1": {"width": 128, "partial_identity": {"ranks": {"l": [0, 10, 60]}},
                     "algorithm1": {"ranks": {"l": [0, 10, 30]}}},
        "conv": {"zero": {"stable_rank": [0.0, 9.0]}, "kaiming": {"stable_rank": [9.0, 9.0]}}}
    verdicts = [(c.kind, c.verdict) for c in exp.claims(results, config)]
    assert ("property", "not reproduced") in verdicts          # ZerO not at 0: a bug
    assert [v for k, v in verdicts if k == "reproduction"] == ["not reproduced"] * 6


def test_distinct_features_sees_units_tied_by_the_hadamard_rows():
    """40 -> 256: rows of H_256[:, :40] repeat with period 2^ceil(log2 40) = 64, so ZerO's
    first layer has only 64 different units, and identity layers after it keep the copies."""
    x = torch.randn(64, 40)
    wide = zero_init_(create_model("mlp", in_features=40, width=256, depth=2))
    assert distinct_features(wide, x) == (64, 0)
    # copies get the same gradient, except where the 10 x 256 partial identity of the output
    # reads one of them: units 0..9 part from their copies, the rest of the 64 groups stay
    # tied (up to rounding): 54 + 2 * 10 = 74 distinct units however long one trains
    opt = torch.optim.SGD(wide.parameters(), lr=0.1, momentum=0.9)
    y = torch.randint(0, 10, (64,))
    for _ in range(10):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(wide(x), y).backward()
        opt.step()
    assert distinct_features(wide, x)[0] == 74
    fit = zero_init_(create_model("mlp", in_features=40, width=64, depth=2))
    assert distinct_features(fit, x)[0] == 64
