"""Long Range Arena ListOps (Tay et al. 2020, arXiv 2011.04006, section 3.1 and Table 1):
softmax, Linformer and Performer encoders trained with one budget, quality beside the whole
cost report.

Each attention trains the same encoder classifier (:mod:`efflab.models.transformer`) on the
same ListOps data (:mod:`efflab.data.listops`, LRA's generator) with the same optimizer, steps
and batch; then :func:`efflab.measure.measure` takes every cost indicator of that model on a
batch of test sequences (parameters, FLOPs, latency, throughput, peak memory).

Profiles:

* ``full``, for a GPU: LRA's base ListOps setting as its repository configures it
  (``lra_benchmarks/listops/configs/base_listops_config.py``): data 500 < tokens < 2000,
  96k / 2k / 2k examples; 6 layers, embedding 512, MLP 2048, 8 heads, dropout 0.1; batch 32,
  5000 steps, Adam (0.9, 0.98) with decoupled weight decay 0.1, learning rate 0.05 times
  linear warmup (1000 steps) times rsqrt decay. ``efflab.train`` has no rsqrt decay: the
  profile warms up linearly to the same peak, 0.05 / sqrt(1000), and decays by a cosine to
  LRA's final rate, 0.05 / sqrt(5000) (stated in every result). Linformer k = 16 with one
  projection shared by keys and values (``models/linformer/linformer_attention.py``:
  ``low_rank_features=16``); Performer m = 2 random features, as the repository's
  ``listops/configs/performer_base.py`` sets ``nb_features=2``, redrawn at every forward pass.
  Claims: each model within ``lra_tolerance`` points of its LRA test accuracy (two-sided,
  binomial interval), and softmax and Linformer above Performer by ``order_margin`` points.
* ``quick``: a reduced setting for a 2-core CPU: LRA's generator with sequences of 300-600
  tokens (long enough that softmax attention is the main cost), a 2-layer width-32 encoder,
  a few hundred steps. Its numbers are not comparable with LRA's; the claim is that every
  model beats the majority class, with a binomial interval.

What differs from LRA in both: the classifier reads the first position (the root operator's
token; LRA prepends a learned CLS token there), learned position embeddings, Adam's epsilon
1e-8 (LRA 1e-9), the learning-rate decay above.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from efflab.data.listops import ListOpsConfig, load_listops
from efflab.experiments import Claim, Experiment, ExperimentConfig, RunContext, Table, register
from efflab.experiments.checks import (
    at_least,
    each,
    in_range,
    nonempty,
    nonnegative,
    one_of,
    param,
    positive,
)
from efflab.experiments.plotting import save_figure
from efflab.experiments.sweep import run_sweep
from efflab.experiments.verdicts import (
    difference_interval,
    interval_at_least,
    interval_within,
    mean_interval,
)
from efflab.measure import measure
from efflab.models import create_model
from efflab.progress import bar
from efflab.seeding import derive_seed
from efflab.train import TrainConfig, evaluate, train

#: LRA Table 1, ListOps test accuracy (%)
LRA_ACCURACY = {"softmax": 36.37, "linformer": 35.70, "performer": 18.01}
LRA_NAMES = {"softmax": "Transformer", "linformer": "Linformer", "performer": "Performer"}
_SWEEP = "lra-listops-v2"  # bump when what a point computes changes
_LRA_FIELDS = ("max_depth", "max_args", "min_length", "max_length", "num_train", "num_val",
               "num_test", "embed_dim", "depth", "num_heads", "mlp_dim", "steps", "batch_size")
#: LRA's base learning rate and schedule (constant * linear_warmup * rsqrt_decay)
LRA_BASE_LR, LRA_WARMUP, LRA_STEPS = 0.05, 1000, 5000


@dataclass
class LRAListOpsConfig(ExperimentConfig):
    """Data, model, training and measurement settings; defaults are the full (LRA) profile."""

    # data (efflab.data.listops; LRA's generator settings)
    max_depth: int = param(10, "deepest tree level (LRA: 10)", check=at_least(1))
    max_args: int = param(10, "most arguments of an operator (LRA: 10)", check=at_least(2))
    min_length: int = param(500, "tokens > this (exclusive; LRA: 500)", check=nonnegative)
    max_length: int = param(2000, "tokens < this (exclusive; LRA: 2000)", check=positive)
    num_train: int = param(96_000, "training examples (LRA: 96k)", check=positive)
    num_val: int = param(2_000, "validation examples (LRA: 2k)", check=nonnegative)
    num_test: int = param(2_000, "test examples (LRA: 2k)", check=positive)
    # model (LRA's base ListOps model)
    attentions: tuple[str, ...] = param(("softmax", "linformer", "performer"),
                                        "attention mechanisms to train",
                                        check=nonempty & each(one_of(*LRA_ACCURACY)))
    embed_dim: int = param(512, "embedding width (LRA: 512)", check=positive)
    depth: int = param(6, "encoder layers (LRA: 6)", check=positive)
    num_heads: int = param(8, "attention heads (LRA: 8)", check=positive)
    mlp_dim: int = param(2048, "MLP width (LRA: 2048)", check=positive)
    dropout: float = param(0.1, "dropout (LRA: 0.1)", check=in_range(0, 1, hi_open=True))
    linformer_k: int = param(16, "Linformer projected length k (LRA: 16)", check=positive)
    linformer_sharing: str = param("key-value", "Linformer projection sharing (LRA: one "
                                   "kernel for keys and values)",
                                   check=one_of("none", "headwise", "key-value", "layerwise"))
    performer_features: int = param(2, "Performer random features m per layer (LRA's "
                                    "config: nb_features=2)", check=positive)
    performer_redraw: int = param(1, "redraw the Performer's features every this many "
                                  "training forward passes (0: never)", check=nonnegative)
    # training (same for every attention)
    steps: int = param(LRA_STEPS, "optimizer steps (LRA: 5000)", check=positive)
    batch_size: int = param(32, "batch size (LRA: 32)", check=positive)
    lr: float = param(LRA_BASE_LR / math.sqrt(LRA_WARMUP), "peak learning rate (LRA: 0.05 x "
                      "rsqrt decay = 0.05 / sqrt(1000) at the end of warmup)", check=positive)
    warmup_steps: int = param(LRA_WARMUP, "linear warmup steps (LRA: 1000)",
                              check=nonnegative)
    min_lr_ratio: float = param(math.sqrt(LRA_WARMUP / LRA_STEPS), "final / peak learning "
                                "rate of the cosine decay (LRA's rsqrt decay ends at "
                                "sqrt(1000 / 5000))", check=in_range(0, 1))
    weight_decay: float = param(0.1, "decoupled weight decay (LRA: 0.1)", check=nonnegative)
    adam_beta2: float = param(0.98, "Adam beta2 (LRA: 0.98)", check=in_range(0, 1,
                                                                          hi_open=True))
    clip_norm: float = param(0.0, "gradient clipping norm (0: none; LRA: none)",
                             check=nonnegative)
    eval_every: int = param(500, "validation every this many steps (0: never)",
                            check=nonnegative)
    amp: bool = param(True, "mixed precision on CUDA")
    checkpoint_every: int = param(500, "checkpoint every this many steps (0: never)",
                                  check=nonnegative)
    # cost report
    measure_batch: int = param(32, "test sequences per cost measurement", check=positive)
    measure_repeats: int = param(10, "timing repeats", check=positive)
    # claims
    lra_tolerance: float = param(5.0, "full profile: |ours - LRA| in points", check=positive)
    order_margin: float = param(5.0, "full profile: softmax and Linformer above Performer by "
                                "at least this many points", check=nonnegative)

    ordered_fields: ClassVar = (("min_length", "max_length"),)

    @classmethod
    def quick(cls) -> LRAListOpsConfig:
        return cls(min_length=300, max_length=600, num_train=2000, num_val=200,
                   num_test=1000, embed_dim=32, depth=2, num_heads=2, mlp_dim=64, dropout=0.0,
                   linformer_k=32, linformer_sharing="headwise", performer_features=32,
                   performer_redraw=100, steps=120, batch_size=16, lr=3e-3, warmup_steps=20,
                   min_lr_ratio=0.1, weight_decay=0.01, clip_norm=1.0, eval_every=0,
                   amp=False, checkpoint_every=0, measure_batch=16, measure_repeats=3)

    @classmethod
    def full(cls) -> LRAListOpsConfig:
        return cls()

    def is_lra_setting(self) -> bool:
        """True when data, model size, batch and steps are LRA's; otherwise the setting is
        reduced and the verdict compares with the majority class, not with LRA's numbers."""
        lra = LRAListOpsConfig()
        return all(getattr(self, k) == getattr(lra, k) for k in _LRA_FIELDS)

    def data_config(self) -> ListOpsConfig:
        return ListOpsConfig(max_depth=self.max_depth, max_args=self.max_args,
                             min_length=self.min_length, max_length=self.max_length,
                             num_train=self.num_train, num_val=self.num_val,
                             num_test=self.num_test, seed=self.seed)

    def attention_options(self, attention: str) -> dict[str, Any]:
        """What each attention is built with: recorded in every result."""
        if attention == "linformer":
            return {"k": self.linformer_k, "sharing": self.linformer_sharing}
        if attention == "performer":
            return {"num_features": self.performer_features,
                    "redraw_interval": self.performer_redraw or None}
        return {}

    def schedule(self) -> str:
        return (f"linear warmup {self.warmup_steps} steps to {self.lr:.3g}, cosine to "
                f"{self.min_lr_ratio * self.lr:.3g} at step {self.steps}")


def build_model(cfg: LRAListOpsConfig, attention: str) -> torch.nn.Module:
    """The encoder classifier of one attention, seeded by the config's seed (the same
    initial weights for every attention, apart from the attention's own parameters)."""
    torch.manual_seed(derive_seed(cfg.seed, "model"))
    model = create_model("transformer_classifier", max_seq_len=cfg.max_length,
                         embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                         mlp_dim=cfg.mlp_dim, dropout=cfg.dropout, attention=attention,
                         attention_options=cfg.attention_options(attention), pooling="first")
    return lra_embedding_init_(model)


@torch.no_grad()
def lra_embedding_init_(model: torch.nn.Module) -> torch.nn.Module:
    """Token embeddings N(0, 1), as LRA's encoders initialize them
    (``embedding_init=normal(stddev=1.0)``). With efflab's default N(0, 0.02) the tokens are
    tiny next to the first attention's output, every position looks the same from layer 2 on
    and attention there starts at rank one (measured: cumulative spectrum 1.000 at n / 4)."""
    torch.nn.init.normal_(model.encoder.token_embedding.weight, std=1.0)
    return model


@dataclass
class FixedLabelLoss:
    """Cross entropy against fixed labels: the training step the cost report times. A class,
    not a lambda, so that the memory probe can send it to a fresh process."""

    labels: torch.Tensor

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, self.labels.to(logits.device))


def train_and_measure(point: dict[str, Any]) -> dict[str, Any]:
    """One attention: train, test, then the cost report. ``point``: config, attention, device,
    outdir (checkpoints). Module level so that the sweep can resume it."""
    cfg = LRAListOpsConfig(**{**point["config"],
                               "attentions": tuple(point["config"]["attentions"])})
    attention, device = point["attention"], torch.device(point["device"])
    data = load_listops(cfg.data_config())
    model = build_model(cfg, attention)
    ckpt = None
    if cfg.checkpoint_every and point.get("outdir"):
        ckpt = str(Path(point["outdir"]) / "checkpoints" / attention)
    # eval_every=0: train() would score the whole training set at each evaluation; the
    # callback below scores the validation split alone every cfg.eval_every steps instead
    tc = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, optimizer="adamw", lr=cfg.lr,
                     warmup_steps=cfg.warmup_steps, schedule="cosine",
                     min_lr_ratio=cfg.min_lr_ratio, adam_betas=(0.9, cfg.adam_beta2),
                     weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm or None,
                     eval_every=0, amp=cfg.amp, seed=cfg.seed, device=str(device),
                     checkpoint_dir=ckpt, checkpoint_every=cfg.checkpoint_every if ckpt else 0,
                     eval_batch_size=256)
    val = (data.val.tokens.to(device), data.val.labels.to(device))
    stamps: list[float] = []  # after each optimizer step: the loop's own time per step
    with bar(cfg.steps, desc=f"listops {attention}") as pbar:

        def callback(step: int, net: torch.nn.Module) -> dict[str, float] | None:
            stamps.append(time.perf_counter())
            pbar.update(1)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                ev = evaluate(net, val, batch_size=256, amp=cfg.amp)
                pbar.set_postfix(val_loss=f"{ev['loss']:.3f}", val_acc=f"{ev['acc']:.3f}")
                # returned, so train() keeps it in the checkpointed history: a resumed run
                # still has every validation entry
                return {"val_loss": ev["loss"], "val_acc": ev["acc"]}
            return None

        start = time.perf_counter()
        result = train(model, (data.train.tokens, data.train.labels), tc, eval_data=val,
                       callback=callback)
        train_s = time.perf_counter() - start
    test = evaluate(model, (data.test.tokens.to(device), data.test.labels.to(device)),
                    batch_size=256, amp=cfg.amp)

    tokens = data.test.tokens[: cfg.measure_batch]
    labels = data.test.labels[: cfg.measure_batch].to(device)
    model.eval()
    report = measure(model, tokens, name=attention, device=device,
                     batch_sizes=[cfg.measure_batch], tokens_per_sample=int(tokens.shape[1]),
                     loss_fn=FixedLabelLoss(labels),
                     warmup=2, repeats=cfg.measure_repeats)
    # median over steps, so that the validation passes do not count as training time
    step_s = float(np.median(np.diff(stamps))) if len(stamps) > 1 else train_s
    history = [{"step": h["step"], "train_loss": h["train_loss"]} for h in result.history]
    val_history = [{"step": h["step"], "val_loss": h["val_loss"], "val_acc": h["val_acc"]}
                   for h in result.history if "val_acc" in h]
    # the run's own time over every resume, not only this call's
    train_s = result.total_wall_s
    return {
        "attention": attention, "options": _jsonable_options(cfg.attention_options(attention)),
        "test_acc": test["acc"], "test_loss": test["loss"],
        "test_correct": int(round(test["acc"] * len(data.test))), "test_n": len(data.test),
        "val_acc": result.final.get("test_acc"),  # train()'s eval data is our val split
        "val_history": val_history,
        "train_acc": result.final.get("train_acc"), "train_loss": result.final.get("train_loss"),
        "train_wall_s": train_s, "train_s_per_step": step_s,
        "history": history[:: max(1, len(history) // 200)],
        "cost": report.flat(),
    }


@register
class LRAListOps(Experiment):
    name = "lra-listops"
    paper = ("Long Range Arena (arXiv 2011.04006), ListOps; Linformer (2006.04768); "
             "Performer (2009.14794)")
    checks = ("softmax, Linformer and Performer encoders on ListOps with one training budget: "
              "test accuracy against LRA's Table 1 (or, reduced, the majority class) beside "
              "every cost indicator")
    Config = LRAListOpsConfig
    budget_s = {"quick": 150.0, "full": 4 * 3600.0}
    #: its sweep runs with jobs=1 (one core), and its table and figure compare the models'
    #: latency and throughput: run alone
    cores = "one"
    timed = True
    #: seconds-long overrides for the end-to-end test of every experiment
    smoke = {"min_length": 20, "max_length": 60, "num_train": 64, "num_val": 8, "num_test": 32,
             "embed_dim": 8, "mlp_dim": 16, "linformer_k": 8, "performer_features": 8, "steps": 2,
             "batch_size": 8, "warmup_steps": 1, "measure_batch": 4, "measure_repeats": 1}

    def run(self, config: LRAListOpsConfig, ctx: RunContext) -> dict[str, Any]:
        start = time.perf_counter()
        data = load_listops(config.data_config())
        majority_label, majority_acc = data.majority_class()
        cfg_dict = dataclasses.asdict(config)
        points = [{"config": cfg_dict, "attention": a, "device": str(ctx.device),
                   "outdir": str(ctx.outdir)} for a in config.attentions]
        # one at a time whatever --jobs says: the time and memory columns must not overlap
        models = run_sweep(train_and_measure, points, ctx.outdir, _SWEEP, jobs=1,
                           desc="lra-listops")
        reduced = not config.is_lra_setting()
        return {
            "reduced": reduced,
            "setting": "reduced (not LRA's: " + ", ".join(
                f"{k}={getattr(config, k)}" for k in _LRA_FIELDS
                if getattr(config, k) != getattr(LRAListOpsConfig(), k)) + ")"
            if reduced else "LRA's ListOps setting",
            "data": {"train": len(data.train), "val": len(data.val), "test": len(data.test),
                     "train_mean_length": float(data.train.lengths.float().mean()),
                     "max_length_seen": int(data.train.lengths.max()),
                     "generation_s": data.generation_s, "from_cache": data.from_cache},
            "majority": {"label": majority_label, "test_acc": majority_acc},
            "schedule": config.schedule(),
            "attention_options": {a: _jsonable_options(config.attention_options(a))
                                  for a in config.attentions},
            "models": models,
            "wall_s": time.perf_counter() - start,
        }

    def tables(self, results: dict[str, Any], config: LRAListOpsConfig) -> list[Table]:
        rows = []
        for m in results["models"]:
            c = m["cost"]
            rows.append([
                LRA_NAMES[m["attention"]], round(100 * m["test_acc"], 2),
                LRA_ACCURACY[m["attention"]], c["params_unique"],
                _fmt(c["flops_forward_per_sample"]), _fmt(c["flops_train_step"]),
                _ms(c.get("latency_inference_median_s")),
                _ms(c.get("latency_train_step_median_s")), _ms(m["train_s_per_step"]),
                _fmt(_throughput(c, "samples")), _fmt(_throughput(c, "tokens")),
                _mib(c.get("memory_inference_peak_bytes")),
                _mib(c.get("memory_train_step_peak_bytes")),
            ])
        machine = ""
        if results["models"]:
            c = results["models"][0]["cost"]
            machine = f"{c.get('device_name')} ({c.get('torch_threads')} threads)"
        return [Table(
            title="ListOps: test accuracy and cost per attention",
            columns=["model", "test acc % (ours)", "LRA acc %", "params (unique)",
                     "FLOPs fwd / sample", "FLOPs train step", "latency infer ms",
                     "latency train step ms", "train loop ms/step", "samples/s", "tokens/s",
                     "peak mem infer MiB", "peak mem train MiB"],
            rows=rows,
            note=(f"Setting: {results['setting']}. Majority-class test accuracy "
                  f"{100 * results['majority']['test_acc']:.2f}%. Cost columns from "
                  f"efflab.measure on {machine or 'this machine'}, batch {config.measure_batch} "
                  "test sequences padded to the split's longest; FLOPs count 1 multiply-add as "
                  "2; 'train loop' is the wall time per step of the actual training run. "
                  f"Attention options: {results.get('attention_options')}; learning rate: "
                  f"{results.get('schedule')}."),
        )]

    def figures(self, results: dict[str, Any], config: LRAListOpsConfig, outdir: Path
                ) -> list[str]:
        import matplotlib.pyplot as plt

        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for i, m in enumerate(results["models"]):
            color, name = f"C{i}", LRA_NAMES[m["attention"]]
            t = m["cost"].get("latency_train_step_median_s") or m["train_s_per_step"]
            ax.scatter(1000 * t, 100 * m["test_acc"], s=60, color=color, label=name)
            if not results["reduced"]:
                ax.scatter(1000 * t, LRA_ACCURACY[m["attention"]], marker="x", color=color,
                           label=f"{name}, LRA")
            loss = np.array([h["train_loss"] for h in m["history"]])
            steps = np.array([h["step"] for h in m["history"]])
            w = max(1, len(loss) // 20)  # moving average: single batches are noisy
            smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
            ax2.plot(steps[w - 1:], smooth, color=color, label=name)
        ax.axhline(100 * results["majority"]["test_acc"], color="gray", ls="--",
                   label="majority class")
        ax.set_xlabel(f"time per training step (ms; efflab.measure median, batch "
                      f"{config.measure_batch})")
        ax.set_ylabel("test accuracy (%)")
        title = "reduced setting" if results["reduced"] else "LRA setting (x: LRA's number)"
        ax.set_title(f"ListOps: accuracy vs cost, {title}", fontsize=9)
        ax.legend(fontsize=8)
        ax2.set_xlabel("step")
        ax2.set_ylabel("training loss (moving average)")
        ax2.set_title("training loss (same budget)", fontsize=9)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return [save_figure(fig, outdir, "lra_listops_accuracy_vs_time.png")]

    def claims(self, results: dict[str, Any], config: LRAListOpsConfig) -> list[Claim]:
        majority = results["majority"]["test_acc"]
        accs = {m["attention"]: _accuracy(m) for m in results["models"]}
        claims = []
        if results["reduced"]:
            for m in results["models"]:
                name, est = LRA_NAMES[m["attention"]], accs[m["attention"]]
                claims.append(Claim(
                    text=f"{name} learns ListOps: above the majority class (reduced "
                         "setting, see the table; LRA's number does not apply)",
                    paper=f"{LRA_ACCURACY[m['attention']]}% in LRA's setting",
                    ours=f"{_pct(est)} vs majority {100 * majority:.2f}% ({_options(m)})",
                    tolerance="the 95% binomial interval of test accuracy lies above the "
                              "majority-class rate",
                    verdict=interval_at_least(est, majority + 1e-12), kind="reproduction",
                    interval=est.to_dict(), settle="more steps or test examples"))
            return claims
        tol = config.lra_tolerance / 100
        for m in results["models"]:
            name, est = LRA_NAMES[m["attention"]], accs[m["attention"]]
            lra = LRA_ACCURACY[m["attention"]] / 100
            claims.append(Claim(
                text=f"{name} reaches its LRA ListOps test accuracy",
                paper=f"{100 * lra:.2f}% (LRA Table 1)",
                ours=f"{_pct(est)} ({_options(m)})",
                tolerance=f"95% binomial interval inside LRA's number +- "
                          f"{config.lra_tolerance:g} points",
                verdict=interval_within(est, lra - tol, lra + tol), kind="reproduction",
                interval=est.to_dict(), settle="more test examples or seeds"))
        if "performer" in accs:
            for other in ("softmax", "linformer"):
                if other not in accs:
                    continue
                gap = difference_interval(_correct(results, other), _correct(results,
                                                                             "performer"))
                claims.append(Claim(
                    text=f"{LRA_NAMES[other]} is well above Performer on ListOps",
                    paper=f"{LRA_ACCURACY[other] - LRA_ACCURACY['performer']:.2f} points "
                          f"(LRA Table 1: Performer near chance)",
                    ours=f"gap {100 * gap.value:.2f} points [{100 * gap.lo:.2f}, "
                         f"{100 * gap.hi:.2f}]",
                    tolerance=f"95% interval of the gap >= {config.order_margin:g} points",
                    verdict=interval_at_least(gap, config.order_margin / 100),
                    kind="reproduction", interval=gap.to_dict(),
                    settle="more test examples or seeds"))
        return claims


def _correct(results: dict[str, Any], attention: str) -> np.ndarray:
    """Per-example correctness (0/1) of one model on the test split, from its counts."""
    m = next(m for m in results["models"] if m["attention"] == attention)
    n, c = int(m["test_n"]), int(m["test_correct"])
    return np.concatenate([np.ones(c), np.zeros(n - c)])


def _accuracy(model: dict[str, Any]):
    n, c = int(model["test_n"]), int(model["test_correct"])
    return mean_interval(np.concatenate([np.ones(c), np.zeros(n - c)]))


def _pct(est) -> str:
    return f"{100 * est.value:.2f}% [{100 * est.lo:.2f}, {100 * est.hi:.2f}] (n={est.n})"


def _options(model: dict[str, Any]) -> str:
    opts = model.get("options") or {}
    return ", ".join(f"{k}={v}" for k, v in opts.items()) or "exact attention"


def _jsonable_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if isinstance(v, (int, float, str, type(None)))}


def _throughput(cost: dict[str, Any], unit: str) -> float | None:
    for key, value in cost.items():
        if key.startswith("throughput_inference") and key.endswith(f"{unit}_per_s"):
            return value
    return None


def _fmt(x: float | str | None) -> str:
    if x is None:
        return "n/a"
    return x if isinstance(x, str) else f"{x:.3g}"  # a string is a status: out-of-memory


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1000 * seconds:.2f}"


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f}"
