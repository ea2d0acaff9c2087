"""Cross-check of efflab's FLOP counts against the counters people use (issue 17, item 5).

Runs fvcore, ptflops, thop, calflops and torchinfo (the ``peers`` extra: ``pip install
efflab[peers]``; the library never imports them) beside ``efflab.measure.count_flops`` on the
same models, and sets each against a hand-derived exact forward count (1 multiply-add = 2
FLOPs; matrix products, convolutions and attention; element-wise work not counted). Tools
that report multiply-accumulates (MACs) are doubled, and the table says so.

    python benchmarks/flop_counters.py --out benchmarks/results/flop_counters.json

Prints a Markdown table (forward FLOPs as a ratio to the exact count; 'err' = the tool
raised) and writes JSON with the raw numbers, the versions and the machine's load.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from efflab.io import atomic_write_json
from efflab.measure import count_flops, make_inference_step, make_train_step
from efflab.measure.load import read_loadavg
from efflab.models import create_model


class EinsumMixer(nn.Module):
    """A "custom op": token mixing written with einsum and a bare matmul, no nn.Linear."""

    def __init__(self, n: int = 16, d: int = 32):
        super().__init__()
        self.mix = nn.Parameter(torch.randn(n, n) / n)
        self.proj = nn.Parameter(torch.randn(d, d) / d)

    def forward(self, x):  # x: (batch, n, d)
        return torch.einsum("nm,bmd->bnd", self.mix, x) @ self.proj


def cases():
    """name -> (model, input, exact forward FLOPs, what the exact count is)."""
    b = 4
    out = {}
    mlp = create_model("mlp", in_features=40, width=64, depth=3)
    out["MLP 40-64-64-64-10"] = (mlp, torch.randn(b, 40),
                                 2 * b * (40 * 64 + 64 * 64 + 64 * 64 + 64 * 10), "hand")
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    conv = 2 * b * 16 * 16 * 9 * (3 * 16 + 16 * 32)
    out["CNN 2 conv + linear, 16x16"] = (cnn, torch.randn(b, 3, 16, 16), conv + 2 * b * 32 * 10,
                                         "hand")
    res = create_model("resnet18", width=8, num_classes=10)
    x = torch.randn(b, 3, 32, 32)
    out["ResNet-18 (width 8), 32x32"] = (res, x, count_flops(make_inference_step(res, (x,)))[1]
                                         .total, "efflab (conv formula tested by hand)")
    n, d, mlp_d, depth, classes, vocab = 32, 32, 64, 2, 10, 16
    tc = create_model("transformer_classifier", vocab_size=vocab, num_classes=classes,
                      max_seq_len=n, embed_dim=d, depth=depth, num_heads=2, mlp_dim=mlp_d,
                      pad_id=None)
    layer = 2 * b * n * 4 * d * d + 2 * 2 * b * n * n * d + 2 * b * n * 2 * d * mlp_d
    out["transformer (SDPA), n=32 d=32 L=2"] = (tc, torch.randint(1, vocab, (b, n)),
                                                depth * layer + 2 * b * d * classes, "hand")
    lm = create_model("transformer_lm", vocab_size=64, max_seq_len=n, embed_dim=d, depth=depth,
                      num_heads=2, mlp_dim=mlp_d, pad_id=None, tie_embeddings=True)
    out["tied-embedding causal LM, V=64"] = (lm, torch.randint(0, 64, (b, n)),
                                             depth * layer + 2 * b * n * d * 64,
                                             "hand (full causal matrix, as it runs)")
    mixer = EinsumMixer()
    out["einsum + matmul (custom op)"] = (mixer, torch.randn(b, 16, 32),
                                          2 * b * 16 * 16 * 32 + 2 * b * 16 * 32 * 32, "hand")
    try:
        from transformers import GPT2Config, GPT2Model

        cfg = GPT2Config(vocab_size=64, n_positions=n, n_embd=d, n_layer=depth, n_head=2,
                         n_inner=mlp_d, attn_implementation="sdpa")
        gpt = GPT2Model(cfg).eval()
        x = torch.randint(0, 64, (b, n))
        out["HF GPT2Model (tiny, random), n=32"] = (
            gpt, x, depth * layer, "hand (no LM head)")
    except Exception as e:  # noqa: BLE001 - the hf extra is optional
        print(f"(no Hugging Face model: {type(e).__name__}: {e})")
    return out


def _forward(model):
    class Wrap(nn.Module):  # some tools need a tensor output
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            y = self.m(x)
            return y.last_hidden_state if hasattr(y, "last_hidden_state") else y
    return Wrap().eval()


def peers(model, x):
    """tool -> (FLOPs, note); MAC-reporting tools doubled."""
    res = {}
    m = _forward(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from fvcore.nn import FlopCountAnalysis

            a = FlopCountAnalysis(m, (x,))
            a.unsupported_ops_warnings(False)
            a.uncalled_modules_warnings(False)
            res["fvcore"] = 2 * a.total()
        except Exception as e:  # noqa: BLE001
            res["fvcore"] = f"err: {type(e).__name__}"
        for backend, key in (("pytorch", "ptflops"), ("aten", "ptflops (aten)")):
            try:
                from ptflops import get_model_complexity_info

                macs, _ = get_model_complexity_info(
                    m, tuple(x.shape[1:]), input_constructor=lambda _: {"x": x},
                    as_strings=False, print_per_layer_stat=False, verbose=False,
                    backend=backend)
                res[key] = 2 * macs
            except Exception as e:  # noqa: BLE001
                res[key] = f"err: {type(e).__name__}"
        try:
            import copy

            from thop import profile

            macs, _ = profile(copy.deepcopy(m), inputs=(x,), verbose=False)
            res["thop"] = 2 * macs
        except Exception as e:  # noqa: BLE001
            res["thop"] = f"err: {type(e).__name__}"
        try:
            from calflops import calculate_flops

            flops, _, _ = calculate_flops(model=m, args=[x], print_results=False,
                                          print_detailed=False, output_as_string=False)
            res["calflops"] = flops
        except Exception as e:  # noqa: BLE001
            res["calflops"] = f"err: {type(e).__name__}"
        try:
            from torchinfo import summary

            res["torchinfo"] = 2 * summary(m, input_data=x, verbose=0).total_mult_adds
        except Exception as e:  # noqa: BLE001
            res["torchinfo"] = f"err: {type(e).__name__}"
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/flop_counters.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load_before = read_loadavg()
    rows = {}
    for name, (model, x, exact, how) in cases().items():
        model.eval()
        ours = count_flops(make_inference_step(model, (x,)))[1].total
        _, train = count_flops(make_train_step(model, (x,)))
        rows[name] = {"exact": exact, "exact_is": how, "efflab": ours,
                      "efflab_train_step": train.total, **peers(model, x)}
    tools = ["efflab", "fvcore", "ptflops", "ptflops (aten)", "thop", "calflops", "torchinfo"]
    versions = {"torch": torch.__version__}
    for pkg in ("fvcore", "ptflops", "thop", "calflops", "torchinfo", "transformers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    print("| model | exact fwd FLOPs | " + " | ".join(tools) + " |")
    print("|---|---|" + "---|" * len(tools))
    for name, r in rows.items():
        cells = []
        for t in tools:
            v = r[t]
            cells.append(v if isinstance(v, str) else f"{v / r['exact']:.2f}")
        print(f"| {name} | {r['exact']:,} | " + " | ".join(cells) + " |")
    record = {"rows": rows, "versions": versions, "loadavg_before": load_before,
              "loadavg_after": read_loadavg(),
              "note": "ratios = tool / exact forward FLOPs; fvcore, ptflops, thop and "
                      "torchinfo report MACs, doubled here"}
    atomic_write_json(args.out, record)
    print(json.dumps(versions))


if __name__ == "__main__":
    main()
