"""Exact softmax attention: SDPA path = textbook reference, padding and causal conventions."""

import pytest
import torch

from efflab.attention import SoftmaxAttention, softmax_attention, softmax_attention_reference

F64 = torch.float64


def _qkv(b=2, h=3, n=9, d=5, n_k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_k = n if n_k is None else n_k
    q = torch.randn(b, h, n, d, generator=g, dtype=F64)
    k = torch.randn(b, h, n_k, d, generator=g, dtype=F64)
    v = torch.randn(b, h, n_k, d + 1, generator=g, dtype=F64)
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_matches_reference(causal, padded):
    q, k, v = _qkv(seed=int(causal) + 2 * int(padded))
    mask = None
    if padded:
        mask = torch.zeros(2, 9, dtype=torch.bool)
        mask[1, 6:] = True
        mask[0, 0] = True
    out = softmax_attention(q, k, v, mask, causal)
    ref = softmax_attention_reference(q, k, v, mask, causal)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_reference_is_the_textbook_formula():
    q, k, v = _qkv(b=1, h=1, n=4, d=2)
    s = q[0, 0] @ k[0, 0].T / 2 ** 0.5
    w = torch.exp(s) / torch.exp(s).sum(-1, keepdim=True)
    torch.testing.assert_close(softmax_attention_reference(q, k, v)[0, 0], w @ v[0, 0])


def test_cross_attention_lengths_and_scale():
    q, k, v = _qkv(n=4, n_k=7)
    out = softmax_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, softmax_attention_reference(q, k, v, scale=0.3))
    assert out.shape == (2, 3, 4, 6)


def test_padding_content_has_no_effect_and_empty_rows_are_zero():
    q, k, v = _qkv()
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, 5:] = True
    mask[1] = True  # a fully padded sequence: zeros, not NaN
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 5:] = 1e3 * torch.randn_like(k2[0, :, 5:])
    v2[0, :, 5:] = -7.0
    a = softmax_attention(q, k, v, mask)
    b = softmax_attention(q, k2, v2, mask)
    torch.testing.assert_close(a[0], b[0])
    assert torch.equal(a[1], torch.zeros_like(a[1]))
    # causal with left padding: the first queries see only padding
    left = torch.zeros(2, 9, dtype=torch.bool)
    left[:, :3] = True
    c = softmax_attention(q, k, v, left, causal=True)
    assert torch.equal(c[:, :, :3], torch.zeros_like(c[:, :, :3]))
    torch.testing.assert_close(c, softmax_attention_reference(q, k, v, left, causal=True))


@pytest.mark.parametrize("heads_kv", [3, 1])
def test_key_padding_with_an_empty_item_values_and_gradients_against_the_reference(heads_kv):
    # key padding only: the empty item's values are zeroed instead of its output
    q, k, v = (x.requires_grad_() for x in _qkv(n=5, n_k=9, seed=11))
    k2, v2 = (x[:, :heads_kv].detach().requires_grad_() for x in (k, v))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[1] = True
    gqa = heads_kv != 3
    out = softmax_attention(q, k2, v2, mask, enable_gqa=gqa)
    ref = softmax_attention_reference(q, k2, v2, mask, enable_gqa=gqa)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    grads = torch.autograd.grad(out, (q, k2, v2), cot)
    for a, b in zip(grads, torch.autograd.grad(ref, (q, k2, v2), cot)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for gr in grads:  # nothing flows through the empty item
        assert torch.equal(gr[1], torch.zeros_like(gr[1]))


def test_causal_future_does_not_change_past():
    q, k, v = _qkv()
    t = 4
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:]) * 10
    a = SoftmaxAttention(causal=True)(q, k, v)
    b = SoftmaxAttention(causal=True)(q2, k2, v2)
    torch.testing.assert_close(a[:, :, : t + 1], b[:, :, : t + 1], rtol=1e-13, atol=1e-13)


def test_gradcheck():
    q, k, v = (x.requires_grad_() for x in _qkv(b=1, h=2, n=5, d=3))
    mask = torch.tensor([[False, False, False, True, False]])
    assert torch.autograd.gradcheck(lambda q, k, v: softmax_attention(q, k, v, mask, True),
                                    (q, k, v))


@pytest.mark.parametrize("bad, match", [
    (lambda q, k, v: (q[0, 0, 0], k, v), "q must have shape"),
    (lambda q, k, v: (q[0], k, v), "all be 3-d or all 4-d"),
    (lambda q, k, v: (q[:, :2], k, v), "enable_gqa=True"),
    (lambda q, k, v: (list(q), k, v), "q must be a torch.Tensor, got list"),
    (lambda q, k, v: (q, k[:, :, :4], v), "same seq length"),
    (lambda q, k, v: (q, k[..., :2], v), "same head_dim"),
    (lambda q, k, v: (q, k.float(), v), "share a dtype"),
    (lambda q, k, v: (q, k, v[:1]), "agree in batch"),
    (lambda q, k, v: (q, k.to("meta"), v), "one device"),
])
def test_bad_input(bad, match):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=match):
        softmax_attention(*bad(q, k, v))


def test_bad_mask():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(batch, seq\)"):
        softmax_attention(q, k, v, torch.zeros(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask must be a bool"):
        softmax_attention(q, k, v, torch.zeros(2, 9))
    with pytest.raises(ValueError, match="causal must be a bool"):
        softmax_attention(q, k, v, causal="yes")
