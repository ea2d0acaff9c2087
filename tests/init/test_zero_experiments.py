"""The ZerO experiments on tiny configs: what they measure, and how their claims decide."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from efflab.experiments import RunContext, get
from efflab.experiments.suite.zero_vs_random import determinism_check, distinct_features
from efflab.init import zero_init_
from efflab.models import create_model
from efflab.models.mlp import zero_relu


def test_zero_relu_has_relu_values_and_derivative_one_at_zero():
    x = torch.tensor([-2.0, -0.0, 0.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    y = zero_relu(x)
    assert torch.equal(y, torch.relu(x.detach()))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"activation must be one of .*'swish'"):
        create_model("resnet", activation="swish")


def test_resnet_activation_option_is_used_everywhere():
    model = create_model("resnet", blocks=(1, 1), widths=(4, 8), in_channels=1, dim=1,
                         activation="zero_relu")
    names = {type(m).__name__ for m in model.modules()}
    assert "ZeroReLU" in names and "ReLU" not in names


def test_low_rank_experiment_counts_the_rank_of_w_minus_i(tmp_path):
    exp = get("zero-low-rank")
    config = dataclasses.replace(exp.Config.quick(), width=16, depth=2, steps=4,
                                 num_samples=300, inits=("zero", "kaiming"))
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
    assert exp.figures(results, config, tmp_path) == ["zero_low_rank.png"]
    assert (tmp_path / "zero_low_rank.png").stat().st_size > 0


def _deep_results(zero_loss, random_loss):
    runs = [{"depth": d, "init": i, "seed": 0, "test_acc": 0.1,
             "final_train_loss": (zero_loss if i == "zero" else random_loss) if d == 128
             else 1.9}
            for d in (2, 128) for i in ("zero", "kaiming", "xavier")]
    return {"runs": runs, "chance_loss": math.log(10)}


@pytest.mark.parametrize("zero_loss,random_loss,verdict", [
    (1.9, None, "reproduced"),          # ZerO trains, random diverges
    (1.9, 2.30, "reproduced"),          # random stays at chance: fails
    (1.9, 1.8, "partly"),               # both train
    (2.30, None, "not reproduced"),     # ZerO does not train either
    (None, None, "not reproduced"),
])
def test_deep_claim_decides_by_the_stated_tolerance(zero_loss, random_loss, verdict):
    exp = get("zero-deep-no-bn")
    config = dataclasses.replace(exp.Config.quick(), depths=(2, 128))
    claims = exp.claims(_deep_results(zero_loss, random_loss), config)
    assert claims[0].verdict == verdict


def test_deep_experiment_runs_and_random_init_blows_up_without_batch_norm(tmp_path):
    exp = get("zero-deep-no-bn")
    config = dataclasses.replace(exp.Config.quick(), depths=(1, 24), width=16, steps=2,
                                 warmup_steps=0, num_samples=200, inits=("zero", "kaiming"))
    results = exp.run(config, RunContext(device=torch.device("cpu"), outdir=tmp_path))
    by = {(r["depth"], r["init"]): r for r in results["runs"]}
    # ZerO starts as identity blocks and a zero classifier: exactly chance on the first batch
    assert by[(24, "zero")]["first_batch_loss"] == pytest.approx(math.log(10), abs=1e-6)
    # Kaiming without batch norm adds variance in every block: after 24 the loss is far
    # above chance before any step
    first = by[(24, "kaiming")]["first_batch_loss"]
    assert first is None or first > 2 * math.log(10)


def test_zero_runs_are_bit_identical():
    result = determinism_check("cpu", epochs=0.5, num_samples=300)
    assert result["identical"] and result["max_abs_diff"] == 0.0


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
