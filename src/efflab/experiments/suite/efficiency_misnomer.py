"""The Efficiency Misnomer's disagreements, reproduced on a zoo of small transformers.

"The Efficiency Misnomer" (Dehghani et al., arXiv 2110.12894), Sec. 3 (the cases where cost
indicators disagree) and Sec. 4 (rank correlations between indicators). A zoo of transformer
classifiers and language models varies one thing at a time:

* depth vs width at roughly equal FLOPs (L8/d, L4/1.5d, L2/2d, L1/3d, MLP = 4x width),
* parameter sharing across layers (Universal Transformer / ALBERT: one block applied L times),
* a sparse top-1 mixture-of-experts feed-forward with E experts vs the dense one,
* attention kind (softmax / Linformer / Performer) at two sequence lengths,
* causal language models with and without tied input/output embeddings.

Every model gets a full :func:`efflab.measure.measure` cost report. Latencies used for the
comparisons come from a second pass in which the models take turns (``rounds`` rounds,
order rotated), each figure being the median over rounds of per-round medians, so that a
slow spell of a shared machine does not land on one model only. Time figures belong to the
machine they were taken on, which the results record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import FuncFormatter, NullFormatter

from efflab.experiments import register
from efflab.experiments.base import (
    Claim,
    ConfigError,
    Experiment,
    ExperimentConfig,
    RunContext,
    Table,
)
from efflab.experiments.checks import Check, at_least, each, nonempty, nonnegative, param, positive
from efflab.experiments.plotting import save_figure
from efflab.experiments.verdicts import (
    INCONCLUSIVE,
    LEVEL,
    NOT_REPRODUCED,
    REPRODUCED,
    at_most,
    interval_at_least,
    interval_within,
    ratio_interval,
    within,
)
from efflab.experiments.verdicts import at_least as at_least_point
from efflab.measure import (
    LoadSampler,
    interleaved_latency,
    kendall_matrix,
    machine_info,
    make_inference_step,
    make_train_step,
    measure,
    ranking_flips,
    synchronizer,
)
from efflab.measure.load import load_reasons
from efflab.measure.machine import usable_cores
from efflab.measure.spec import build_from_spec
from efflab.models import create_model
from efflab.seeding import derive_seed

FAMILIES = ("depth-width", "sharing", "moe", "attention", "lm", "hf")

#: indicators compared across the zoo, all oriented so that larger = costlier
INDICATORS = {
    "params": "unique parameters",
    "flops_fwd": "forward FLOPs / sample",
    "flops_train": "training-step FLOPs / sample",
    "latency_inf": "inference latency (s, batch B)",
    "latency_train": "training-step latency (s, batch B)",
    "time_per_sample": "inference s / sample at the largest batch (1 / throughput)",
    "memory_train": "training-step peak memory (bytes)",
}

_count = positive & Check(lambda v: isinstance(v, int), "an integer")


@dataclass
class EfficiencyMisnomerConfig(ExperimentConfig):
    embed_dim: int = param(64, "d: width of the base models; depth-width uses d..3d "
                               "(a multiple of 2 * num_heads)", check=_count)
    num_heads: int = param(4, "attention heads of every model", check=_count)
    seq_len: int = param(128, "tokens per sample for every model but the long ones",
                         check=_count)
    hf_models: bool = param(True, "add tiny Hugging Face GPT-2, BERT and Llama models (built "
                            "from configs) when transformers is installed")
    long_seq_len: int = param(512, "the attention family's second sequence length",
                              check=_count)
    vocab_size: int = param(16, "classifiers' vocabulary (ListOps-sized)", check=at_least(2))
    lm_vocab_size: int = param(256, "language models' vocabulary (bytes)", check=at_least(2))
    batch_size: int = param(4, "batch B of FLOPs, latency and memory", check=_count)
    batch_sizes: tuple[int, ...] = param((1, 4, 16), "throughput sweep",
                                         check=nonempty & each(positive))
    share_depth: int = param(6, "L of the sharing pair", check=at_least(2))
    moe_experts: tuple[int, ...] = param((4, 8), "expert counts of the MoE models",
                                         check=nonempty & each(at_least(2)))
    linformer_k: int = param(32, "Linformer projection length", check=_count)
    performer_features: int = param(64, "Performer random features", check=_count)
    warmup: int = param(1, "untimed calls before each timing", check=nonnegative)
    repeats: int = param(4, "timed inference calls per model and round (interleaved)",
                         check=_count)
    train_repeats: int = param(1, "timed training steps per model and round (interleaved)",
                               check=_count)
    report_repeats: int = param(2, "timed calls of each cost report's own latency/throughput",
                                check=_count)
    rounds: int = param(5, "interleaved latency rounds across the zoo (the paired samples of "
                           "every timing interval; 1 makes every timing claim inconclusive)",
                        check=_count)
    threads: int = param(1, "torch CPU threads during the run (0 = leave as is)",
                         check=nonnegative)
    memory: bool = param(True, "peak-memory probes (fresh processes on CPU)")
    margin: float = param(0.2, "a ranking flip needs both ratios beyond 1 + margin",
                          check=positive)

    @classmethod
    def quick(cls) -> EfficiencyMisnomerConfig:
        return cls()

    @classmethod
    def full(cls) -> EfficiencyMisnomerConfig:
        return cls(embed_dim=128, seq_len=256, long_seq_len=1024, batch_size=16,
                   batch_sizes=(1, 16, 64), repeats=20, train_repeats=5, report_repeats=10,
                   rounds=5, warmup=3, threads=0)

    def validate(self) -> None:
        super().validate()
        if self.embed_dim % (2 * self.num_heads):  # widths d, 1.5d, 2d, 3d split into heads
            raise ConfigError(f"embed_dim must be a multiple of 2 * num_heads = "
                              f"{2 * self.num_heads}, got {self.embed_dim}")


@dataclass
class ZooEntry:
    """One model of the zoo: the registry name, its options and the input it gets."""

    name: str
    family: str
    model: str
    options: dict[str, Any]
    seq_len: int
    vocab: int


def zoo(cfg: EfficiencyMisnomerConfig) -> list[ZooEntry]:
    """The models, one variation at a time around a base of width d, MLP 4d."""
    d, n = cfg.embed_dim, cfg.seq_len
    common = dict(num_heads=cfg.num_heads, pad_id=None, dropout=0.0)

    def clf(name, family, depth, width=d, seq=n, **extra) -> ZooEntry:
        opts = dict(common, vocab_size=cfg.vocab_size, num_classes=10, max_seq_len=seq,
                    embed_dim=width, depth=depth, mlp_dim=4 * width, **extra)
        return ZooEntry(name, family, "transformer_classifier", opts, seq, cfg.vocab_size)

    entries = [clf(f"L{depth}-d{w}", "depth-width", depth, w)
               for depth, w in ((8, d), (4, d * 3 // 2), (2, 2 * d), (1, 3 * d))]
    entries += [clf(f"L{cfg.share_depth}-d{d}", "sharing", cfg.share_depth),
                clf(f"L{cfg.share_depth}-d{d}-shared", "sharing", cfg.share_depth,
                    share_layers=True)]
    entries += [clf(f"L4-d{d}-dense", "moe", 4)]
    entries += [clf(f"L4-d{d}-moe{e}", "moe", 4, moe_experts=e) for e in cfg.moe_experts]
    kinds = {"softmax": {},
             "linformer": {"k": cfg.linformer_k},
             "performer": {"num_features": cfg.performer_features}}
    for seq in (n, cfg.long_seq_len):
        entries += [clf(f"{kind}-n{seq}", "attention", 2, seq=seq, attention=kind,
                        attention_options=opts or None) for kind, opts in kinds.items()]
    for tie in (False, True):
        opts = dict(common, vocab_size=cfg.lm_vocab_size, max_seq_len=n, embed_dim=d, depth=4,
                    mlp_dim=4 * d, tie_embeddings=tie)
        entries.append(ZooEntry(f"lm-L4-d{d}" + ("-tied" if tie else ""), "lm",
                                "transformer_lm", opts, n, cfg.lm_vocab_size))
    if cfg.hf_models and _have_transformers():
        # the models people use, built from configs (never downloaded) at the zoo's size
        heads, vocab = cfg.num_heads, cfg.lm_vocab_size
        hf = {"gpt2": dict(n_layer=2, n_embd=d, n_head=heads, n_positions=n, vocab_size=vocab),
              "bert": dict(num_hidden_layers=2, hidden_size=d, num_attention_heads=heads,
                           intermediate_size=4 * d, max_position_embeddings=n,
                           vocab_size=vocab),
              "llama": dict(num_hidden_layers=2, hidden_size=d, num_attention_heads=heads,
                            num_key_value_heads=max(1, heads // 2), intermediate_size=4 * d,
                            max_position_embeddings=n, vocab_size=vocab)}
        entries += [ZooEntry(f"hf-{arch}-L2-d{d}", "hf", f"hf:{arch}", opts, n, vocab)
                    for arch, opts in hf.items()]
    return entries


def _unless_busy(verdict: str, busy: list[str], settle: str) -> tuple[str, str]:
    """A timing verdict taken while the machine was busy (more runnable tasks than cores in
    most load samples) says nothing about the models: it becomes ``inconclusive``, so that
    load can only withhold a verdict, never flip it (measured: beside two CPU-bound jobs the
    sharing latency ratio of two models doing identical work came out 0.42 [0.29, 0.79])."""
    if busy and verdict != INCONCLUSIVE:
        return INCONCLUSIVE, (f"rerun on an idle machine ({busy[0]}; the measured verdict "
                              f"was {verdict!r})")
    return verdict, settle


def _have_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _build(entry: ZooEntry) -> torch.nn.Module:
    if entry.model.startswith("hf:"):
        options = ",".join(f"{k}={v}" for k, v in entry.options.items())
        return build_from_spec(f"{entry.model}:{options}")[0]
    return create_model(entry.model, **entry.options)


def _inputs(entry: ZooEntry, batch: int, seed: int) -> torch.Tensor:
    # ids from 1: with pad_id=None nothing is padding anyway, and no model takes a mask path
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, entry.vocab, (batch, entry.seq_len), generator=g)


def indicator_values(model: dict[str, Any]) -> dict[str, float]:
    """The analysis indicators of one model entry of the results (see :data:`INDICATORS`)."""
    rep = model["report"]
    b = rep["batch_size"]
    ok = [t for t in rep["throughput"] if t["status"] == "ok" and t["mode"] == "inference"]
    largest = max(ok, key=lambda t: t["batch_size"]) if ok else None
    mem = rep.get("memory_train_step") or {}
    return {
        "params": float(rep["params"]["unique"]),
        "flops_fwd": rep["flops_forward"]["total"] / b,
        "flops_train": rep["flops_train_step"]["total"] / b,
        "latency_inf": model["latency"]["inference"],
        "latency_train": model["latency"]["train_step"],
        "time_per_sample": 1.0 / largest["samples_per_s"] if largest else math.nan,
        "memory_train": float(mem["bytes"]) if mem.get("bytes") is not None else math.nan,
    }


def _all(*verdicts: str) -> str:
    """``reproduced`` only when every point rule is (accounting claims have no partly)."""
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else NOT_REPRODUCED


@register
class EfficiencyMisnomer(Experiment):
    name = "efficiency-misnomer"
    paper = "The Efficiency Misnomer (arXiv 2110.12894), Sec. 3-4"
    checks = ("parameters, FLOPs, latency, throughput and memory rank a transformer zoo "
              "differently: sharing cuts parameters not time, MoE adds parameters not FLOPs, "
              "FLOPs and speed rankings flip")
    Config = EfficiencyMisnomerConfig
    budget_s = {"quick": 120.0, "full": 3600.0}
    #: one process, and its claims compare latencies: run alone
    cores = "one"
    timed = True
    #: seconds-long overrides for the end-to-end test of every experiment
    smoke = {"embed_dim": 16, "num_heads": 2, "seq_len": 16, "long_seq_len": 32, "batch_size": 2,
             "batch_sizes": (1, 2), "share_depth": 3, "moe_experts": (2, 4), "linformer_k": 4,
             "performer_features": 8, "repeats": 1, "report_repeats": 1, "rounds": 2,
             "memory": False}

    def run(self, config: EfficiencyMisnomerConfig, ctx: RunContext) -> dict[str, Any]:
        old_threads = torch.get_num_threads()
        if config.threads:
            torch.set_num_threads(config.threads)
        try:
            return self._run(config, ctx)
        finally:
            torch.set_num_threads(old_threads)

    def _run(self, config: EfficiencyMisnomerConfig, ctx: RunContext) -> dict[str, Any]:
        device = ctx.device
        entries = zoo(config)
        models: list[dict[str, Any]] = []
        steps: dict[str, dict[str, Any]] = {}
        for i, entry in enumerate(ctx.progress(entries, desc="measure zoo")):
            torch.manual_seed(derive_seed(config.seed, "weights", entry.name))
            model = _build(entry)
            x = _inputs(entry, config.batch_size, derive_seed(config.seed, "inputs", entry.name))
            report = measure(model, x, name=entry.name, device=device,
                             batch_sizes=config.batch_sizes, tokens_per_sample=entry.seq_len,
                             warmup=config.warmup, repeats=config.report_repeats,
                             train_repeats=config.report_repeats, memory=config.memory,
                             threads=None, peak=i == 0, modules=False)
            models.append({"name": entry.name, "family": entry.family, "model": entry.model,
                           "options": entry.options, "seq_len": entry.seq_len,
                           "report": report.to_dict()})
            work, xd = model.to(device), x.to(device)
            steps[entry.name] = {"inference": make_inference_step(work, (xd,)),
                                 "train_step": make_train_step(work, (xd,))}
        sampler = LoadSampler(usable_cores(), torch.get_num_threads()).start()
        latency = interleaved_latency(
            steps, rounds=config.rounds, warmup=config.warmup,
            repeats={"inference": config.repeats, "train_step": config.train_repeats},
            sync=synchronizer(device), sampler=sampler)
        load = sampler.stop()
        for m in models:
            t = latency[m["name"]]
            m["latency"] = {k: float(np.median(v.round_medians_s)) for k, v in t.items()}
            m["latency_rounds"] = {k: v.round_medians_s for k, v in t.items()}
            m["indicators"] = indicator_values(m)
        values = {k: [m["indicators"][k] for m in models] for k in INDICATORS}
        keys, tau = kendall_matrix(values)
        names = [m["name"] for m in models]
        flips = {
            "flops_vs_latency": ranking_flips(names, values["flops_fwd"], values["latency_inf"],
                                              config.margin),
            "flops_vs_throughput": ranking_flips(names, values["flops_fwd"],
                                                 values["time_per_sample"], config.margin),
            "params_vs_latency": ranking_flips(names, values["params"], values["latency_inf"],
                                               config.margin),
        }
        peak = models[0]["report"].get("peak")
        return {"machine": machine_info(device, torch.float32), "models": models,
                "kendall": {"indicators": keys, "tau": tau}, "flips": flips,
                "load": dict(load.summary(), busy=load_reasons(load)), "peak": peak}

    # -- judging ---------------------------------------------------------------------------
    @staticmethod
    def _by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in results["models"]}

    def claims(self, results: dict[str, Any], config: EfficiencyMisnomerConfig) -> list[Claim]:
        by = self._by_name(results)
        d, L = config.embed_dim, config.share_depth
        machine = results["machine"]
        busy = (results.get("load") or {}).get("busy") or []
        where = (f"{machine['device_name']}, {machine['torch_threads']} thread(s); latency = "
                 f"paired per-round medians of {config.rounds} interleaved round(s)"
                 + ("; machine busy while timed" if busy else ""))
        settle = (f"more interleaved rounds (--set rounds={max(2 * config.rounds, 5)}) on a "
                  "quieter machine")

        def rounds(name: str, kind: str = "inference") -> list[float]:
            return by[name]["latency_rounds"][kind]

        def timing(text: str, paper: str, est, tolerance: str, verdict: str,
                   kind: str = "reproduction") -> Claim:
            verdict, why = _unless_busy(verdict, busy, settle)
            return Claim(text=text, paper=paper, ours=f"{est.fmt('.2f')} [{where}]",
                         tolerance=tolerance, verdict=verdict, kind=kind,
                         interval=est.to_dict(), settle=why)

        claims = []
        base, shared = by[f"L{L}-d{d}"], by[f"L{L}-d{d}-shared"]
        p_ratio = (base["report"]["params"]["non_embedding"]
                   / shared["report"]["params"]["non_embedding"])
        f_ratio = shared["indicators"]["flops_fwd"] / base["indicators"]["flops_fwd"]
        claims.append(Claim(
            text=f"sharing one layer across L = {L} layers cuts non-embedding parameters "
                 "about L-fold at the same FLOPs (accounting)",
            paper="Universal Transformer / ALBERT: far fewer parameters, same FLOPs",
            ours=f"non-embedding parameters / {p_ratio:.2f}; FLOPs x {f_ratio:.3f}",
            tolerance="parameter ratio within 15% of L; FLOPs ratio within 2% of 1",
            verdict=_all(within(p_ratio, L, rel_tol=0.15), within(f_ratio, 1.0, abs_tol=0.02)),
            kind="property"))
        for kind, label, claim_kind in (("inference", "inference", "reproduction"),
                                        ("train_step", "training-step", "measurement")):
            est = ratio_interval(rounds(shared["name"], kind), rounds(base["name"], kind))
            claims.append(timing(
                f"... while the {label} latency stays put (shared / unshared)",
                "Universal Transformer / ALBERT: same speed", est,
                "latency ratio interval inside [0.8, 1.25]",
                interval_within(est, 0.8, 1.25), claim_kind))

        dense = by[f"L4-d{d}-dense"]
        e_max = max(config.moe_experts)
        parts, flop_devs = [], []
        for e in config.moe_experts:
            moe = by[f"L4-d{d}-moe{e}"]
            pr = moe["report"]["params"]["unique"] / dense["report"]["params"]["unique"]
            fr = (moe["report"]["flops_forward_per_token"]
                  / dense["report"]["flops_forward_per_token"])
            flop_devs.append(abs(fr - 1))
            parts.append(f"E={e}: parameters x {pr:.2f}, FLOPs/token x {fr:.3f}")
            if e == e_max:
                p_max = pr
        claims.append(Claim(
            text="a top-1 mixture-of-experts feed-forward multiplies parameters while FLOPs "
                 "per token stay about flat (accounting)",
            paper="Switch/MoE: parameters grow with the number of experts at ~constant FLOPs",
            ours="; ".join(parts),
            tolerance=f"FLOPs per token within 10% of dense for every E; parameters at "
                      f"E = {e_max} at least E/4 = {e_max / 4:g} times dense",
            verdict=_all(at_most(max(flop_devs), 0.10), at_least_point(p_max, e_max / 4)),
            kind="property"))

        dw = [m for m in results["models"] if m["family"] == "depth-width"]
        flops = [m["indicators"]["flops_fwd"] for m in dw]
        f_spread = max(flops) / min(flops)
        claims.append(Claim(
            text="the depth-width models have about equal FLOPs (the premise of the next "
                 "claim)",
            paper="models compared at equal FLOPs",
            ours=f"FLOPs spread x {f_spread:.2f} across {', '.join(m['name'] for m in dw)}",
            tolerance="FLOPs within x 1.25 of each other", verdict=at_most(f_spread, 1.25),
            kind="property"))
        deep, wide = dw[0], dw[-1]
        est = ratio_interval(rounds(deep["name"]), rounds(wide["name"]))
        claims.append(timing(
            f"depth vs width at about equal FLOPs: the deep, narrow model is the slower "
            f"({deep['name']} / {wide['name']} inference latency)",
            "at equal FLOPs, deeper models run slower (depth parallelizes worse)", est,
            f"latency ratio interval at least {1 + config.margin:g}",
            interval_at_least(est, 1 + config.margin)))

        flip = self._flip_claim(results, config, rounds, where, settle)
        flip.verdict, flip.settle = _unless_busy(flip.verdict, busy, flip.settle)
        claims.append(flip)
        return claims

    @staticmethod
    def _flip_claim(results, config, rounds, where, settle) -> Claim:
        """Some pair costs >= 1 + margin more by FLOPs yet is >= 1 + margin faster.

        Select, then confirm: the pair is chosen on the first pass's latencies (each model's
        own cost report, timed before and apart from the interleaved rounds) as the candidate
        with the largest inverse latency ratio, and only that pair is judged, on the
        interleaved rounds, at the plain 95% level. The two passes are separate measurements,
        so choosing among many pairs does not make a chance flip look significant (testing all
        of them on the same rounds would need a multiplicity correction)."""
        models = results["models"]
        pairs = [(a, b) for a in models for b in models if a is not b
                 and a["indicators"]["flops_fwd"] >= (1 + config.margin)
                 * b["indicators"]["flops_fwd"]]
        tolerance = (f"the pair with FLOP ratio >= {1 + config.margin:g} most inverted in the "
                     "first pass (each model's cost report) has an inverse latency ratio "
                     f"interval >= {1 + config.margin:g} in the interleaved rounds "
                     f"({LEVEL:.0%}, paired t on log ratios)")
        if not pairs:
            return Claim(
                text="some models are ranked one way by FLOPs and the other way by measured "
                     "latency", paper="rankings by FLOPs and by speed disagree",
                ours=f"no pair differs by x {1 + config.margin:g} in FLOPs [{where}]",
                tolerance=tolerance, verdict=NOT_REPRODUCED, settle=settle)

        def first_pass(m):
            return m["report"]["latency_inference"]["median_s"]

        a, b = max(pairs, key=lambda p: first_pass(p[1]) / first_pass(p[0]))
        fa, fb = a["indicators"]["flops_fwd"], b["indicators"]["flops_fwd"]
        est = ratio_interval(rounds(b["name"]), rounds(a["name"]))
        verdict = interval_at_least(est, 1 + config.margin)
        ours = (f"{a['name']} has x {fa / fb:.2f} the FLOPs of {b['name']}, yet {b['name']} is "
                f"x {est.fmt('.2f')} slower (first pass: x "
                f"{first_pass(b) / first_pass(a):.2f}; chosen among {len(pairs)} pairs) "
                f"[{where}]")
        return Claim(
            text="some models are ranked one way by FLOPs and the other way by measured "
                 "latency",
            paper="rankings by FLOPs and by speed disagree", ours=ours, tolerance=tolerance,
            verdict=verdict, interval=est.to_dict(), settle=settle)

    # -- presentation ----------------------------------------------------------------------
    def figures(self, results: dict[str, Any], config: EfficiencyMisnomerConfig, outdir: Path
                ) -> list[str]:
        models = results["models"]
        keys = list(INDICATORS)
        short = {"params": "params", "flops_fwd": "fwd FLOPs/sample",
                 "flops_train": "train FLOPs/sample", "latency_inf": "inference s",
                 "latency_train": "train step s", "time_per_sample": "s/sample (max batch)",
                 "memory_train": "train peak bytes"}
        colors = {f: f"C{i}" for i, f in enumerate(FAMILIES)}
        tau = dict(zip(results["kendall"]["indicators"], results["kendall"]["tau"]))
        order = results["kendall"]["indicators"]
        k = len(keys)
        fig, axes = plt.subplots(k, k, figsize=(1.9 * k, 1.9 * k))
        for i, a in enumerate(keys):
            for j, b in enumerate(keys):
                ax = axes[i][j]
                if i == j:
                    ax.text(0.5, 0.5, short[a], ha="center", va="center", fontsize=8,
                            transform=ax.transAxes)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    continue
                for fam in FAMILIES:
                    pts = [(m["indicators"][b], m["indicators"][a]) for m in models
                           if m["family"] == fam]
                    pts = [p for p in pts if all(np.isfinite(p)) and min(p) > 0]
                    if pts:
                        xs, ys = zip(*pts)
                        ax.scatter(xs, ys, s=9, color=colors[fam], label=fam)
                ax.set_xscale("log")
                ax.set_yscale("log")
                for axis in (ax.xaxis, ax.yaxis):
                    axis.set_minor_formatter(NullFormatter())
                ax.tick_params(which="both", labelsize=6, labelbottom=i == k - 1,
                               labelleft=j == 0)
                t = tau[a][order.index(b)]
                if np.isfinite(t):
                    ax.text(0.04, 0.9, f"τ={t:+.2f}", fontsize=6, transform=ax.transAxes)
                if i == k - 1:
                    ax.set_xlabel(short[b], fontsize=6)
                if j == 0:
                    ax.set_ylabel(short[a], fontsize=6)
        handles, labels = axes[0][1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=len(FAMILIES), fontsize=8,
                   bbox_to_anchor=(0.5, 0.965))
        m0 = results["machine"]
        fig.suptitle(f"Cost indicators of the zoo, log-log, Kendall τ in each panel "
                     f"({m0['device_name']}, {m0['torch_threads']} thread(s))", y=0.99,
                     fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        names = [save_figure(fig, outdir, "indicator_scatter_matrix.png")]

        by = self._by_name(results)
        d, L = config.embed_dim, config.share_depth
        cases = [(f"L{L}-d{d}-shared", f"L{L}-d{d}")]
        cases += [(f"L4-d{d}-moe{e}", f"L4-d{d}-dense") for e in config.moe_experts]
        dw = [m["name"] for m in models if m["family"] == "depth-width"]
        cases += [(n, dw[-1]) for n in dw[:-1]]
        shown = ["params", "flops_fwd", "latency_inf", "latency_train", "memory_train"]
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / len(shown)
        lo, hi = 1.0, 1.0
        for s, key in enumerate(shown):
            ratios = np.array([by[a]["indicators"][key] / by[b]["indicators"][key]
                               for a, b in cases])
            # bars grow from 1 (no change) up or down, so a halving looks like a doubling
            ax.bar(np.arange(len(cases)) + (s - len(shown) / 2 + 0.5) * width, ratios - 1.0,
                   width, bottom=1.0, label=short[key])
            lo, hi = min(lo, ratios.min()), max(hi, ratios.max())
        ax.axhline(1.0, color="0.3", lw=1)
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.25, hi * 1.25)
        ax.set_yticks([t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50)
                       if lo / 1.25 <= t <= hi * 1.25])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(np.arange(len(cases)))
        ax.set_xticklabels([f"{a}\nvs {b}" for a, b in cases], fontsize=7)
        ax.set_ylabel("ratio (log scale)")
        ax.set_title("The paper's cases: each model's cost relative to its reference "
                     f"({results['machine']['device_name']})", fontsize=10)
        ax.legend(fontsize=7, ncol=len(shown))
        ax.grid(axis="y", which="both", alpha=0.25)
        names.append(save_figure(fig, outdir, "paper_cases.png"))
        return names

    def tables(self, results: dict[str, Any], config: EfficiencyMisnomerConfig) -> list[Table]:
        m0 = results["machine"]
        machine = (f"{m0['device_name']} ({m0['device']}), {m0['usable_cores']} usable cores, "
                   f"{m0['torch_threads']} torch thread(s), torch {m0['torch_version']}, "
                   f"{m0['dtype']}, {m0['date_utc']}")
        load = results.get("load") or {}
        if load.get("loadavg_before"):
            machine += (f"; load average {load['loadavg_before'][0]:.2f} -> "
                        f"{load['loadavg_after'][0]:.2f}, runnable tasks max "
                        f"{load.get('runnable_max')} while timed"
                        + (" (machine busy: timings unreliable)" if load.get("busy") else ""))
        rows = []
        for m in results["models"]:
            r, ind = m["report"], m["indicators"]
            mem = (r.get("memory_train_step") or {}).get("bytes")
            rows.append([m["name"], m["family"], m["seq_len"], f"{r['params']['unique']:,}",
                         f"{r['params']['total']:,}", f"{ind['flops_fwd'] / 1e6:.1f}",
                         f"{ind['flops_train'] / 1e6:.1f}", f"{1e3 * ind['latency_inf']:.2f}",
                         f"{1e3 * ind['latency_train']:.2f}",
                         f"{1 / ind['time_per_sample']:.0f}" if ind["time_per_sample"] > 0
                         else "-", "-" if mem is None else f"{mem / 2**20:.1f}"])
        b, bmax = config.batch_size, max(config.batch_sizes)
        tables = [Table(
            "Every indicator of every model",
            ["model", "family", "seq", "params (unique)", "params (registrations)",
             "fwd MFLOPs/sample", "train MFLOPs/sample", f"inference ms (batch {b})",
             f"train step ms (batch {b})", f"samples/s (batch {bmax})", "train peak MiB"],
            rows,
            note=f"Machine: {machine}. Latencies: median over {config.rounds} interleaved "
                 f"rounds of per-round medians of {config.repeats} inference calls / "
                 f"{config.train_repeats} training step(s), each after {config.warmup} untimed; "
                 "a shared CPU is "
                 "noisy, so only ratios beyond 1.2 are read as real. FLOPs: 1 multiply-add = "
                 "2 FLOPs, matrix products and attention only. CPU memory: peak RSS growth of "
                 "a fresh process, a few MiB of one-time library buffers included.")]
        keys, tau = results["kendall"]["indicators"], results["kendall"]["tau"]
        tables.append(Table(
            "Kendall rank correlation between indicators (tau-b, across the zoo)",
            ["indicator", *keys],
            [[INDICATORS[a], *[("-" if not np.isfinite(t) else f"{t:+.2f}") for t in row]]
             for a, row in zip(keys, tau)],
            note="1 = the two indicators rank the zoo the same way; all indicators are "
                 "oriented so that larger means costlier."))
        flip_rows = []
        for kind, flips in results["flips"].items():
            for f in flips[:4]:
                flip_rows.append([kind.replace("_", " "), f["costlier_by_a"],
                                  f"x {f['ratio_a']:.2f}", f["costlier_by_b"],
                                  f"x {f['ratio_b']:.2f}"])
        tables.append(Table(
            "Ranking flips (strongest first, up to 4 per comparison)",
            ["comparison (a vs b)", "costlier by a", "ratio a", "costlier by b", "ratio b"],
            flip_rows,
            note=f"A flip needs both ratios >= {1 + config.margin:g}. Machine: {machine}."))
        return tables
