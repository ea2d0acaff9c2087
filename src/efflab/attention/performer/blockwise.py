"""Bidirectional FAVOR+ (Choromanski et al. 2020, arXiv 2009.14794, Sec. 2.1, Eq. of the
bidirectional case): out = D^-1 phi(Q) (phi(K)^T [V, 1]), in two forms.

* :func:`bidirectional_favor`: the composed formula on whole (seq x m) feature matrices,
  differentiated by autograd; it serves every feature map, and is the double-backward path.
* :class:`_BlockwisePositiveFavor`: the positive map, block by block (issue #21, targets 1-2).
  The forward computes the features of ``block_size`` keys at a time and folds them into the
  (m x (head_dim_v + 1)) state S = phi(K)^T [V, 1], then the features of ``block_size`` queries
  at a time against S; the backward recomputes the block features. No (seq x m) matrix is
  ever held: what is kept is the inputs, S, the key shift, the output and its denominator.
  On a CPU a (block x m) feature block stays in cache while its products run, where the
  whole-sequence matrices of the one-matrix form do not.

The key shift (see :mod:`.features`) must be one max over all unpadded keys, but the blockwise
forward sees the keys one block at a time: it keeps the running max g and, when a block raises
it, rescales the state by exp(g_old - g_new) <= 1 (as online softmax does), so the final state
is the one of the global shift, exactly in exact arithmetic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from efflab.attention._checks import no_autocast
from efflab.attention.performer.features import (
    attention_ratio,
    finite_or_zero,
    key_parts,
    key_shift,
    query_features,
    safe_denominator,
    shifted_keys,
)

#: Elements of one (heads x block x m) feature block the default block size aims at: 2^19
#: float32 numbers are 2 MiB, about what stays in a CPU's L2/L3 share while it is used twice
#: (8 heads, m = 256, one thread, 2026-12-01: 256 positions ran faster than 512 and 1024).
_BLOCK_ELEMENTS = 1 << 19


def default_block_size(rows: int, features: int) -> int:
    """Positions per block: a power of two near 2^19 / (rows x features), rows = batch x
    heads, clamped to [128, 1024] (8 heads, m = 256: 256 positions)."""
    target = max(1, _BLOCK_ELEMENTS // max(1, rows * features))
    return min(1024, max(128, 1 << (target.bit_length() - 1)))


def bidirectional_favor(x: Tensor, y: Tensor, v: Tensor, w: Tensor, pad: Tensor | None,
                        kind: str, kernel_eps: float) -> Tensor:
    """The composed bidirectional formula: x (batch, kv_heads, rows, d) (the query heads of a
    kv head stacked along rows), y (batch, kv_heads, seq_k, d), v (..., seq_k, e); returns
    (batch, kv_heads, rows, e)."""
    qf = query_features(x, w, kind, kernel_eps)
    u, s, half_sq = key_parts(y, w, kind, kernel_eps)
    g, _ = key_shift(s, pad, False)
    kf = shifted_keys(u, s, half_sq, g, kind, pad)
    return attention_ratio(qf @ (kf.transpose(-1, -2) @ _ones_column(v)), kind)


def _ones_column(v: Tensor) -> Tensor:
    return torch.cat([v, v.new_ones(*v.shape[:-1], 1)], -1)


def half_sq_norms(y: Tensor, sq: float) -> Tensor:
    """|root y|^2 / 2 per row of y (..., d), sq = root^2: the norm term of the positive map
    (the paper's exp(-|x|^2 / 2)) of the scaled keys."""
    return (y * y).sum(-1).mul_(sq / 2)


def _key_block(y: Tensor, wt: Tensor, g: Tensor, pad: Tensor | None, sq: float) -> Tensor:
    """phi(k_j) exp(-g) of a block (up to the constant 1/sqrt(m)), 0 on padded keys;
    y (rows, block, d) keys, wt (d, m) the projection scaled by root = sqrt(sq), g (rows, 1),
    pad (rows, block) or None."""
    z = y @ wt
    z.sub_(half_sq_norms(y, sq)[..., None].add_(g[..., None]))
    if pad is not None:  # before the exponential: exp of a padded key may overflow
        z.masked_fill_(pad[..., None], float("-inf"))
    return z.exp_()


def _query_block(x: Tensor, wt: Tensor) -> Tensor:
    z = x @ wt
    return z.sub_(z.amax(-1, keepdim=True)).exp_()


class _BlockwisePositiveFavor(torch.autograd.Function):
    """Bidirectional FAVOR+ with positive features, block by block (see the module docstring).

    x (rows, seq_q, d) queries (rows = batch x kv_heads, the query heads of a kv head stacked
    along seq_q), y (rows, seq_k, d) keys, v (rows, seq_k, e), w (m, d) a buffer (never
    differentiated), pad (rows, seq_k) or None, root = sqrt(scale): the kernel acts on root x
    and root y, and root is folded into w (root x) w^T = x (root w)^T, so the scaled copies of
    x and y are never made and the gradients need no scaling pass. The state is kept as
    kv = phi(K)^T V (m x e) and the normalizer ks = phi(K)^T 1 (m x 1) apart: an (m x (e + 1))
    matrix would make every product an odd width. Double backward: as in the causal fused
    path, a backward under grad mode (``create_graph=True``) differentiates
    :func:`bidirectional_favor` instead: exact, at the cost of the (seq x m) matrices in that
    case only.
    """

    @staticmethod
    def forward(ctx, x, y, v, w, pad, block, root):
        wt = w.transpose(0, 1) * root
        sq = root * root
        rows, n_k = y.shape[:2]
        kv = v.new_zeros(rows, w.shape[0], v.shape[-1])
        ks = v.new_zeros(rows, w.shape[0], 1)
        g_run = v.new_full((rows, 1), float("-inf"))
        for lo in range(0, n_k, block):
            yb, pb = y[:, lo:lo + block], None if pad is None else pad[:, lo:lo + block]
            z = yb @ wt
            half_sq = half_sq_norms(yb, sq)
            s = z.amax(-1) - half_sq
            if pb is not None:
                s = s.masked_fill(pb, float("-inf"))
            g_new = torch.maximum(g_run, s.amax(-1, keepdim=True))
            # where g_run is -inf the state is still 0 (no key yet): factor 0, never inf * 0
            factor = torch.where(torch.isfinite(g_run), torch.exp(g_run - g_new),
                                 torch.zeros_like(g_run))[..., None]
            kv.mul_(factor)
            ks.mul_(factor)
            z.sub_(half_sq.add_(finite_or_zero(g_new))[..., None])
            if pb is not None:  # before the exponential: exp of a padded key may overflow
                z.masked_fill_(pb[..., None], float("-inf"))
            kf_t = z.exp_().transpose(1, 2)
            kv.baddbmm_(kf_t, v[:, lo:lo + block])
            ks.add_(kf_t.sum(-1, keepdim=True))
            g_run = g_new
        g = finite_or_zero(g_run)
        n_q = x.shape[1]
        out = v.new_empty(rows, n_q, v.shape[-1])
        den = v.new_empty(rows, n_q, 1)
        for lo in range(0, n_q, block):
            qf = _query_block(x[:, lo:lo + block], wt)
            d = torch.bmm(qf, ks)
            ok, safe = safe_denominator(d, "positive")
            out[:, lo:lo + block] = torch.bmm(qf, kv).div_(safe).masked_fill_(~ok, 0.0)
            den[:, lo:lo + block] = d
        ctx.save_for_backward(x, y, v, w, kv, ks, g, out, den)
        ctx.pad, ctx.block, ctx.root = pad, block, root
        return out

    @staticmethod
    def backward(ctx, dout):
        # a backward called inside torch.autocast runs under it: the in-place accumulations
        # need their operands in one dtype
        with no_autocast(dout.device):
            return _BlockwisePositiveFavor._backward(ctx, dout)

    @staticmethod
    def _backward(ctx, dout):
        x, y, v, w, kv, ks, g, out, den = ctx.saved_tensors
        pad, block, root = ctx.pad, ctx.block, ctx.root
        if torch.is_grad_enabled():
            wanted = [i for i in range(3) if ctx.needs_input_grad[i]]
            with torch.enable_grad():
                again = bidirectional_favor(x[:, None] * root, y[:, None] * root, v[:, None],
                                            w, None if pad is None else pad[:, None],
                                            "positive", 0.0)[:, 0]
                return recomputed_input_grads(again, (x, y, v), wanted, dout, 7)
        ws = w * root
        wt, sq = ws.transpose(0, 1), root * root
        dx, dy, dv = torch.empty_like(x), torch.empty_like(y), torch.empty_like(v)
        dkv, dks = torch.zeros_like(kv), torch.zeros_like(ks)
        kv_t, ks_t = kv.transpose(1, 2), ks.transpose(1, 2)
        for lo in range(0, x.shape[1], block):
            sl = slice(lo, lo + block)
            ok, safe = safe_denominator(den[:, sl], "positive")
            # out = num / den: d num = dout / den, d den = -sum(dout * out) / den; 0 where the
            # output is the constant 0 (no key seen): never 0 * inf
            do = dout[:, sl]
            dnum = (do / safe).masked_fill_(~ok, 0.0)
            dden = (-(do * out[:, sl]).sum(-1, keepdim=True) / safe).masked_fill_(~ok, 0.0)
            qf = _query_block(x[:, sl], wt)
            dkv.baddbmm_(qf.transpose(1, 2), dnum)
            dks.baddbmm_(qf.transpose(1, 2), dden)
            # the query shift is a per-row constant: no gradient through it
            dx[:, sl] = torch.bmm(dnum, kv_t).addcmul_(dden, ks_t).mul_(qf) @ ws
        dkv_t, dks_t = dkv.transpose(1, 2), dks.transpose(1, 2)
        for lo in range(0, y.shape[1], block):
            sl = slice(lo, lo + block)
            yb = y[:, sl]
            kf = _key_block(yb, wt, g, None if pad is None else pad[:, sl], sq)
            dv[:, sl] = torch.bmm(kf, dkv)
            dzk = torch.bmm(v[:, sl], dkv_t).add_(dks_t).mul_(kf)  # padded rows: kf = 0
            # through -|root y|^2 / 2
            dy[:, sl] = (dzk @ ws).sub_(dzk.sum(-1, keepdim=True).mul_(sq) * yb)
        return dx, dy, dv, None, None, None, None


def blockwise_positive_favor(x: Tensor, y: Tensor, v: Tensor, w: Tensor, pad: Tensor | None,
                             block_size: int | None = None, root: float = 1.0) -> Tensor:
    """Bidirectional positive FAVOR+ in blocks of ``block_size`` positions (None: the
    :func:`default_block_size` rule); shapes as :func:`bidirectional_favor`, but x and y are
    the queries and keys before the scaling by ``root`` = sqrt(scale)."""
    b, hk, n_q, d = x.shape
    n_k = y.shape[2]
    rows = b * hk
    if block_size is None:
        block_size = default_block_size(rows, w.shape[0])
    if pad is not None:
        pad = pad.expand(b, hk, n_k).reshape(rows, n_k)
    out = _BlockwisePositiveFavor.apply(x.reshape(rows, n_q, d), y.reshape(rows, n_k, d),
                                        v.reshape(rows, n_k, v.shape[-1]), w, pad, block_size,
                                        float(root))
    return out.view(b, hk, n_q, -1)


def recomputed_input_grads(out: Tensor, inputs: tuple[Tensor, Tensor, Tensor],
                           wanted: list[int], dout: Tensor, n_grads: int = 6
                           ) -> tuple[Tensor | None, ...]:
    """The ``n_grads`` input gradients of a fused FAVOR+ Function under ``create_graph=True``:
    ``out``, recomputed by a differentiable path from ``inputs`` (x, y, v), differentiated with
    ``create_graph`` for the inputs in ``wanted``; None for the rest and the options."""
    grads = torch.autograd.grad(out, [inputs[i] for i in wanted], dout, create_graph=True,
                                allow_unused=True)
    result: list[Tensor | None] = [None] * n_grads
    for i, gr in zip(wanted, grads):
        result[i] = gr
    return tuple(result)
