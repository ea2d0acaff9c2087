"""HF models by name from configs (never downloaded), and loading a saved efflab model.

``build_model("gpt2", n_layer=2, n_embd=64, attention="performer", num_features=64)``:
the architecture name picks a config class and a model class; config fields and efflab
attention options are given side by side (this is what ``efflab measure hf:gpt2:...`` calls).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from efflab.integrations.huggingface.attention import (
    ATTENTIONS,
    LINFORMER_OPTIONS,
    PERFORMER_OPTIONS,
    use_efflab_attention,
)
from efflab.seeding import derive_seed

#: name -> (config class, model class, small defaults so that a bare name builds in seconds)
ARCHITECTURES: dict[str, tuple[type, type, dict[str, Any]]] = {
    "gpt2": (GPT2Config, GPT2LMHeadModel,
             dict(n_layer=2, n_embd=64, n_head=4, n_positions=256, vocab_size=256,
                  attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)),
    "bert": (BertConfig, BertForMaskedLM,
             dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=256, vocab_size=256,
                  attention_probs_dropout_prob=0.0, pad_token_id=0)),
    "llama": (LlamaConfig, LlamaForCausalLM,
              dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                   num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                   vocab_size=256, bos_token_id=0, eos_token_id=0, pad_token_id=0)),
}


def build_model(arch: str, attention: str = "softmax", seed: int = 0, **options: Any
                ) -> nn.Module:
    """A freshly initialized ``arch`` model (``gpt2``, ``bert``, ``llama``) with efflab
    ``attention``; ``options`` are config fields (``n_layer=4``) or attention options
    (``num_features=64``). ``seed`` fixes the weights (and the Performer features); the
    caller's global random stream is left as it was. Unknown names raise ``ValueError``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    config_cls, model_cls, defaults = ARCHITECTURES[arch]
    attn_names = {"performer": PERFORMER_OPTIONS, "linformer": LINFORMER_OPTIONS}.get(
        attention, ())
    attn_names = tuple(n for n in attn_names if n != "seed")
    attn_opts = {k: v for k, v in options.items() if k in attn_names}
    cfg_opts = {k: v for k, v in options.items() if k not in attn_names}
    known = config_cls().to_dict()
    unknown = sorted(k for k in cfg_opts if k not in known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for hf:{arch} with attention="
                         f"{attention!r}: not {config_cls.__name__} fields"
                         + (f" nor attention options {list(attn_names)}" if attn_names else ""))
    if attention == "performer":
        attn_opts["seed"] = seed
    with torch.random.fork_rng(devices=[]):  # HF's init draws from the global stream
        torch.manual_seed(derive_seed(seed, "hf-init", arch))
        model = model_cls(config_cls(**{**defaults, **cfg_opts}))
    return use_efflab_attention(model, attention, **attn_opts).eval()


class LogitsOf(nn.Module):
    """``model(input_ids) -> logits`` as a plain tensor-in, tensor-out module (no cache), so
    that tools made for such modules (``efflab.measure``) take a HF model as it is.
    input_ids: (batch, seq) long; returns (batch, seq, vocab)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, use_cache=False).logits


def build_measurable(arch: str, **options: Any) -> LogitsOf:
    """:func:`build_model` wrapped in :class:`LogitsOf`: what ``efflab measure hf:ARCH:...``
    measures (inputs: token ids below the config's ``vocab_size``)."""
    return LogitsOf(build_model(arch, **options))


def _saved_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) \
        if index.exists() else ["model.safetensors"]
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(str(path / name)))
    return tensors


def load_pretrained(model_class: type, path: str | Path, **kwargs: Any) -> nn.Module:
    """``model_class.from_pretrained(path)`` for a folder written by ``save_pretrained`` of a
    model with efflab attention: the same mechanism is attached again and its saved state
    (Performer features, Linformer projections) is loaded, not redrawn. ``kwargs`` go to
    ``from_pretrained``; a folder without efflab attention loads as HF would load it."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"path must be a local checkpoint folder, got {str(path)!r}")
    model = model_class.from_pretrained(path, **kwargs)
    spec = getattr(model.config, "efflab_attention", None)
    if not spec:
        return model
    use_efflab_attention(model, spec["attention"], **spec["options"])
    own = {k for k in model.state_dict() if ".efflab_attention." in k}
    saved = {k: v for k, v in _saved_tensors(path).items() if ".efflab_attention." in k}
    missing = sorted(own - set(saved))
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} lacks efflab attention state {missing[:3]}"
                         f"{' ...' if len(missing) > 3 else ''}")
    model.load_state_dict(saved, strict=False)
    return model
