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

from efflab.attention._checks import check_positive_int, check_qkv
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


def projected_padding_mask(e: Tensor, key_padding_mask: Tensor | None) -> Tensor | None:
    """(batch, k) bool, True where projected key i is empty: no head's row E[:, i] has a
    nonzero weight on an unpadded key. None when every projected key has support."""
    nonzero = (e != 0).any(dim=0).to(e.dtype)  # (k, seq)
    if key_padding_mask is None:
        empty = nonzero.sum(-1) == 0
        return None if not bool(empty.any()) else empty[None].expand(1, -1)
    valid = (~key_padding_mask).to(e.dtype)
    return (valid @ nonzero.transpose(0, 1)) == 0


def _check_inputs(q, k, v, key_projection, value_projection, key_padding_mask):
    check_qkv(q, k, v, key_padding_mask)
    heads, n = k.shape[1], k.shape[2]
    _check_projection_matrix("key_projection", key_projection, heads, n, q)
    _check_projection_matrix("value_projection", value_projection, heads, n, q)
    if key_projection.shape[1] != value_projection.shape[1]:
        raise ValueError(
            f"key_projection and value_projection must have the same k, got "
            f"{key_projection.shape[1]} and {value_projection.shape[1]}"
        )


def linformer_attention(q: Tensor, k: Tensor, v: Tensor, key_projection: Tensor,
                        value_projection: Tensor, key_padding_mask: Tensor | None = None,
                        scale: float | None = None) -> Tensor:
    """softmax(Q (E K)^T * scale) (F V), padded keys zeroed before projecting.

    key_projection E, value_projection F: (1 or heads, k, seq) (1 = shared by the heads).
    """
    _check_inputs(q, k, v, key_projection, value_projection, key_padding_mask)
    if key_padding_mask is not None:
        keep = ~key_padding_mask[:, None, :, None]
        k = k * keep
        v = v * keep
    kp = _project(key_projection, k)
    vp = _project(value_projection, v)
    empty = projected_padding_mask(key_projection, key_padding_mask)
    if empty is not None:
        empty = empty.expand(q.shape[0], -1)
    return softmax_attention(q, kp, vp, key_padding_mask=empty, scale=scale)


def _project(e: Tensor, x: Tensor) -> Tensor:
    # One GEMM over all (batch, heads, head_dim) columns when the heads share E.
    if e.shape[0] == 1:
        return torch.einsum("kn,bhnd->bhkd", e[0], x)
    return torch.einsum("hkn,bhnd->bhkd", e, x)


def linformer_attention_reference(q: Tensor, k: Tensor, v: Tensor, key_projection: Tensor,
                                  value_projection: Tensor,
                                  key_padding_mask: Tensor | None = None,
                                  scale: float | None = None) -> Tensor:
    """The same by the book, one (batch, head) at a time, with the naive softmax."""
    _check_inputs(q, k, v, key_projection, value_projection, key_padding_mask)
    b, h, n = k.shape[:3]
    kp = k.new_zeros(b, h, key_projection.shape[1], k.shape[-1])
    vp = v.new_zeros(b, h, value_projection.shape[1], v.shape[-1])
    for i in range(b):
        keep = torch.ones(n, dtype=k.dtype, device=k.device)
        if key_padding_mask is not None:
            keep = (~key_padding_mask[i]).to(k.dtype)
        for j in range(h):
            e = key_projection[j if key_projection.shape[0] > 1 else 0]
            f = value_projection[j if value_projection.shape[0] > 1 else 0]
            kp[i, j] = e @ (k[i, j] * keep[:, None])
            vp[i, j] = f @ (v[i, j] * keep[:, None])
    empty = projected_padding_mask(key_projection, key_padding_mask)
    if empty is not None:
        empty = empty.expand(b, -1)
    return softmax_attention_reference(q, kp, vp, key_padding_mask=empty, scale=scale)


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
            pass ``causal=`` to every attention alike.
        scale: score scale, default 1/sqrt(head_dim).
    """

    def __init__(self, max_seq_len: int | None = None, k: int | None = None,
                 num_heads: int | None = None, sharing: str | None = None,
                 kind: str = "learned", projection: LinformerProjection | None = None,
                 causal: bool = False, scale: float | None = None):
        super().__init__()
        if causal:
            raise ValueError(_CAUSAL_ERROR)
        if sharing is None:
            sharing = "layerwise" if projection is not None else "headwise"
        if sharing not in SHARING:
            raise ValueError(f"sharing must be one of {SHARING}, got {sharing!r}")
        self.sharing = sharing
        self.scale = scale
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

    def forward(self, q: Tensor, k: Tensor, v: Tensor,
                key_padding_mask: Tensor | None = None) -> Tensor:
        n = k.shape[2] if isinstance(k, Tensor) and k.dim() == 4 else None
        if n is None:
            check_qkv(q, k, v, key_padding_mask)
        if n > self.max_seq_len:
            raise ValueError(f"sequence length {n} exceeds LinformerAttention's max_seq_len "
                             f"{self.max_seq_len}; build it with max_seq_len >= {n}")
        e = self.key_projection.matrix(n).to(q.dtype)
        f = e if self.value_projection is self.key_projection else \
            self.value_projection.matrix(n).to(q.dtype)
        return linformer_attention(q, k, v, e, f, key_padding_mask, self.scale)

    def extra_repr(self) -> str:
        return f"max_seq_len={self.max_seq_len}, k={self.k}, sharing={self.sharing!r}"
