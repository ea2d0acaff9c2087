"""Transformer encoders and causal language models over any efflab attention.

The models of the Long Range Arena comparisons (Tay et al. 2020, arXiv 2011.04006, section 3
and appendix: token embedding + learned positions, pre-norm blocks, pooling, a classifier
head) and of the Efficiency Misnomer's zoo (Dehghani et al. 2021, arXiv 2110.12894,
section 3): layers shared across depth as in Universal Transformers / ALBERT
(``share_layers=True``), and a sparse mixture-of-experts feed-forward with top-1 routing as in
the Switch Transformer (``moe_experts=E``), so that parameters and FLOPs can be moved apart.

Attention is chosen by name with options (``attention="linformer", attention_options=
{"k": 64}``) and built by :class:`efflab.attention.MultiheadAttention`. Linformer's
layerwise sharing (Wang et al. 2020, section 4) hands one projection object to every layer.

Shapes: tokens (batch, seq) integer ids; key_padding_mask (batch, seq) bool, True = padding,
derived from ``pad_id`` when not given. Classifier logits (batch, num_classes); language model
logits (batch, seq, vocab_size).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from efflab.attention import LinformerProjection, MultiheadAttention
from efflab.init import register_zero_rule, zero_matrix
from efflab.models import register_model

POOLINGS = ("mean", "first")


# ------------------------------------------------------------------ mixture of experts


def _route(x: Tensor, router_weight: Tensor) -> tuple[Tensor, Tensor]:
    """Top-1 routing: (expert index (tokens,), gate = its softmax probability (tokens,))."""
    probs = torch.softmax(x @ router_weight.t(), dim=-1)
    gate, expert = probs.max(dim=-1)
    return expert, gate


def moe_feed_forward(x: Tensor, router_weight: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
                     b2: Tensor) -> Tensor:
    """Switch-style sparse feed-forward: each token goes through its one top-1 expert.

    x: (tokens, d); router_weight: (E, d); w1: (E, d, h); b1: (E, h); w2: (E, h, d); b2: (E, d).
    Returns (tokens, d) = gate * expert(x). Tokens are grouped by expert so that each expert
    runs one dense matmul on its own tokens: the work per token is one expert's, whatever E is.
    No capacity limit: no token is dropped.
    """
    expert, gate = _route(x, router_weight)
    order = torch.argsort(expert, stable=True)
    counts = torch.bincount(expert, minlength=w1.shape[0]).tolist()
    xs = x[order]
    outs = []
    for e, part in enumerate(torch.split(xs, counts)):
        if counts[e]:
            outs.append(F.gelu(part @ w1[e] + b1[e]) @ w2[e] + b2[e])
    y = torch.cat(outs) if outs else xs
    out = torch.empty_like(y).index_copy_(0, order, y)
    return out * gate[:, None]


def moe_feed_forward_reference(x: Tensor, router_weight: Tensor, w1: Tensor, b1: Tensor,
                               w2: Tensor, b2: Tensor) -> Tensor:
    """The same written densely: every expert on every token, then keep the routed one."""
    expert, gate = _route(x, router_weight)
    every = torch.einsum("enh,ehd->end", F.gelu(torch.einsum("nd,edh->enh", x, w1)
                                                + b1[:, None]), w2) + b2[:, None]
    chosen = every[expert, torch.arange(x.shape[0], device=x.device)]
    return chosen * gate[:, None]


class MoEFeedForward(nn.Module):
    """Top-1 mixture of ``num_experts`` GELU feed-forwards ``d -> hidden -> d`` with a linear
    router; parameters grow E-fold, FLOPs per token stay those of one expert (plus the router).

    x: (..., d) -> (..., d)
    """

    def __init__(self, embed_dim: int, hidden_dim: int, num_experts: int):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.num_experts = num_experts
        self.router = nn.Parameter(torch.empty(num_experts, embed_dim))
        self.w1 = nn.Parameter(torch.empty(num_experts, embed_dim, hidden_dim))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden_dim))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden_dim, embed_dim))
        self.b2 = nn.Parameter(torch.zeros(num_experts, embed_dim))
        for w in (self.router, self.w1, self.w2):
            nn.init.normal_(w, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = moe_feed_forward(flat, self.router, self.w1, self.b1, self.w2, self.b2)
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        e, d, h = self.w1.shape
        return f"embed_dim={d}, hidden_dim={h}, num_experts={e}, top_k=1"


@register_zero_rule(MoEFeedForward)
@torch.no_grad()
def _moe_zero_rule(module: MoEFeedForward, scale) -> None:
    """ZerO for the mixture: every expert's first layer and the router by Algorithm 1; the
    experts' last layer (the end of the residual branch) at zero, so the block starts as its
    shortcut. The tensors hold ``x @ w`` maps, hence the transposes."""
    e, d, h = module.w1.shape
    kw = {"dtype": module.w1.dtype, "device": module.w1.device}
    module.router.copy_(zero_matrix(e, d, scale, **kw))
    module.w1.copy_(zero_matrix(h, d, scale, **kw).T.expand(e, d, h))
    module.w2.zero_()
    module.b1.zero_()
    module.b2.zero_()


# ------------------------------------------------------------------ blocks


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + ffn(LN(x)).

    x: (batch, seq, d), key_padding_mask: (batch, seq) bool or None -> (batch, seq, d)
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_dim: int, attention: str,
                 attention_options: dict[str, Any], moe_experts: int = 0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = MultiheadAttention(embed_dim, num_heads, attention=attention,
                                       **attention_options)
        self.norm2 = nn.LayerNorm(embed_dim)
        if moe_experts:
            self.ffn: nn.Module = MoEFeedForward(embed_dim, mlp_dim, moe_experts)
        else:
            self.ffn = nn.Sequential(nn.Linear(embed_dim, mlp_dim), nn.GELU(),
                                     nn.Linear(mlp_dim, embed_dim))
        self.dropout = nn.Dropout(dropout)

    @property
    def branch_last(self) -> tuple[nn.Module, ...]:
        """The last layer of each residual branch (ZerO starts them at zero). A mixture of
        experts zeroes its own last layer in its ZerO rule."""
        if isinstance(self.ffn, MoEFeedForward):
            return (self.attn.out_proj,)
        return (self.attn.out_proj, self.ffn[-1])

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), key_padding_mask=key_padding_mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


class TransformerEncoder(nn.Module):
    """Token embedding + learned positions, ``depth`` pre-norm blocks, a final LayerNorm.

    ``share_layers``: one block applied ``depth`` times (its parameters stored once; the block
    is registered ``depth`` times so that a naive count still sees the unshared size).
    ``attention_options["sharing"] == "layerwise"`` (Linformer): one projection for all layers.

    tokens: (batch, seq) -> hidden (batch, seq, embed_dim), key_padding_mask (batch, seq) or
    None when nothing is padded.
    """

    def __init__(self, vocab_size: int, max_seq_len: int, embed_dim: int = 64, depth: int = 2,
                 num_heads: int = 4, mlp_dim: int = 128, attention: str = "softmax",
                 attention_options: dict[str, Any] | None = None, causal: bool = False,
                 dropout: float = 0.0, share_layers: bool = False, moe_experts: int = 0,
                 pad_id: int | None = 0):
        super().__init__()
        _check_positive(vocab_size=vocab_size, max_seq_len=max_seq_len, embed_dim=embed_dim,
                        depth=depth, num_heads=num_heads, mlp_dim=mlp_dim)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim must be divisible by num_heads, got embed_dim="
                             f"{embed_dim}, num_heads={num_heads}")
        if not isinstance(moe_experts, int) or moe_experts < 0:
            raise ValueError(f"moe_experts must be an int >= 0 (0 = dense), got {moe_experts!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if pad_id is not None and not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id must be in [0, vocab_size={vocab_size}) or None, "
                             f"got {pad_id}")
        self.vocab_size, self.max_seq_len, self.embed_dim = vocab_size, max_seq_len, embed_dim
        self.depth, self.causal, self.pad_id = depth, bool(causal), pad_id
        self.attention = attention
        options = self._attention_options(attention, dict(attention_options or {}), max_seq_len)
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.position_embedding = nn.Embedding(max_seq_len, embed_dim)
        self.dropout = nn.Dropout(dropout)

        def block() -> Block:
            return Block(embed_dim, num_heads, mlp_dim, attention, options, moe_experts, dropout)

        shared = block() if share_layers else None
        self.blocks = nn.ModuleList([shared if shared is not None else block()
                                     for _ in range(depth)])
        self.share_layers = bool(share_layers)
        self.norm = nn.LayerNorm(embed_dim)
        self.reset_parameters()

    def _attention_options(self, attention: str, options: dict[str, Any], max_seq_len: int
                           ) -> dict[str, Any]:
        if "causal" in options and bool(options["causal"]) != self.causal:
            raise ValueError(f"attention_options causal={options['causal']} contradicts the "
                             f"model's causal={self.causal}")
        options["causal"] = self.causal
        options.setdefault("max_seq_len", max_seq_len)  # every mechanism accepts it
        if attention == "linformer":
            if options.get("sharing") == "layerwise" and options.get("projection") is None:
                k = options.get("k") or min(256, options["max_seq_len"])
                options["projection"] = LinformerProjection(
                    options["max_seq_len"], k, kind=options.pop("kind", "learned"))
        return options

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, 0.02) embeddings and linear weights, zero biases (BERT / LRA style)."""
        # attention layers keep the attention package's own initialization
        skip = {id(m) for blk in self.blocks for m in blk.attn.modules()}
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.Linear) and id(m) not in skip:
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def padding_mask(self, tokens: Tensor, key_padding_mask: Tensor | None) -> Tensor | None:
        """The mask to use: the given one (checked), else ``tokens == pad_id``; None when no
        position is padded, so attention can take its unmasked fast path."""
        b, n = tokens.shape
        if key_padding_mask is not None:
            m = key_padding_mask
            if not isinstance(m, Tensor) or m.dtype != torch.bool or tuple(m.shape) != (b, n):
                got = (f"{tuple(m.shape)} {m.dtype}" if isinstance(m, Tensor)
                       else type(m).__name__)
                raise ValueError(f"key_padding_mask must be a bool tensor of shape (batch, seq) "
                                 f"= {(b, n)}, got {got}")
        elif self.pad_id is not None:
            m = tokens == self.pad_id
        else:
            return None
        return m if bool(m.any()) else None

    def forward(self, tokens: Tensor, key_padding_mask: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
            got = (f"shape {tuple(tokens.shape)} dtype {tokens.dtype}"
                   if isinstance(tokens, Tensor) else type(tokens).__name__)
            raise ValueError(f"tokens must be an integer tensor of shape (batch, seq), got {got}")
        n = tokens.shape[1]
        if n > self.max_seq_len:
            raise ValueError(f"sequence length {n} exceeds max_seq_len={self.max_seq_len}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, vocab_size={self.vocab_size}), got "
                             f"min {int(tokens.min())}, max {int(tokens.max())}")
        mask = self.padding_mask(tokens, key_padding_mask)
        tokens = tokens.long()
        positions = torch.arange(n, device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for blk in self.blocks:
            x = blk(x, key_padding_mask=mask)
        return self.norm(x), mask


# ------------------------------------------------------------------ models


class TransformerClassifier(nn.Module):
    """Encoder, pooling over unpadded positions (``mean``, or ``first`` token), linear head.

    model(tokens (batch, seq), key_padding_mask=None) -> logits (batch, num_classes)
    """

    def __init__(self, num_classes: int, pooling: str = "mean", **encoder: Any):
        super().__init__()
        _check_positive(num_classes=num_classes)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if encoder.get("causal"):
            raise ValueError("transformer_classifier is bidirectional; use transformer_lm for "
                             "a causal model")
        self.encoder = TransformerEncoder(**encoder)
        self.pooling = pooling
        self.head = nn.Linear(self.encoder.embed_dim, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def classifier(self) -> nn.Module:
        """The final classifier (ZerO starts it at zero)."""
        return self.head

    def forward(self, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        h, mask = self.encoder(tokens, key_padding_mask)
        if self.pooling == "first":
            pooled = h[:, 0]
        elif mask is None:
            pooled = h.mean(dim=1)
        else:
            keep = (~mask).to(h.dtype)[..., None]
            pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)
        return self.head(pooled)


class TransformerLM(nn.Module):
    """Causal encoder and a next-token head (optionally tied to the token embedding).

    model(tokens (batch, seq), key_padding_mask=None) -> logits (batch, seq, vocab_size);
    logits[:, t] predicts token t + 1 from tokens 0..t.
    """

    def __init__(self, tie_embeddings: bool = False, **encoder: Any):
        super().__init__()
        if encoder.get("causal") is False:
            raise ValueError("transformer_lm is causal; got causal=False")
        encoder["causal"] = True
        self.encoder = TransformerEncoder(**encoder)
        self.head = nn.Linear(self.encoder.embed_dim, self.encoder.vocab_size, bias=False)
        if tie_embeddings:
            self.head.weight = self.encoder.token_embedding.weight
        else:
            nn.init.normal_(self.head.weight, std=0.02)

    def forward(self, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        h, _ = self.encoder(tokens, key_padding_mask)
        return self.head(h)


def lm_loss(logits: Tensor, tokens: Tensor, pad_id: int | None = 0) -> Tensor:
    """Mean next-token cross entropy: logits (batch, seq, vocab) at t scored on tokens[t + 1];
    targets equal to ``pad_id`` are ignored."""
    target = tokens[:, 1:].long()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1),
                           ignore_index=-100 if pad_id is None else pad_id)


@register_model("transformer_classifier")
def transformer_classifier(vocab_size: int = 16, num_classes: int = 10, max_seq_len: int = 2048,
                           embed_dim: int = 64, depth: int = 2, num_heads: int = 4,
                           mlp_dim: int = 128, attention: str = "softmax",
                           attention_options: dict[str, Any] | None = None,
                           pooling: str = "mean", dropout: float = 0.0,
                           share_layers: bool = False, moe_experts: int = 0,
                           pad_id: int | None = 0) -> TransformerClassifier:
    """Encoder classifier (LRA's). Defaults fit ListOps (16 token ids, 10 classes, pad id 0)."""
    return TransformerClassifier(
        num_classes, pooling, vocab_size=vocab_size, max_seq_len=max_seq_len,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_dim=mlp_dim,
        attention=attention, attention_options=attention_options, dropout=dropout,
        share_layers=share_layers, moe_experts=moe_experts, pad_id=pad_id)


@register_model("transformer_lm")
def transformer_lm(vocab_size: int = 256, max_seq_len: int = 1024, embed_dim: int = 64,
                   depth: int = 2, num_heads: int = 4, mlp_dim: int = 128,
                   attention: str = "softmax", attention_options: dict[str, Any] | None = None,
                   dropout: float = 0.0, share_layers: bool = False, moe_experts: int = 0,
                   pad_id: int | None = 0, tie_embeddings: bool = False) -> TransformerLM:
    """Causal language model; ``attention`` must support ``causal=True`` (not Linformer)."""
    return TransformerLM(
        tie_embeddings, vocab_size=vocab_size, max_seq_len=max_seq_len, embed_dim=embed_dim,
        depth=depth, num_heads=num_heads, mlp_dim=mlp_dim, attention=attention,
        attention_options=attention_options, dropout=dropout, share_layers=share_layers,
        moe_experts=moe_experts, pad_id=pad_id)


__all__ = [
    "Block", "MoEFeedForward", "TransformerClassifier", "TransformerEncoder", "TransformerLM",
    "lm_loss", "moe_feed_forward", "moe_feed_forward_reference", "transformer_classifier",
    "transformer_lm",
]
