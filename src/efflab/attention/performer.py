"""Performer / FAVOR+ attention (Choromanski et al. 2020, arXiv 2009.14794).

Implements the FAVOR+ mechanism of the paper's Sec. 2: the random feature maps (positive
softmax features of Lemma 1 and their hyperbolic variant; trigonometric features, kept for
the comparison of the approximation figure; generalized attention with ReLU), orthogonal
random features, bidirectional FAVOR+ and unidirectional (causal) FAVOR+ by prefix sums,
computed here in chunks, plus the recurrent one-token form for decoding. (Section numbers
follow arXiv v4 as recalled, unverified here; the names are the paper's.)

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


class _ShiftedExp(torch.autograd.Function):
    """exp(z - c[..., None]) with one buffer forward and one backward: the hot elementwise
    step of the exp feature maps (autograd would add a negated copy for c's gradient)."""

    @staticmethod
    def forward(ctx, z, c):
        out = (z - c[..., None]).exp_()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        dz = grad * out
        dc = -dz.sum(-1) if ctx.needs_input_grad[1] else None
        return dz, dc


def _exp_logits(x: Tensor, w: Tensor, kind: str) -> Tensor:
    z = x @ w.transpose(-1, -2)
    return torch.cat([z, -z], -1) if kind == "hyperbolic" else z


def _query_features(x: Tensor, w: Tensor, kind: str, kernel_eps: float) -> Tensor:
    """phi(x) up to a positive per-position factor (which cancels in the attention ratio)."""
    if kind in _EXP_MAPS:
        z = _exp_logits(x, w, kind)
        return _ShiftedExp.apply(z, z.detach().amax(-1))
    z = x @ w.transpose(-1, -2)
    if kind == "trig":
        return torch.cat([z.sin(), z.cos()], -1)
    return torch.relu(z) + kernel_eps


def _key_parts(y: Tensor, w: Tensor, kind: str, kernel_eps: float
               ) -> tuple[Tensor, Tensor, Tensor]:
    """(u, s, half_sq) with half_sq = |y|^2 / 2 and phi(y) proportional to exp(u - half_sq)
    (exp maps; s = max of that exponent, detached: it only sets the shift) or to u * exp(s)
    (trig, relu). s, half_sq: (..., seq). Factors common to all keys are dropped."""
    half_sq = (y * y).sum(-1) / 2
    if kind in _EXP_MAPS:
        u = _exp_logits(y, w, kind)
        return u, u.detach().amax(-1) - half_sq.detach(), half_sq
    z = y @ w.transpose(-1, -2)
    if kind == "trig":
        return torch.cat([z.sin(), z.cos()], -1), half_sq, half_sq
    return torch.relu(z) + kernel_eps, torch.zeros_like(half_sq), half_sq


def _shifted_keys(u: Tensor, s: Tensor, half_sq: Tensor, g: Tensor, kind: str) -> Tensor:
    """phi(k_j) * exp(-g_j) for per-position shifts g (..., seq) (or a broadcastable (..., 1))."""
    if kind in _EXP_MAPS:
        return _ShiftedExp.apply(u, half_sq + g)
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


#: positions per group of chunks in the causal scan (see ``_causal_scan``)
_GROUP_POSITIONS = 1024


def _causal_scan(a: Tensor, b: Tensor, v: Tensor, g: Tensor, chunk_size: int,
                 reverse: bool = False) -> Tensor:
    """Chunked form of :func:`causal_linear_attention_reference`.

    Forward (g nondecreasing along seq): Y_t = sum_{j <= t} (a_t . b_j) exp(g_j - g_t) v_j.
    ``reverse`` (g nonincreasing): the same sum over j >= t, which the backward pass needs.
    Exact (chunk x chunk) products inside every chunk, all chunks in one batched product;
    what earlier chunks contribute goes through (m x e) states S = sum_j exp(g_j - g_ref)
    b_j v_j^T, g_ref being g at a chunk boundary. Memory O(seq (m + e + chunk) +
    group m e) with group = 1024 / chunk chunks: never the (seq, m, e) tensor of all prefix
    sums. Every exponent is <= 0 (the clamps only bite where padding reset g, and there
    b_j = 0).
    """
    lead, (n, m), e = a.shape[:-2], a.shape[-2:], v.shape[-1]
    batch = math.prod(lead)
    a, b, v, g = (a.reshape(batch, n, m), b.reshape(batch, n, m), v.reshape(batch, n, e),
                  g.reshape(batch, n))
    c = min(chunk_size, n)
    pad = (-n) % c
    if pad:  # zero rows change no sum; g repeats its last value
        a, b, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (a, b, v))
        g = torch.cat([g, g[:, -1:].expand(batch, pad)], 1)
    chunks = (n + pad) // c
    ar, br, vr, gr = (a.view(batch, chunks, c, m), b.view(batch, chunks, c, m),
                      v.view(batch, chunks, c, e), g.view(batch, chunks, c))
    inside = torch.ones(c, c, dtype=torch.bool, device=a.device)
    inside = inside.triu() if reverse else inside.tril()
    decay = torch.exp((gr[..., None, :] - gr[..., :, None]).clamp(max=0))  # [t, j]
    scores = (ar @ br.transpose(-1, -2)).mul_(decay).masked_fill_(~inside, 0.0)
    out = scores @ vr
    ref = gr[..., 0] if reverse else gr[..., -1]  # (batch, chunks)
    # exp(g_j - ref) folds position j into the state (on v: e <= m columns to scale), and
    # exp(ref_prev - g_t) brings the state of the chunks already done to position t.
    v_fold = vr * torch.exp((gr - ref[..., None]).clamp(max=0))[..., None]
    ref_prev = torch.roll(ref, 1 if not reverse else -1, dims=1)  # the chunk scanned before
    carry = torch.exp((ref_prev[..., None] - gr).clamp(max=0))[..., None]
    # Chunks are taken in groups: inside a group the states entering each chunk come from one
    # (group x group) mixing of the chunk summaries U_i = B_i^T (fold * V_i), which keeps the
    # number of tensor ops at O(seq / (group chunk)) instead of O(seq / chunk); between groups
    # one (m x e) state C is carried.
    group = max(1, _GROUP_POSITIONS // c)
    before = torch.ones(group, group, dtype=torch.bool, device=a.device)
    before = before.triu(1) if reverse else before.tril(-1)  # [i, i']: i' scanned before i
    state = v.new_zeros(batch, m, e)
    state_ref = ref[:, -1 if reverse else 0]
    starts = range(0, chunks, group)
    for s in (reversed(starts) if reverse else starts):
        t = min(s + group, chunks)
        k = t - s
        summaries = br[:, s:t].transpose(-1, -2) @ v_fold[:, s:t]  # (batch, k, m, e)
        r, r_prev = ref[:, s:t], ref_prev[:, s:t]
        mix = torch.exp((r[:, None, :] - r_prev[:, :, None]).clamp(max=0))
        mix = mix.masked_fill_(~before[:k, :k], 0.0)
        flat = summaries.view(batch, k, m * e)
        entering = (mix @ flat).view(batch, k, m, e)
        entering.addcmul_(torch.exp((state_ref[:, None] - r_prev).clamp(max=0))[..., None, None],
                          state[:, None])
        out[:, s:t].addcmul_(ar[:, s:t] @ entering, carry[:, s:t])
        r_last = ref[:, s if reverse else t - 1]
        fold = torch.exp((r - r_last[:, None]).clamp(max=0))
        state = (fold[:, None, :] @ flat).view(batch, m, e).addcmul_(
            state, torch.exp((state_ref - r_last).clamp(max=0))[:, None, None])
        state_ref = r_last
    return out.view(batch, chunks * c, e)[:, :n].reshape(*lead, n, e)


class _CausalLinearAttention(torch.autograd.Function):
    """Chunked scan with a hand-written backward: three more scans (two of them running
    backwards in time), so training keeps the same memory bound."""

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
        # dB_j, dV_j sum over t >= j with w_tj = exp(g_j - g_t) = exp((-g)_t - (-g)_j).
        if ctx.needs_input_grad[1]:
            db = _causal_scan(v, dy, a, -g, c, reverse=True)
        if ctx.needs_input_grad[2]:
            dv = _causal_scan(b, a, dy, -g, c, reverse=True)
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


class _PositiveFavor(torch.autograd.Function):
    """FAVOR+ with positive features, fused: the same computation as the composed path
    (``_query_features`` ... ``causal_linear_attention``), with a hand-written backward that
    works in place on the (seq x m) feature buffers. On a CPU most of FAVOR+'s time goes to
    allocating and touching those buffers, so this halves their number. The projection is a
    buffer (never differentiated).

    x, y: (batch, heads, seq, head_dim) scaled queries and keys; v: (..., seq, head_dim_v).
    """

    @staticmethod
    def forward(ctx, x, y, v, w, pad, causal, chunk_size):
        zq = x @ w.transpose(-1, -2)
        qf = zq.sub_(zq.amax(-1, keepdim=True)).exp_()
        kf = y @ w.transpose(-1, -2)
        half_sq = (y * y).sum(-1) / 2
        g = _key_shift(kf.amax(-1) - half_sq, pad, causal)
        kf.sub_((half_sq + g)[..., None]).exp_()
        if pad is not None:
            kf.masked_fill_(pad[..., None], 0.0)
        v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], -1)
        if causal:
            num = _causal_scan(qf, kf, v1, g, chunk_size)
        else:
            num = qf @ (kf.transpose(-1, -2) @ v1)
        den = num[..., -1:]
        out = num[..., :-1] / _denominator(den, "positive")
        ctx.save_for_backward(y, w, qf, kf, v1, g, out, den)
        ctx.causal, ctx.chunk_size = causal, chunk_size
        return out

    @staticmethod
    def backward(ctx, dout):
        y, w, qf, kf, v1, g, out, den = ctx.saved_tensors
        safe = _denominator(den, "positive")
        # out = num_v / den: d num_v = dout / den, d den = -sum(dout * out) / den
        dden = -(dout * out).sum(-1, keepdim=True) / safe
        dden = torch.where(den > torch.finfo(den.dtype).tiny, dden, torch.zeros_like(dden))
        dnum = torch.cat([dout / safe, dden], -1)
        # One (seq x m) gradient buffer alive at a time: dx is done before dkf is made.
        c = ctx.chunk_size
        if ctx.causal:
            dqf = _causal_scan(dnum, v1, kf, g, c)
        else:
            dkv = qf.transpose(-1, -2) @ dnum
            dqf = dnum @ (kf.transpose(-1, -2) @ v1).transpose(-1, -2)
        dx = dqf.mul_(qf) @ w  # the query shift is a per-row constant: no gradient through it
        del dqf
        if ctx.causal:
            dv1 = _causal_scan(kf, qf, dnum, -g, c, reverse=True)
            dkf = _causal_scan(v1, dnum, qf, -g, c, reverse=True)
        else:
            dv1 = kf @ dkv
            dkf = v1 @ dkv.transpose(-1, -2)
        dzk = dkf.mul_(kf)  # padded rows have kf = 0, so they get none
        dy = dzk @ w - dzk.sum(-1, keepdim=True) * y  # through -|y|^2 / 2
        return dx, dy, dv1[..., :-1], None, None, None, None


def favor_attention(q: Tensor, k: Tensor, v: Tensor, projection: Tensor,
                    key_padding_mask: Tensor | None = None, causal: bool = False,
                    feature_map: str = "positive", kernel_eps: float = 1e-3,
                    scale: float | None = None, chunk_size: int = 64) -> Tensor:
    """FAVOR+: D^-1 (phi(Q) (phi(K)^T V)) with D = diag(phi(Q) phi(K)^T 1).

    Cost O(seq m head_dim). Causal: prefix sums in chunks of ``chunk_size`` positions. Inputs
    of half precision (or under ``torch.autocast``) are computed in float32 and the output is
    cast back. ``scale`` (default 1/sqrt(head_dim)) plays the role it has in SDPA: the kernel
    estimates exp(scale q.k). Padded keys enter neither numerator nor denominator.
    The default ``positive`` map with a fixed projection (a buffer) takes a fused path with
    its own backward; a projection that requires grad, or another map, is differentiated by
    autograd through the same formulas.
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
        pad = None if key_padding_mask is None else key_padding_mask[:, None, :]
        if feature_map == "positive" and not w.requires_grad:
            out = _PositiveFavor.apply(q.to(cd) * root, k.to(cd) * root, v.to(cd), w, pad,
                                       causal, chunk_size)
            return out.to(out_dtype)
        qf = _query_features(q.to(cd) * root, w, feature_map, kernel_eps)
        u, s, half_sq = _key_parts(k.to(cd) * root, w, feature_map, kernel_eps)
        g = _key_shift(s, pad, causal)
        kf = _shifted_keys(u, s, half_sq, g, feature_map)
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
        u, s, half_sq = _key_parts(k.to(cd) * root, w, feature_map, kernel_eps)
        u, s, half_sq = u[:, :, 0], s[:, :, 0], half_sq[:, :, 0]
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
        kf = _shifted_keys(u, s, half_sq, g_new, feature_map)
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
