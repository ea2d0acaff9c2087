"""efflab's attention as a ``transformers`` attention implementation named ``"efflab"``.

``use_efflab_attention(model, "performer", num_features=256)`` gives every self-attention
module of the model one efflab module, ``module.efflab_attention`` (a ``SoftmaxAttention``,
``PerformerAttention`` with that layer's random features, or ``LinformerAttention`` with its
projections sized to the model's maximum length), so the state is created once per layer and
saved in the model's state dict; then it sets ``attn_implementation="efflab"``. The modules'
own forwards are untouched: HF calls :func:`efflab_attention_forward` through its public
registry (``AttentionInterface``), which reads the attached module and runs the functional
core of ``efflab.attention``:

* the mask: HF's 4-D mask becomes a key padding mask and the causal flag
  (:mod:`.masks`; any other mask is refused);
* grouped kv heads (Llama-family ``num_key_value_heads < num_attention_heads``): repeated to
  the query heads by :func:`expand_kv_heads`, the one place to switch to a native GQA path;
* decoding: with a :class:`~.cache.FavorCache`, Performer advances its recurrent state one
  position at a time (O(1) per token); with HF's default cache of keys and values it attends
  to all cached keys again (correct, O(length) per token); Linformer is bidirectional and is
  refused for causal models.

efflab's mechanisms have no dropout on attention probabilities (FAVOR+ never forms them), so
a training call with attention dropout > 0 raises: set the config's attention dropout to 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from efflab.attention import (
    LinformerAttention,
    PerformerAttention,
    SoftmaxAttention,
    favor_attention,
    favor_step,
    softmax_attention,
)
from efflab.integrations.huggingface.cache import take_pending
from efflab.integrations.huggingface.masks import key_padding_from_mask
from efflab.seeding import derive_seed

IMPLEMENTATION = "efflab"
ATTENTIONS = ("softmax", "performer", "linformer")
#: PerformerAttention options accepted inside a HF model (redraw_interval is not: the
#: functional path does not count forward passes; call ``redraw_features()`` on each layer)
PERFORMER_OPTIONS = ("num_features", "feature_map", "orthogonal", "norm", "chunk_size",
                     "seed", "kernel_eps")
LINFORMER_OPTIONS = ("k", "sharing", "kind", "max_seq_len")
#: attention-function arguments that carry structure efflab cannot express
_UNSUPPORTED_KWARGS = ("softcap", "sliding_window", "s_aux", "position_bias")


def expand_kv_heads(k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """Grouped-query attention: k, v (batch, kv_heads, seq, d) -> (batch, heads, seq, d),
    each kv head serving ``heads / kv_heads`` consecutive query heads (HF's ``repeat_kv``)."""
    kv_heads = k.shape[1]
    if heads % kv_heads != 0:
        raise ValueError(f"query heads {heads} must be a multiple of kv heads {kv_heads}")
    groups = heads // kv_heads
    if groups == 1:
        return k, v
    return k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)


def _favor_recurrent(mech: PerformerAttention, layer, q: Tensor, k: Tensor, v: Tensor,
                     new_pad: Tensor | None, scaling: float | None) -> Tensor:
    """Advance ``layer.state`` over the new positions (a prompt or one token) in one chunked
    causal pass, the state carried in and out (``output_final_state``): a prompt of n
    positions costs one call, not n. :func:`_favor_recurrent_steps` is its reference."""
    out, layer.state = favor_attention(
        q, k, v, mech.projection, new_pad, True, mech.feature_map, mech.kernel_eps, scaling,
        mech.chunk_size, initial_state=layer.state, output_final_state=True)
    return out


def _favor_recurrent_steps(mech: PerformerAttention, layer, q: Tensor, k: Tensor, v: Tensor,
                           new_pad: Tensor | None, scaling: float | None) -> Tensor:
    """The same by favor_step, one position after another (the reference)."""
    outs, state = [], layer.state
    for t in range(q.shape[2]):
        pad_t = None if new_pad is None else new_pad[:, t:t + 1]
        out, state = favor_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1],
                                mech.projection, state, pad_t, mech.feature_map,
                                mech.kernel_eps, scaling)
        outs.append(out)
    layer.state = state
    return torch.cat(outs, dim=2)


def efflab_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                             attention_mask: Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, is_causal: bool | None = None,
                             **kwargs: Any) -> tuple[Tensor, None]:
    """The attention function HF calls as ``attn_implementation="efflab"``.

    query: (batch, heads, seq_q, head_dim); key, value: (batch, kv_heads, seq_k, head_dim);
    attention_mask: see :mod:`.masks`. Returns ((batch, seq_q, heads, head_dim), None), as
    HF's ``sdpa_attention_forward`` does.
    """
    mech = getattr(module, "efflab_attention", None)
    if mech is None:
        raise ValueError(
            f"{type(module).__name__} (layer {getattr(module, 'layer_idx', '?')}) has no "
            "efflab_attention module: call use_efflab_attention(model, ...) instead of setting "
            "attn_implementation='efflab' by hand"
        )
    if dropout:
        raise ValueError(
            f"attention dropout must be 0 with efflab attention (got dropout={dropout}): efflab's "
            "mechanisms have no attention-probability dropout; set attn_pdrop (GPT-2), "
            "attention_probs_dropout_prob (BERT) or attention_dropout (Llama) to 0"
        )
    for name in _UNSUPPORTED_KWARGS:
        if kwargs.get(name) is not None:
            raise ValueError(f"efflab attention does not support {name}={kwargs[name]!r}")
    causal = bool(is_causal) if is_causal is not None else bool(getattr(module, "is_causal", True))
    layer = take_pending(key)
    key, value = expand_kv_heads(key, value, query.shape[1])
    seq_q, seq_k = query.shape[2], key.shape[2]
    mask_k = seq_k if attention_mask is None else attention_mask.shape[-1]
    pad = key_padding_from_mask(attention_mask, seq_q, mask_k, causal)

    if layer is not None:  # a FavorCache: only the new positions came in
        if not (isinstance(mech, PerformerAttention) and causal):
            raise ValueError("FavorCache holds causal FAVOR+ state: use it with a causal model "
                             "whose attention is 'performer' (use DynamicCache otherwise)")
        new_pad = None if pad is None else pad[:, pad.shape[1] - seq_q:]
        out = _favor_recurrent(mech, layer, query, key, value, new_pad, scaling)
        return out.transpose(1, 2).contiguous(), None

    if seq_q != seq_k:
        # HF's own key/value cache: seq_k - seq_q earlier positions come first.
        if seq_q != 1:
            raise ValueError(
                f"efflab attention takes seq_q == seq_k, or one query after cached keys (got "
                f"seq_q {seq_q}, seq_k {seq_k}); feed new tokens one at a time, or use a "
                "FavorCache with Performer"
            )
        causal = False  # one query after all its past: causal structure is nothing to mask
    if isinstance(mech, PerformerAttention):
        out = favor_attention(query, key, value, mech.projection, pad, causal, mech.feature_map,
                              mech.kernel_eps, scaling, mech.chunk_size)
    elif isinstance(mech, LinformerAttention):
        if causal:
            raise ValueError("Linformer cannot be causal (it mixes future positions into every "
                             "projected key); it serves bidirectional encoders such as BERT")
        if scaling is not None and mech.scale is not None and scaling != mech.scale:
            raise ValueError(f"scaling {scaling} differs from the Linformer module's {mech.scale}")
        out = mech(query, key, value, pad)
    elif isinstance(mech, SoftmaxAttention):
        out = softmax_attention(query, key, value, pad, causal, scaling)
    else:
        raise ValueError(f"efflab_attention must be a SoftmaxAttention, PerformerAttention or "
                         f"LinformerAttention, got {type(mech).__name__}")
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(IMPLEMENTATION, efflab_attention_forward)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


# ------------------------------------------------------------------------- swapping

def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules of a HF model that go through ``AttentionInterface``:
    those with ``scaling``, ``is_causal`` and ``layer_idx`` (GPT2Attention,
    BertSelfAttention, LlamaAttention and the many models written the same way)."""
    return [m for m in model.modules()
            if all(hasattr(m, a) for a in ("scaling", "is_causal", "layer_idx"))]


def _head_dim(module: nn.Module) -> int:
    for name in ("head_dim", "attention_head_size"):
        if isinstance(getattr(module, name, None), int):
            return getattr(module, name)
    raise ValueError(f"cannot find the head size of {type(module).__name__} "
                     "(no head_dim or attention_head_size)")


def _max_positions(config) -> int:
    for name in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ValueError("Linformer needs max_seq_len=...: the config gives no maximum length")


def _check_options(attention: str, options: dict[str, Any]) -> None:
    allowed = {"softmax": (), "performer": PERFORMER_OPTIONS,
               "linformer": LINFORMER_OPTIONS}[attention]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for attention={attention!r}; "
                         f"accepted: {list(allowed)}")


def build_layer_attention(attention: str, module: nn.Module, config, options: dict[str, Any]
                          ) -> nn.Module:
    """The efflab module one HF attention module gets (its own features / projections)."""
    causal = bool(module.is_causal)
    layer = int(module.layer_idx or 0)
    if attention == "softmax":
        return SoftmaxAttention(causal=causal)
    if attention == "performer":
        opts = dict(options)
        seed = derive_seed(int(opts.pop("seed", 0)), "performer-features", layer)
        # the seed is already per layer: a fixed stream keeps the features independent of
        # the caller's global random state
        return PerformerAttention(_head_dim(module), causal=causal, seed=seed, stream=0, **opts)
    if causal:
        raise ValueError(
            f"attention='linformer' cannot serve {type(module).__name__} (layer {layer}), a "
            "causal attention: Linformer's projection mixes future positions into every key, so "
            "it can neither run a decoder nor generate; use 'performer' or 'softmax'"
        )
    opts = dict(options)
    max_len = opts.pop("max_seq_len", None) or _max_positions(config)
    return LinformerAttention(max_seq_len=max_len, num_heads=config.num_attention_heads,
                              scale=float(module.scaling), **opts)


def use_efflab_attention(model: nn.Module, attention: str = "performer", **options: Any
                         ) -> nn.Module:
    """Run every self-attention of ``model`` (a ``transformers`` PreTrainedModel) through
    efflab's ``attention`` (``softmax``, ``performer`` or ``linformer``); returns ``model``.

    Options: Performer ``num_features`` (m, default 256), ``feature_map``, ``orthogonal``,
    ``norm``, ``chunk_size``, ``kernel_eps``, ``seed`` (layer i draws its features from
    ``derive_seed(seed, "performer-features", i)``); Linformer ``k``, ``sharing``, ``kind``,
    ``max_seq_len`` (default: the config's maximum positions). Calling it again replaces the
    modules (e.g. back to ``softmax``): the model's own weights are never touched. The choice
    is recorded in ``model.config.efflab_attention`` (saved with ``save_pretrained``; see
    :func:`~efflab.integrations.huggingface.load_pretrained`).
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    _check_options(attention, options)
    if not hasattr(model, "set_attn_implementation"):
        raise ValueError(
            f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    config = model.config
    if getattr(config, "add_cross_attention", False):
        raise ValueError("models with cross-attention (add_cross_attention=True) are not "
                         "supported: efflab's integration covers self-attention only")
    modules = attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no attention module that goes through "
                         "transformers' AttentionInterface (scaling, is_causal, layer_idx)")
    built = [build_layer_attention(attention, m, config, options) for m in modules]
    ref = next(model.parameters())
    for module, mech in zip(modules, built):
        module.efflab_attention = mech.to(ref.device)
    model.set_attn_implementation(IMPLEMENTATION)
    config.efflab_attention = {"attention": attention, "options": dict(options)}
    return model
