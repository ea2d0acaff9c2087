"""Causal linear attention by chunked prefix sums (Choromanski et al. 2020, arXiv 2009.14794,
Sec. 2.1, unidirectional FAVOR+), for any feature map: given query features a, key features b
and values v, Y_t = sum_{j <= t} (a_t . b_j) exp(g_j - g_t) v_j, with g the per-position key
shift of :mod:`.features`. :func:`causal_linear_attention` is the fast path (chunked, with its
own backward), :func:`causal_linear_attention_reference` the (seq x seq) formula beside it.
Nothing here knows about FAVOR+: any linear-attention feature map can use it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from efflab.attention._checks import check_positive_int


def causal_linear_attention_reference(a: Tensor, b: Tensor, v: Tensor, g: Tensor) -> Tensor:
    """Y_t = sum_{j <= t} (a_t . b_j) exp(g_j - g_t) v_j, with the full (seq x seq) matrix.

    a, b: (..., seq, m), v: (..., seq, e), g: (..., seq). Returns (..., seq, e).
    """
    n = a.shape[-2]
    tril = torch.ones(n, n, dtype=torch.bool, device=a.device).tril()
    # masked before the exponential: exp(g_j - g_t) of a future j may overflow
    expo = torch.where(tril, g[..., None, :] - g[..., :, None], float("-inf"))
    return (a @ b.transpose(-1, -2) * torch.exp(expo)) @ v


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
    if n == 0:
        return v.new_zeros(*lead, 0, e)
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
    differentiated; where it decreases, b must be 0 before the decrease, as after padding).
    Reference: :func:`causal_linear_attention_reference`. The backward is three more scans of
    differentiable ops, so double backward (``create_graph=True``) is exact too.
    """
    check_positive_int("chunk_size", chunk_size)
    return _CausalLinearAttention.apply(a, b, v, g.detach(), chunk_size)
