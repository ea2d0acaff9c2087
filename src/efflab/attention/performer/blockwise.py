"""Bidirectional FAVOR+ (Choromanski et al. 2020, arXiv 2009.14794, Sec. 2.1, Eq. of the
bidirectional case): out = D^-1 phi(Q) (phi(K)^T [V, 1]), in two forms.

* :func:`bidirectional_favor`: the composed formula on whole (seq x m) feature matrices,
  differentiated by autograd; it serves every feature map, and is the double-backward path.
* :class:`_BlockwisePositiveFavor`: the positive map, tile by tile (issue #21, targets 1-2).
  A tile is about ``block_size`` positions of one row (batch x head), or whole rows of a
  short sequence (:func:`tiles`): a contiguous piece of the inputs, so every product is one
  GEMM written in place. The forward computes the features of a tile of keys at a time and
  folds them into the (m x (head_dim_v + 1)) state S = phi(K)^T [V, 1], then the features of
  a tile of queries at a time against S; the backward recomputes the tile features. No
  (seq x m) matrix is ever held: what is kept is the inputs, S, the key shift, the output and
  its denominator. On a CPU a (tile x m) feature block stays in cache while its products run,
  where the whole-sequence matrices of the one-matrix form do not.

The key shift (see :mod:`.features`) must be one max over all unpadded keys, but the blockwise
forward sees the keys one tile at a time: it keeps the running max g and, when a tile raises
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

#: Elements of one (tile x m) feature block the default tile aims at: 2^18 float32 numbers
#: are 1 MiB (one thread, 2026-12-02, m = 256, tiles of 1024 positions against 512 and 2048:
#: 0.92-0.95x their time at 8 heads x 4096 positions, 0.90x at 16 x 8 rows of 512).
_BLOCK_ELEMENTS = 1 << 18
#: On a GPU there is no cache to fit and every tile is a kernel launch or several: tiles of
#: 2^22 elements (16 MiB; m = 256: 16384 positions), so that a long row is a few tiles.
#: Not measured (no GPU was lent to these sessions).
_GPU_BLOCK_ELEMENTS = 1 << 22


def default_block_size(features: int, device_type: str = "cpu") -> int:
    """Positions per tile: a power of two near 2^18 / features (CPU; 2^22 / features on a GPU),
    clamped to [128, 4096] (CPU; [128, 65536] on a GPU); m = 256: 1024 positions (16384).
    The number of rows (batch x heads) does not enter: a tile is one row's positions, or whole
    rows of a short sequence (see :func:`tiles`)."""
    gpu = device_type != "cpu"
    target = max(1, (_GPU_BLOCK_ELEMENTS if gpu else _BLOCK_ELEMENTS) // max(1, features))
    return min(65536 if gpu else 4096, max(128, 1 << (target.bit_length() - 1)))


def tiles(rows: int, n: int, block: int) -> list[tuple[slice, slice]]:
    """(rows, positions) slices covering a (rows, n) grid in tiles of about ``block``
    positions, each a contiguous piece of a (rows, n, d) tensor: runs of ``block`` positions
    of one row when n > block, else whole rows, block // n of them at a time. A row's tiles
    come in order of position (the running key max needs it). Contiguous tiles make every
    product a plain GEMM, written straight into its place in the output."""
    if n <= block:
        per = max(1, block // max(n, 1))
        return [(slice(r, min(r + per, rows)), slice(0, n)) for r in range(0, rows, per)]
    return [(slice(r, r + 1), slice(lo, min(lo + block, n)))
            for r in range(rows) for lo in range(0, n, block)]


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


def half_sq_norms(y: Tensor, sq: float, tmp: Tensor | None = None) -> Tensor:
    """|root y|^2 / 2 per row of y (..., d), sq = root^2: the norm term of the positive map
    (the paper's exp(-|x|^2 / 2)) of the scaled keys; ``tmp`` (y's shape) takes the squares."""
    return torch.mul(y, y, out=tmp).sum(-1).mul_(sq / 2)


class _Workspace:
    """Reusable per-tile buffers for one pass of the fused path, one per entry of ``widths``
    (buffer i holds a (tile x widths[i]) result). A fresh (tile x m) result per product would
    be a fresh allocation of about a MiB each time, and on a CPU a block that size is often
    handed back to the system when freed and page-faulted in again when the next one is made
    (glibc's mmap threshold): with glibc told to keep such blocks (``MALLOC_MMAP_THRESHOLD_``)
    the whole step (one thread, n = 16384) ran 1.2x and 1.9x faster in two checks on the
    loaded machine (2026-12-02). Products and the larger
    elementwise temporaries write into these buffers instead (``out=``)."""

    def __init__(self, like: Tensor, tile_list: list[tuple[slice, slice]],
                 widths: tuple[int, ...]) -> None:
        most = max(((r.stop - r.start) * (p.stop - p.start) for r, p in tile_list), default=0)
        self.bufs = [like.new_empty(most * w) for w in widths]

    def get(self, i: int, like: Tensor, width: int) -> Tensor:
        """Buffer i as a (rows, c, width) tensor, (rows, c) taken from ``like``."""
        r, c = like.shape[:2]
        return self.bufs[i][:r * c * width].view(r, c, width)


def _features(x: Tensor, wt: Tensor, out: Tensor) -> Tensor:
    """x (rows, c, d) @ wt (d, m) into ``out`` (rows, c, m)."""
    if x.shape[0] == 1:
        torch.mm(x[0], wt, out=out[0])
    else:
        torch.matmul(x, wt, out=out)
    return out


def _key_block(y: Tensor, wt: Tensor, g: Tensor, pad: Tensor | None, sq: float,
               out: Tensor, tmp: Tensor) -> Tensor:
    """phi(k_j) exp(-g) of a tile (up to the constant 1/sqrt(m)), 0 on padded keys, into
    ``out``; y (rows, c, d) keys, wt (d, m) the projection scaled by root = sqrt(sq),
    g (rows, 1), pad (rows, c) or None, tmp a buffer of y's shape."""
    z = _features(y, wt, out)
    z.sub_(half_sq_norms(y, sq, tmp).add_(g)[..., None])
    if pad is not None:  # before the exponential: exp of a padded key may overflow
        z.masked_fill_(pad[..., None], float("-inf"))
    return z.exp_()


def _query_block(x: Tensor, wt: Tensor, out: Tensor) -> Tensor:
    z = _features(x, wt, out)
    return z.sub_(z.amax(-1, keepdim=True)).exp_()


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """(rows, c, m) x (rows, m) -> (rows, c). A batched GEMM with one column is several times
    slower on a CPU than a matrix-vector product (one row) or a product and a sum (several)."""
    if a.shape[0] == 1:
        return torch.mv(a[0], b[0])[None]
    return (a * b[:, None, :]).sum(-1)


def _col_dot(a: Tensor, d: Tensor) -> Tensor:
    """(rows, c, m) x (rows, c) -> (rows, m): sum_c d[r, c] a[r, c, :]."""
    if a.shape[0] == 1:
        return torch.mv(a[0].t(), d[0])[None]
    return (a * d[..., None]).sum(1)


class _BlockwisePositiveFavor(torch.autograd.Function):
    """Bidirectional FAVOR+ with positive features, tile by tile (see the module docstring).

    x (rows, seq_q, d) queries (rows = batch x kv_heads, the query heads of a kv head stacked
    along seq_q), y (rows, seq_k, d) keys, v (rows, seq_k, e), w (m, d) a buffer (never
    differentiated), pad (rows, seq_k) or None, root = sqrt(scale): the kernel acts on root x
    and root y, and root is folded into w (root x) w^T = x (root w)^T, so the scaled copies of
    x and y are never made and the gradients need no scaling pass. The state is kept as
    kv = phi(K)^T V (m x e) and the normalizer ks = phi(K)^T 1 (m) apart: an (m x (e + 1))
    matrix would make every product an odd width. Double backward: as in the causal fused
    path, a backward under grad mode (``create_graph=True``) differentiates
    :func:`bidirectional_favor` instead: exact, at the cost of the (seq x m) matrices in that
    case only.
    """

    @staticmethod
    def forward(ctx, x, y, v, w, pad, block, root):
        x, y, v = x.contiguous(), y.contiguous(), v.contiguous()
        wt = w.transpose(0, 1) * root
        sq = root * root
        rows, n_k = y.shape[:2]
        n_q, m = x.shape[1], w.shape[0]
        key_tiles, query_tiles = tiles(rows, n_k, block), tiles(rows, n_q, block)
        work = _Workspace(v, key_tiles + query_tiles, (m, x.shape[-1]))
        kv = v.new_zeros(rows, m, v.shape[-1])
        ks = v.new_zeros(rows, m)
        g_run = v.new_full((rows, 1), float("-inf"))
        for rs, ps in key_tiles:
            yb, pb = y[rs, ps], None if pad is None else pad[rs, ps]
            z = _features(yb, wt, work.get(0, yb, m))
            half_sq = half_sq_norms(yb, sq, work.get(1, yb, yb.shape[-1]))
            s = z.amax(-1) - half_sq
            if pb is not None:
                s.masked_fill_(pb, float("-inf"))
            g_old = g_run[rs]
            g_new = torch.maximum(g_old, s.amax(-1, keepdim=True))
            # where g_old is -inf the state is still 0 (no key yet): factor 0, never inf * 0
            factor = torch.where(torch.isfinite(g_old), torch.exp(g_old - g_new),
                                 torch.zeros_like(g_old))
            kv_t, ks_t = kv[rs], ks[rs]
            kv_t.mul_(factor[..., None])
            ks_t.mul_(factor)
            z.sub_(half_sq.add_(finite_or_zero(g_new))[..., None])
            if pb is not None:  # before the exponential: exp of a padded key may overflow
                z.masked_fill_(pb[..., None], float("-inf"))
            kf = z.exp_()
            kv_t.baddbmm_(kf.transpose(1, 2), v[rs, ps])
            ks_t.add_(kf.sum(1))
            g_run[rs] = g_new
        g = finite_or_zero(g_run)
        out = v.new_empty(rows, n_q, v.shape[-1])
        den = v.new_empty(rows, n_q)
        for rs, ps in query_tiles:
            qf = _query_block(x[rs, ps], wt, work.get(0, x[rs, ps], m))
            d = _row_dot(qf, ks[rs])
            ok, safe = safe_denominator(d, "positive")
            o = out[rs, ps]
            torch.bmm(qf, kv[rs], out=o)
            o.div_(safe[..., None]).masked_fill_(~ok[..., None], 0.0)
            den[rs, ps] = d
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
        dout = dout.contiguous()
        ws = w * root
        wt, sq = ws.transpose(0, 1), root * root
        rows, m = x.shape[0], w.shape[0]
        key_tiles, query_tiles = tiles(rows, y.shape[1], block), tiles(rows, x.shape[1], block)
        e, d = v.shape[-1], x.shape[-1]
        work = _Workspace(v, key_tiles + query_tiles, (m, m, e, e, d))
        dx, dy, dv = torch.empty_like(x), torch.empty_like(y), torch.empty_like(v)
        dkv, dks = torch.zeros_like(kv), torch.zeros_like(ks)
        for rs, ps in query_tiles:
            ok, safe = safe_denominator(den[rs, ps], "positive")
            # out = num / den: d num = dout / den, d den = -sum(dout * out) / den; 0 where the
            # output is the constant 0 (no key seen): never 0 * inf
            do = dout[rs, ps]
            dnum = torch.div(do, safe[..., None], out=work.get(2, do, e))
            dnum.masked_fill_(~ok[..., None], 0.0)
            dden = torch.mul(do, out[rs, ps], out=work.get(3, do, e)).sum(-1)
            dden.div_(safe).neg_().masked_fill_(~ok, 0.0)
            xb = x[rs, ps]
            qf = _query_block(xb, wt, work.get(0, xb, m))
            dkv[rs].baddbmm_(qf.transpose(1, 2), dnum)
            dks[rs].add_(_col_dot(qf, dden))
            # the query shift is a per-row constant: no gradient through it
            t = torch.bmm(dnum, kv[rs].transpose(1, 2), out=work.get(1, xb, m))
            t.addcmul_(dden[..., None], ks[rs][:, None, :]).mul_(qf)
            torch.matmul(t, ws, out=dx[rs, ps])
        for rs, ps in key_tiles:
            yb = y[rs, ps]
            kf = _key_block(yb, wt, g[rs], None if pad is None else pad[rs, ps], sq,
                            work.get(0, yb, m), work.get(4, yb, d))
            dkv_t = dkv[rs]
            torch.bmm(kf, dkv_t, out=dv[rs, ps])
            dzk = torch.bmm(v[rs, ps], dkv_t.transpose(1, 2), out=work.get(1, yb, m))
            dzk.add_(dks[rs][:, None, :]).mul_(kf)  # padded rows: kf = 0
            dyb = dy[rs, ps]
            torch.matmul(dzk, ws, out=dyb)
            dyb.addcmul_(dzk.sum(-1, keepdim=True), yb, value=-sq)  # through -|root y|^2 / 2
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
        block_size = default_block_size(w.shape[0], x.device.type)
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
