"""Long Range Arena ListOps (Tay et al. 2020, arXiv 2011.04006, section 3.1 and Table 1):
softmax, Linformer and Performer encoders trained with one budget, quality beside the whole
cost report.

Each attention trains the same encoder classifier (:mod:`efflab.models.transformer`) on the
same ListOps data (:mod:`efflab.data.listops`) with the same optimizer, steps and batch; then
:func:`efflab.measure.measure` takes every cost indicator of that model on a batch of test
sequences (parameters, FLOPs, latency, throughput, peak memory) on the machine at hand.

Profiles:

* ``full``: LRA's setting (lengths 500-2000, 96k/2k/2k examples; 4 layers, 8 heads, embedding
  512, MLP 1024, 5k steps), for a GPU. Verdict: each model reaches at least its LRA test
  accuracy (Transformer 36.37, Linformer 35.70, Performer 18.01).
* ``quick``: a reduced setting for a 2-core CPU (shallow trees, lengths 10-50, 4k training
  examples, a 2-layer width-32 encoder, 200 steps). Its numbers are not comparable with LRA's;
  the verdict is only that each model beats the majority-class baseline.

Optimizer settings (AdamW, warmup then cosine, clipping at 1) are ours, not LRA's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from efflab.data.listops import ListOpsConfig, load_listops
from efflab.experiments import Claim, Experiment, ExperimentConfig, RunContext, Table, register
from efflab.experiments.sweep import run_sweep
from efflab.measure import measure
from efflab.models import create_model
from efflab.progress import bar
from efflab.train import TrainConfig, evaluate, train

#: LRA Table 1, ListOps test accuracy (%)
LRA_ACCURACY = {"softmax": 36.37, "linformer": 35.70, "performer": 18.01}
LRA_NAMES = {"softmax": "Transformer", "linformer": "Linformer", "performer": "Performer"}
_SWEEP = "lra-listops-v1"  # bump when what a point computes changes
_LRA_FIELDS = ("max_depth", "max_args", "min_length", "max_length", "num_train", "num_val",
               "num_test", "embed_dim", "depth", "num_heads", "mlp_dim", "steps")


@dataclass
class LRAListOpsConfig(ExperimentConfig):
    """Data, model, training and measurement settings; defaults are the full (LRA) profile."""

    # data (efflab.data.listops; LRA's generator settings)
    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2000
    num_train: int = 96_000
    num_val: int = 2_000
    num_test: int = 2_000
    # model (LRA's base ListOps model)
    attentions: tuple[str, ...] = ("softmax", "linformer", "performer")
    embed_dim: int = 512
    depth: int = 4
    num_heads: int = 8
    mlp_dim: int = 1024
    dropout: float = 0.1
    linformer_k: int = 256
    performer_features: int = 256
    # training (same for every attention)
    steps: int = 5000
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 1000
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    eval_every: int = 500
    amp: bool = True
    checkpoint_every: int = 500
    # cost report
    measure_batch: int = 32
    measure_repeats: int = 10

    @classmethod
    def quick(cls) -> LRAListOpsConfig:
        return cls(max_depth=3, min_length=10, max_length=50, num_train=4000, num_val=200,
                   num_test=500, embed_dim=32, depth=2, num_heads=4, mlp_dim=64, dropout=0.0,
                   linformer_k=16, performer_features=32, steps=200, batch_size=64, lr=2e-3,
                   warmup_steps=30, eval_every=0, amp=False, checkpoint_every=0,
                   measure_batch=32, measure_repeats=5)

    @classmethod
    def full(cls) -> LRAListOpsConfig:
        return cls()

    def is_lra_setting(self) -> bool:
        """True when data, model size and steps are LRA's; otherwise the setting is reduced
        and the verdict compares with the majority class, not with LRA's numbers."""
        lra = LRAListOpsConfig()
        return all(getattr(self, k) == getattr(lra, k) for k in _LRA_FIELDS)

    def data_config(self) -> ListOpsConfig:
        return ListOpsConfig(max_depth=self.max_depth, max_args=self.max_args,
                             min_length=self.min_length, max_length=self.max_length,
                             num_train=self.num_train, num_val=self.num_val,
                             num_test=self.num_test, seed=self.seed)

    def attention_options(self, attention: str) -> dict[str, Any]:
        if attention == "linformer":
            return {"k": self.linformer_k}
        if attention == "performer":
            return {"num_features": self.performer_features}
        if attention == "softmax":
            return {}
        raise ValueError(f"attentions must be among {sorted(LRA_ACCURACY)}, got {attention!r}")


def build_model(cfg: LRAListOpsConfig, attention: str) -> torch.nn.Module:
    """The encoder classifier of one attention, seeded by the config's seed."""
    torch.manual_seed(cfg.seed)
    return create_model("transformer_classifier", max_seq_len=cfg.max_length,
                        embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                        mlp_dim=cfg.mlp_dim, dropout=cfg.dropout, attention=attention,
                        attention_options=cfg.attention_options(attention))


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
                     weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm, eval_every=0,
                     amp=cfg.amp, seed=cfg.seed, device=str(device), checkpoint_dir=ckpt,
                     checkpoint_every=cfg.checkpoint_every if ckpt else 0, eval_batch_size=256)
    val = (data.val.tokens.to(device), data.val.labels.to(device))
    val_history: list[dict[str, float]] = []
    stamps: list[float] = []  # after each optimizer step: the loop's own time per step
    with bar(cfg.steps, desc=f"listops {attention}") as pbar:

        def callback(step: int, net: torch.nn.Module) -> None:
            stamps.append(time.perf_counter())
            pbar.update(1)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                ev = evaluate(net, val, batch_size=256, amp=cfg.amp)
                val_history.append({"step": step, "val_loss": ev["loss"], "val_acc": ev["acc"]})
                pbar.set_postfix(val_loss=f"{ev['loss']:.3f}", val_acc=f"{ev['acc']:.3f}")

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
    return {
        "attention": attention,
        "test_acc": test["acc"], "test_loss": test["loss"],
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

    def run(self, config: LRAListOpsConfig, ctx: RunContext) -> dict[str, Any]:
        for a in config.attentions:
            config.attention_options(a)  # unknown names fail before any work
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
                  "2; 'train loop' is the wall time per step of the actual training run."),
        )]

    def figures(self, results: dict[str, Any], config: LRAListOpsConfig, outdir: Path
                ) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
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
        name = "lra_listops_accuracy_vs_time.png"
        fig.savefig(outdir / name, dpi=120)
        plt.close(fig)
        return [name]

    def claims(self, results: dict[str, Any], config: LRAListOpsConfig) -> list[Claim]:
        claims = []
        majority = results["majority"]["test_acc"]
        n_test = results["data"]["test"]
        for m in results["models"]:
            name, acc = LRA_NAMES[m["attention"]], 100 * m["test_acc"]
            lra = LRA_ACCURACY[m["attention"]]
            if results["reduced"]:
                # two binomial standard errors of the majority rate on this test set
                margin = 100 * 2 * math.sqrt(majority * (1 - majority) / max(n_test, 1))
                claims.append(Claim(
                    text=f"{name} learns ListOps: beats the majority class ({results['setting']}"
                         f"; LRA's {lra}% does not apply)",
                    paper=f"{lra}% (LRA setting)",
                    ours=f"{acc:.2f}% vs majority {100 * majority:.2f}% (n_test={n_test})",
                    tolerance=f"ours > majority + {margin:.2f} points (2 binomial std. errors)",
                    verdict="reproduced" if acc > 100 * majority + margin else "not reproduced",
                ))
            else:
                verdict = ("reproduced" if acc >= lra
                           else "partly" if acc >= lra - 2.0 else "not reproduced")
                claims.append(Claim(
                    text=f"{name} reaches at least its LRA ListOps test accuracy",
                    paper=f"{lra}%", ours=f"{acc:.2f}%",
                    tolerance="reproduced if ours >= paper; partly within 2 points below",
                    verdict=verdict,
                ))
        return claims


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
