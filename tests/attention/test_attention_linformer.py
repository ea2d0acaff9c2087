"""Linformer: fast path = reference, identity projection = softmax, sharing, kinds, lengths."""

import pytest
import torch
import torch.nn.functional as F

from efflab.attention import (
    LinformerAttention,
    LinformerProjection,
    MultiheadAttention,
    linformer_attention,
    linformer_attention_reference,
    softmax_attention_reference,
)

F64 = torch.float64


def _qkv(b=2, h=3, n=12, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=g, dtype=F64) for _ in range(3))


def _mask():
    m = torch.zeros(2, 12, dtype=torch.bool)
    m[0, 9:] = True
    m[1, 2] = True
    return m


def test_identity_projection_with_k_equal_n_is_softmax():
    q, k, v = _qkv()
    eye = torch.eye(12, dtype=F64)[None]
    torch.testing.assert_close(linformer_attention(q, k, v, eye, eye),
                               softmax_attention_reference(q, k, v))
    torch.testing.assert_close(linformer_attention(q, k, v, eye, eye, _mask()),
                               softmax_attention_reference(q, k, v, _mask()))


@pytest.mark.parametrize("heads_e, heads_f", [(1, 1), (3, 3), (1, 3)])
def test_fast_matches_reference(heads_e, heads_f):
    q, k, v = _qkv(seed=heads_e + heads_f)
    g = torch.Generator().manual_seed(1)
    e = torch.randn(heads_e, 5, 12, generator=g, dtype=F64)
    f = torch.randn(heads_f, 5, 12, generator=g, dtype=F64)
    for mask in (None, _mask()):
        torch.testing.assert_close(linformer_attention(q, k, v, e, f, mask),
                                   linformer_attention_reference(q, k, v, e, f, mask))


@pytest.mark.parametrize("kind", ["learned", "mean", "conv"])
def test_padded_content_has_no_effect(kind):
    q, k, v = _qkv()
    attn = LinformerAttention(12, k=4, kind=kind).double()
    mask = _mask()
    k2, v2 = k.clone(), v.clone()
    k2[mask[:, None, :, None].expand_as(k2)] = 1e3
    v2[mask[:, None, :, None].expand_as(v2)] = -1e3
    assert torch.equal(attn(q, k, v, mask), attn(q, k2, v2, mask))


def test_mean_and_conv_kinds_are_strided_pooling():
    x = torch.randn(2, 3, 12, 5, dtype=F64)
    mean = LinformerProjection(12, 4, "mean").double()
    pooled = F.avg_pool1d(x.transpose(-1, -2).reshape(6, 5, 12), 3).reshape(2, 3, 5, 4)
    torch.testing.assert_close(mean(x), pooled.transpose(-1, -2))
    conv = LinformerProjection(12, 4, "conv", heads=3).double()
    with torch.no_grad():
        conv.kernel.copy_(torch.randn(3, 3, dtype=F64))
    for h in range(3):
        want = F.conv1d(x[:, h].transpose(-1, -2).reshape(10, 1, 12), conv.kernel[h].view(1, 1, 3),
                        stride=3).reshape(2, 5, 4).transpose(-1, -2)
        torch.testing.assert_close(conv(x)[:, h], want)


def test_short_sequences_slice_the_projection_and_skip_empty_windows():
    q, k, v = _qkv(n=7)
    attn = LinformerAttention(12, k=6).double()
    e = attn.key_projection.weight[..., :7].detach()
    f = attn.value_projection.weight[..., :7].detach()
    torch.testing.assert_close(attn(q, k, v), linformer_attention_reference(q, k, v, e, f))
    # mean pooling over windows of 2: positions 0..6 fill windows 0..3; windows 4, 5 are empty
    # and must not take part (a zero key would still get softmax weight); window 3 holds only
    # position 6, and its mean is that key (not half of it)
    pool = LinformerAttention(12, k=6, kind="mean").double()
    win = torch.zeros(1, 4, 7, dtype=F64)
    for i in range(4):
        win[0, i, 2 * i: 2 * i + 2] = 0.5
    win[0, 3, 6] = 1.0
    torch.testing.assert_close(pool(q, k, v), softmax_attention_reference(
        q, torch.einsum("kn,bhnd->bhkd", win[0], k), torch.einsum("kn,bhnd->bhkd", win[0], v)))


def test_longer_sequence_and_causal_are_refused():
    q, k, v = _qkv(n=12)
    with pytest.raises(ValueError, match="sequence length 12 exceeds .*max_seq_len 10"):
        LinformerAttention(10, k=4)(q, k, v)
    with pytest.raises(ValueError, match="cannot be causal.*future"):
        LinformerAttention(12, k=4, causal=True)
    with pytest.raises(ValueError, match="cannot be causal"):
        MultiheadAttention(12, 3, "linformer", max_seq_len=12, causal=True)


def _count_projections(layers):
    mats = {id(p) for layer in layers for p in layer.parameters() if p.dim() == 3}
    heads = [p.shape[0] for layer in layers for p in layer.parameters() if p.dim() == 3]
    return len(mats), heads


def test_sharing_modes_count_matrices_as_in_the_paper():
    # A 12-layer, 12-head model has 24 / 12 / 1 projections for headwise / key-value / layerwise
    # (Sec. 4), and 2 * 12 per layer without sharing.
    def model(**opts):
        return [MultiheadAttention(24, 12, "linformer", max_seq_len=16, k=4, **opts).attention
                for _ in range(12)]
    assert _count_projections(model(sharing="headwise"))[0] == 24
    assert _count_projections(model(sharing="key-value"))[0] == 12
    n, heads = _count_projections(model(sharing="none"))
    assert n == 24 and set(heads) == {12}  # 24 tensors holding 12 heads each: 288 matrices
    shared = LinformerProjection(16, 4)
    layers = [MultiheadAttention(24, 12, "linformer", max_seq_len=16, projection=shared)
              for _ in range(12)]
    assert _count_projections([m.attention for m in layers])[0] == 1
    assert all(m.attention.sharing == "layerwise" for m in layers)


def test_layerwise_gradients_accumulate_in_the_shared_projection():
    shared = LinformerProjection(8, 4)
    a = MultiheadAttention(8, 2, "linformer", projection=shared)
    b = MultiheadAttention(8, 2, "linformer", projection=shared)
    x = torch.randn(2, 8, 8)
    b(a(x)).sum().backward()
    g_both = shared.weight.grad.clone()
    shared.weight.grad = None
    a(x).sum().backward()
    assert not torch.allclose(g_both, shared.weight.grad)  # b's use contributed


def test_k_may_differ_per_layer():
    x = torch.randn(2, 10, 8)
    layers = [MultiheadAttention(8, 2, "linformer", max_seq_len=10, k=k) for k in (8, 4, 2)]
    for layer, k in zip(layers, (8, 4, 2)):
        assert layer.attention.k == k
        x = layer(x)
    assert x.shape == (2, 10, 8) and torch.isfinite(x).all()


def test_gradcheck():
    q, k, v = (x.requires_grad_() for x in _qkv(b=1, h=2, n=6, d=3))
    e = torch.randn(2, 3, 6, dtype=F64, requires_grad=True)
    f = torch.randn(1, 3, 6, dtype=F64, requires_grad=True)
    mask = torch.tensor([[False, True, False, False, False, True]])
    assert torch.autograd.gradcheck(
        lambda q, k, v, e, f: linformer_attention(q, k, v, e, f, mask), (q, k, v, e, f))


def test_bad_options_and_input():
    q, k, v = _qkv()
    e = torch.randn(1, 4, 12, dtype=F64)
    with pytest.raises(ValueError, match="sharing must be one of"):
        LinformerAttention(12, sharing="all")
    with pytest.raises(ValueError, match="kind must be one of"):
        LinformerAttention(12, kind="max")
    with pytest.raises(ValueError, match="max_seq_len 10 must be a multiple of k 4"):
        LinformerProjection(10, 4, "mean")
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        LinformerAttention(12, k=0)
    with pytest.raises(ValueError, match="needs projection=LinformerProjection"):
        LinformerAttention(12, sharing="layerwise")
    with pytest.raises(ValueError, match="k 5 differs from the shared projection's k 4"):
        LinformerAttention(12, k=5, projection=LinformerProjection(12, 4))
    with pytest.raises(ValueError, match="sharing='none' needs num_heads"):
        LinformerAttention(12, sharing="none")
    with pytest.raises(ValueError, match=r"key_projection must have shape \(1 or heads=3"):
        linformer_attention(q, k, v, e[..., :10], e)
    with pytest.raises(ValueError, match="same k"):
        linformer_attention(q, k, v, e, e[:, :3])
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        linformer_attention(q, k, v, e, e, torch.zeros(2, 11, dtype=torch.bool))


def _paper_order(mha, query, key, value, mask):
    """The block by the paper's order: map to k, v first (all positions), then project."""
    q, k, v = mha._project(query, key, value, key is None)
    return mha._merge(mha.attention(q, k, v, mask, enable_gqa=k.shape[1] != q.shape[1]))


@pytest.mark.parametrize("kind", ["learned", "mean", "conv"])
@pytest.mark.parametrize("sharing", ["headwise", "key-value", "layerwise"])
def test_block_projects_the_sequence_first_exactly(sharing, kind):
    # (E M X) W^T + (E m) b^T = E M (X W^T + 1 b^T): values and every gradient, with padding
    # (an all-padded row included), self-attention and cross-attention, packed and not, GQA.
    torch.manual_seed(3)
    shared = LinformerProjection(12, 4, kind) if sharing == "layerwise" else None
    opts = dict(projection=shared) if shared else dict(max_seq_len=12, k=4, kind=kind,
                                                       sharing=sharing)
    mask = _mask()
    mask[1] = True
    for extra in ({}, {"kdim": 5, "vdim": 5, "num_kv_heads": 2}):
        mha = MultiheadAttention(8, 4, attention="linformer", **opts, **extra).double()
        if kind == "conv":
            with torch.no_grad():
                mha.attention.key_projection.kernel.normal_()
        with torch.no_grad():
            for p in mha.parameters():
                if p.dim() == 1:
                    p.normal_()  # nonzero biases: the (E m) b^T term
        assert mha._projects_first(None, None, 12)
        x = torch.randn(2, 7, 8, dtype=F64, requires_grad=True)
        key = torch.randn(2, 12, mha.kdim, dtype=F64, requires_grad=True)
        value = torch.randn(2, 12, mha.vdim, dtype=F64, requires_grad=True)
        cases = [(key, key, mask), (key, value, mask)] if extra else \
            [(None, None, mask), (None, None, None), (key, None, mask)]
        for k_in, v_in, m in cases:
            if k_in is None:
                x12 = torch.randn(2, 12, 8, dtype=F64, requires_grad=True)
                args, ref_args = (x12,), (x12, x12, x12)
            else:
                args = (x, k_in) if v_in is None else (x, k_in, v_in)
                ref_args = (x, k_in, k_in if v_in is None else v_in)
            leaves = [t for t in {id(a): a for a in ref_args}.values()] + list(mha.parameters())
            fast = mha(*args, key_padding_mask=m)
            ref = _paper_order(mha, *ref_args, m)
            torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
            cot = torch.randn_like(ref)
            gf = torch.autograd.grad(fast, leaves, cot, allow_unused=True)
            gr = torch.autograd.grad(ref, leaves, cot, allow_unused=True)
            for a, b in zip(gf, gr):
                if b is None:
                    assert a is None or a.abs().max() == 0
                else:
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_block_keeps_the_paper_order_where_the_reorder_does_not_pay_or_apply():
    mha = MultiheadAttention(8, 4, attention="linformer", max_seq_len=12, k=4, sharing="none")
    assert not mha._projects_first(None, None, 12)  # per-head E: X would be projected h times
    mha = MultiheadAttention(8, 4, attention="linformer", max_seq_len=12, k=4, rotary=True)
    assert not mha._projects_first(None, None, 12)  # rotary keys do not commute with E
    mha = MultiheadAttention(8, 4, attention="linformer", max_seq_len=12, k=8)
    assert not mha._projects_first(None, None, 6) and mha._projects_first(None, None, 12)
