"""Causal FAVOR+ with positive features, chunk by chunk (Choromanski et al. 2020,
arXiv 2009.14794, Sec. 2.1, unidirectional case; issue #21, target 3).

Y_t = sum_{j <= t} (a_t . b_j) exp(g_j - g_t) [v_j, 1] with a = phi(Q), b = phi(K) exp(-g) and
g the running key max of :mod:`.features` (so no output depends on a future key, not even
through the stabilizer). The sequence is cut into chunks of ``chunk_size`` positions; for each
chunk the features of its queries and keys are computed, the part inside the chunk is a masked
(chunk x chunk) product, and what the earlier chunks contribute comes from the running
(m x e) state kv = sum_j exp(g_j - r) b_j v_j^T and the (m) normalizer ks, r being g at the end
of the previous chunk. No (seq x m) matrix is ever held.

The backward recomputes the features. It runs over groups of :data:`GROUP_POSITIONS`
positions from the last to the first: for a group it first rebuilds, in forward order, the
keys' features and the state entering each of its chunks (from the state the forward pass kept
at the group's start), then walks the chunks backwards with the reverse state
dkv = sum_{t after} exp(r - g_t) a_t^T dnum_t (the gradient of the entering state). What is
kept between the passes: the inputs, g, the output, its denominator and one (m x e) state per
group (seq / 1024 of them), against the (seq x m) feature matrices and the full backward
scans of :class:`~efflab.attention.performer.favor._CausalPositiveFavor`, the prefix-sum path
kept beside it as the reference. Double backward (``create_graph=True``) differentiates the
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

#: positions whose chunks go through each product together (a multiple of the chunk)
SPAN_POSITIONS = 256


def _exp0(x: Tensor) -> Tensor:
    """exp(min(x, 0)): every decay factor; > 0 only where padding reset g (there b = 0)."""
    return x.clamp_(max=0).exp_()


def _chunks(t: Tensor, lo: int, hi: int, c: int) -> Tensor:
    """Positions lo:hi of t (rows, seq, ...) as (chunks, rows, c, ...), contiguous (may be a
    view of t: never written in place)."""
    return t[:, lo:hi].unflatten(1, (-1, c)).transpose(0, 1).contiguous()


def _unchunk(dst: Tensor, lo: int, hi: int, src: Tensor) -> None:
    """Writes src (chunks x rows, c, f) into positions lo:hi of dst (rows, seq, f)."""
    rows, c = dst.shape[0], src.shape[1]
    dst[:, lo:hi].unflatten(1, (-1, c)).copy_(src.view(-1, rows, c, src.shape[-1]).transpose(0, 1))


def _key_span(y: Tensor, wt: Tensor, g_last: Tensor, pad: Tensor | None, sq: float
              ) -> tuple[Tensor, Tensor, Tensor]:
    """(b, g, g_last) of a span of keys y (chunks, rows, c, d), wt the projection scaled by
    root = sqrt(sq): b = phi(root k_j) exp(-g_j) (up to 1/sqrt m, 0 on padded keys), g the
    running max of the key log-scales continuing ``g_last`` (rows, 1) (-inf before any key),
    with -inf as 0, (chunks, rows, c); the returned g_last: the raw running max at the end."""
    z = y @ wt
    half_sq = half_sq_norms(y, sq)
    s = z.amax(-1) - half_sq
    if pad is not None:
        s.masked_fill_(pad, float("-inf"))
    k, rows, c = s.shape
    g_raw = torch.maximum(torch.cummax(s.transpose(0, 1).reshape(rows, k * c), -1).values,
                          g_last)
    g = finite_or_zero(g_raw).view(rows, k, c).transpose(0, 1).contiguous()
    z.sub_(half_sq.add_(g)[..., None])
    if pad is not None:  # before the exponential: exp of a padded key may overflow
        z.masked_fill_(pad[..., None], float("-inf"))
    return z.exp_(), g, g_raw[:, -1:]


def _query_span(x: Tensor, wt: Tensor) -> Tensor:
    z = x @ wt
    return z.sub_(z.amax(-1, keepdim=True)).exp_()


def _decay(g: Tensor, tril: Tensor) -> Tensor:
    """D[t, j] = exp(g_j - g_t) for j <= t, else 0; g (..., c)."""
    return _exp0(g[..., None, :] - g[..., :, None]).mul_(tril)


class _Span:
    """One span of whole chunks: its keys' features and the states entering its chunks.

    b (chunks x rows, c, m), g (chunks, rows, c); r_in (chunks, rows, 1, 1): g at the end of
    the chunk before each chunk, rescale = exp(r_in - r_end) <= 1 the factor the state takes
    over each chunk, fold (chunks, rows, c, 1) = exp(g - r_end) the one of each key; kv
    (chunks + 1, rows, m, e) and ks (chunks + 1, rows, m, 1): the state entering each chunk,
    then the one after the span, kv_{i+1} = kv_i rescale_i + b_i^T (v_i fold_i)."""

    def __init__(self, lo, hi, c, y, v, wt, pad, sq, kv, ks, r, g_last):
        self.lo, self.hi, self.c = lo, hi, c
        pk = None if pad is None else _chunks(pad[..., None], lo, hi, c)[..., 0]
        b, g, self.g_last = _key_span(_chunks(y, lo, hi, c), wt, g_last, pk, sq)
        k, rows, _, m = b.shape
        self.b, self.g, self.k = b.view(k * rows, c, m), g, k
        r_end = g[..., -1:]                                    # (chunks, rows, 1)
        self.r_in = torch.cat([r[None], r_end[:-1]])[..., None]
        self.rescale = _exp0(self.r_in - r_end[..., None])
        self.fold = _exp0(g - r_end)[..., None]
        self.v = _chunks(v, lo, hi, c)
        self.kv = self._states(kv, self.v * self.fold)
        self.ks = self._states(ks, self.fold)
        self.v = self.v.view(k * rows, c, -1)

    def decay(self, tril: Tensor) -> Tensor:
        c = self.c
        return _decay(self.g, tril[:c, :c]).view(-1, c, c)

    def carry(self) -> Tensor:
        """exp(r_in - g_t) (chunks x rows, c, 1): what the entering state weighs at t."""
        return _exp0(self.r_in[..., 0] - self.g).view(-1, self.c, 1)

    def after(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(kv, ks, r, g_last) after the span (views into the span's buffers)."""
        return self.kv[-1], self.ks[-1], self.g[-1, :, -1:], self.g_last

    def reverse_states(self, ds: Tensor, a: Tensor, right: Tensor) -> Tensor:
        """(chunks + 1, rows, m, f): [i] the gradient of the state entering chunk i, [chunks]
        = ds the one of the state after the span; ds_i = a_i^T right_i + rescale_i ds_{i+1}."""
        k, (rows, m, f) = self.k, ds.shape
        out = ds.new_empty(k + 1, rows, m, f)
        out[k] = ds
        torch.bmm(a.transpose(1, 2), right, out=out[:k].view(k * rows, m, f))
        for i in reversed(range(k)):
            out[i].addcmul_(out[i + 1], self.rescale[i])
        return out

    def _states(self, s0: Tensor, right: Tensor) -> Tensor:
        k, (rows, m, f) = self.k, s0.shape
        out = s0.new_empty(k + 1, rows, m, f)
        out[0] = s0
        torch.bmm(self.b.transpose(1, 2), right.view(k * rows, self.c, f),
                  out=out[1:].view(k * rows, m, f))
        for i in range(k):
            out[i + 1].addcmul_(out[i], self.rescale[i])
        return out

    def entering(self, s: Tensor) -> Tensor:
        """s (chunks + 1, rows, m, f) -> the state entering each chunk (chunks x rows, m, f)."""
        return s[:-1].view(-1, *s.shape[2:])


def _group_and_span(chunk: int) -> tuple[int, int]:
    """Positions per backward group and per span: multiples of the chunk, span <= group."""
    group = max(chunk, GROUP_POSITIONS // chunk * chunk)
    return group, max(chunk, min(group, SPAN_POSITIONS) // chunk * chunk)


def _spans(lo: int, hi: int, chunk: int, span: int):
    """(lo, hi, c) of the spans of positions lo:hi: whole chunks of ``chunk``, at most
    ``span`` positions each, and the sequence's last, shorter chunk alone."""
    for s_lo in range(lo, hi, span):
        s_hi = min(s_lo + span, hi)
        whole = s_lo + (s_hi - s_lo) // chunk * chunk
        if whole > s_lo:
            yield s_lo, whole, chunk
        if s_hi > whole:
            yield whole, s_hi, s_hi - whole


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
        kv, ks = v.new_zeros(rows, m, e), v.new_zeros(rows, m, 1)
        r = v.new_zeros(rows, 1)                 # g at the end of the previous chunk
        g_last = v.new_full((rows, 1), float("-inf"))
        out, den = v.new_empty(rows, n, e), v.new_empty(rows, n, 1)
        group, span = _group_and_span(chunk)
        states = []                              # (kv, ks, r, g_last) at each group's start
        for g_lo in range(0, n, group):
            # copies: the views would keep a span's buffers alive
            states.append((kv.clone(), ks.clone(), r.clone(), g_last))
            for lo, hi, c in _spans(g_lo, min(g_lo + group, n), chunk, span):
                sp = _Span(lo, hi, c, y, v, wt, pad, sq, kv, ks, r, g_last)
                a = _query_span(_chunks(x, lo, hi, c), wt).view(-1, c, m)
                p = torch.bmm(a, sp.b.transpose(1, 2)).mul_(sp.decay(tril))
                carry = sp.carry()
                num = torch.bmm(p, sp.v).addcmul_(torch.bmm(a, sp.entering(sp.kv)), carry)
                d = p.sum(-1, keepdim=True).addcmul_(torch.bmm(a, sp.entering(sp.ks)), carry)
                ok, safe = safe_denominator(d, "positive")
                _unchunk(out, lo, hi, num.div_(safe).masked_fill_(~ok, 0.0))
                _unchunk(den, lo, hi, d)
                kv, ks, r, g_last = sp.after()
        kv0 = torch.stack([s[0] for s in states], 1)
        ks0 = torch.stack([s[1] for s in states], 1)
        r0 = torch.stack([s[2] for s in states], 1)
        gl0 = torch.stack([s[3] for s in states], 1)
        ctx.save_for_backward(x, y, v, w, out, den, kv0, ks0, r0, gl0)
        ctx.pad, ctx.chunk, ctx.group, ctx.span, ctx.root = pad, chunk, group, span, root
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
        x, y, v, w, out, den, kv0, ks0, r0, gl0 = ctx.saved_tensors
        pad, chunk, group, span, root = ctx.pad, ctx.chunk, ctx.group, ctx.span, ctx.root
        ws = w * root
        wt, sq = ws.transpose(0, 1), root * root
        rows, n = y.shape[:2]
        m, e = w.shape[0], v.shape[-1]
        tril = torch.ones(chunk, chunk, dtype=v.dtype, device=v.device).tril_()
        dx, dy, dv = torch.empty_like(x), torch.empty_like(y), torch.empty_like(v)
        dkv, dks = torch.zeros_like(kv0[:, 0]), torch.zeros_like(ks0[:, 0])
        for gi in reversed(range(kv0.shape[1])):
            g_lo = gi * group
            after = kv0[:, gi], ks0[:, gi], r0[:, gi], gl0[:, gi]
            # forward order: the keys' features and the states entering each chunk
            spans = []
            for lo, hi, c in _spans(g_lo, min(g_lo + group, n), chunk, span):
                spans.append(_Span(lo, hi, c, y, v, wt, pad, sq, *after))
                after = spans[-1].after()
            while spans:
                sp = spans.pop()
                lo, hi, c = sp.lo, sp.hi, sp.c
                ok, safe = safe_denominator(_chunks(den, lo, hi, c), "positive")
                do = _chunks(dout, lo, hi, c)
                # out = num / den: d num = dout / den, d den = -sum(dout * out) / den; 0 where
                # the output is the constant 0 (no key seen): never 0 * inf
                dnum = (do / safe).masked_fill_(~ok, 0.0).view(-1, c, e)
                dden = (-(do * _chunks(out, lo, hi, c)).sum(-1, keepdim=True) / safe
                        ).masked_fill_(~ok, 0.0).view(-1, c, 1)
                a = _query_span(_chunks(x, lo, hi, c), wt).view(-1, c, m)
                dec = sp.decay(tril)
                b, vb = sp.b, sp.v
                p = torch.bmm(a, b.transpose(1, 2)).mul_(dec)
                dp = torch.baddbmm(dden, dnum, vb.transpose(1, 2)).mul_(dec)
                carry = sp.carry()
                dnc, ddc = dnum * carry, dden * carry
                da = torch.bmm(dp, b)
                da.baddbmm_(dnc, sp.entering(sp.kv).transpose(1, 2))
                da.baddbmm_(ddc, sp.entering(sp.ks).transpose(1, 2))
                # the query shift is a per-row constant: no gradient through it
                _unchunk(dx, lo, hi, (da.mul_(a) @ ws))
                db = torch.bmm(dp.transpose(1, 2), a)
                dvb = torch.bmm(p.transpose(1, 2), dnum)
                # the reverse states: the gradient of the state entering each chunk
                gkv = sp.reverse_states(dkv, a, dnc)
                gks = sp.reverse_states(dks, a, ddc)
                # the keys of each chunk enter the states after it
                later_kv, later_ks = gkv[1:].view(-1, m, e), gks[1:].view(-1, m, 1)
                fold = sp.fold.view(-1, c, 1)
                db.baddbmm_(vb * fold, later_kv.transpose(1, 2))
                db.baddbmm_(fold, later_ks.transpose(1, 2))
                dvb.add_(torch.bmm(b, later_kv).mul_(fold))
                dkv, dks = gkv[0], gks[0]
                _unchunk(dv, lo, hi, dvb)
                dzk = db.mul_(b)  # padded keys: b = 0
                yk = _chunks(y, lo, hi, c).view(-1, c, y.shape[-1])
                _unchunk(dy, lo, hi, (dzk @ ws).sub_(dzk.sum(-1, keepdim=True).mul_(sq) * yk))
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
