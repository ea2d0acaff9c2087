"""Linformer attention (Wang et al. 2020, arXiv 2006.04768).

Implements Sec. 4 (Eq. 7): keys and values are projected along the sequence axis,
K' = E K and V' = F V with E, F of shape (k x n), and attention is softmax(Q K'^T / sqrt(d)) V':
cost O(n k) instead of O(n^2). Sec. 4's "additional efficiency techniques": parameter sharing
(``none`` / ``headwise`` / ``key-value`` / ``layerwise``), nonuniform k per layer (each layer is
built with its own ``k``), and projection kinds other than a learned matrix (mean pooling, and
convolution with kernel = stride = n / k).

Padding and short inputs, which the paper does not spell out: padded keys and values are
zeroed *before* the projection (otherwise padding leaks into every projected key); a sequence
shorter than ``max_seq_len`` uses the first n columns of E and F; a projected key whose row of
E touches no unpadded key (an empty pooling window) is left out of the softmax. Linformer is
not causal: E mixes future positions into every projected key, so ``causal=True`` is refused.

Shapes: q (batch, heads, seq_q, head_dim), k (batch, heads, seq, head_dim),
v (batch, heads, seq, head_dim_v), key_padding_mask (batch, seq) bool with True = padding;
projection matrices (1 or heads, k, seq); the output is (batch, heads, seq_q, head_dim_v).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from efflab.attention._checks import (
    as_4d,
    check_bool,
    check_dropout,
    check_positive_int,
    check_qkv,
    check_scale,
    key_mask_from_attn_mask,
    resolve_causal,
)
from efflab.attention.softmax import softmax_attention, softmax_attention_reference

PROJECTION_KINDS = ("learned", "mean", "conv")
SHARING = ("none", "headwise", "key-value", "layerwise")

_CAUSAL_ERROR = (
    "Linformer cannot be causal: the projection E K mixes every position, future ones "
    "included, into each projected key, so masking the (n x k) score matrix does not make it "
    "causal (the paper's model is a bidirectional encoder). Use attention='performer' or "
    "'softmax' with causal=True."
)


def _check_projection_matrix(name: str, e: Tensor, heads: int, seq: int, q: Tensor) -> None:
    if not isinstance(e, Tensor) or e.dim() != 3:
        shape = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
        raise ValueError(f"{name} must be a (1 or heads, k, seq) tensor, got {shape}")
    if e.shape[0] not in (1, heads) or e.shape[2] != seq:
        raise ValueError(
            f"{name} must have shape (1 or heads={heads}, k, seq={seq}), got {tuple(e.shape)}"
        )
    if e.dtype != q.dtype or e.device != q.device:
        raise ValueError(
            f"{name} must match q's dtype {q.dtype} and device {q.device}, "
            f"got {e.dtype} on {e.device}"
        )


def projected_padding_mask(e: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """(batch or 1, k) bool, True where projected key i is empty: no head's row E[:, i] has a
    nonzero weight on an unpadded key. Tensor ops only (no data-dependent branch), so the
    whole forward pass compiles as one graph."""
    nonzero = (e != 0).any(dim=0).to(e.dtype)  # (k, seq)
    if key_padding_mask is None:
        return (nonzero.sum(-1) == 0)[None]
    valid = (~key_padding_mask).to(e.dtype)
    return (valid @ nonzero.transpose(0, 1)) == 0


def _prepare(q, k, v, key_projection, value_projection, key_padding_mask, is_causal,
             attn_mask, enable_gqa, scale):
    if is_causal is not None and is_causal is not False:
        raise ValueError(_CAUSAL_ERROR)
    check_qkv(q, k, v, key_padding_mask, False, enable_gqa)
    was_3d, (q, k, v) = as_4d(q, k, v)
    key_padding_mask = key_mask_from_attn_mask(attn_mask, key_padding_mask, q.shape[0],
                                               k.shape[2], "Linformer")
    heads, n = k.shape[1], k.shape[2]
    _check_projection_matrix("key_projection", key_projection, heads, n, q)
    _check_projection_matrix("value_projection", value_projection, heads, n, q)
    if key_projection.shape[1] != value_projection.shape[1]:
        raise ValueError(
            f"key_projection and value_projection must have the same k, got "
            f"{key_projection.shape[1]} and {value_projection.shape[1]}"
        )
    return was_3d, q, k, v, key_padding_mask, check_scale(scale)


def _window_sizes(e: Tensor, key_padding_mask: Tensor | None, batch: int) -> Tensor:
    """(batch, 1 or heads, k, 1): the row sums of E over the unpadded keys, 1 where empty."""
    valid = torch.ones(batch, e.shape[-1], dtype=e.dtype, device=e.device) \
        if key_padding_mask is None else (~key_padding_mask).to(e.dtype)
    sums = torch.einsum("bn,hkn->bhk", valid, e)[..., None]
    return torch.where(sums > 0, sums, torch.ones_like(sums))


def linformer_attention(q: Tensor, k: Tensor, v: Tensor, key_projection: Tensor,
                        value_projection: Tensor, key_padding_mask: Tensor | None = None,
                        scale: float | None = None, *, attn_mask: Tensor | None = None,
                        dropout_p: float = 0.0, is_causal: bool | None = None,
                        enable_gqa: bool = False, normalize: bool = False) -> Tensor:
    """softmax(Q (E K)^T * scale) (F V), padded keys zeroed before projecting.

    key_projection E, value_projection F: (1 or heads, k, seq) (1 = shared by the heads).
    ``normalize``: divide each projected key and value by its row of E summed over the unpadded
    keys (for mean pooling: the mean over the window's unpadded keys, not over its size).
    SDPA keywords: ``attn_mask`` only as a key mask (bool (batch, 1, 1, seq), True = attend);
    ``dropout_p`` on the (seq_q x k) attention weights; ``is_causal`` must be False (see the
    module docstring); ``enable_gqa``: k, v with fewer heads (projected once per kv head).
    """
    was_3d, q, k, v, key_padding_mask, scale = _prepare(
        q, k, v, key_projection, value_projection, key_padding_mask, is_causal, attn_mask,
        enable_gqa, scale)
    check_bool("normalize", normalize)
    if key_padding_mask is not None:
        keep = ~key_padding_mask[:, None, :, None]
        k = k * keep
        v = v * keep
    # under autocast the projection comes out in the autocast dtype: back to q's, SDPA casts
    kp = _project(key_projection, k).to(q.dtype)
    vp = _project(value_projection, v).to(q.dtype)
    out = _attend_projected(q, kp, vp, key_projection, value_projection, key_padding_mask,
                            scale, dropout_p, normalize, k.shape[1])
    return out[:, 0] if was_3d else out


def _attend_projected(q: Tensor, kp: Tensor, vp: Tensor, key_projection: Tensor,
                      value_projection: Tensor, key_padding_mask: Tensor | None,
                      scale: float | None, dropout_p: float, normalize: bool,
                      kv_heads: int) -> Tensor:
    """Softmax attention of q over the projected keys and values (batch, kv_heads, k, d)."""
    if normalize:
        kp = kp / _window_sizes(key_projection, key_padding_mask, q.shape[0])
        vp = vp / _window_sizes(value_projection, key_padding_mask, q.shape[0])
    empty = projected_padding_mask(key_projection, key_padding_mask).expand(q.shape[0], -1)
    return softmax_attention(q, kp, vp, key_padding_mask=empty, scale=scale,
                             dropout_p=dropout_p, enable_gqa=q.shape[1] != kv_heads)


def project_then_map(e: Tensor, f: Tensor, key: Tensor, value: Tensor, weight_k: Tensor,
                     bias_k: Tensor | None, weight_v: Tensor, bias_v: Tensor | None,
                     key_padding_mask: Tensor | None, kv_heads: int) -> tuple[Tensor, Tensor]:
    """The projected keys and values by the cheaper product order (issue #21, target 4).

    The paper maps first, K = M (X W^T + 1 b^T) (M = diag(m), m marking unpadded positions),
    then projects: E K, an (n x c x kv_dim) product and a (k x n x kv_dim) one. The sequence
    projection commutes with the linear map: E M (X W^T + 1 b^T) = (E M X) W^T + (E m) b^T, a
    (k x n x c) product and a (k x c x kv_dim) one: cheaper whenever k < n. E, F are shared by
    the heads here ((1, k, n)): per-head E would project the c-wide X once per head, which costs
    more than it saves. key, value: (batch, n, c) (the same tensor projects once when E is F);
    weight (kv_dim, c), bias (kv_dim,); returns (batch, kv_heads, k, kv_dim / kv_heads) each.
    """
    if e.shape[0] != 1 or f.shape[0] != 1:
        raise ValueError(f"project_then_map needs projections shared by the heads, shape "
                         f"(1, k, n), got {tuple(e.shape)} and {tuple(f.shape)}")
    valid = None if key_padding_mask is None else (~key_padding_mask).to(key.dtype)
    # squeeze, not e[0]: the backward of a select zero-fills a buffer of the whole projection
    shared = e is f
    e, f = e.squeeze(0), f.squeeze(0)
    k = e.shape[0]

    def masked(x: Tensor) -> Tensor:
        return x if valid is None else x * valid[..., None]

    if key is value and shared:
        ex = fx = torch.einsum("kn,bnc->bkc", e, masked(key))
    elif key is value:  # one GEMM of [E; F] over the shared input
        both = torch.einsum("kn,bnc->bkc", torch.cat([e, f]), masked(key))
        ex, fx = both[:, :k], both[:, k:]
    else:
        ex = torch.einsum("kn,bnc->bkc", e, masked(key))
        fx = torch.einsum("kn,bnc->bkc", f, masked(value))

    def mapped(ex: Tensor, e: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        out = ex @ weight.transpose(0, 1)
        if bias is not None:
            # E m: the row sums of E over the unpadded positions, (batch, k)
            em = e.sum(-1).expand(key.shape[0], -1) if valid is None else valid @ e.transpose(0, 1)
            out = out + em[..., None] * bias
        b = out.shape[0]
        return out.view(b, k, kv_heads, -1).transpose(1, 2)

    return mapped(ex, e, weight_k, bias_k), mapped(fx, f, weight_v, bias_v)


def _project(e: Tensor, x: Tensor) -> Tensor:
    # One GEMM over all (batch, heads, head_dim) columns when the heads share E.
    if e.shape[0] == 1:
        return torch.einsum("kn,bhnd->bhkd", e.squeeze(0), x)
    return torch.einsum("hkn,bhnd->bhkd", e, x)


def linformer_attention_reference(q: Tensor, k: Tensor, v: Tensor, key_projection: Tensor,
                                  value_projection: Tensor,
                                  key_padding_mask: Tensor | None = None,
                                  scale: float | None = None, *, enable_gqa: bool = False,
                                  normalize: bool = False) -> Tensor:
    """The same by the book, one (batch, head) at a time, with the naive softmax; a
    normalized projected key is the weighted mean over the window's unpadded keys."""
    was_3d, q, k, v, key_padding_mask, scale = _prepare(
        q, k, v, key_projection, value_projection, key_padding_mask, None, None, enable_gqa,
        scale)
    b, h, n = k.shape[:3]
    kp = k.new_zeros(b, h, key_projection.shape[1], k.shape[-1])
    vp = v.new_zeros(b, h, value_projection.shape[1], v.shape[-1])
    for i in range(b):
        keep = torch.ones(n, dtype=k.dtype, device=k.device)
        if key_padding_mask is not None:
            keep = (~key_padding_mask[i]).to(k.dtype)
        for j in range(h):
            e = key_projection[j if key_projection.shape[0] > 1 else 0] * keep
            f = value_projection[j if value_projection.shape[0] > 1 else 0] * keep
            if normalize:
                e = e / torch.where(e.sum(1, keepdim=True) > 0, e.sum(1, keepdim=True), 1.0)
                f = f / torch.where(f.sum(1, keepdim=True) > 0, f.sum(1, keepdim=True), 1.0)
            kp[i, j] = e @ k[i, j]
            vp[i, j] = f @ v[i, j]
    empty = projected_padding_mask(key_projection, key_padding_mask).expand(b, -1)
    out = softmax_attention_reference(q, kp, vp, key_padding_mask=empty, scale=scale,
                                      enable_gqa=q.shape[1] != h)
    return out[:, 0] if was_3d else out


class LinformerProjection(nn.Module):
    """One sequence-axis projection E (heads, k, max_seq_len), ``heads`` = 1 when shared.

    Kinds: ``learned`` (a dense matrix, entries N(0, 1/k)); ``mean`` (mean pooling over windows
    of max_seq_len / k positions, no parameters); ``conv`` (a learned kernel of that length
    applied with stride = kernel, initialized to the mean). Hand one instance to every layer
    for the paper's layerwise sharing: ``LinformerAttention(projection=shared)``.
    """

    def __init__(self, max_seq_len: int, k: int, kind: str = "learned", heads: int = 1):
        super().__init__()
        check_positive_int("max_seq_len", max_seq_len)
        check_positive_int("k", k)
        check_positive_int("heads", heads)
        if kind not in PROJECTION_KINDS:
            raise ValueError(f"kind must be one of {PROJECTION_KINDS}, got {kind!r}")
        if k > max_seq_len:
            raise ValueError(f"k {k} must be <= max_seq_len {max_seq_len}: Linformer projects "
                             f"max_seq_len keys down to k")
        self.max_seq_len, self.k, self.kind, self.heads = max_seq_len, k, kind, heads
        if kind == "learned":
            self.weight = nn.Parameter(torch.randn(heads, k, max_seq_len) / math.sqrt(k))
            return
        if max_seq_len % k != 0:
            raise ValueError(
                f"kind={kind!r} pools windows of max_seq_len / k positions: max_seq_len "
                f"{max_seq_len} must be a multiple of k {k}"
            )
        stride = max_seq_len // k
        kernel = torch.full((heads, stride), 1.0 / stride)
        if kind == "conv":
            self.kernel = nn.Parameter(kernel)
        else:
            self.register_buffer("kernel", kernel, persistent=False)

    def matrix(self, seq_len: int) -> Tensor:
        """E restricted to the first ``seq_len`` positions: (heads, k, seq_len)."""
        if seq_len > self.max_seq_len:
            raise ValueError(
                f"sequence length {seq_len} exceeds the Linformer projection's max_seq_len "
                f"{self.max_seq_len}; build it with max_seq_len >= {seq_len}"
            )
        if self.kind == "learned":
            return self.weight[..., :seq_len]
        eye = torch.eye(self.k, dtype=self.kernel.dtype, device=self.kernel.device)
        # Row i holds the kernel on positions [i*stride, (i+1)*stride): a strided convolution.
        e = (eye[None, :, :, None] * self.kernel[:, None, None, :]).reshape(
            self.heads, self.k, self.max_seq_len)
        return e[..., :seq_len]

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Project x (batch, heads, seq, d) along seq -> (batch, heads, k, d), padding zeroed."""
        if key_padding_mask is not None:
            x = x * ~key_padding_mask[:, None, :, None]
        return _project(self.matrix(x.shape[2]).to(x.dtype), x)

    def extra_repr(self) -> str:
        return f"max_seq_len={self.max_seq_len}, k={self.k}, kind={self.kind!r}, heads={self.heads}"


class LinformerAttention(nn.Module):
    """Linformer attention as a module: ``attn(q, k, v, key_padding_mask=None)``.

    Args:
        max_seq_len: longest sequence (columns of E, F); shorter ones use the first columns.
        k: projected length (default min(256, max_seq_len)); may differ from layer to layer.
        num_heads: needed for ``sharing="none"`` (one E and one F per head).
        sharing: ``none``, ``headwise`` (one E, one F per layer; the default), ``key-value``
            (E = F per layer), ``layerwise`` (``projection`` given: one E = F for all layers).
        kind: ``learned``, ``mean`` or ``conv`` (ignored when ``projection`` is given).
        projection: a :class:`LinformerProjection` shared with other layers (layerwise).
        causal: must be False (see the module docstring); accepted so that model builders can
            pass ``causal=`` to every attention alike (alias ``is_causal``).
        scale: score scale, default 1/sqrt(head_dim).
        dropout: dropout on the (seq x k) attention weights in training mode.

    ``kind="mean"`` divides each pooled key by the number of unpadded keys in its window.
    """

    def __init__(self, max_seq_len: int | None = None, k: int | None = None,
                 num_heads: int | None = None, sharing: str | None = None,
                 kind: str = "learned", projection: LinformerProjection | None = None,
                 causal: bool = False, scale: float | None = None, *,
                 is_causal: bool | None = None, dropout: float = 0.0):
        super().__init__()
        if resolve_causal(causal, is_causal):
            raise ValueError(_CAUSAL_ERROR)
        self.dropout = check_dropout(dropout, True, "Linformer")
        if sharing is None:
            sharing = "layerwise" if projection is not None else "headwise"
        if sharing not in SHARING:
            raise ValueError(f"sharing must be one of {SHARING}, got {sharing!r}")
        self.sharing = sharing
        self.scale = check_scale(scale)
        if sharing == "layerwise":
            if not isinstance(projection, LinformerProjection):
                raise ValueError(
                    "sharing='layerwise' needs projection=LinformerProjection(max_seq_len, k), "
                    f"one instance handed to every layer; got projection={projection!r}"
                )
            if projection.heads != 1:
                raise ValueError(f"a layerwise projection is shared by all heads: heads must "
                                 f"be 1, got {projection.heads}")
            if max_seq_len is not None and max_seq_len != projection.max_seq_len:
                raise ValueError(f"max_seq_len {max_seq_len} differs from the shared "
                                 f"projection's max_seq_len {projection.max_seq_len}")
            if k is not None and k != projection.k:
                raise ValueError(f"k {k} differs from the shared projection's k {projection.k}")
            self.key_projection = self.value_projection = projection
        else:
            if projection is not None:
                raise ValueError(f"projection= is for sharing='layerwise', got sharing={sharing!r}")
            if max_seq_len is None:
                raise ValueError("LinformerAttention needs max_seq_len (the longest sequence)")
            check_positive_int("max_seq_len", max_seq_len)
            k = min(256, max_seq_len) if k is None else check_positive_int("k", k)
            heads = 1
            if sharing == "none":
                if num_heads is None:
                    raise ValueError("sharing='none' needs num_heads (one E and F per head)")
                heads = check_positive_int("num_heads", num_heads)
            self.key_projection = LinformerProjection(max_seq_len, k, kind, heads)
            self.value_projection = (self.key_projection if sharing == "key-value"
                                     else LinformerProjection(max_seq_len, k, kind, heads))
        self.max_seq_len = self.key_projection.max_seq_len
        self.k = self.key_projection.k

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
                *, attn_mask: Tensor | None = None, is_causal: bool | None = None,
                enable_gqa: bool = False, dropout_p: float | None = None) -> Tensor:
        if not isinstance(k, Tensor) or k.dim() not in (3, 4):
            check_qkv(q, k, v, key_padding_mask)
        n = k.shape[-2]
        if n > self.max_seq_len:
            raise ValueError(f"sequence length {n} exceeds LinformerAttention's max_seq_len "
                             f"{self.max_seq_len}; build it with max_seq_len >= {n}")
        dtype = q.dtype if isinstance(q, Tensor) else k.dtype
        e = self.key_projection.matrix(n).to(dtype)
        f = e if self.value_projection is self.key_projection else \
            self.value_projection.matrix(n).to(dtype)
        if dropout_p is None:
            dropout_p = self.dropout if self.training else 0.0
        return linformer_attention(q, k, v, e, f, key_padding_mask, self.scale,
                                   attn_mask=attn_mask, dropout_p=dropout_p,
                                   is_causal=is_causal, enable_gqa=enable_gqa,
                                   normalize=self.key_projection.kind == "mean")

    def projects_first(self) -> bool:
        """Whether :meth:`forward_inputs` may take the cheaper order: E, F shared by the heads
        (every sharing but ``none``; any kind, each is a matrix E linear in the input)."""
        return self.key_projection.heads == 1 and self.value_projection.heads == 1

    def forward_inputs(self, q: Tensor, key: Tensor, value: Tensor, weight_k: Tensor,
                       bias_k: Tensor | None, weight_v: Tensor, bias_v: Tensor | None,
                       key_padding_mask: Tensor | None = None) -> Tensor:
        """The same output as ``forward(q, key W_k^T + b_k, value W_v^T + b_v)`` with heads
        split, computed by :func:`project_then_map`. q: (batch, heads, seq_q, head_dim);
        key, value: (batch, n, c) before their linear maps; weights (kv_heads * head_dim, c)."""
        n = key.shape[1]
        if n > self.max_seq_len:
            raise ValueError(f"sequence length {n} exceeds LinformerAttention's max_seq_len "
                             f"{self.max_seq_len}; build it with max_seq_len >= {n}")
        e = self.key_projection.matrix(n).to(q.dtype)
        f = e if self.value_projection is self.key_projection else \
            self.value_projection.matrix(n).to(q.dtype)
        kv_heads = weight_k.shape[0] // q.shape[-1]
        kp, vp = project_then_map(e, f, key, value, weight_k, bias_k, weight_v, bias_v,
                                  key_padding_mask, kv_heads)
        dropout_p = self.dropout if self.training else 0.0
        return _attend_projected(q, kp.to(q.dtype), vp.to(q.dtype), e, f, key_padding_mask,
                                 self.scale, dropout_p, self.key_projection.kind == "mean",
                                 kv_heads)

    def extra_repr(self) -> str:
        return f"max_seq_len={self.max_seq_len}, k={self.k}, sharing={self.sharing!r}"
