"""Performer / FAVOR+ attention (Choromanski et al. 2020, arXiv 2009.14794).

Implements: the random feature maps of Sec. 2.3 (positive softmax features, Lemma 1; the
hyperbolic variant; trigonometric features, Eq. 5, kept for the comparison of Fig. 4;
generalized attention with ReLU, Sec. 2.2), orthogonal random features (Sec. 2.4),
bidirectional FAVOR+ (Sec. 2.1, Eq. 4) and unidirectional (causal) FAVOR+ by prefix sums
(Sec. 2.1, Fig. 1 right) computed in chunks, plus the recurrent one-token form for decoding.

How the numbers stay finite. Every feature map is written as ``phi(x) = f(x) * exp(s(x))`` with
``f`` bounded and ``s`` a per-position log-scale (for the exp-based maps ``s`` is the largest
exponent of that position). The attention output is a ratio, so any factor common to the
numerator and the denominator of one output may be dropped:

* per query: ``exp(s(q_t))`` is dropped outright;
* per key: keys are rescaled by ``exp(s(k_j) - g)`` with a shift ``g`` common to all keys an
  output sees. Bidirectional: ``g`` is the max over all (unpadded) keys. Causal: ``g_t`` is the
  running max over keys ``j <= t`` only, so no output ever depends on a future position, not
  even through the stabilizer (subtracting one max over the whole sequence is the leak of a
  popular port). Inside the chunked scan the shifts meet as ``exp(g_j - g_t) <= 1``.

The shift is mathematically a no-op, so it is detached: gradients are exact.

Shapes: q (batch, heads, seq_q, head_dim), k (batch, heads, seq_k, head_dim),
v (batch, heads, seq_k, head_dim_v), key_padding_mask (batch, seq_k) bool with True = padding,
projection (num_features, head_dim); the output is (batch, heads, seq_q, head_dim_v).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from efflab.attention._checks import (
    check_mask,
    check_positive_int,
    check_qkv,
    compute_dtype,
    no_autocast,
)

FEATURE_MAPS = ("positive", "hyperbolic", "trig", "relu")
_EXP_MAPS = ("positive", "hyperbolic")
NORMS = ("chi", "fixed")


# ---------------------------------------------------------------- random features (Sec. 2.4)

def features_seed(seed: int, redraw_count: int) -> int:
    """The generator seed of draw number ``redraw_count``: a pure function of both, so every
    process of a distributed job draws the same features without talking to the others."""
    return int(np.random.SeedSequence([int(seed), int(redraw_count)]).generate_state(
        1, dtype=np.uint64)[0])


def draw_random_features(num_features: int, dim: int, orthogonal: bool = True,
                         norm: str = "chi", generator: torch.Generator | None = None,
                         dtype: torch.dtype = torch.float64,
                         device: torch.device | str = "cpu") -> Tensor:
    """Random projection W (num_features, dim) with rows distributed as N(0, I_dim).

    ``orthogonal``: rows come in dim x dim blocks whose rows are exactly orthogonal (QR of a
    Gaussian matrix with the sign correction Q diag(sign(diag R)), which makes Q Haar
    distributed; without it the draw is biased), then rescaled to norms drawn from chi(dim)
    (``norm="chi"``, each row marginally N(0, I)) or all equal to sqrt(dim) (``"fixed"``).
    ``orthogonal=False``: iid Gaussian rows. Drawn in float64 on the CPU, then cast/moved.
    """
    check_positive_int("num_features", num_features)
    check_positive_int("dim", dim)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not orthogonal:
        w = torch.randn(num_features, dim, generator=generator, dtype=torch.float64)
        return w.to(dtype=dtype, device=device)
    blocks = math.ceil(num_features / dim)
    gauss = torch.randn(blocks, dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    rows = q.transpose(-1, -2).reshape(blocks * dim, dim)[:num_features]
    if norm == "chi":
        norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1)
    else:
        norms = torch.full((num_features,), math.sqrt(dim), dtype=torch.float64)
    return (rows * norms[:, None]).to(dtype=dtype, device=device)


# ---------------------------------------------------------------- feature maps (Sec. 2.2-2.3)

def random_feature_map(x: Tensor, projection: Tensor, kind: str = "positive",
                       kernel_eps: float = 1e-3) -> Tensor:
    """phi(x), written straight from the paper (no stabilization): the reference definition.

    x: (..., dim) already scaled (for softmax attention x = q / dim^(1/4)); projection W
    (m, dim). Returns (..., m) for ``positive`` and ``relu``, (..., 2m) for ``hyperbolic`` and
    ``trig``. For the first three, E[phi(x) . phi(y)] = exp(x . y) when W has N(0, I) rows.

    positive:   exp(W x - |x|^2/2) / sqrt(m)
    hyperbolic: exp(-|x|^2/2) / sqrt(2m) [exp(W x), exp(-W x)]
    trig:       exp(|x|^2/2) / sqrt(m) [sin(W x), cos(W x)]
    relu:       relu(W x) + kernel_eps (generalized attention, not a softmax estimator)
    """
    _check_kind(kind)
    m = projection.shape[0]
    z = x @ projection.transpose(-1, -2)
    half_sq = (x * x).sum(-1, keepdim=True) / 2
    if kind == "positive":
        return torch.exp(z - half_sq) / math.sqrt(m)
    if kind == "hyperbolic":
        return torch.exp(-half_sq) / math.sqrt(2 * m) * torch.cat([z.exp(), (-z).exp()], -1)
    if kind == "trig":
        return torch.exp(half_sq) / math.sqrt(m) * torch.cat([z.sin(), z.cos()], -1)
    return torch.relu(z) + kernel_eps


def _check_kind(kind: str) -> None:
    if kind not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {kind!r}")


def _query_features(x: Tensor, w: Tensor, kind: str, kernel_eps: float) -> Tensor:
    """phi(x) up to a positive per-position factor (which cancels in the attention ratio)."""
    z = x @ w.transpose(-1, -2)
    if kind == "positive":
        return torch.exp(z - z.detach().amax(-1, keepdim=True))
    if kind == "hyperbolic":
        zz = torch.cat([z, -z], -1)
        return torch.exp(zz - zz.detach().amax(-1, keepdim=True))
    if kind == "trig":
        return torch.cat([z.sin(), z.cos()], -1)
    return torch.relu(z) + kernel_eps


def _key_parts(y: Tensor, w: Tensor, kind: str, kernel_eps: float) -> tuple[Tensor, Tensor]:
    """(u, s) with phi(y) proportional to exp(u) (exp maps; s = max of u over features) or to
    u * exp(s) (trig, relu). s: (..., seq) (detached for the exp maps, where it only sets
    the shift); constant factors common to all keys are
    dropped."""
    z = y @ w.transpose(-1, -2)
    half_sq = (y * y).sum(-1) / 2
    if kind == "positive":
        u = z - half_sq[..., None]
    elif kind == "hyperbolic":
        u = torch.cat([z, -z], -1) - half_sq[..., None]
    elif kind == "trig":
        return torch.cat([z.sin(), z.cos()], -1), half_sq
    else:
        return torch.relu(z) + kernel_eps, torch.zeros_like(half_sq)
    return u, u.detach().amax(-1)


def _shifted_keys(u: Tensor, s: Tensor, g: Tensor, kind: str) -> Tensor:
    """phi(k_j) * exp(-g_j) for per-position shifts g (..., seq) (or a broadcastable (..., 1))."""
    if kind in _EXP_MAPS:
        return torch.exp(u - g[..., None])
    return u * torch.exp(s - g)[..., None]


def _key_shift(s: Tensor, pad: Tensor | None, causal: bool) -> Tensor:
    """g: the running max of s over j <= t (causal) or the max over all keys (..., 1), padding
    excluded; a position that has seen only padding gets 0 (its keys are all zero anyway)."""
    s = s.detach()
    if pad is not None:
        s = s.masked_fill(pad, float("-inf"))
    g = torch.cummax(s, dim=-1).values if causal else s.amax(-1, keepdim=True)
    return torch.where(torch.isfinite(g), g, torch.zeros_like(g))


def _denominator(den: Tensor, kind: str) -> Tensor:
    # Positive maps give den > 0 unless everything underflowed (then the numerator is 0 too,
    # and 0 / tiny = 0); trigonometric features can give den <= 0: that is their known flaw,
    # kept, except that a query with no key at all (den exactly 0) gets 0 rather than NaN.
    if kind == "trig":
        return torch.where(den == 0, torch.ones_like(den), den)
    return den.clamp_min(torch.finfo(den.dtype).tiny)


# ---------------------------------------------------------------- causal prefix sums (Sec. 2.1)

def causal_linear_attention_reference(a: Tensor, b: Tensor, v: Tensor, g: Tensor) -> Tensor:
    """Y_t = sum_{j <= t} (a_t . b_j) exp(g_j - g_t) v_j, with the full (seq x seq) matrix.

    a, b: (..., seq, m), v: (..., seq, e), g: (..., seq). Returns (..., seq, e).
    """
    n = a.shape[-2]
    scores = a @ b.transpose(-1, -2) * torch.exp(g[..., None, :] - g[..., :, None])
    tril = torch.ones(n, n, dtype=torch.bool, device=a.device).tril()
    return torch.where(tril, scores, torch.zeros_like(scores)) @ v


def _causal_scan(a: Tensor, b: Tensor, v: Tensor, g: Tensor, chunk_size: int) -> Tensor:
    """Chunked form of :func:`causal_linear_attention_reference` for nondecreasing g.

    Carries the state S = sum_{j < chunk start} exp(g_j - g_prev) b_j v_j^T (m x e) between
    chunks and does exact (chunk x chunk) products inside one: memory O(seq (m + e) +
    chunk m e), never the (seq, m, e) tensor of all prefix sums. Every exponent is <= 0.
    """
    n, m, e = a.shape[-2], a.shape[-1], v.shape[-1]
    lead = a.shape[:-2]
    out = v.new_empty(*lead, n, e)
    state = v.new_zeros(*lead, m, e)
    g_state = None
    tril = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=a.device).tril()
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        c = stop - start
        ac, bc, vc, gc = a[..., start:stop, :], b[..., start:stop, :], v[..., start:stop, :], \
            g[..., start:stop]
        # exp(g_j - g_t) for j <= t; the clamp only matters where g was reset by padding,
        # and there b_j = 0.
        decay = torch.exp((gc[..., None, :] - gc[..., :, None]).clamp(max=0))
        scores = ac @ bc.transpose(-1, -2)
        scores = torch.where(tril[:c, :c], scores * decay, torch.zeros_like(scores))
        o = scores @ vc
        if g_state is not None:
            carry = torch.exp((g_state[..., None] - gc).clamp(max=0))
            o = o + (ac @ state) * carry[..., None]
        out[..., start:stop, :] = o
        g_end = gc[..., -1]
        w_end = torch.exp((gc - g_end[..., None]).clamp(max=0))
        new = (bc * w_end[..., None]).transpose(-1, -2) @ vc
        if g_state is not None:
            new = new + state * torch.exp((g_state - g_end).clamp(max=0))[..., None, None]
        state, g_state = new, g_end
    return out


class _CausalLinearAttention(torch.autograd.Function):
    """Chunked scan with a hand-written backward: three more scans (two of them run backwards
    in time), so training keeps the O(seq (m + e) + chunk m e) memory bound too."""

    @staticmethod
    def forward(ctx, a, b, v, g, chunk_size):
        ctx.save_for_backward(a, b, v, g)
        ctx.chunk_size = chunk_size
        return _causal_scan(a, b, v, g, chunk_size)

    @staticmethod
    def backward(ctx, dy):
        a, b, v, g = ctx.saved_tensors
        c = ctx.chunk_size
        dy = dy.contiguous()
        da = db = dv = None
        # dA_t = sum_{j<=t} w_tj (dy_t . v_j) b_j: the same causal form.
        if ctx.needs_input_grad[0]:
            da = _causal_scan(dy, v, b, g, c)
        # dB_j, dV_j sum over t >= j: the causal form on time-reversed inputs with shifts -g.
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            rev_g = (-g).flip(-1)
            ra, rdy = a.flip(-2), dy.flip(-2)
            if ctx.needs_input_grad[1]:
                db = _causal_scan(v.flip(-2), rdy, ra, rev_g, c).flip(-2)
            if ctx.needs_input_grad[2]:
                dv = _causal_scan(b.flip(-2), ra, rdy, rev_g, c).flip(-2)
        return da, db, dv, None, None


def causal_linear_attention(a: Tensor, b: Tensor, v: Tensor, g: Tensor,
                            chunk_size: int = 64) -> Tensor:
    """Y_t = sum_{j <= t} (a_t . b_j) exp(g_j - g_t) v_j by chunked prefix sums.

    a, b: (..., seq, m), v: (..., seq, e), g: (..., seq) nondecreasing along seq (not
    differentiated). Reference: :func:`causal_linear_attention_reference`.
    """
    check_positive_int("chunk_size", chunk_size)
    return _CausalLinearAttention.apply(a, b, v, g.detach(), chunk_size)


# ---------------------------------------------------------------- FAVOR+ (Sec. 2.1)

def _check_projection(projection: Tensor, head_dim: int, device: torch.device) -> None:
    if not isinstance(projection, Tensor) or projection.dim() != 2:
        shape = tuple(projection.shape) if isinstance(projection, Tensor) else type(projection)
        raise ValueError(f"projection must be a (num_features, head_dim) tensor, got {shape}")
    if projection.shape[1] != head_dim:
        raise ValueError(
            f"projection must have shape (num_features, head_dim={head_dim}), "
            f"got {tuple(projection.shape)}"
        )
    if projection.shape[0] <= 0:
        raise ValueError(f"projection needs num_features > 0, got {projection.shape[0]}")
    if projection.device != device:
        raise ValueError(f"projection must be on {device} like q, got {projection.device}")


def favor_attention(q: Tensor, k: Tensor, v: Tensor, projection: Tensor,
                    key_padding_mask: Tensor | None = None, causal: bool = False,
                    feature_map: str = "positive", kernel_eps: float = 1e-3,
                    scale: float | None = None, chunk_size: int = 64) -> Tensor:
    """FAVOR+: D^-1 (phi(Q) (phi(K)^T V)) with D = diag(phi(Q) phi(K)^T 1).

    Cost O(seq m head_dim). Causal: prefix sums in chunks of ``chunk_size`` positions. Inputs
    of half precision (or under ``torch.autocast``) are computed in float32 and the output is
    cast back. ``scale`` (default 1/sqrt(head_dim)) plays the role it has in SDPA: the kernel
    estimates exp(scale q.k). Padded keys enter neither numerator nor denominator.
    """
    check_qkv(q, k, v, key_padding_mask, causal)
    _check_projection(projection, q.shape[-1], q.device)
    _check_kind(feature_map)
    check_positive_int("chunk_size", chunk_size)
    out_dtype = v.dtype
    cd = compute_dtype(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    root = math.sqrt(scale)
    with no_autocast(q.device):
        w = projection.to(cd)
        qf = _query_features(q.to(cd) * root, w, feature_map, kernel_eps)
        u, s = _key_parts(k.to(cd) * root, w, feature_map, kernel_eps)
        pad = None if key_padding_mask is None else key_padding_mask[:, None, :]
        g = _key_shift(s, pad, causal)
        kf = _shifted_keys(u, s, g, feature_map)
        if pad is not None:
            kf = kf.masked_fill(pad[..., None], 0.0)
        v1 = torch.cat([v.to(cd), v.new_ones(*v.shape[:-1], 1, dtype=cd)], -1)
        if causal:
            num = causal_linear_attention(qf, kf, v1, g, chunk_size)
        else:
            num = qf @ (kf.transpose(-1, -2) @ v1)
        out = num[..., :-1] / _denominator(num[..., -1:], feature_map)
    return out.to(out_dtype)


def favor_attention_reference(q: Tensor, k: Tensor, v: Tensor, projection: Tensor,
                              key_padding_mask: Tensor | None = None, causal: bool = False,
                              feature_map: str = "positive", kernel_eps: float = 1e-3,
                              scale: float | None = None) -> Tensor:
    """The same by the book: phi from :func:`random_feature_map`, the full (seq_q x seq_k) matrix
    A = phi(Q) phi(K)^T, masked, row-normalized. No stabilization: use float64, small inputs."""
    check_qkv(q, k, v, key_padding_mask, causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    root = math.sqrt(scale)
    w = projection.to(q.dtype)
    a = (random_feature_map(q * root, w, feature_map, kernel_eps)
         @ random_feature_map(k * root, w, feature_map, kernel_eps).transpose(-1, -2))
    if key_padding_mask is not None:
        a = a.masked_fill(key_padding_mask[:, None, None, :], 0.0)
    if causal:
        n = q.shape[2]
        a = a.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=q.device).tril(), 0.0)
    den = a.sum(-1, keepdim=True)
    return (a @ v) / _denominator(den, feature_map)



# ---------------------------------------------------------------- recurrent decoding

class FavorState(NamedTuple):
    """What causal FAVOR+ remembers of the past after each generated token.

    kv: (batch, heads, features, head_dim_v + 1) = sum_j phi(k_j) exp(-shift) [v_j, 1]^T;
    shift: (batch, heads), the running max log-scale of the keys seen (-inf before any).
    """

    kv: Tensor
    shift: Tensor


def favor_step(q: Tensor, k: Tensor, v: Tensor, projection: Tensor,
               state: FavorState | None = None, key_padding_mask: Tensor | None = None,
               feature_map: str = "positive", kernel_eps: float = 1e-3,
               scale: float | None = None) -> tuple[Tensor, FavorState]:
    """One position of causal FAVOR+: O(m head_dim) work, whatever the position.

    q, k, v: (batch, heads, 1, head_dim) for the new position; key_padding_mask: (batch, 1).
    Returns (out (batch, heads, 1, head_dim_v), new state); looping over positions gives the
    outputs of ``favor_attention(..., causal=True)``.
    """
    check_qkv(q, k, v, key_padding_mask, causal=True)
    if q.shape[2] != 1:
        raise ValueError(f"favor_step takes one position: q must have seq 1, got {q.shape[2]}")
    _check_projection(projection, q.shape[-1], q.device)
    _check_kind(feature_map)
    out_dtype = v.dtype
    cd = compute_dtype(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    root = math.sqrt(scale)
    with no_autocast(q.device):
        w = projection.to(cd)
        qf = _query_features(q.to(cd) * root, w, feature_map, kernel_eps)[:, :, 0]
        u, s = _key_parts(k.to(cd) * root, w, feature_map, kernel_eps)
        u, s = u[:, :, 0], s[:, :, 0]
        b, h, dv = v.shape[0], v.shape[1], v.shape[-1]
        if state is None:
            state = FavorState(v.new_zeros(b, h, u.shape[-1], dv + 1, dtype=cd),
                               v.new_full((b, h), float("-inf"), dtype=cd))
        elif state.kv.shape != (b, h, u.shape[-1], dv + 1) or state.shift.shape != (b, h):
            raise ValueError(
                f"state must hold kv {(b, h, u.shape[-1], dv + 1)} and shift {(b, h)}, got "
                f"kv {tuple(state.kv.shape)} and shift {tuple(state.shift.shape)}"
            )
        pad = None if key_padding_mask is None else key_padding_mask[:, :1].expand(b, h)
        s_in = s.detach() if pad is None else s.detach().masked_fill(pad, float("-inf"))
        shift = torch.maximum(state.shift, s_in)
        g_new = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        g_old = torch.where(torch.isfinite(state.shift), state.shift, torch.zeros_like(shift))
        kf = _shifted_keys(u, s, g_new, feature_map)
        if pad is not None:
            kf = kf.masked_fill(pad[..., None], 0.0)
        v1 = torch.cat([v[:, :, 0].to(cd), v.new_ones(b, h, 1, dtype=cd)], -1)
        kv = (state.kv * torch.exp((g_old - g_new).clamp(max=0))[..., None, None]
              + kf[..., :, None] * v1[..., None, :])
        num = (qf[..., None, :] @ kv)[..., 0, :]
        out = num[..., :-1] / _denominator(num[..., -1:], feature_map)
    return out[:, :, None].to(out_dtype), FavorState(kv, shift)


# ---------------------------------------------------------------- module

class PerformerAttention(nn.Module):
    """FAVOR+ attention as a module: ``attn(q, k, v, key_padding_mask=None)``.

    Args:
        head_dim: size of q and k per head (the random features live in this space).
        num_features: m, the number of random projections (paper default 256). ``hyperbolic``
            and ``trig`` output 2m features from them.
        feature_map: ``positive`` (FAVOR+, default), ``hyperbolic``, ``trig``, ``relu``.
        orthogonal: orthogonal random features (default) or iid Gaussian.
        norm: row norms of orthogonal features, ``chi`` (default) or ``fixed`` (sqrt(d)).
        causal: unidirectional attention by chunked prefix sums (``chunk_size`` positions).
        redraw_interval: redraw the features every this many forward passes in training mode
            (None: never on its own; call :meth:`redraw_features`).
        seed: features of draw number r are a function of (seed, r) only.
        kernel_eps: added to ReLU features (paper default 1e-3).
        scale: score scale, default 1/sqrt(head_dim).

    Buffers (saved in the state dict): ``projection`` (num_features, head_dim), ``redraw_count``
    and ``forward_count`` (training forward passes since the last redraw).
    """

    def __init__(self, head_dim: int, num_features: int = 256, feature_map: str = "positive",
                 orthogonal: bool = True, norm: str = "chi", causal: bool = False,
                 chunk_size: int = 64, redraw_interval: int | None = None, seed: int = 0,
                 kernel_eps: float = 1e-3, scale: float | None = None):
        super().__init__()
        check_positive_int("head_dim", head_dim)
        check_positive_int("num_features", num_features)
        check_positive_int("chunk_size", chunk_size)
        _check_kind(feature_map)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if redraw_interval is not None:
            check_positive_int("redraw_interval", redraw_interval)
        self.head_dim = head_dim
        self.num_features = num_features
        self.feature_map = feature_map
        self.orthogonal = bool(orthogonal)
        self.norm = norm
        self.causal = bool(causal)
        self.chunk_size = chunk_size
        self.redraw_interval = redraw_interval
        self.seed = int(seed)
        self.kernel_eps = float(kernel_eps)
        self.scale = scale
        self.register_buffer("redraw_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("forward_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("projection", self._draw(0))

    def _draw(self, count: int) -> Tensor:
        gen = torch.Generator().manual_seed(features_seed(self.seed, count))
        return draw_random_features(self.num_features, self.head_dim, self.orthogonal,
                                    self.norm, generator=gen, dtype=torch.float32)

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Draw the next set of features: draw number ``redraw_count + 1`` of this seed."""
        self.redraw_count += 1
        self.forward_count.zero_()
        w = self._draw(int(self.redraw_count))
        self.projection.copy_(w.to(self.projection.device, self.projection.dtype))

    def forward(self, q: Tensor, k: Tensor, v: Tensor,
                key_padding_mask: Tensor | None = None) -> Tensor:
        if self.training and self.redraw_interval is not None:
            if int(self.forward_count) >= self.redraw_interval:
                self.redraw_features()
            self.forward_count += 1
        return favor_attention(q, k, v, self.projection, key_padding_mask, self.causal,
                               self.feature_map, self.kernel_eps, self.scale, self.chunk_size)

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: FavorState | None = None,
             key_padding_mask: Tensor | None = None) -> tuple[Tensor, FavorState]:
        """Recurrent causal decoding, one position: see :func:`favor_step`."""
        if not self.causal:
            raise ValueError("step is the recurrent form of causal attention; build "
                             "PerformerAttention with causal=True")
        check_mask(key_padding_mask, q.shape[0], 1, q.device)
        return favor_step(q, k, v, self.projection, state, key_padding_mask, self.feature_map,
                          self.kernel_eps, self.scale)

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, num_features={self.num_features}, "
                f"feature_map={self.feature_map!r}, orthogonal={self.orthogonal}, "
                f"causal={self.causal}, redraw_interval={self.redraw_interval}")
