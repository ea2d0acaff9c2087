"""Multi-head attention with a pluggable mechanism, and the by-name builder.

``MultiheadAttention`` is the usual block (Vaswani et al. 2017, Sec. 3.2.2): one input
projection to q, k, v, a split into heads, an attention mechanism on
(batch, heads, seq, head_dim), the heads merged and an output projection. The mechanism is
softmax (exact), Linformer or Performer, given by name with keyword options or as a module.
"""

from __future__ import annotations

import inspect

from torch import Tensor, nn

from efflab.attention._checks import check_mask, check_positive_int
from efflab.attention.linformer import LinformerAttention
from efflab.attention.performer import FavorState, PerformerAttention
from efflab.attention.softmax import SoftmaxAttention

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


class MultiheadAttention(nn.Module):
    """``mha(x, key_padding_mask=None)``: x (batch, seq, embed_dim) -> (batch, seq, embed_dim).

    Args:
        embed_dim: model width; split into ``num_heads`` heads of embed_dim / num_heads.
        num_heads: number of heads.
        attention: ``"softmax"``, ``"linformer"``, ``"performer"`` (built by
            :func:`build_attention` with ``head_dim``, ``num_heads`` and ``attention_options``),
            or a q/k/v-level module called as ``attn(q, k, v, key_padding_mask)``.
        bias: biases in the input and output projections.
        **attention_options: passed to the mechanism, e.g. ``causal=True``, ``max_seq_len=``,
            ``k=``, ``projection=`` (Linformer), ``num_features=``, ``feature_map=`` (Performer).

    key_padding_mask: (batch, seq) bool, True = padding.
    """

    def __init__(self, embed_dim: int, num_heads: int, attention: str | nn.Module = "softmax",
                 bias: bool = True, **attention_options):
        super().__init__()
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("num_heads", num_heads)
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj.weight)
        if bias:
            nn.init.zeros_(self.in_proj.bias)
            nn.init.zeros_(self.out_proj.bias)
        if isinstance(attention, nn.Module):
            if attention_options:
                raise ValueError(f"attention options {sorted(attention_options)} only apply when "
                                 "attention is given by name, not as a module")
            self.attention = attention
        elif isinstance(attention, str):
            fixed = sorted({"head_dim", "num_heads"} & set(attention_options))
            if fixed:
                raise ValueError(f"attention option(s) {fixed} are set by MultiheadAttention "
                                 f"from embed_dim and num_heads; leave them out")
            self.attention = build_attention(attention, head_dim=self.head_dim,
                                             num_heads=num_heads, **attention_options)
        else:
            raise ValueError(f"attention must be a name in {sorted(ATTENTIONS)} or an nn.Module, "
                             f"got {type(attention).__name__}")

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.embed_dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, seq, embed_dim={self.embed_dim}), "
                             f"got {shape}")
        b, n, _ = x.shape
        qkv = self.in_proj(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # unbind, not qkv[0], qkv[1], qkv[2]: its backward writes one gradient buffer where
        # three selects would each zero-fill a buffer of the whole projection
        q, k, v = qkv.unbind(0)
        return q, k, v

    def _merge(self, out: Tensor) -> Tensor:
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.embed_dim))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        q, k, v = self._qkv(x)
        check_mask(key_padding_mask, x.shape[0], x.shape[1], x.device)
        return self._merge(self.attention(q, k, v, key_padding_mask))

    def step(self, x: Tensor, state: FavorState | None = None,
             key_padding_mask: Tensor | None = None) -> tuple[Tensor, FavorState]:
        """Recurrent decoding of one position, x (batch, 1, embed_dim): needs a mechanism with
        a ``step`` (causal Performer). Returns (out (batch, 1, embed_dim), state)."""
        if not hasattr(self.attention, "step"):
            raise ValueError(f"step needs an attention with a recurrent form (causal "
                             f"performer), got {type(self.attention).__name__}")
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"step takes x of shape (batch, 1, embed_dim), got {shape}")
        q, k, v = self._qkv(x)
        out, state = self.attention.step(q, k, v, state, key_padding_mask)
        return self._merge(out), state

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
