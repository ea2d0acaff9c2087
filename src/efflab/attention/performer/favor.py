"""FAVOR+ (Choromanski et al. 2020, arXiv 2009.14794, Sec. 2.1): bidirectional and
unidirectional (causal) attention through random features, its recurrent one-token form for
decoding, and prefill of that recurrent state by the parallel pass (``initial_state`` /
``output_final_state``, as in flash-linear-attention).

One input preparation (:func:`_prepare`: checks, SDPA-style arguments, compute dtype, scaling)
serves :func:`favor_attention` and :func:`favor_step`; one core (:func:`_favor_core`) computes
every variant by the composed, autograd-differentiated formulas; the default ``positive`` map
with a buffer projection takes a fused path with its own backward (causal:
:class:`_CausalPositiveFavor`; bidirectional: :mod:`.blockwise`, in blocks of positions).
:func:`favor_attention_reference` is the (seq_q x seq_k) formula beside them.

Shapes: q (batch, heads, seq_q, head_dim), k (batch, kv_heads, seq_k, head_dim),
v (batch, kv_heads, seq_k, head_dim_v) (or 3-d (batch * heads, seq, dim)), key_padding_mask
(batch, seq_k) bool with True = padding, projection (num_features, head_dim); the output is
(batch, heads, seq_q, head_dim_v).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from efflab.attention._checks import (
    as_4d,
    check_dropout,
    check_positive_int,
    check_qkv,
    check_scale,
    compute_dtype,
    key_mask_from_attn_mask,
    no_autocast,
    output_dtype,
    repeat_kv,
    resolve_causal,
)
from efflab.attention.performer.blockwise import (
    bidirectional_favor,
    blockwise_positive_favor,
    recomputed_input_grads,
)
from efflab.attention.performer.causal_blockwise import blockwise_causal_positive_favor
from efflab.attention.performer.features import (
    EXP_MAPS,
    attention_ratio,
    check_kind,
    finite_or_zero,
    key_parts,
    key_shift,
    query_features,
    random_feature_map,
    safe_denominator,
    shifted_keys,
)
from efflab.attention.performer.scan import _causal_scan, causal_linear_attention

#: the fused causal paths of the positive map (see :func:`favor_attention`)
CAUSAL_ALGORITHMS = ("chunkwise", "prefix-sum")


class FavorState(NamedTuple):
    """What causal FAVOR+ remembers of the past: the recurrent state of decoding.

    kv: (batch, kv_heads, features, head_dim_v + 1) = sum_j phi(k_j) exp(-shift) [v_j, 1]^T
    (exp(-0) where shift is -inf); shift: (batch, kv_heads), the running max log-scale of the
    keys seen (-inf before any); length: the number of positions consumed (padded ones
    included), the position of the next token (rotary embeddings use it).
    """

    kv: Tensor
    shift: Tensor
    length: int = 0


def check_kernel_eps(kernel_eps: object) -> float:
    if isinstance(kernel_eps, bool) or not isinstance(kernel_eps, (int, float)) or \
            not math.isfinite(kernel_eps) or kernel_eps < 0:
        raise ValueError(f"kernel_eps must be a finite number >= 0, got {kernel_eps!r}")
    return float(kernel_eps)


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


class _Prepared(NamedTuple):
    """The inputs as the cores take them. The kernel acts on the scaled queries and keys
    root * q, root * k (root = sqrt(scale)); they are not formed here: the fused paths fold
    root into the (m x d) projection (one O(n d) copy less of each, and no scaling pass over
    the gradients), the composed path scales on entry (:meth:`scaled`)."""

    x: Tensor            # queries, compute dtype, (batch, heads, seq_q, d), not scaled
    y: Tensor            # keys, (batch, kv_heads, seq_k, d), not scaled
    v: Tensor            # values, (batch, kv_heads, seq_k, e)
    w: Tensor            # projection, compute dtype
    pad: Tensor | None   # (batch, 1, seq_k) bool, True = padding
    causal: bool
    was_3d: bool
    out_dtype: torch.dtype
    root: float = 1.0    # sqrt(scale)

    def scaled(self) -> tuple[Tensor, Tensor]:
        """(root * x, root * y): the scaled queries and keys."""
        if self.root == 1.0:
            return self.x, self.y
        return self.x * self.root, self.y * self.root


def _prepare(q, k, v, projection, key_padding_mask, causal, is_causal, feature_map,
             kernel_eps, scale, attn_mask, dropout_p, enable_gqa) -> _Prepared:
    """Every check before any work, then the inputs as the core takes them."""
    causal = resolve_causal(causal, is_causal)
    check_qkv(q, k, v, key_padding_mask, causal, enable_gqa)
    was_3d, (q, k, v) = as_4d(q, k, v)
    pad = key_mask_from_attn_mask(attn_mask, key_padding_mask, q.shape[0], k.shape[2], "FAVOR+")
    check_dropout(dropout_p, False, "FAVOR+")
    _check_projection(projection, q.shape[-1], q.device)
    check_kind(feature_map)
    check_kernel_eps(kernel_eps)
    scale = check_scale(scale)
    if causal and q.shape[2] > k.shape[2]:
        raise ValueError(f"causal FAVOR+ needs seq_q <= seq_k (the queries are the last seq_q "
                         f"positions), got seq_q {q.shape[2]} > seq_k {k.shape[2]}")
    cd = compute_dtype(q.dtype)
    root = math.sqrt(1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    return _Prepared(q.to(cd), k.to(cd), v.to(cd), projection.to(cd),
                     None if pad is None else pad[:, None, :], causal, was_3d,
                     output_dtype(v), root)


def _check_state(state, name: str, b: int, hk: int, m: int, e1: int, p: _Prepared) -> FavorState:
    if not isinstance(state, tuple) or len(state) not in (2, 3) or \
            not all(isinstance(t, Tensor) for t in state[:2]):
        got = type(state).__name__
        if isinstance(state, tuple):
            got += "(" + ", ".join(type(t).__name__ for t in state) + ")"
        raise ValueError(f"{name} must be a FavorState(kv, shift, length) (from favor_step or "
                         f"output_final_state=True) or None, got {got}")
    state = FavorState(*state)
    if tuple(state.kv.shape) != (b, hk, m, e1) or tuple(state.shift.shape) != (b, hk):
        raise ValueError(
            f"{name} must hold kv {(b, hk, m, e1)} and shift {(b, hk)} (batch, kv_heads, "
            f"features, head_dim_v + 1), got kv {tuple(state.kv.shape)} and shift "
            f"{tuple(state.shift.shape)}"
        )
    if state.kv.device != p.v.device or not state.kv.is_floating_point():
        raise ValueError(f"{name} must be floating point on {p.v.device}, got {state.kv.dtype} "
                         f"on {state.kv.device}")
    if isinstance(state.length, bool) or not isinstance(state.length, int) or state.length < 0:
        raise ValueError(f"{name}: length must be an int >= 0, got {state.length!r}")
    return FavorState(state.kv.to(p.v.dtype), state.shift.to(p.v.dtype), state.length)


def _fold(kf: Tensor, v1: Tensor, g: Tensor, g_ref: Tensor,
          state: FavorState | None) -> Tensor:
    """sum_j phi(k_j) exp(-g_ref) [v_j, 1]^T (+ the carried state brought to g_ref): the state
    after these keys. kf holds phi(k_j) exp(-g_j); g_ref (...,) is >= every g_j of a nonzero
    key, so every factor is <= 1."""
    kv = kf.transpose(-1, -2) @ (v1 * torch.exp((g - g_ref[..., None]).clamp(max=0))[..., None])
    if state is not None:
        g0 = finite_or_zero(state.shift)
        kv = kv + state.kv * torch.exp((g0 - g_ref).clamp(max=0))[..., None, None]
    return kv


def _grouped(x: Tensor, hk: int) -> Tensor:
    """(batch, heads, n, c) -> (batch, kv_heads, groups * n, c): the query heads of one kv head
    stacked along seq (rows are independent, so this is exact for bidirectional attention)."""
    b, h, n, c = x.shape
    return x.reshape(b, hk, (h // hk) * n, c)


def _favor_core(p: _Prepared, kind: str, kernel_eps: float, chunk_size: int,
                initial_state: FavorState | None, want_state: bool
                ) -> tuple[Tensor, FavorState | None]:
    """Every FAVOR+ variant by composed (autograd-differentiated) ops: (out, final state)."""
    (x, y), v, w, pad = p.scaled(), p.v, p.w, p.pad
    b, h, n_q = x.shape[:3]
    hk, n_k = y.shape[1], y.shape[2]
    groups = h // hk
    if not p.causal:
        out = bidirectional_favor(_grouped(x, hk), y, v, w, pad, kind, kernel_eps)
        return out.view(b, h, n_q, -1), None
    qf = query_features(x, w, kind, kernel_eps)
    u, s, half_sq = key_parts(y, w, kind, kernel_eps)
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], -1)
    g0 = None if initial_state is None else initial_state.shift
    g, g_raw = key_shift(s, pad, True, g0)
    kf = shifted_keys(u, s, half_sq, g, kind, pad)
    off = n_k - n_q  # queries are the last n_q positions
    carried = initial_state
    if off:  # the keys before the first query enter as a carried state
        carried = FavorState(_fold(kf[..., :off, :], v1[..., :off, :], g[..., :off],
                                   g[..., off - 1], initial_state), g_raw[..., off - 1])
    gq = g[..., off:]
    num = causal_linear_attention(qf, repeat_kv(kf[..., off:, :], groups),
                                  repeat_kv(v1[..., off:, :], groups),
                                  repeat_kv(gq[..., None], groups)[..., 0], chunk_size)
    if carried is not None:
        g0f = finite_or_zero(carried.shift)
        decay = torch.exp((g0f[..., None] - gq).clamp(max=0))  # (b, hk, n_q)
        extra = (qf.view(b, hk, groups, n_q, -1) @ carried.kv[:, :, None]) * \
            decay[:, :, None, :, None]
        num = num + extra.view(b, h, n_q, -1)
    out = attention_ratio(num, kind)
    if not want_state:
        return out, None
    final = FavorState(_fold(kf[..., off:, :], v1[..., off:, :], gq, g[..., -1], carried),
                       g_raw[..., -1],
                       n_k + (0 if initial_state is None else initial_state.length))
    return out, final


class _CausalPositiveFavor(torch.autograd.Function):
    """Causal FAVOR+ with positive features, fused: the same computation as the composed path
    (:func:`_favor_core`), with a hand-written backward that works in place on the (seq x m)
    feature buffers. On a CPU most of FAVOR+'s time goes to allocating and touching those
    buffers, so this halves their number. The projection is a buffer (never differentiated).

    Double backward: the in-place backward is not itself differentiable, so when a caller asks
    for ``create_graph=True`` (grad mode is on inside backward) the backward instead recomputes
    the output by the composed path from the saved inputs and differentiates that with
    ``create_graph``: second derivatives are exact, at the cost of one recomputation.

    x, y: (batch, heads, seq, head_dim) scaled queries and keys; v: (..., seq, head_dim_v).
    (The bidirectional case goes block by block instead: :mod:`.blockwise`.)
    """

    @staticmethod
    def forward(ctx, x, y, v, w, pad, chunk_size):
        zq = x @ w.transpose(-1, -2)
        qf = zq.sub_(zq.amax(-1, keepdim=True)).exp_()
        kf = y @ w.transpose(-1, -2)
        half_sq = (y * y).sum(-1) / 2
        g, _ = key_shift(kf.amax(-1) - half_sq, pad, True)
        kf.sub_((half_sq + g)[..., None])
        if pad is not None:  # before the exponential: exp of a padded key may overflow
            kf.masked_fill_(pad[..., None], float("-inf"))
        kf.exp_()
        v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], -1)
        num = _causal_scan(qf, kf, v1, g, chunk_size)
        den = num[..., -1:]
        ok, safe = safe_denominator(den, "positive")
        out = (num[..., :-1] / safe).masked_fill_(~ok, 0.0)
        ctx.save_for_backward(x, y, v, w, qf, kf, v1, g, out, den)
        ctx.pad, ctx.chunk_size = pad, chunk_size
        return out

    @staticmethod
    def backward(ctx, dout):
        x, y, v, w, qf, kf, v1, g, out, den = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _CausalPositiveFavor._differentiable_backward(ctx, x, y, v, w, dout)
        ok, safe = safe_denominator(den, "positive")
        # out = num_v / den: d num_v = dout / den, d den = -sum(dout * out) / den; zero where
        # the output is the constant 0 (no key seen): never 0 * inf.
        dden = (-(dout * out).sum(-1, keepdim=True) / safe).masked_fill_(~ok, 0.0)
        dnum = torch.cat([(dout / safe).masked_fill_(~ok, 0.0), dden], -1)
        # One (seq x m) gradient buffer alive at a time: dx is done before dkf is made.
        c = ctx.chunk_size
        dqf = _causal_scan(dnum, v1, kf, g, c)
        dx = dqf.mul_(qf) @ w  # the query shift is a per-row constant: no gradient through it
        del dqf
        dv1 = _causal_scan(kf, qf, dnum, -g, c, reverse=True)
        dkf = _causal_scan(v1, dnum, qf, -g, c, reverse=True)
        dzk = dkf.mul_(kf)  # padded rows have kf = 0, so they get none
        dy = dzk @ w - dzk.sum(-1, keepdim=True) * y  # through -|y|^2 / 2
        return dx, dy, dv1[..., :-1], None, None, None

    @staticmethod
    def _differentiable_backward(ctx, x, y, v, w, dout):
        return differentiable_causal_backward(ctx, x, y, v, w, ctx.pad, ctx.chunk_size, dout)


def differentiable_causal_backward(ctx, x, y, v, w, pad, chunk_size, dout, root=1.0,
                                   n_grads=6):
    """The backward of a fused causal positive path under ``create_graph=True``: the output
    recomputed by the composed path (:func:`_favor_core`) from the saved inputs (queries and
    keys not scaled, ``root`` = sqrt(scale)), differentiated with ``create_graph``, so second
    derivatives are exact. Returns the ``n_grads`` input gradients of the Function."""
    wanted = [i for i in range(3) if ctx.needs_input_grad[i]]
    with torch.enable_grad():
        if x.dim() == 3:  # (rows, seq, d) as the chunkwise path takes them: one head per row
            p = _Prepared(x[:, None], y[:, None], v[:, None], w,
                          None if pad is None else pad[:, None], True, False, dout.dtype, root)
            dout = dout[:, None]
        else:
            p = _Prepared(x, y, v, w, pad, True, False, dout.dtype, root)
        out, _ = _favor_core(p, "positive", 0.0, chunk_size, None, False)
        return recomputed_input_grads(out, (x, y, v), wanted, dout, n_grads)


def favor_attention(q: Tensor, k: Tensor, v: Tensor, projection: Tensor,
                    key_padding_mask: Tensor | None = None, causal: bool = False,
                    feature_map: str = "positive", kernel_eps: float = 1e-3,
                    scale: float | None = None, chunk_size: int = 64, *,
                    is_causal: bool | None = None, attn_mask: Tensor | None = None,
                    dropout_p: float = 0.0, enable_gqa: bool = False,
                    initial_state: FavorState | None = None,
                    output_final_state: bool = False, block_size: int | None = None,
                    causal_algorithm: str = "chunkwise"):
    """FAVOR+: D^-1 (phi(Q) (phi(K)^T V)) with D = diag(phi(Q) phi(K)^T 1).

    Cost O(seq m head_dim). ``causal`` (alias ``is_causal``): prefix sums in chunks of
    ``chunk_size`` positions; a q shorter than k is the last seq_q positions (chunked prefill;
    the keys before it enter as a state). ``scale`` (default 1/sqrt(head_dim)) plays the role
    it has in SDPA: the kernel estimates exp(scale q.k). Padded keys enter neither numerator nor
    denominator; a query that sees no key gets 0 (and zero gradients).

    SDPA keywords: ``attn_mask`` only as a pure key mask, bool (batch, 1, 1, seq_k) with True =
    attend (a general mask has no linear-time form: ValueError); ``dropout_p`` must be 0 (no
    attention weights are formed); ``enable_gqa``: k, v may have fewer heads, dividing q's
    (bidirectional: the shared kv state serves every query head of its group, nothing is
    repeated; causal: keys are repeated for the scan). Inputs of half precision (or under
    ``torch.autocast``) are computed in float32; the output has SDPA's dtype (the autocast
    dtype inside autocast, else v's).

    Decoding state (causal only): ``initial_state`` (a :class:`FavorState`) carries the past in;
    ``output_final_state=True`` returns ``(out, state)`` with the state after the last key, so
    a prompt is prefilled in one chunked pass and generation continues with :func:`favor_step`.

    The default ``positive`` map with a fixed projection (a buffer) and no state takes a fused
    path with its own backward (exact double backward by recomputation, see
    :class:`_CausalPositiveFavor`); a projection that requires grad, another map, or a state goes
    through autograd on the same formulas. Bidirectional, that fused path works in blocks of
    ``block_size`` positions and never holds a (seq x m) feature matrix (default: the rule of
    :func:`~efflab.attention.performer.blockwise.default_block_size`, 128 to 4096). Causal, it
    goes chunk by chunk (``causal_algorithm="chunkwise"``, :mod:`.causal_blockwise`), nor does
    it hold one; ``causal_algorithm="prefix-sum"`` takes the earlier fused path on whole feature
    matrices (:class:`_CausalPositiveFavor`, kept as the reference and for comparison).
    """
    if causal_algorithm not in CAUSAL_ALGORITHMS:
        raise ValueError(f"causal_algorithm must be one of {CAUSAL_ALGORITHMS}, "
                         f"got {causal_algorithm!r}")
    p = _prepare(q, k, v, projection, key_padding_mask, causal, is_causal, feature_map,
                 kernel_eps, scale, attn_mask, dropout_p, enable_gqa)
    check_positive_int("chunk_size", chunk_size)
    if block_size is not None:
        check_positive_int("block_size", block_size)
    if not isinstance(output_final_state, bool):
        raise ValueError(f"output_final_state must be a bool, got {output_final_state!r}")
    b, h, n_q = p.x.shape[:3]
    hk, n_k = p.y.shape[1], p.y.shape[2]
    m = projection.shape[0] * (2 if feature_map in ("hyperbolic", "trig") else 1)
    if (initial_state is not None or output_final_state) and not p.causal:
        raise ValueError("initial_state / output_final_state are the recurrent state of causal "
                         "attention: pass causal=True")
    if initial_state is not None:
        initial_state = _check_state(initial_state, "the decoding state (initial_state / "
                                     "state)", b, hk, m,
                                     p.v.shape[-1] + 1, p)
    with no_autocast(p.x.device):
        if n_q == 0 or n_k == 0:
            out = p.v.new_zeros(b, h, n_q, p.v.shape[-1])
            state = initial_state
            if output_final_state and state is None:
                state = FavorState(p.v.new_zeros(b, hk, m, p.v.shape[-1] + 1),
                                   p.v.new_full((b, hk), float("-inf")), 0)
        elif (feature_map == "positive" and not p.w.requires_grad and initial_state is None
              and not output_final_state and (not p.causal or n_q == n_k)):
            if p.causal and causal_algorithm == "prefix-sum":
                x, y = p.scaled()
                out = _CausalPositiveFavor.apply(x, repeat_kv(y, h // hk),
                                                 repeat_kv(p.v, h // hk), p.w, p.pad, chunk_size)
            elif p.causal:
                out = blockwise_causal_positive_favor(p.x, repeat_kv(p.y, h // hk),
                                                      repeat_kv(p.v, h // hk), p.w, p.pad,
                                                      chunk_size, p.root)
            else:
                out = blockwise_positive_favor(_grouped(p.x, hk), p.y, p.v, p.w, p.pad,
                                               block_size, p.root)
            out, state = out.reshape(b, h, n_q, -1), None
        else:
            out, state = _favor_core(p, feature_map, kernel_eps, chunk_size, initial_state,
                                     output_final_state)
    out = out.to(p.out_dtype)
    if p.was_3d:
        out = out[:, 0]
    return (out, state) if output_final_state else out


def favor_attention_reference(q: Tensor, k: Tensor, v: Tensor, projection: Tensor,
                              key_padding_mask: Tensor | None = None, causal: bool = False,
                              feature_map: str = "positive", kernel_eps: float = 1e-3,
                              scale: float | None = None, *, is_causal: bool | None = None,
                              enable_gqa: bool = False) -> Tensor:
    """The same by the book: phi from :func:`random_feature_map`, the full (seq_q x seq_k) matrix
    A = phi(Q) phi(K)^T, masked, row-normalized, kv heads repeated for GQA. No stabilization:
    use float64, small inputs."""
    causal = resolve_causal(causal, is_causal)
    check_qkv(q, k, v, key_padding_mask, causal, enable_gqa)
    was_3d, (q, k, v) = as_4d(q, k, v)
    groups = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    root = math.sqrt(scale)
    w = projection.to(q.dtype)
    a = (random_feature_map(q * root, w, feature_map, kernel_eps)
         @ random_feature_map(k * root, w, feature_map, kernel_eps).transpose(-1, -2))
    if key_padding_mask is not None:
        a = a.masked_fill(key_padding_mask[:, None, None, :], 0.0)
    if causal:
        n_q, n_k = q.shape[2], k.shape[2]
        a = a.masked_fill(~torch.ones(n_q, n_k, dtype=torch.bool, device=q.device)
                          .tril(n_k - n_q), 0.0)
    num = torch.cat([a @ v, a.sum(-1, keepdim=True)], -1)
    out = attention_ratio(num, feature_map)
    return out[:, 0] if was_3d else out


def favor_step(q: Tensor, k: Tensor, v: Tensor, projection: Tensor,
               state: FavorState | None = None, key_padding_mask: Tensor | None = None,
               feature_map: str = "positive", kernel_eps: float = 1e-3,
               scale: float | None = None, *, enable_gqa: bool = False
               ) -> tuple[Tensor, FavorState]:
    """One position of causal FAVOR+: O(m head_dim) work, whatever the position.

    q (batch, heads, 1, head_dim), k, v (batch, kv_heads, 1, head_dim) for the new position;
    key_padding_mask: (batch, 1). Returns (out (batch, heads, 1, head_dim_v), new state); a loop
    of steps gives the outputs of ``favor_attention(..., causal=True)``, and a state from
    ``favor_attention(..., causal=True, output_final_state=True)`` continues a prefilled prompt.
    It is the causal pass over one position with the state carried in and out.
    """
    if isinstance(q, Tensor) and q.dim() == 4 and q.shape[2] != 1:
        raise ValueError(f"favor_step takes one position: q must have seq 1, got {q.shape[2]}")
    if isinstance(k, Tensor) and k.dim() == 4 and k.shape[2] != 1:
        raise ValueError(f"favor_step takes one position: k must have seq 1, got {k.shape[2]}")
    if state is not None and not isinstance(state, tuple):
        raise ValueError(f"state must be a FavorState(kv, shift, length) from a previous step "
                         f"or None, got {type(state).__name__}")
    out, new = favor_attention(q, k, v, projection, key_padding_mask, True, feature_map,
                               kernel_eps, scale, 1, enable_gqa=enable_gqa,
                               initial_state=state, output_final_state=True)
    return out, new


__all__ = ["EXP_MAPS", "FavorState", "favor_attention", "favor_attention_reference",
           "favor_step"]
