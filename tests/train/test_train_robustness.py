"""Bad training settings are refused before any step; a checkpoint of another model or data
set is refused; what a callback records and the run's time survive a resume; TensorBoard and
the progress bar."""

import math
import time

import pytest
import torch
from torch import nn

from efflab.train import TrainConfig, train
from efflab.train.checkpoint import CheckpointError, load_checkpoint


def _setup(act=nn.ReLU, hidden=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 4, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, hidden), act(), nn.Linear(hidden, 3)), (x, y)


@pytest.mark.parametrize("kw, name", [
    (dict(lr=math.nan), "lr"), (dict(lr=math.inf), "lr"), (dict(momentum=math.nan), "momentum"),
    (dict(weight_decay=math.nan), "weight_decay"), (dict(grad_reg=math.nan), "grad_reg"),
    (dict(warmup_steps=math.nan), "warmup_steps"), (dict(warmup_steps=2.5), "warmup_steps"),
    (dict(steps=None, epochs=math.inf), "epochs"), (dict(clip_norm=math.nan), "clip_norm"),
    (dict(seed=-1), "seed"), (dict(seed=2**64), "seed"), (dict(seed=1.5), "seed"),
    (dict(min_lr_ratio=math.nan), "min_lr_ratio"), (dict(grad_reg_eps=math.inf), "grad_reg_eps"),
    (dict(amp="yes"), "amp"), (dict(adam_betas=(0.9, 1.5)), "adam_betas"),
])
def test_bad_numbers_are_refused_naming_the_field(kw, name):
    kw = {"steps": 3, **kw}
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kw)


def test_checkpoint_dir_that_is_a_file_fails_before_the_first_step(tmp_path):
    model, data = _setup()
    target = tmp_path / "not-a-folder"
    target.write_text("x")
    steps = []
    cfg = TrainConfig(steps=3, batch_size=8, checkpoint_dir=str(target), checkpoint_every=1)
    with pytest.raises(CheckpointError, match="not a folder"):
        train(model, data, cfg, callback=lambda s, m: steps.append(s))
    assert steps == []


def _checkpointed(tmp_path, model, data, steps=4):
    cfg = TrainConfig(steps=steps, batch_size=8, checkpoint_dir=str(tmp_path / "ck"),
                      checkpoint_every=2)
    return train(model, data, cfg), cfg


@pytest.mark.parametrize("other, what", [
    (dict(hidden=16), "model"),            # other shapes: was a raw RuntimeError
    (dict(act=nn.Tanh), "model"),          # same shapes, another activation
    (dict(seed=1), "data"),                # same size, other values
])
def test_checkpoint_of_another_model_or_data_is_refused(tmp_path, other, what):
    _checkpointed(tmp_path, *_setup(), steps=4)
    model, data = _setup(**other)
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_dir=str(tmp_path / "ck"),
                      checkpoint_every=2)
    with pytest.raises(CheckpointError, match=what):
        train(model, data, cfg)


def test_callback_records_and_wall_time_survive_a_resume(tmp_path):
    model, data = _setup()
    cfg = TrainConfig(steps=2, batch_size=8, checkpoint_dir=str(tmp_path / "ck"),
                      checkpoint_every=2)
    first = train(model, data, cfg, callback=lambda s, m: {"val": float(s) * 10})
    assert [r["val"] for r in first.history] == [10.0, 20.0]
    saved = load_checkpoint(tmp_path / "ck")
    assert saved["wall_s"] > 0
    # a run interrupted at step 3 (checkpoint at step 2) resumes there: the records of
    # steps 1-2 come from the checkpoint, and so does the time spent before the interruption
    cfg4 = TrainConfig(steps=4, batch_size=8, checkpoint_dir=str(tmp_path / "ck4"),
                       checkpoint_every=2)
    calls = []

    def stop_at_3(step, m):
        calls.append(step)
        if step == 3:
            raise KeyboardInterrupt
        return {"val": float(step)}

    model, data = _setup()
    with pytest.raises(KeyboardInterrupt):
        train(model, data, cfg4, callback=stop_at_3)
    assert calls == [1, 2, 3]
    model, data = _setup()
    resumed = train(model, data, cfg4, callback=lambda s, m: {"val": float(s)})
    assert resumed.resumed_from == 2
    assert [r["val"] for r in resumed.history] == [1.0, 2.0, 3.0, 4.0]
    assert resumed.total_wall_s > resumed.wall_s


def test_tensorboard_events_are_readable_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, data = _setup()
    cfg = TrainConfig(steps=5, batch_size=8, eval_every=2, tensorboard_dir=str(tmp_path / "tb"))
    result = train(model, data, cfg, eval_data=data)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/train_loss", "train/lr", "train/grad_norm", "train/step_s",
            "train/train_acc", "test/acc"} <= tags
    losses = [e.value for e in acc.Scalars("train/train_loss")]
    assert [e.step for e in acc.Scalars("train/train_loss")] == [1, 2, 3, 4, 5]
    assert losses == pytest.approx([r["train_loss"] for r in result.history])


def test_progress_bar_shows_the_loss(capsys):
    model, data = _setup()
    slow = lambda step, m: time.sleep(0.15)  # noqa: E731 - past tqdm's refresh interval
    train(model, data, TrainConfig(steps=3, batch_size=8, progress=True), callback=slow)
    err = capsys.readouterr().err
    assert "train" in err and "loss=" in err
    model, data = _setup()
    train(model, data, TrainConfig(steps=3, batch_size=8, progress=False))
    assert "loss=" not in capsys.readouterr().err


def test_cli_tensorboard_flag_logs_every_training_run_of_an_experiment(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from efflab.cli import main
    from efflab.train.loop import TENSORBOARD_ENV

    monkeypatch.delenv(TENSORBOARD_ENV, raising=False)
    tb = tmp_path / "tb"
    sets = ["width=16", "depth=2", "steps=4", "num_samples=300", "inits=zero,kaiming",
            "wide_width=48", "wide_steps=3", "conv_steps=2", "conv_widths=4,8"]
    argv = ["run", "zero-low-rank", "--out", str(tmp_path / "o"), "--quiet",
            "--tensorboard", str(tb)]
    for item in sets:
        argv += ["--set", item]
    try:
        assert main(argv) == 0
    finally:
        import os
        os.environ.pop(TENSORBOARD_ENV, None)
    runs = sorted(p for p in tb.iterdir() if p.is_dir())
    assert len(runs) >= 2                      # one folder per training run (ZerO, Kaiming)
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    assert "train/train_loss" in acc.Tags()["scalars"]


def test_a_half_written_checkpoint_tmp_is_removed_on_the_next_start(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    stale = ck / ".checkpoint.pt.k3j9x0ab.tmp"   # what a kill during torch.save leaves
    stale.write_bytes(b"half")
    model, data = _setup()
    train(model, data, TrainConfig(steps=2, batch_size=8, checkpoint_dir=str(ck),
                                   checkpoint_every=1))
    assert not stale.exists()
    assert [p.name for p in ck.iterdir()] == ["checkpoint.pt"]
