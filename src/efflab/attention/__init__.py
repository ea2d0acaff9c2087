"""Attention: exact softmax, Linformer (arXiv 2006.04768) and Performer / FAVOR+ (arXiv
2009.14794) as drop-in PyTorch modules and functions.

Two levels, like ``torch.nn.functional.scaled_dot_product_attention`` and
``torch.nn.MultiheadAttention``:

* q/k/v level: ``attn(q, k, v, key_padding_mask=None)`` with q, k, v of shape
  (batch, heads, seq, head_dim) (or 3-d (batch * heads, seq, head_dim)) returning
  (batch, heads, seq, head_dim); ``key_padding_mask`` is (batch, seq) bool, True = padding
  (torch.nn.MultiheadAttention's convention); SDPA's keywords ``is_causal``, ``scale``,
  ``attn_mask``, ``dropout_p``, ``enable_gqa`` (linear mechanisms: key masks only, no
  dropout). Modules :class:`SoftmaxAttention`, :class:`LinformerAttention`,
  :class:`PerformerAttention`; functions :func:`softmax_attention`,
  :func:`linformer_attention`, :func:`favor_attention` (each with a ``*_reference`` beside it;
  causal FAVOR+ can take and return a :class:`FavorState`: prefill, then :func:`favor_step`).
* block level: ``MultiheadAttention(embed_dim, num_heads, attention=..., **options)``, called
  as ``mha(x)``, ``mha(x, context)`` or ``mha(query, key, value)`` with (batch, seq, embed_dim)
  inputs; ``num_kv_heads``, ``rotary``, and nn.MultiheadAttention's ``batch_first``,
  ``kdim`` / ``vdim``, ``need_weights`` and state dict names.

How a model builder passes options
----------------------------------
Give every layer the same keyword options; ``causal``, ``max_seq_len``, ``head_dim`` and
``num_heads`` are accepted by all three mechanisms and ignored where unused, so a builder need
not branch on the name::

    from efflab.attention import MultiheadAttention, LinformerProjection

    common = dict(causal=causal, max_seq_len=max_len)          # safe for every mechanism
    extra = {"softmax": {},
             "performer": dict(num_features=256),               # m; feature_map="positive"
             "linformer": dict(k=64)}[name]                     # k may differ per layer
    layers = [MultiheadAttention(d, heads, attention=name, **common, **extra)
              for _ in range(depth)]

* Linformer layerwise sharing (one E = F for every layer and head): build one
  ``LinformerProjection(max_seq_len, k)`` and hand the same object to each layer as
  ``projection=shared`` (``sharing`` then defaults to ``"layerwise"``; ``k`` comes from the
  projection). Other sharing: ``sharing="headwise"`` (default), ``"key-value"``, ``"none"``;
  ``kind="learned" | "mean" | "conv"``. ``causal=True`` raises ValueError (not causal).
* Performer: ``num_features=`` (m, default 256), ``feature_map="positive" | "hyperbolic" |
  "trig" | "relu"``, ``orthogonal=``, ``redraw_interval=`` (training forward passes),
  ``seed=``, ``stream=``, ``chunk_size=`` (causal). Causal decoding: ``out, state =
  mha.prefill(prompt)``, then ``out, state = mha.step(x_t, state)`` with x_t (batch, 1,
  embed_dim) (state None to start without a prompt).
* A ready module can be passed instead of a name: ``MultiheadAttention(d, h, attention=mod)``.
* By name without the block: ``build_attention("performer", head_dim=64, causal=True)``.
"""

from efflab.attention.linformer import (
    PROJECTION_KINDS,
    SHARING,
    LinformerAttention,
    LinformerProjection,
    linformer_attention,
    linformer_attention_reference,
)
from efflab.attention.multihead import (
    ATTENTIONS,
    MODEL_OPTIONS,
    MultiheadAttention,
    build_attention,
)
from efflab.attention.performer import (
    FEATURE_MAPS,
    FavorState,
    PerformerAttention,
    causal_linear_attention,
    causal_linear_attention_reference,
    draw_random_features,
    favor_attention,
    favor_attention_reference,
    favor_step,
    features_seed,
    random_feature_map,
    redraw_due_features,
)
from efflab.attention.rotary import apply_rotary_embedding, rotary_embedding_reference
from efflab.attention.softmax import (
    SoftmaxAttention,
    softmax_attention,
    softmax_attention_reference,
    softmax_attention_weights,
)

__all__ = [
    "ATTENTIONS", "FEATURE_MAPS", "apply_rotary_embedding", "redraw_due_features",
    "rotary_embedding_reference", "MODEL_OPTIONS", "PROJECTION_KINDS", "SHARING",
    "FavorState", "LinformerAttention", "LinformerProjection", "MultiheadAttention",
    "PerformerAttention", "SoftmaxAttention", "build_attention", "causal_linear_attention",
    "causal_linear_attention_reference", "draw_random_features", "favor_attention",
    "favor_attention_reference", "favor_step", "features_seed", "linformer_attention",
    "linformer_attention_reference", "random_feature_map", "softmax_attention",
    "softmax_attention_reference", "softmax_attention_weights",
]
