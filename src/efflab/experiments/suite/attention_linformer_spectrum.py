"""Linformer, Fig. 1 (arXiv 2006.04768, Sec. 3): self-attention is low rank.

The paper takes the softmax attention matrices P (n x n) of a trained RoBERTa, computes their
singular values and plots the cumulative normalized singular value sum_{i<=j} s_i / sum_i s_i
against j: a long tail, most of the mass in the first quarter (index 128 of n = 512), and
higher layers more skewed than lower ones.

Here: a softmax Transformer encoder (efflab's ``transformer_classifier``, at least 4 layers)
trained on ListOps (:mod:`efflab.data.listops`, LRA's generator, sequences of several hundred
tokens), a task whose attention must follow the nesting of the expression rather than one
token. For test examples, every layer's and head's P restricted to the example's own tokens
(padding cut off) gives the cumulative normalized singular value at index n / 4 (n the
example's length; 128 of 512 as in the paper) and the k that keeps 90% of the spectrum (what
a Linformer of that k would keep), for the trained model and for the same model at
initialization.

Claims: (1) training makes attention lower rank: the mean paired difference trained - init of
the value at n / 4 over (layer, head, example), with its t interval, is at least ``min_effect``;
(2) higher layers are more skewed (the paper's reading): last layer - first layer of the trained
model, with its interval; either direction is reported, the verdict says which one the
interval supports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from efflab.attention import SoftmaxAttention, softmax_attention_weights
from efflab.data.listops import NUM_CLASSES, VOCAB_SIZE, ListOpsConfig, load_listops
from efflab.experiments import register
from efflab.experiments.base import Claim, Experiment, ExperimentConfig, RunContext, Table
from efflab.experiments.checks import at_least, in_range, param, positive
from efflab.experiments.plotting import save_figure
from efflab.experiments.suite.lra_listops import lra_embedding_init_
from efflab.experiments.verdicts import interval_at_least, mean_interval
from efflab.models import create_model
from efflab.seeding import derive_seed


@dataclass
class Config(ExperimentConfig):
    # data: LRA's ListOps generator in a shorter window (same as lra-listops' quick profile)
    min_length: int = param(300, "ListOps tokens > this (exclusive)", check=at_least(0))
    max_length: int = param(600, "ListOps tokens < this (exclusive)", check=positive)
    num_train: int = param(2000, "training examples", check=positive)
    num_test: int = param(1000, "test examples (the spectra use eval_examples of them)",
                          check=positive)
    # model
    depth: int = param(4, "encoder layers (>= 4: the claim is about depth)", check=at_least(4))
    embed_dim: int = param(32, "embedding width", check=positive)
    num_heads: int = param(2, "attention heads", check=positive)
    mlp_dim: int = param(64, "MLP width", check=positive)
    # training
    steps: int = param(60, "Adam steps", check=positive)
    batch_size: int = param(16, "batch size", check=positive)
    lr: float = param(3e-3, "Adam learning rate", check=positive)
    # spectra and claims
    accuracy_examples: int = param(200, "test examples the accuracy is taken on",
                                   check=positive)
    eval_examples: int = param(8, "test examples whose spectra are taken", check=at_least(2))
    index_fraction: float = param(0.02, "claims read the spectrum at index j = fraction * n "
                                  "(the paper's 1 / 4 is reported too; with ListOps' 16 token "
                                  "types it is 1.000 at initialization by construction)",
                                  check=in_range(0, 1, lo_open=True))
    mass: float = param(0.9, "spectrum mass whose k is reported (a Linformer k that keeps it)",
                        check=in_range(0, 1, lo_open=True))
    min_effect: float = param(0.01, "claim 1: trained - init at the index must be >= this",
                              check=positive)

    ordered_fields = (("min_length", "max_length"),)

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(min_length=500, max_length=2000, num_train=20000, depth=6, embed_dim=128,
                   num_heads=4, mlp_dim=256, steps=3000, batch_size=32, lr=1e-3,
                   eval_examples=32)

    def data_config(self) -> ListOpsConfig:
        # the validation split is unused here but kept so that lra-listops' quick data
        # (same settings) comes from the same cache file
        return ListOpsConfig(min_length=self.min_length, max_length=self.max_length,
                             num_train=self.num_train, num_val=200, num_test=self.num_test,
                             seed=self.seed)


def attention_matrices(model: torch.nn.Module, tokens: torch.Tensor,
                       key_padding_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """P of every softmax attention layer, in order: each (batch, heads, n, n), float64."""
    mats: list[torch.Tensor] = []

    def hook(module, args, kwargs, _output):
        q, k = args[0], args[1]
        mask = kwargs.get("key_padding_mask", args[3] if len(args) > 3 else None)
        mats.append(softmax_attention_weights(q.double(), k.double(), mask, module.causal,
                                              module.scale))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()
               if isinstance(m, SoftmaxAttention)]
    try:
        with torch.no_grad():
            model(tokens, key_padding_mask=key_padding_mask)
    finally:
        for h in handles:
            h.remove()
    return mats


def cumulative_spectrum(p: torch.Tensor) -> torch.Tensor:
    """Cumulative normalized singular values of each matrix in p (..., n, n): (..., n)."""
    s = torch.linalg.svdvals(p)
    return s.cumsum(-1) / s.sum(-1, keepdim=True)


def spectrum_summary(model, tokens, lengths, index_fraction: float, mass: float
                     ) -> dict[str, Any]:
    """Per layer, head and example, on each example's own n x n block: the cumulative
    normalized singular value at index ``ceil(index_fraction * n)`` (``at_index``) and at the
    paper's n / 4 (``at_quarter``), and the smallest k reaching ``mass`` (``k_mass``); plus
    each layer's mean curve over a common grid of fractions of n (for the figure).
    """
    mats = attention_matrices(model, tokens, tokens == 0)
    grid = np.linspace(0, 1, 201)[1:]
    out: dict[str, Any] = {"at_index": [], "at_quarter": [], "k_mass": [], "curves": [],
                           "grid": grid.tolist()}
    for p in mats:
        layer: dict[str, list] = {"at_index": [], "at_quarter": [], "k_mass": [], "curves": []}
        for b, n in enumerate(lengths.tolist()):
            c = cumulative_spectrum(p[b, :, :n, :n])  # (heads, n)
            for key, frac in (("at_index", index_fraction), ("at_quarter", 0.25)):
                layer[key].append(c[:, max(1, math.ceil(frac * n)) - 1].tolist())
            layer["k_mass"].append(((c < mass).sum(-1) + 1).tolist())
            pos = np.clip(np.ceil(grid * n).astype(int) - 1, 0, n - 1)
            layer["curves"].append(c[:, pos].mean(0).numpy())
        for key in ("at_index", "at_quarter", "k_mass"):
            out[key].append(layer[key])  # (examples, heads) per layer
        out["curves"].append(np.mean(layer["curves"], axis=0).tolist())
    return out


@register
class LinformerSpectrum(Experiment):
    name = "linformer-spectrum"
    paper = "Linformer (arXiv 2006.04768), Fig. 1"
    checks = ("softmax attention of a Transformer trained on ListOps is lower rank than at "
              "initialization; how the skew changes with depth")
    Config = Config
    # measured 2026-12-01 on the shared 2-core VM (see docs/attention.md)
    budget_s = {"quick": 70.0, "full": 3 * 3600.0}
    cores = "one"  # no sweep: one process
    #: seconds-long overrides for the end-to-end test of every experiment
    smoke = {"min_length": 20, "max_length": 60, "num_train": 60, "num_test": 30, "embed_dim": 8,
             "num_heads": 2, "mlp_dim": 16, "steps": 2, "batch_size": 4, "eval_examples": 3,
             "accuracy_examples": 20}

    def run(self, config: Config, ctx: RunContext) -> dict[str, Any]:
        data = load_listops(config.data_config())
        torch.manual_seed(derive_seed(config.seed, "model"))
        model = lra_embedding_init_(create_model(
            "transformer_classifier", vocab_size=VOCAB_SIZE, num_classes=NUM_CLASSES,
            max_seq_len=config.max_length, embed_dim=config.embed_dim, depth=config.depth,
            num_heads=config.num_heads, mlp_dim=config.mlp_dim, attention="softmax",
            pooling="first"))
        pick = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(
            derive_seed(config.seed, "eval")))[: config.eval_examples]
        lengths = data.test.lengths[pick]
        eval_tokens = data.test.tokens[pick][:, : int(lengths.max())]
        model.eval()
        at_init = spectrum_summary(model, eval_tokens, lengths, config.index_fraction,
                                   config.mass)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        gen = torch.Generator().manual_seed(derive_seed(config.seed, "batches"))
        losses = []
        for _ in ctx.progress(range(config.steps), desc="train"):
            idx = torch.randint(0, len(data.train), (config.batch_size,), generator=gen)
            n = int(data.train.lengths[idx].max())
            loss = F.cross_entropy(model(data.train.tokens[idx, :n]), data.train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        correct = 0
        n_acc = min(config.accuracy_examples, len(data.test))
        with torch.no_grad():
            for start in range(0, n_acc, 100):
                stop = min(start + 100, n_acc)
                tok = data.test.tokens[start:stop, : int(data.test.lengths[start:stop].max())]
                correct += int((model(tok).argmax(-1) == data.test.labels[start:stop]).sum())
        trained = spectrum_summary(model, eval_tokens, lengths, config.index_fraction,
                                   config.mass)
        tail = losses[-10:]
        return {
            "index_fraction": config.index_fraction, "mass": config.mass,
            "eval_lengths": lengths.tolist(),
            "train_loss_first": losses[0], "train_loss_last": sum(tail) / len(tail),
            "test_accuracy": correct / n_acc,
            "majority_accuracy": data.majority_class()[1],
            "trained": trained, "init": at_init,
            "linformer_k": "n/a (softmax model; k_mass is the k a Linformer would need)",
        }

    def figures(self, results: dict[str, Any], config: Config, outdir: Path) -> list[str]:
        import matplotlib.pyplot as plt

        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        grid = results["trained"]["grid"]
        for i, (tr, ini) in enumerate(zip(results["trained"]["curves"],
                                          results["init"]["curves"])):
            ax.plot(grid, tr, color=f"C{i}", label=f"layer {i + 1}, trained")
            ax.plot(grid, ini, color=f"C{i}", ls=":", label=f"layer {i + 1}, init")
        ax.axvline(config.index_fraction, color="k", lw=0.8, ls="--")
        ax.axvline(0.25, color="0.5", lw=0.8, ls="--")  # the paper's index, n / 4
        ax.set_xscale("log")
        ax.set_xlabel("singular value index / n (dashed: the claims' index and n / 4)")
        ax.set_ylabel("cumulative normalized singular value")
        ax.set_title(f"softmax attention on ListOps (n = {min(results['eval_lengths'])}-"
                     f"{max(results['eval_lengths'])}, accuracy "
                     f"{results['test_accuracy']:.2f})", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        layers = np.arange(1, len(results["trained"]["at_index"]) + 1)
        for key, style in (("trained", "o-"), ("init", "s:")):
            ests = [mean_interval(np.ravel(v)) for v in results[key]["at_index"]]
            ax2.errorbar(layers, [e.value for e in ests],
                         yerr=[[e.value - e.lo for e in ests], [e.hi - e.value for e in ests]],
                         fmt=style, capsize=3, label=key)
        ax2.set_xlabel("layer")
        ax2.set_ylabel(f"value at index {config.index_fraction:g} n (mean, 95% interval)")
        ax2.set_xticks(layers)
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        return [save_figure(fig, outdir, "linformer_spectrum.png")]

    def tables(self, results: dict[str, Any], config: Config) -> list[Table]:
        rows = []
        for i in range(len(results["trained"]["at_index"])):
            tr = mean_interval(np.ravel(results["trained"]["at_index"][i]))
            ini = mean_interval(np.ravel(results["init"]["at_index"][i]))
            rows.append([i + 1, tr.fmt(".3f"), ini.fmt(".3f"),
                         f"{np.median(results['trained']['k_mass'][i]):.0f}",
                         f"{np.median(results['init']['k_mass'][i]):.0f}"])
        return [Table(
            f"cumulative normalized singular value at index {config.index_fraction:g} n, "
            f"and the k keeping {config.mass:.0%} of the spectrum",
            ["layer", "trained", "at initialization", f"k ({config.mass:.0%}), trained",
             f"k ({config.mass:.0%}), init"], rows,
            note=f"{len(results['eval_lengths'])} test examples of "
                 f"{min(results['eval_lengths'])}-{max(results['eval_lengths'])} tokens x "
                 f"{config.num_heads} heads; test accuracy {results['test_accuracy']:.3f} "
                 f"(majority class {results['majority_accuracy']:.3f})")]

    def claims(self, results: dict[str, Any], config: Config) -> list[Claim]:
        tr = np.asarray(results["trained"]["at_index"], dtype=float)  # (layers, ex, heads)
        ini = np.asarray(results["init"]["at_index"], dtype=float)
        effect = mean_interval((tr - ini).ravel())
        j = f"index {config.index_fraction:g} n"
        claims = [Claim(
            "training makes softmax attention lower rank (more of the spectrum in its first "
            "singular values) than at initialization",
            paper="Fig. 1: trained attention has a long-tailed spectrum (no number given)",
            ours=f"trained - init at {j}: {effect.fmt('.3f')} (mean over layers, heads, "
                 f"examples; trained {tr.mean():.3f}, init {ini.mean():.3f}; test accuracy "
                 f"{results['test_accuracy']:.3f} vs majority "
                 f"{results['majority_accuracy']:.3f})",
            tolerance=f"95% t interval of the paired difference >= {config.min_effect:g}",
            verdict=interval_at_least(effect, config.min_effect), kind="reproduction",
            interval=effect.to_dict(), settle="more steps or eval_examples, or the full profile")]
        skew = mean_interval((tr[-1] - tr[0]).ravel())
        direction = ("higher layers more skewed" if skew.lo > 0 else
                     "higher layers less skewed" if skew.hi < 0 else "no clear trend")
        claims.append(Claim(
            "higher layers are more skewed (more low rank) than lower ones",
            paper="Fig. 1 (right): the value at index 128 grows with depth",
            ours=f"last - first layer at {j}: {skew.fmt('.3f')} ({direction}); per layer "
                 + ", ".join(f"{v:.3f}" for v in tr.mean(axis=(1, 2))),
            tolerance="95% t interval of last - first layer (paired by head and example) > 0",
            verdict=interval_at_least(skew, 1e-12), kind="reproduction",
            interval=skew.to_dict(), settle="more eval_examples, or the full profile"))
        return claims
