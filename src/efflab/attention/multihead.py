"""Multi-head attention with a pluggable mechanism, and the by-name builder.

``MultiheadAttention`` is the usual block (Vaswani et al. 2017, Sec. 3.2.2): input projections
to q, k, v, a split into heads (fewer kv heads for grouped-query attention, Ainslie et al.
2023, arXiv 2305.13245), optional rotary position embeddings, an attention mechanism on
(batch, heads, seq, head_dim), the heads merged and an output projection. The mechanism is
softmax (exact), Linformer or Performer, given by name with keyword options or as a module.

It also speaks ``torch.nn.MultiheadAttention``'s language: ``(query, key, value)``,
``batch_first``, ``kdim`` / ``vdim``, ``need_weights`` (returning ``(out, weights)``),
``attn_mask`` with its convention (bool True = *not* allowed), and its state dict names
(``in_proj_weight``, ``q_proj_weight``, ...) load into this module.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from efflab.attention._checks import check_bool, check_mask, check_positive_int
from efflab.attention.linformer import LinformerAttention
from efflab.attention.performer import FavorState, PerformerAttention
from efflab.attention.rotary import apply_rotary_embedding
from efflab.attention.softmax import SoftmaxAttention, softmax_attention_weights

ATTENTIONS: dict[str, type[nn.Module]] = {
    "softmax": SoftmaxAttention,
    "linformer": LinformerAttention,
    "performer": PerformerAttention,
}

#: Options every mechanism accepts, so that a model builder can pass them to all alike;
#: a mechanism that has no use for one ignores it.
MODEL_OPTIONS = ("causal", "max_seq_len", "head_dim", "num_heads")


def build_attention(name: str, **options) -> nn.Module:
    """The q/k/v-level attention module called ``name`` with keyword ``options``.

    ``causal``, ``max_seq_len``, ``head_dim`` and ``num_heads`` are accepted by every mechanism
    (ignored where unused); any other option must be one the mechanism takes, else ValueError.
    """
    if name not in ATTENTIONS:
        raise ValueError(f"attention must be one of {sorted(ATTENTIONS)} or a module, "
                         f"got {name!r}")
    cls = ATTENTIONS[name]
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(k for k in options if k not in accepted and k not in MODEL_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for attention {name!r}; it takes "
                         f"{sorted(accepted | set(MODEL_OPTIONS))}")
    if name == "performer" and options.get("head_dim") is None:
        raise ValueError("attention 'performer' needs head_dim (MultiheadAttention passes it)")
    return cls(**{k: v for k, v in options.items() if k in accepted})


def _check_attention_module(attention: nn.Module, head_dim: int) -> None:
    """A module given as the mechanism must be callable as attn(q, k, v, key_padding_mask)."""
    params = list(inspect.signature(attention.forward).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not any(p.kind == p.VAR_POSITIONAL for p in params) and len(positional) < 4:
        raise ValueError(
            f"attention module {type(attention).__name__} must be a q/k/v-level attention "
            f"called as attn(q, k, v, key_padding_mask), but its forward takes "
            f"({', '.join(p.name for p in params)}); pass a name in {sorted(ATTENTIONS)} or an "
            "efflab attention module"
        )
    own = getattr(attention, "head_dim", None)
    if isinstance(own, int) and own != head_dim:
        raise ValueError(f"attention module has head_dim={own} but embed_dim / num_heads = "
                         f"{head_dim}")


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


class MultiheadAttention(nn.Module):
    """``mha(x)`` (self-attention), ``mha(x, context)`` or ``mha(query, key, value)``
    (cross-attention, lengths may differ): (batch, seq, embed_dim) -> (batch, seq_q, embed_dim).

    Args:
        embed_dim: model width; split into ``num_heads`` heads of embed_dim / num_heads.
        num_heads: number of query heads.
        attention: ``"softmax"``, ``"linformer"``, ``"performer"`` (built by
            :func:`build_attention` with ``head_dim``, ``num_heads`` and ``attention_options``),
            or a q/k/v-level module called as ``attn(q, k, v, key_padding_mask)``.
        bias: biases in the input and output projections.
        num_kv_heads: heads of k and v (default num_heads); must divide num_heads
            (grouped-query attention; 1 = multi-query). Nothing is repeated in the projection;
            each mechanism gets ``enable_gqa=True``.
        kdim, vdim: widths of key and value inputs (default embed_dim), as nn.MultiheadAttention.
        batch_first: inputs (batch, seq, feature) (default, unlike nn.MultiheadAttention) or
            (seq, batch, feature).
        dropout: dropout on the attention weights in training mode (softmax, Linformer; must be
            0 for Performer, which forms no weights).
        rotary: rotary position embeddings on q and k (positions 0 .. seq_k - 1, the queries
            the last seq_q of them), before any mechanism; ``rotary_base`` (default 10000).
        **attention_options: passed to the mechanism, e.g. ``causal=True``, ``max_seq_len=``,
            ``k=``, ``projection=`` (Linformer), ``num_features=``, ``feature_map=`` (Performer).

    ``forward(query, key=None, value=None, key_padding_mask=None, need_weights=None,
    attn_mask=None, average_attn_weights=True, is_causal=None)``: key_padding_mask
    (batch, seq_k) bool, True = padding. ``attn_mask`` as nn.MultiheadAttention takes it: bool
    with True = not allowed, or additive float, (seq_q, seq_k) or (batch * heads, seq_q, seq_k)
    (linear mechanisms accept only key masks, see their docs). ``need_weights=None`` (default)
    returns the output alone; True / False return ``(out, weights)`` as nn.MultiheadAttention,
    the weights (batch, seq_q, seq_k) (averaged over heads, else (batch, heads, ...)) for
    softmax and None for Linformer and Performer, which never form them.
    """

    def __init__(self, embed_dim: int, num_heads: int, attention: str | nn.Module = "softmax",
                 bias: bool = True, *, num_kv_heads: int | None = None, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = True, dropout: float = 0.0,
                 rotary: bool = False, rotary_base: float = 10000.0, **attention_options):
        super().__init__()
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("num_heads", num_heads)
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        num_kv_heads = num_heads if num_kv_heads is None else \
            check_positive_int("num_kv_heads", num_kv_heads)
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads {num_kv_heads} must divide num_heads {num_heads}")
        kdim = embed_dim if kdim is None else check_positive_int("kdim", kdim)
        vdim = embed_dim if vdim is None else check_positive_int("vdim", vdim)
        check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.rotary = check_bool("rotary", rotary)
        self.rotary_base = float(rotary_base)
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.kdim, self.vdim = kdim, vdim
        self.head_dim = embed_dim // num_heads
        if rotary and self.head_dim % 2:
            raise ValueError(f"rotary=True needs an even head_dim, got {self.head_dim}")
        kv_dim = num_kv_heads * self.head_dim
        self.packed = kdim == embed_dim and vdim == embed_dim
        if self.packed:
            self.in_proj = nn.Linear(embed_dim, embed_dim + 2 * kv_dim, bias=bias)
            projections = [self.in_proj]
        else:
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.k_proj = nn.Linear(kdim, kv_dim, bias=bias)
            self.v_proj = nn.Linear(vdim, kv_dim, bias=bias)
            projections = [self.q_proj, self.k_proj, self.v_proj]
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        for lin in projections:
            nn.init.xavier_uniform_(lin.weight)
            if bias:
                nn.init.zeros_(lin.bias)
        if bias:
            nn.init.zeros_(self.out_proj.bias)
        if isinstance(attention, nn.Module):
            if attention_options:
                raise ValueError(f"attention options {sorted(attention_options)} only apply when "
                                 "attention is given by name, not as a module")
            if dropout:
                raise ValueError("dropout only applies when attention is given by name; build "
                                 "the module with its own dropout")
            _check_attention_module(attention, self.head_dim)
            self.attention = attention
        elif isinstance(attention, str):
            fixed = sorted({"head_dim", "num_heads"} & set(attention_options))
            if fixed:
                raise ValueError(f"attention option(s) {fixed} are set by MultiheadAttention "
                                 f"from embed_dim and num_heads; leave them out")
            if dropout:
                attention_options["dropout"] = dropout
            self.attention = build_attention(attention, head_dim=self.head_dim,
                                             num_heads=num_heads, **attention_options)
        else:
            raise ValueError(f"attention must be a name in {sorted(ATTENTIONS)} or an nn.Module, "
                             f"got {type(attention).__name__}")
        self._register_load_state_dict_pre_hook(self._from_torch_names)

    # ------------------------------------------------------------ nn.MultiheadAttention names

    @property
    def in_proj_weight(self) -> Tensor | None:
        return self.in_proj.weight if self.packed else None

    @property
    def in_proj_bias(self) -> Tensor | None:
        return self.in_proj.bias if self.packed else None

    def _from_torch_names(self, state_dict, prefix, *args) -> None:
        """Rename a torch.nn.MultiheadAttention state dict (``in_proj_weight``,
        ``q_proj_weight`` ..., ``in_proj_bias``) to this module's names before loading."""
        def move(old: str, new: str) -> None:
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)

        if self.packed:
            move("in_proj_weight", "in_proj.weight")
            move("in_proj_bias", "in_proj.bias")
            return
        for name in ("q", "k", "v"):
            move(f"{name}_proj_weight", f"{name}_proj.weight")
        if prefix + "in_proj_bias" in state_dict:
            kv_dim = self.num_kv_heads * self.head_dim
            bq, bk, bv = state_dict.pop(prefix + "in_proj_bias").split(
                [self.embed_dim, kv_dim, kv_dim])
            for name, b in (("q", bq), ("k", bk), ("v", bv)):
                state_dict[prefix + f"{name}_proj.bias"] = b

    # ------------------------------------------------------------ projections

    def _check_input(self, name: str, x: object, width: int) -> None:
        layout = "(batch, seq, " if self.batch_first else "(seq, batch, "
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != width or \
                not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            dtype = f" of dtype {x.dtype}" if isinstance(x, Tensor) else ""
            raise ValueError(f"{name} must be a float tensor of shape {layout}{width}), got "
                             f"{shape}{dtype}" + ("; pass key_padding_mask= by keyword"
                                                  if name != "x" and isinstance(x, Tensor)
                                                  and x.dtype == torch.bool else ""))

    def _project(self, query: Tensor, key: Tensor, value: Tensor, self_attn: bool
                 ) -> tuple[Tensor, Tensor, Tensor]:
        h, hk, hd = self.num_heads, self.num_kv_heads, self.head_dim
        e, kv = self.embed_dim, hk * hd
        if not self.packed:
            return (_split_heads(self.q_proj(query), h), _split_heads(self.k_proj(key), hk),
                    _split_heads(self.v_proj(value), hk))
        w, b = self.in_proj.weight, self.in_proj.bias
        if self_attn and hk == h:
            bsz, n, _ = query.shape
            qkv = self.in_proj(query).view(bsz, n, 3, h, hd).permute(2, 0, 3, 1, 4)
            # unbind, not qkv[0], qkv[1], qkv[2]: its backward writes one gradient buffer where
            # three selects would each zero-fill a buffer of the whole projection
            q, k, v = qkv.unbind(0)
            return q, k, v
        if self_attn:
            q, k, v = self.in_proj(query).split([e, kv, kv], -1)
            return _split_heads(q, h), _split_heads(k, hk), _split_heads(v, hk)

        def part(x: Tensor, lo: int, hi: int) -> Tensor:
            return F.linear(x, w[lo:hi], None if b is None else b[lo:hi])

        q = part(query, 0, e)
        if key is value:
            k, v = part(key, e, e + 2 * kv).split([kv, kv], -1)
        else:
            k, v = part(key, e, e + kv), part(value, e + kv, e + 2 * kv)
        return _split_heads(q, h), _split_heads(k, hk), _split_heads(v, hk)

    def _rotate(self, q: Tensor, k: Tensor, offset: int) -> tuple[Tensor, Tensor]:
        if not self.rotary:
            return q, k
        n_k = k.shape[2]
        pos = torch.arange(offset, offset + n_k, device=q.device)
        return (apply_rotary_embedding(q, pos[n_k - q.shape[2]:], self.rotary_base),
                apply_rotary_embedding(k, pos, self.rotary_base))

    def _merge(self, out: Tensor) -> Tensor:
        b, _, n, _ = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, self.embed_dim))
        return out if self.batch_first else out.transpose(0, 1)

    def _sdpa_mask(self, attn_mask: Tensor | None, b: int, n_q: int, n_k: int) -> Tensor | None:
        """nn.MultiheadAttention's attn_mask (True = not allowed; (L, S) or (B*H, L, S)) in
        SDPA's convention (True = may attend; broadcastable to (B, H, L, S))."""
        if attn_mask is None:
            return None
        if not isinstance(attn_mask, Tensor) or attn_mask.dim() not in (2, 3):
            shape = tuple(attn_mask.shape) if isinstance(attn_mask, Tensor) else \
                type(attn_mask).__name__
            raise ValueError(f"attn_mask must be (seq_q, seq_k) or (batch * num_heads, seq_q, "
                             f"seq_k) as in nn.MultiheadAttention, got {shape}")
        if attn_mask.dim() == 3:
            if attn_mask.shape != (b * self.num_heads, n_q, n_k):
                raise ValueError(f"attn_mask must have shape (batch * num_heads, seq_q, seq_k) "
                                 f"= {(b * self.num_heads, n_q, n_k)}, got "
                                 f"{tuple(attn_mask.shape)}")
            attn_mask = attn_mask.view(b, self.num_heads, n_q, n_k)
        elif attn_mask.shape != (n_q, n_k):
            raise ValueError(f"attn_mask must have shape (seq_q, seq_k) = {(n_q, n_k)}, got "
                             f"{tuple(attn_mask.shape)}")
        return ~attn_mask if attn_mask.dtype == torch.bool else attn_mask

    # ------------------------------------------------------------ forward, decoding

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                key_padding_mask: Tensor | None = None, need_weights: bool | None = None,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool | None = None):
        self._check_input("x" if key is None else "query", query, self.embed_dim)
        self_attn = key is None
        if key is None:
            if value is not None:
                raise ValueError("value given without key: pass (query, key, value) or "
                                 "(x, context)")
            key = value = query
        elif value is None:
            value = key
        self._check_input("key", key, self.kdim)
        self._check_input("value", value, self.vdim)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, n_q, n_k = query.shape[0], query.shape[1], key.shape[1]
        if key.shape[:2] != value.shape[:2] or key.shape[0] != b:
            raise ValueError(f"query, key, value must agree in batch and key, value in seq, got "
                             f"query {tuple(query.shape)}, key {tuple(key.shape)}, value "
                             f"{tuple(value.shape)} (batch_first={self.batch_first})")
        check_mask(key_padding_mask, b, n_k, query.device)
        if need_weights is not None:
            check_bool("need_weights", need_weights)
        mask = self._sdpa_mask(attn_mask, b, n_q, n_k)
        if self._projects_first(mask, is_causal, n_k):
            out = self._merge(self._linformer_projecting_first(query, key, value,
                                                               key_padding_mask))
            return out if need_weights is None else (out, None)
        q, k, v = self._project(query, key, value, self_attn)
        q, k = self._rotate(q, k, 0)
        kwargs = {}
        if mask is not None:
            kwargs["attn_mask"] = mask
        if is_causal is not None:
            kwargs["is_causal"] = check_bool("is_causal", is_causal)
        if self.num_kv_heads != self.num_heads:
            kwargs["enable_gqa"] = True
        out = self._merge(self.attention(q, k, v, key_padding_mask, **kwargs))
        if need_weights is None:
            return out
        weights = None
        if need_weights and isinstance(self.attention, SoftmaxAttention):
            causal = self.attention.causal if is_causal is None else is_causal
            weights = softmax_attention_weights(
                q, k, key_padding_mask, causal, self.attention.scale, attn_mask=mask,
                enable_gqa=self.num_kv_heads != self.num_heads)
            if average_attn_weights:
                weights = weights.mean(1)
        return out, weights

    def _projects_first(self, mask: Tensor | None, is_causal: bool | None, n_k: int) -> bool:
        """Linformer by the cheaper product order (E X) W (see
        :func:`~efflab.attention.linformer.project_then_map`): where E is shared by the heads
        and shorter than the sequence. Not with rotary embeddings (they rotate each key by its
        position before E mixes the positions, so E no longer commutes with the map), nor with
        attn_mask / is_causal (the general path gives those their errors)."""
        return (isinstance(self.attention, LinformerAttention) and self.attention.projects_first()
                and not self.rotary and mask is None and not is_causal
                and self.attention.k < n_k)

    def _linformer_projecting_first(self, query: Tensor, key: Tensor, value: Tensor,
                                    key_padding_mask: Tensor | None) -> Tensor:
        e, kv = self.embed_dim, self.num_kv_heads * self.head_dim
        if self.packed:
            w, bias = self.in_proj.weight, self.in_proj.bias
            bq, bk, bv = (None,) * 3 if bias is None else bias.split([e, kv, kv])
            q = F.linear(query, w[:e], bq)
            wk, wv = w[e:e + kv], w[e + kv:]
        else:
            q = self.q_proj(query)
            wk, bk = self.k_proj.weight, self.k_proj.bias
            wv, bv = self.v_proj.weight, self.v_proj.bias
        return self.attention.forward_inputs(_split_heads(q, self.num_heads), key, value,
                                             wk, bk, wv, bv, key_padding_mask)

    def _one_input(self, what: str, x: Tensor, one: bool) -> None:
        self._check_input("x", x, self.embed_dim)
        if not self.batch_first:
            raise ValueError(f"{what} takes batch_first inputs (batch, seq, embed_dim)")
        if one and x.shape[1] != 1:
            raise ValueError(f"step takes x of shape (batch, 1, embed_dim), got {tuple(x.shape)}")

    def _recurrent(self, what: str):
        fn = getattr(self.attention, what, None)
        if fn is None:
            raise ValueError(f"{what} needs an attention with a recurrent form (causal "
                             f"performer), got {type(self.attention).__name__}")
        return fn

    def _decode(self, what: str, x: Tensor, state: FavorState | None,
                key_padding_mask: Tensor | None) -> tuple[Tensor, FavorState]:
        fn = self._recurrent(what)
        self._one_input(what, x, what == "step")
        offset = 0
        if state is not None:
            if not isinstance(state, tuple) or len(state) != 3:
                raise ValueError(f"state must be a FavorState from step / prefill or None, got "
                                 f"{type(state).__name__}")
            offset = state.length
        q, k, v = self._project(x, x, x, True)
        q, k = self._rotate(q, k, offset)
        kwargs = {"enable_gqa": True} if self.num_kv_heads != self.num_heads else {}
        out, state = fn(q, k, v, key_padding_mask=key_padding_mask, state=state, **kwargs)
        return self._merge(out), state

    def step(self, x: Tensor, state: FavorState | None = None,
             key_padding_mask: Tensor | None = None) -> tuple[Tensor, FavorState]:
        """Recurrent decoding of one position, x (batch, 1, embed_dim): needs a mechanism with
        a ``step`` (causal Performer). Returns (out (batch, 1, embed_dim), state)."""
        return self._decode("step", x, state, key_padding_mask)

    def prefill(self, x: Tensor, state: FavorState | None = None,
                key_padding_mask: Tensor | None = None) -> tuple[Tensor, FavorState]:
        """The causal pass over a prompt x (batch, seq, embed_dim) (or the next chunk of one,
        continuing ``state``), returning (out, state) to continue with :meth:`step`."""
        return self._decode("prefill", x, state, key_padding_mask)

    def extra_repr(self) -> str:
        extra = "" if self.num_kv_heads == self.num_heads else f", num_kv_heads={self.num_kv_heads}"
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{extra}"
