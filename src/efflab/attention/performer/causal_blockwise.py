"""Causal FAVOR+ with positive features, chunk by chunk (Choromanski et al. 2020,
arXiv 2009.14794, Sec. 2.1, unidirectional case; issue #21, target 3).

Y_t = sum_{j <= t} (a_t . b_j) exp(g_j - g_t) [v_j, 1] with a = phi(Q), b = phi(K) exp(-g) and
g the running key max of :mod:`.features` (so no output depends on a future key, not even
through the stabilizer). The sequence is cut into chunks of ``chunk_size`` positions; for each
chunk the features of its queries and keys are computed, the part inside the chunk is a masked
(chunk x chunk) product, and what the earlier chunks contribute comes from the running
(m x (e + 1)) state kv = sum_j exp(g_j - r) b_j [v_j, 1]^T, r being g at the end of the previous
chunk. No (seq x m) matrix is ever held. The normalizer is the state's last column: each
chunk's values get a column of ones ((chunk x (e + 1)), made per chunk), so every state product
is one product where a separate normalizer would add a matrix-vector product that reads the
same (chunk x m) features again (measured with ``benchmarks/causal_favor_ab.py``: see
docs/attention.md). The chunks go one at a time: a (8 heads x 64 x 256) feature block is 512
KiB, a core's L2 on the machine measured; batching the chunks of 128 to 1024 positions into
single products (tried, 2026-12-02) was 4-15% slower there.

The backward recomputes the features. It runs over groups of :data:`GROUP_POSITIONS`
positions from the last to the first: for a group it first rebuilds, in forward order, the
keys' features and the state entering each of its chunks (from the state the forward pass kept
at the group's start), then walks the chunks backwards with the reverse state
dkv = sum_{t after} exp(r - g_t) a_t^T [dnum_t, dden_t] (the gradient of the entering state).
What is kept between the passes: the inputs, the output, its denominator and one
(m x (e + 1)) state per group (seq / 1024 of them), against the (seq x m) feature matrices
and the full backward scans of
:class:`~efflab.attention.performer.favor._CausalPositiveFavor`, the prefix-sum path kept
beside it as the reference. Double backward (``create_graph=True``) differentiates the
composed path instead, as the other fused paths do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from efflab.attention._checks import no_autocast
from efflab.attention.performer.blockwise import half_sq_norms
from efflab.attention.performer.features import finite_or_zero, safe_denominator

#: positions per group of the backward (the forward keeps one state per group)
GROUP_POSITIONS = 1024


def _exp0(x: Tensor) -> Tensor:
    """exp(min(x, 0)): every decay factor; > 0 only where padding reset g (there b = 0)."""
    return x.clamp_(max=0).exp_()


def _key_chunk(y: Tensor, wt: Tensor, g_last: Tensor, pad: Tensor | None, sq: float
               ) -> tuple[Tensor, Tensor, Tensor]:
    """(b, g, g_raw) of one chunk of keys y (rows, c, d), wt the projection scaled by
    root = sqrt(sq): b = phi(root k_j) exp(-g_j) (up to 1/sqrt m, 0 on padded keys), g_raw the
    running max of the key log-scales continuing ``g_last`` (rows, 1), -inf before any key;
    g = g_raw with -inf as 0."""
    z = y @ wt
    half_sq = half_sq_norms(y, sq)
    s = z.amax(-1) - half_sq
    if pad is not None:
        s.masked_fill_(pad, float("-inf"))
    g_raw = torch.maximum(torch.cummax(s, -1).values, g_last)
    g = finite_or_zero(g_raw)
    z.sub_(half_sq.add_(g)[..., None])
    if pad is not None:  # before the exponential: exp of a padded key may overflow
        z.masked_fill_(pad[..., None], float("-inf"))
    return z.exp_(), g, g_raw


def _query_chunk(x: Tensor, wt: Tensor) -> Tensor:
    z = x @ wt
    return z.sub_(z.amax(-1, keepdim=True)).exp_()


def _decay(g: Tensor, tril: Tensor) -> Tensor:
    """D[t, j] = exp(g_j - g_t) for j <= t, else 0; g (rows, c)."""
    return _exp0(g[:, None, :] - g[:, :, None]).mul_(tril)


def _with_ones(v: Tensor) -> Tensor:
    """[v, 1] (rows, c, e + 1): the values and the normalizer's column in one operand."""
    return torch.cat([v, v.new_ones(*v.shape[:-1], 1)], -1)


def _advance(kv: Tensor, b: Tensor, v1: Tensor, g: Tensor, r: Tensor, r_new: Tensor
             ) -> Tensor:
    """The state after a chunk: kv exp(r - r_new) + b^T (exp(g - r_new) [v, 1])."""
    fold = _exp0(g - r_new)[..., None]          # (rows, c, 1)
    rescale = _exp0(r - r_new)[..., None]       # (rows, 1, 1)
    return (kv * rescale).baddbmm_(b.transpose(1, 2), v1 * fold)


class _BlockwiseCausalPositiveFavor(torch.autograd.Function):
    """x, y (rows, seq, d) queries and keys (rows = batch x heads, kv heads already repeated),
    v (rows, seq, e), w (m, d) a buffer, pad (rows, seq) or None, root = sqrt(scale), folded
    into w as in :class:`~efflab.attention.performer.blockwise._BlockwisePositiveFavor`; see
    the module docstring."""

    @staticmethod
    def forward(ctx, x, y, v, w, pad, chunk, root):
        wt = w.transpose(0, 1) * root
        sq = root * root
        rows, n = y.shape[:2]
        m, e = w.shape[0], v.shape[-1]
        tril = torch.ones(chunk, chunk, dtype=v.dtype, device=v.device).tril_()
        kv = v.new_zeros(rows, m, e + 1)        # [sum b v^T, sum b]: the state, normalizer last
        r = v.new_zeros(rows, 1)                 # g at the end of the previous chunk
        g_last = v.new_full((rows, 1), float("-inf"))
        out, den = v.new_empty(rows, n, e), v.new_empty(rows, n, 1)
        group = max(chunk, GROUP_POSITIONS // chunk * chunk)
        states = []                              # (kv, r, g_last) at each group's start
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            if lo % group == 0:
                states.append((kv, r, g_last))
            pb = None if pad is None else pad[:, lo:hi]
            b, g, g_raw = _key_chunk(y[:, lo:hi], wt, g_last, pb, sq)
            a = _query_chunk(x[:, lo:hi], wt)
            v1 = _with_ones(v[:, lo:hi])
            p = torch.bmm(a, b.transpose(1, 2)).mul_(_decay(g, tril[:hi - lo, :hi - lo]))
            carry = _exp0(r - g)[..., None]      # (rows, c, 1)
            num = torch.bmm(p, v1).addcmul_(torch.bmm(a, kv), carry)
            d = num[..., e:]
            ok, safe = safe_denominator(d, "positive")
            out[:, lo:hi] = num[..., :e].div_(safe).masked_fill_(~ok, 0.0)
            den[:, lo:hi] = d
            r_new = g[:, -1:]
            kv = _advance(kv, b, v1, g, r, r_new)
            r, g_last = r_new, g_raw[:, -1:]
        kv0 = torch.stack([s[0] for s in states], 1)
        r0 = torch.stack([s[1] for s in states], 1)
        gl0 = torch.stack([s[2] for s in states], 1)
        ctx.save_for_backward(x, y, v, w, out, den, kv0, r0, gl0)
        ctx.pad, ctx.chunk, ctx.group, ctx.root = pad, chunk, group, root
        return out

    @staticmethod
    def backward(ctx, dout):
        if torch.is_grad_enabled():
            from efflab.attention.performer.favor import differentiable_causal_backward

            x, y, v, w = ctx.saved_tensors[:4]
            return differentiable_causal_backward(ctx, x, y, v, w, ctx.pad, ctx.chunk, dout,
                                                  ctx.root, 7)
        with no_autocast(dout.device):
            return _BlockwiseCausalPositiveFavor._backward(ctx, dout.contiguous())

    @staticmethod
    def _backward(ctx, dout):
        x, y, v, w, out, den, kv0, r0, gl0 = ctx.saved_tensors
        pad, chunk, group, root = ctx.pad, ctx.chunk, ctx.group, ctx.root
        ws = w * root
        wt, sq = ws.transpose(0, 1), root * root
        rows, n = y.shape[:2]
        e = v.shape[-1]
        tril = torch.ones(chunk, chunk, dtype=v.dtype, device=v.device).tril_()
        dx, dy, dv = torch.empty_like(x), torch.empty_like(y), torch.empty_like(v)
        dkv = torch.zeros_like(kv0[:, 0])       # the gradient of the state, normalizer last
        r_next = None                            # r of the chunk after the current one
        for gi in reversed(range(kv0.shape[1])):
            g_lo = gi * group
            kv, r, g_last = kv0[:, gi], r0[:, gi], gl0[:, gi]
            # forward order: the keys' features and the state entering each chunk
            saved = []
            for lo in range(g_lo, min(g_lo + group, n), chunk):
                hi = min(lo + chunk, n)
                pb = None if pad is None else pad[:, lo:hi]
                b, g, g_raw = _key_chunk(y[:, lo:hi], wt, g_last, pb, sq)
                v1 = _with_ones(v[:, lo:hi])
                saved.append((lo, hi, b, g, kv, r))
                r_new = g[:, -1:]
                kv = _advance(kv, b, v1, g, r, r_new)
                r, g_last = r_new, g_raw[:, -1:]
            for lo, hi, b, g, kv, r in reversed(saved):
                sl = slice(lo, hi)
                v1 = _with_ones(v[:, sl])  # made again, not kept: (c x (e + 1)) per chunk
                ok, safe = safe_denominator(den[:, sl], "positive")
                do = dout[:, sl]
                # out = num / den: d num = dout / den, d den = -sum(dout * out) / den; 0 where
                # the output is the constant 0 (no key seen): never 0 * inf
                dnum = torch.cat([do, -(do * out[:, sl]).sum(-1, keepdim=True)], -1)
                dnum.div_(safe).masked_fill_(~ok, 0.0)  # [d num, d den]
                a = _query_chunk(x[:, sl], wt)
                dec = _decay(g, tril[:hi - lo, :hi - lo])
                p = torch.bmm(a, b.transpose(1, 2)).mul_(dec)
                dp = torch.bmm(dnum, v1.transpose(1, 2)).mul_(dec)
                dnc = dnum * _exp0(r - g)[..., None]
                da = torch.bmm(dp, b).baddbmm_(dnc, kv.transpose(1, 2))
                # the query shift is a per-row constant: no gradient through it
                dx[:, sl] = da.mul_(a) @ ws
                db = torch.bmm(dp.transpose(1, 2), a)
                dvb = torch.bmm(p.transpose(1, 2), dnum)
                if r_next is not None:  # the keys of this chunk enter the later states
                    fold = _exp0(g - r_next)[..., None]
                    db.baddbmm_(v1 * fold, dkv.transpose(1, 2))
                    dvb.add_(torch.bmm(b, dkv).mul_(fold))
                    dkv.mul_(_exp0(r - r_next)[..., None])
                dkv.baddbmm_(a.transpose(1, 2), dnc)
                dv[:, sl] = dvb[..., :e]
                dzk = db.mul_(b)  # padded keys: b = 0
                dy[:, sl] = (dzk @ ws).sub_(dzk.sum(-1, keepdim=True).mul_(sq) * y[:, sl])
                r_next = r
            # the last chunk's (rows x c x m) temporaries go before the next group's keys and
            # states are made: that is when the backward holds the most
            del a, p, dp, da, db, dzk
        return dx, dy, dv, None, None, None, None


def blockwise_causal_positive_favor(x: Tensor, y: Tensor, v: Tensor, w: Tensor,
                                    pad: Tensor | None, chunk_size: int, root: float = 1.0
                                    ) -> Tensor:
    """Causal positive FAVOR+ chunk by chunk: x (batch, heads, seq, d) queries, y the keys and
    v the values with as many heads (kv heads repeated), pad (batch, 1, seq) or None, root =
    sqrt(scale) (the kernel acts on root x and root y); returns (batch, heads, seq, e)."""
    b, h, n, d = x.shape
    rows = b * h
    if pad is not None:
        pad = pad.expand(b, h, n).reshape(rows, n)
    out = _BlockwiseCausalPositiveFavor.apply(
        x.reshape(rows, n, d), y.reshape(rows, n, d), v.reshape(rows, n, v.shape[-1]), w, pad,
        min(chunk_size, n), float(root))
    return out.view(b, h, n, -1)
