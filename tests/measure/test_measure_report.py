"""measure(): the whole report, its files, out-of-memory batch sizes and failing models."""

import csv
import json

import pytest
import torch
from torch import nn

from efflab.measure import OUT_OF_MEMORY, MeasureError, measure, write_csv, write_json
from efflab.models import create_model


def quick(model, inputs, **kw):
    kw.setdefault("memory", False)
    return measure(model, inputs, warmup=1, repeats=3, train_repeats=2, **kw)


def test_report_of_an_mlp_holds_every_indicator():
    b = 8
    model = create_model("mlp", in_features=40, width=32, depth=2, num_classes=10)
    r = quick(model, torch.randn(b, 40), name="mlp", batch_sizes=[1, 4, 8])
    fwd = 2 * b * (40 * 32 + 32 * 32 + 32 * 10)
    assert r.flops_forward.total == fwd
    assert r.flops_forward_per_sample == fwd / b
    assert r.flops_train_step.total > r.flops_forward.total
    assert r.params.unique == sum(p.numel() for p in model.parameters())
    assert [t.batch_size for t in r.throughput] == [1, 4, 8]
    assert all(t.status == "ok" and t.samples_per_s > 0 for t in r.throughput)
    assert r.latency_inference.repeats == 3 and r.latency_train_step.repeats == 2
    assert r.latency_inference.p90_s >= r.latency_inference.median_s > 0
    assert r.machine["device"] == "cpu" and r.machine["torch_version"] == torch.__version__
    assert r.machine["dtype"] == "float32"
    assert r.flops_forward_per_token is None
    text = r.table()
    for needle in ("parameters: unique", "FLOPs: forward", "latency", "throughput",
                   "1 multiply-add = 2 FLOPs", "uncounted ops (forward)"):
        assert needle in text


def test_tokens_per_sample_gives_tokens_per_second_and_flops_per_token():
    model = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 8))
    r = quick(model, torch.randint(0, 20, (4, 6)), tokens_per_sample=6, batch_sizes=[4])
    assert r.flops_forward_per_token == pytest.approx(2 * 8 * 8)
    t = r.throughput[0]
    assert t.tokens_per_s == pytest.approx(6 * t.samples_per_s)
    assert r.params.embedding == 20 * 8


def test_original_model_is_left_untouched():
    model = nn.Linear(5, 3)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    quick(model, torch.randn(2, 5), dtype=torch.float64)
    assert model.training
    for p, q in zip(model.parameters(), before):
        assert p.dtype == torch.float32
        assert torch.equal(p, q)


class FitsUpTo(nn.Module):
    """Raises the allocator's out-of-memory error above a batch size, like a full GPU."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (batch {x.shape[0]})")
        return self.lin(x)


def test_batch_sizes_that_do_not_fit_are_recorded_and_the_rest_measured(tmp_path):
    r = quick(FitsUpTo(4), torch.randn(2, 3), batch_sizes=[1, 4, 16, 64])
    status = {t.batch_size: t.status for t in r.throughput}
    assert status == {1: "ok", 4: "ok", 16: OUT_OF_MEMORY, 64: OUT_OF_MEMORY}
    assert "batch 16" in next(t.error for t in r.throughput if t.batch_size == 16)
    row = r.flat()
    assert row["throughput_inference_bs64_samples_per_s"] == OUT_OF_MEMORY
    assert "out of memory" in r.table()


def test_model_failing_on_the_inputs_names_the_shapes_tried():
    with pytest.raises(MeasureError, match=r"\(3, 7\) float32") as info:
        quick(nn.Linear(5, 2), torch.randn(3, 7), name="lin")
    assert "lin" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)  # the original error is kept


def test_bad_example_inputs_are_named():
    with pytest.raises(ValueError, match=r"same batch size.*\[\(3, 2\), \(4, 2\)\]"):
        quick(nn.Bilinear(2, 2, 1), (torch.randn(3, 2), torch.randn(4, 2)))
    with pytest.raises(TypeError, match="example_inputs must be a tensor"):
        quick(nn.Linear(2, 2), [[1.0, 2.0]])


def test_json_and_csv_files_round_trip(tmp_path):
    reports = [quick(create_model("mlp", width=w), torch.randn(4, 40), name=f"mlp{w}",
                     batch_sizes=[2], memory=True) for w in (8, 16)]
    write_json(reports, tmp_path / "r.json")
    write_csv(reports, tmp_path / "r.csv")
    data = json.loads((tmp_path / "r.json").read_text())
    assert [d["name"] for d in data] == ["mlp8", "mlp16"]
    assert data[1]["flops_forward"]["total"] == reports[1].flops_forward.total
    assert data[0]["memory_train_step"]["bytes"] == reports[0].memory_train_step.bytes is not None
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [int(r["params_unique"]) for r in rows] == [r.params.unique for r in reports]
    assert int(rows[0]["memory_train_step_peak_bytes"]) == reports[0].memory_train_step.bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]  # no temp files
