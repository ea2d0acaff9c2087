"""Random features and feature maps of FAVOR+ (Choromanski et al. 2020, arXiv 2009.14794,
Sec. 2.2-2.4): the orthogonal random projection, the maps phi as the paper writes them
(:func:`random_feature_map`, the reference), and their stabilized pieces used by the fast paths.

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

The shift is mathematically a no-op, so it is detached: gradients are exact. Padded keys are
masked *before* the exponential (their exponent is set to -inf), so neither the forward pass
nor the backward pass ever meets ``exp`` of a padded key (which may overflow: 0 * inf = NaN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from efflab.attention._checks import check_positive_int
from efflab.seeding import derive_seed

FEATURE_MAPS = ("positive", "hyperbolic", "trig", "relu")
EXP_MAPS = ("positive", "hyperbolic")
NORMS = ("chi", "fixed")


def check_kind(kind: str) -> None:
    if kind not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {kind!r}")


def features_seed(seed: int, redraw_count: int, stream: int | None = None) -> int:
    """The generator seed of draw number ``redraw_count``: a pure function of its arguments, so
    every process of a distributed job draws the same features without talking to the others.
    ``stream`` tells modules apart (each :class:`PerformerAttention` has its own); None keeps
    the two-argument stream."""
    if stream is None:
        return derive_seed(int(seed), "performer.features", int(redraw_count))
    return derive_seed(int(seed), "performer.features", int(stream), int(redraw_count))


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
    if not isinstance(orthogonal, bool):
        raise ValueError(f"orthogonal must be a bool (True or False), got {orthogonal!r}")
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
    check_kind(kind)
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


class _ShiftedExp(torch.autograd.Function):
    """exp(z - c[..., None]) with one buffer forward and one backward: the hot elementwise
    step of the exp feature maps (autograd would add a negated copy for c's gradient). Its
    backward is made of differentiable ops on the saved output, so double backward is exact."""

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


def query_features(x: Tensor, w: Tensor, kind: str, kernel_eps: float) -> Tensor:
    """phi(x) up to a positive per-position factor (which cancels in the attention ratio)."""
    if kind in EXP_MAPS:
        z = _exp_logits(x, w, kind)
        return _ShiftedExp.apply(z, z.detach().amax(-1))
    z = x @ w.transpose(-1, -2)
    if kind == "trig":
        return torch.cat([z.sin(), z.cos()], -1)
    return torch.relu(z) + kernel_eps


def key_parts(y: Tensor, w: Tensor, kind: str, kernel_eps: float
              ) -> tuple[Tensor, Tensor, Tensor]:
    """(u, s, half_sq) with half_sq = |y|^2 / 2 and phi(y) proportional to exp(u - half_sq)
    (exp maps; s = max of that exponent, detached: it only sets the shift) or to u * exp(s)
    (trig, relu). s, half_sq: (..., seq). Factors common to all keys are dropped."""
    half_sq = (y * y).sum(-1) / 2
    if kind in EXP_MAPS:
        u = _exp_logits(y, w, kind)
        return u, u.detach().amax(-1) - half_sq.detach(), half_sq
    z = y @ w.transpose(-1, -2)
    if kind == "trig":
        return torch.cat([z.sin(), z.cos()], -1), half_sq, half_sq
    return torch.relu(z) + kernel_eps, torch.zeros_like(half_sq), half_sq


def key_shift(s: Tensor, pad: Tensor | None, causal: bool,
              initial: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(g, g_raw): g_raw is the running max of s over j <= t (causal; starting from
    ``initial`` (...,) where a state is carried in) or the max over all keys (..., 1), padding
    excluded, -inf where no key was seen; g is g_raw with -inf replaced by 0 (such a position
    has only zero keys, so any finite shift serves)."""
    s = s.detach()
    if pad is not None:
        s = s.masked_fill(pad, float("-inf"))
    if causal:
        g_raw = torch.cummax(s, dim=-1).values
        if initial is not None:
            g_raw = torch.maximum(g_raw, initial.detach()[..., None])
    else:
        g_raw = s.amax(-1, keepdim=True)
    return finite_or_zero(g_raw), g_raw


def finite_or_zero(g: Tensor) -> Tensor:
    return torch.where(torch.isfinite(g), g, torch.zeros_like(g))


def shifted_keys(u: Tensor, s: Tensor, half_sq: Tensor, g: Tensor, kind: str,
                 pad: Tensor | None) -> Tensor:
    """phi(k_j) * exp(-g_j) for per-position shifts g (..., seq) (or a broadcastable (..., 1)),
    exactly 0 for padded keys: their exponent is set to -inf before the exponential."""
    if kind in EXP_MAPS:
        c = half_sq + g
        if pad is not None:
            c = torch.where(pad, torch.full_like(c, float("inf")), c)
        return _ShiftedExp.apply(u, c)
    e = s - g
    if pad is not None:
        e = torch.where(pad, torch.full_like(e, float("-inf")), e)
    return u * torch.exp(e)[..., None]


def safe_denominator(den: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """(ok, den with 1 where not ok). The output num / den is taken where ``ok`` and is 0
    elsewhere, with a zero gradient (``torch.where``, never 0 * inf). Not ok: a query with no
    key at all (den exactly 0), or, for the positive maps, a denominator that underflowed in
    this precision (at huge |q|, |k|; the numerator underflowed with it). Trigonometric
    features can give den < 0: their known flaw, kept."""
    if kind == "trig":
        ok = den != 0
    else:
        ok = den >= torch.finfo(den.dtype).tiny
    return ok, torch.where(ok, den, torch.ones_like(den))


def attention_ratio(num: Tensor, kind: str) -> Tensor:
    """num[..., :-1] / num[..., -1:] (the last column is the denominator), 0 where not ok."""
    ok, den = safe_denominator(num[..., -1:], kind)
    out = num[..., :-1] / den
    return torch.where(ok, out, torch.zeros_like(out))
