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

import torch
import torch.nn.functional as F

from efflab.data.listops import ListOpsConfig, load_listops
from efflab.experiments import Claim, Experiment, ExperimentConfig, RunContext, Table, register
from efflab.experiments.sweep import run_sweep
from efflab.measure import measure
from efflab.models import create_model
from efflab.train import TrainConfig, evaluate, train

#: LRA Table 1, ListOps test accuracy (%)
LRA_ACCURACY = {"softmax": 36.37, "linformer": 35.70, "performer": 18.01}
LRA_NAMES = {"softmax": "Transformer", "linformer": "Linformer", "performer": "Performer"}
_SWEEP = "lra-listops-v1"  # bump when what a point computes changes


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
    reduced: bool = False  # True: not LRA's setting, the verdict is against majority class

    @classmethod
    def quick(cls) -> LRAListOpsConfig:
        return cls(max_depth=3, min_length=10, max_length=50, num_train=4000, num_val=200,
                   num_test=500, embed_dim=32, depth=2, num_heads=4, mlp_dim=64, dropout=0.0,
                   linformer_k=16, performer_features=32, steps=200, batch_size=64, lr=2e-3,
                   warmup_steps=30, eval_every=0, amp=False, checkpoint_every=0,
                   measure_batch=32, measure_repeats=5, reduced=True)

    @classmethod
    def full(cls) -> LRAListOpsConfig:
        return cls()

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


def train_and_measure(point: dict[str, Any]) -> dict[str, Any]:
    """One attention: train, test, then the cost report. ``point``: config, attention, device,
    outdir (checkpoints). Module level so that the sweep can resume it."""
    cfg = LRAListOpsConfig(**{**point["config"], "attentions": tuple(point["config"]["attentions"])})
    attention, device = point["attention"], torch.device(point["device"])
    data = load_listops(cfg.data_config())
    model = build_model(cfg, attention)
    ckpt = None
    if cfg.checkpoint_every and point.get("outdir"):
        ckpt = str(Path(point["outdir"]) / "checkpoints" / attention)
    tc = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, optimizer="adamw", lr=cfg.lr,
                     warmup_steps=cfg.warmup_steps, schedule="cosine",
                     weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm,
                     eval_every=cfg.eval_every, amp=cfg.amp, seed=cfg.seed, device=str(device),
                     checkpoint_dir=ckpt, checkpoint_every=cfg.checkpoint_every if ckpt else 0,
                     eval_batch_size=256)
    start = time.perf_counter()
    result = train(model, (data.train.tokens, data.train.labels), tc,
                   eval_data=(data.val.tokens, data.val.labels))
    train_s = time.perf_counter() - start
    test = evaluate(model, (data.test.tokens.to(device), data.test.labels.to(device)),
                    batch_size=256)

    tokens = data.test.tokens[: cfg.measure_batch]
    labels = data.test.labels[: cfg.measure_batch].to(device)
    model.eval()
    report = measure(model, tokens, name=attention, device=device,
                     batch_sizes=[cfg.measure_batch], tokens_per_sample=int(tokens.shape[1]),
                     loss_fn=lambda logits: F.cross_entropy(logits, labels),
                     warmup=2, repeats=cfg.measure_repeats)
    steps_run = max(result.steps - result.resumed_from, 1)
    # train()'s eval data is our val split: its test_* entries are validation numbers
    history = [{"step": h["step"], "train_loss": h["train_loss"],
                **({"val_acc": h["test_acc"]} if "test_acc" in h else {})}
               for h in result.history]
    return {
        "attention": attention,
        "test_acc": test["acc"], "test_loss": test["loss"],
        "val_acc": result.final.get("test_acc"),
        "train_acc": result.final.get("train_acc"), "train_loss": result.final.get("train_loss"),
        "train_wall_s": train_s, "train_s_per_step": train_s / steps_run,
        "history": history[:: max(1, len(history) // 200)],
        "cost": report.flat(),
    }


@register
class LRAListOps(Experiment):
    name = "lra-listops"
    paper = "Long Range Arena (arXiv 2011.04006), ListOps; Linformer (2006.04768); Performer (2009.14794)"
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
        return {
            "setting": "reduced (quick profile, not LRA's)" if config.reduced
            else "LRA's ListOps setting",
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
                _mib(c.get("memory_inference_peak_bytes")), _mib(c.get("memory_train_step_peak_bytes")),
            ])
        machine = ""
        if results["models"]:
            c = results["models"][0]["cost"]
            machine = f"{c.get('device_name')} ({c.get('torch_threads')} threads)"
        return [Table(
            title="ListOps: test accuracy and cost per attention",
            columns=["model", "test acc % (ours)", "LRA acc %", "params (unique)",
                     "FLOPs fwd / sample", "FLOPs train step", "latency infer ms",
                     "latency train step ms", "train loop s/step (ms)", "samples/s", "tokens/s",
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
        for m in results["models"]:
            t = m["cost"].get("latency_train_step_median_s") or m["train_s_per_step"]
            ax.scatter(1000 * t, 100 * m["test_acc"], s=50)
            ax.annotate(LRA_NAMES[m["attention"]], (1000 * t, 100 * m["test_acc"]),
                        textcoords="offset points", xytext=(5, 5))
            if not config.reduced:
                ax.scatter(1000 * t, LRA_ACCURACY[m["attention"]], marker="x", color="gray")
            hist = [h for h in m["history"] if "train_loss" in h]
            ax2.plot([h["step"] for h in hist], [h["train_loss"] for h in hist],
                     label=LRA_NAMES[m["attention"]])
        ax.axhline(100 * results["majority"]["test_acc"], color="gray", ls="--",
                   label="majority class")
        ax.set_xlabel("time per training step (ms, median, efflab.measure)")
        ax.set_ylabel("test accuracy (%)")
        title = "reduced setting (quick)" if config.reduced else "LRA setting (x: LRA's number)"
        ax.set_title(f"ListOps: accuracy vs cost, {title}", fontsize=9)
        ax.legend(fontsize=8)
        ax2.set_xlabel("step")
        ax2.set_ylabel("training loss")
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
            if config.reduced:
                # two binomial standard errors of the majority rate on this test set
                margin = 100 * 2 * math.sqrt(majority * (1 - majority) / max(n_test, 1))
                claims.append(Claim(
                    text=f"{name} learns ListOps: beats the majority class (reduced setting: "
                         "short shallow expressions, small model, few steps; LRA's number "
                         f"{lra}% does not apply)",
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
