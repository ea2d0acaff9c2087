"""Performer (arXiv 2009.14794), backwards compatibility: a trained softmax Transformer's
weights moved into a Performer, then fine-tuned.

The paper's claim (qualitative, its Sec. 4 figure on transferring a pretrained Transformer,
see docs/paper-numbers.md): right after the swap the Performer is worse than the Transformer
but far from untrained, and fine-tuning recovers the Transformer's quality in a small
fraction of the gradient steps the Transformer was trained for, faster than a Performer
trained from scratch.

Here, reduced: a 2-layer HF GPT-2 (built from a config, ``efflab.integrations.huggingface``)
trained as a byte-level causal LM on a fixed set of the Python standard library's own source
files (present on every machine with Python; the exact bytes depend on the Python version,
so their size and SHA-256 are recorded). Three runs per seed, all with the same data order:

1. softmax, ``pretrain_steps`` steps (the "original" model);
2. its weights with FAVOR+ attention (``num_features`` positive orthogonal features per
   layer), fine-tuned for up to ``finetune_steps`` steps;
3. the same Performer from a fresh initialization, up to ``scratch_steps`` steps.

"Recovered": eval loss <= the softmax model's final eval loss + ``tolerance`` nats per byte.
Recovery steps are counted at the eval points; a run that never recovers within its budget
is censored at budget + ``eval_every`` (a lower bound, which can only make the claim harder).
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from efflab.experiments import register
from efflab.experiments.base import Claim, Experiment, ExperimentConfig, RunContext, Table
from efflab.experiments.checks import each, in_range, nonempty, nonnegative, param, positive
from efflab.experiments.verdicts import (
    at_least,
    interval_at_least,
    interval_at_most,
    mean_interval,
)
from efflab.seeding import derive_seed
from efflab.train import learning_rate

#: the corpus: these standard-library modules, concatenated in this order (all exist in 3.11+)
STDLIB_FILES = ("textwrap.py", "heapq.py", "bisect.py", "fnmatch.py", "shlex.py",
                "colorsys.py", "glob.py", "queue.py", "sched.py", "string.py", "keyword.py",
                "numbers.py", "genericpath.py", "posixpath.py", "contextlib.py", "functools.py",
                "copy.py", "abc.py", "operator.py", "reprlib.py")
RUNS = ("softmax", "swapped", "scratch")


@dataclass
class Config(ExperimentConfig):
    files: tuple[str, ...] = param(STDLIB_FILES, "standard-library files of the corpus",
                                   check=nonempty)
    eval_fraction: float = param(0.1, "tail of the corpus held out for evaluation",
                                 check=in_range(0, 0.5, lo_open=True))
    seq_len: int = param(64, "bytes per training sequence", check=positive)
    batch: int = param(16, "sequences per step", check=positive)
    n_layer: int = param(2, "GPT-2 layers", check=positive)
    n_embd: int = param(64, "GPT-2 width", check=positive)
    n_head: int = param(4, "attention heads", check=positive)
    num_features: int = param(64, "FAVOR+ random features per head (m)", check=positive)
    lr: float = param(3e-3, "AdamW learning rate (all three runs)", check=positive)
    warmup_steps: int = param(10, "linear warmup of every run (a fresh optimizer's first "
                              "full-size steps would shake the transferred weights)",
                              check=nonnegative)
    pretrain_steps: int = param(200, "softmax training steps", check=positive)
    finetune_steps: int = param(80, "fine-tuning budget after the swap", check=positive)
    scratch_steps: int = param(200, "budget of the Performer trained from scratch",
                               check=positive)
    eval_every: int = param(10, "steps between evaluations", check=positive)
    eval_windows: int = param(128, "held-out windows of seq_len bytes per evaluation",
                              check=positive)
    tolerance: float = param(0.05, "recovered: eval loss <= softmax's final + this (nats/byte)",
                             check=positive)
    small_fraction: float = param(0.25, "'a small fraction' of the softmax steps",
                                  check=in_range(0, 1, lo_open=True))
    seeds: tuple[int, ...] = param((0, 1, 2), "independent repetitions (weights, features, "
                                   "data order)", check=nonempty & each(in_range(0, 2**31)))

    def validate(self) -> None:
        super().validate()
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be a multiple of n_head {self.n_head}, got "
                             f"{self.n_embd}")

    @classmethod
    def quick(cls) -> Config:  # reduced: ~2-3 CPU minutes on 2 idle cores
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(seq_len=128, batch=32, n_layer=4, n_embd=128, num_features=128,
                   pretrain_steps=3000, finetune_steps=1500, scratch_steps=3000,
                   eval_every=50, eval_windows=512, warmup_steps=100, seeds=(0, 1, 2, 3, 4))


# ------------------------------------------------------------------------- data

def load_corpus(files: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, Any]]:
    """The files' bytes from this interpreter's standard library, as one uint8 tensor."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks = []
    for name in files:
        path = root / name
        if not path.is_file():
            raise ValueError(f"files: {name!r} is not in the standard library at {root}")
        chunks.append(path.read_bytes())
    data = b"".join(chunks)
    info = {"stdlib": str(root), "python": sys.version.split()[0], "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long(), info


def batch_starts(n: int, seq_len: int, batch: int, steps: int, seed: int) -> torch.Tensor:
    """(steps, batch) random window starts: the same data order for every run of a seed."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    return torch.randint(0, n - seq_len, (steps, batch), generator=gen)


def windows(data: torch.Tensor, starts: torch.Tensor, seq_len: int) -> torch.Tensor:
    return data[starts[:, None] + torch.arange(seq_len)]


# ------------------------------------------------------------------------- training

def evaluate_lm(model, eval_x: torch.Tensor) -> tuple[float, float]:
    """(mean next-byte cross-entropy in nats, next-byte accuracy) on the held-out windows."""
    model.eval()
    with torch.no_grad():
        logits = model(eval_x).logits[:, :-1]
        target = eval_x[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 target.reshape(-1))
        acc = (logits.argmax(-1) == target).double().mean()
    model.train()
    return float(loss), float(acc)


def train_lm(model, train: torch.Tensor, starts: torch.Tensor, eval_x: torch.Tensor,
             config: Config, steps: int) -> dict[str, list[float]]:
    """AdamW (linear warmup, then constant) on the windows ``starts[:steps]``; eval at step 0
    and every ``eval_every``."""
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    curve: dict[str, list[float]] = {"step": [], "loss": [], "accuracy": []}
    t0 = time.perf_counter()
    model.train()
    for step in range(steps + 1):
        if step % config.eval_every == 0 or step == steps:
            loss, acc = evaluate_lm(model, eval_x)
            curve["step"].append(step)
            curve["loss"].append(loss)
            curve["accuracy"].append(acc)
        if step == steps:
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, config.lr, config.warmup_steps)
        x = windows(train, starts[step], config.seq_len)
        out = model(x, labels=x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    curve["seconds"] = [time.perf_counter() - t0]
    return curve


def recovery_step(curve: dict[str, list[float]], threshold: float, budget: int,
                  eval_every: int) -> tuple[int, bool]:
    """(first eval step with loss <= threshold, True) or (budget + eval_every, False)."""
    for step, loss in zip(curve["step"], curve["loss"]):
        if loss <= threshold:
            return int(step), True
    return budget + eval_every, False


def run_seed(config: Config, seed: int, train: torch.Tensor, eval_x: torch.Tensor
             ) -> dict[str, Any]:
    from efflab.integrations.huggingface import build_model, use_efflab_attention

    arch = dict(n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head,
                n_positions=config.seq_len, vocab_size=256, attn_pdrop=0.0, resid_pdrop=0.0,
                embd_pdrop=0.0)
    steps = max(config.pretrain_steps, config.finetune_steps, config.scratch_steps)
    starts = batch_starts(train.numel(), config.seq_len, config.batch, steps, seed)
    features = dict(num_features=config.num_features, seed=derive_seed(seed, "features"))

    softmax = build_model("gpt2", "softmax", seed=derive_seed(seed, "init"), **arch)
    fresh_loss, fresh_acc = evaluate_lm(softmax, eval_x)
    curves = {"softmax": train_lm(softmax, train, starts, eval_x, config,
                                  config.pretrain_steps)}
    before = {k: v.clone() for k, v in softmax.state_dict().items()}
    swapped = use_efflab_attention(softmax, "performer", **features)
    after = swapped.state_dict()
    added = sorted(k for k in after if k not in before)
    kept = all(torch.equal(after[k], v) for k, v in before.items()) and bool(added) and all(
        ".efflab_attention." in k for k in added)
    curves["swapped"] = train_lm(swapped, train, starts, eval_x, config, config.finetune_steps)
    # the same initialization, data order and features as the swapped model, never softmax
    scratch = use_efflab_attention(
        build_model("gpt2", "softmax", seed=derive_seed(seed, "init"), **arch),
        "performer", **features)
    curves["scratch"] = train_lm(scratch, train, starts, eval_x, config, config.scratch_steps)
    final = curves["softmax"]["loss"][-1]
    threshold = final + config.tolerance
    recovery = {}
    for name, budget in (("swapped", config.finetune_steps), ("scratch", config.scratch_steps)):
        step, ok = recovery_step(curves[name], threshold, budget, config.eval_every)
        recovery[name] = {"steps": step, "recovered": ok}
    return {"seed": seed, "curves": curves, "fresh_loss": fresh_loss, "fresh_accuracy": fresh_acc,
            "softmax_final_loss": final, "threshold": threshold, "recovery": recovery,
            "weights_kept": kept, "added_state": added}


@register
class PerformerBackwardCompatibility(Experiment):
    name = "performer-backward-compatibility"
    paper = "Performer (arXiv 2009.14794), backwards compatibility (Sec. 4)"
    checks = ("a trained softmax GPT-2 swapped to FAVOR+ recovers within a small fraction of "
              "its training steps, faster than a Performer from scratch")
    Config = Config
    budget_s = {"quick": 180.0, "full": 7200.0}
    #: no sweep: one process (its seconds column is each training run's wall time, shown,
    #: not a timing claim)
    cores = "one"
    #: seconds-long overrides for the end-to-end test of every experiment
    smoke = {"files": ("keyword.py", "bisect.py", "heapq.py"), "seq_len": 16, "batch": 2,
             "n_layer": 1, "n_embd": 16, "n_head": 2, "num_features": 8, "pretrain_steps": 4,
             "finetune_steps": 2, "scratch_steps": 4, "eval_every": 2, "eval_windows": 4,
             "seeds": (0, 1)}

    def run(self, config: Config, ctx: RunContext) -> dict[str, Any]:
        try:
            import transformers  # noqa: F401
        except ImportError as e:  # the optional extra
            raise RuntimeError("performer-backward-compatibility needs transformers: "
                               "pip install 'efflab[hf]'") from e
        data, corpus = load_corpus(config.files)
        split = int(data.numel() * (1 - config.eval_fraction))
        train, held_out = data[:split], data[split:]
        count = min(config.eval_windows, held_out.numel() // config.seq_len)
        if count == 0:
            raise ValueError(f"the held-out tail ({held_out.numel()} bytes) is shorter than "
                             f"seq_len {config.seq_len}")
        eval_x = held_out[:count * config.seq_len].reshape(count, config.seq_len)
        loadavg = Path("/proc/loadavg")
        load = loadavg.read_text().split()[:3] if loadavg.exists() else None
        per_seed = [run_seed(config, seed, train, eval_x)
                    for seed in ctx.progress(config.seeds, desc="seeds")]
        return {"corpus": {**corpus, "train_bytes": int(train.numel()),
                           "eval_bytes": int(count * config.seq_len)},
                "loadavg_at_start": load, "torch": torch.__version__, "seeds": per_seed}

    # ----------------------------------------------------------------- claims

    def claims(self, results: dict[str, Any], config: Config) -> list[Claim]:
        seeds = results["seeds"]
        frac = [s["recovery"]["swapped"]["steps"] / config.pretrain_steps for s in seeds]
        faster = [s["recovery"]["scratch"]["steps"] - s["recovery"]["swapped"]["steps"]
                  for s in seeds]
        kept_over_fresh = [s["fresh_loss"] - s["curves"]["swapped"]["loss"][0] for s in seeds]
        drop = [s["curves"]["swapped"]["loss"][0] - s["softmax_final_loss"] for s in seeds]
        kept = sum(bool(s["weights_kept"]) for s in seeds)
        censored = sum(not s["recovery"]["swapped"]["recovered"] for s in seeds)
        scratch_censored = sum(not s["recovery"]["scratch"]["recovered"] for s in seeds)
        f_est, d_est = mean_interval(frac), mean_interval(faster)
        k_est, drop_est = mean_interval(kept_over_fresh), mean_interval(drop)
        tol = f"eval loss <= softmax's final + {config.tolerance:g} nats/byte"
        return [
            Claim("the swapped model recovers the softmax model's eval loss within a small "
                  "fraction of the softmax model's training steps",
                  paper="'a small fraction of the original number of gradient steps' "
                        "(qualitative)",
                  ours=f"{f_est.fmt('.3f')} of {config.pretrain_steps} steps"
                       + (f"; {censored} seed(s) not recovered within the budget "
                          f"(counted as {config.finetune_steps + config.eval_every})"
                          if censored else ""),
                  tolerance=f"recovered: {tol}; fraction <= {config.small_fraction:g}",
                  verdict=interval_at_most(f_est, config.small_fraction),
                  interval=f_est.to_dict()),
            Claim("it recovers faster than a Performer trained from scratch",
                  paper="faster than training the Performer from scratch (qualitative)",
                  ours=f"scratch - swapped = {d_est.fmt('.0f')} steps"
                       + (f"; scratch not recovered in {scratch_censored} seed(s) (a lower "
                          "bound)" if scratch_censored else ""),
                  tolerance=f"steps to recover ({tol}), difference > 0",
                  verdict=interval_at_least(d_est, 0.0), interval=d_est.to_dict()),
            Claim("right after the swap the model keeps much of what it learned: eval loss "
                  "below a freshly initialized model's",
                  paper="non-zero accuracy right after the transfer (unverified: 0.07)",
                  ours=f"fresh - swapped = {k_est.fmt('.3f')} nats/byte",
                  tolerance="difference > 0", verdict=interval_at_least(k_est, 0.0),
                  interval=k_est.to_dict()),
            Claim("loss increase right after the swap (the drop)", paper="-",
                  ours=f"{drop_est.fmt('.3f')} nats/byte above the softmax model",
                  tolerance="increase > 0 (shown; does not decide the verdict)",
                  verdict=interval_at_least(drop_est, 0.0),
                  kind="measurement", interval=drop_est.to_dict()),
            Claim("the swap changes no trained weight and adds only the features",
                  paper="-", ours=f"{kept}/{len(seeds)} seeds bit-identical",
                  tolerance="all seeds", kind="property",
                  verdict=at_least(kept, len(seeds))),
        ]

    def tables(self, results: dict[str, Any], config: Config) -> list[Table]:
        rows = []
        for s in results["seeds"]:
            c = s["curves"]
            rows.append([s["seed"], f"{s['fresh_loss']:.3f}", f"{s['softmax_final_loss']:.3f}",
                         f"{c['swapped']['loss'][0]:.3f} / {c['swapped']['accuracy'][0]:.3f}",
                         _steps(s["recovery"]["swapped"], config.finetune_steps),
                         _steps(s["recovery"]["scratch"], config.scratch_steps),
                         " / ".join(f"{c[r]['seconds'][0]:.0f}" for r in RUNS)])
        corpus = results["corpus"]
        return [Table("Per seed: eval loss (nats/byte) and steps to recover",
                      ["seed", "fresh", "softmax final", "right after swap (loss / acc)",
                       "swapped: steps", "scratch: steps", "seconds softmax/swapped/scratch"],
                      rows,
                      note=(f"corpus: {len(config.files)} stdlib files of Python "
                            f"{corpus['python']}, {corpus['bytes']} bytes, sha256 "
                            f"{corpus['sha256'][:12]}; load average at start "
                            f"{results.get('loadavg_at_start')}"))]

    def figures(self, results: dict[str, Any], config: Config, outdir: Path) -> list[str]:
        import matplotlib.pyplot as plt

        from efflab.experiments.plotting import save_figure

        fig, ax = plt.subplots(figsize=(7, 4.5))
        colors = {"softmax": "C0", "swapped": "C1", "scratch": "C2"}
        labels = {"softmax": "softmax (trained from scratch)",
                  "swapped": "softmax weights -> FAVOR+, fine-tuned",
                  "scratch": "FAVOR+ from scratch"}
        for run in RUNS:
            offset = config.pretrain_steps if run == "swapped" else 0
            curves = [s["curves"][run] for s in results["seeds"]]
            steps = np.asarray(curves[0]["step"]) + offset
            losses = np.asarray([c["loss"] for c in curves])
            for row in losses:
                ax.plot(steps, row, color=colors[run], alpha=0.25, lw=0.8)
            ax.plot(steps, losses.mean(0), color=colors[run], lw=2, label=labels[run])
        thr = float(np.mean([s["threshold"] for s in results["seeds"]]))
        ax.axhline(thr, color="0.4", ls="--", lw=1,
                   label=f"softmax final + {config.tolerance:g} (mean of seeds)")
        ax.axvline(config.pretrain_steps, color="0.7", ls=":", lw=1)
        ax.set_ylim(top=thr + 1.0)  # the first steps (loss ~ log 256) would flatten the rest
        ax.set_xlabel("training steps (the swapped model continues at the swap)")
        ax.set_ylabel("eval loss (nats / byte)")
        ax.set_title(f"Performer backwards compatibility, {len(results['seeds'])} seeds "
                     "(thin: each seed)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        return [save_figure(fig, outdir, "performer_backward_compatibility.png")]


def _steps(rec: dict[str, Any], budget: int) -> str:
    return str(rec["steps"]) if rec["recovered"] else f"> {budget} (budget)"

