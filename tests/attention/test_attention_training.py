"""Training through efflab attention: finite gradients for every padding pattern, exact second
derivatives, checkpointing with redraws, per-layer random features, and errors that name the
argument. Each numbered test is the regression test of a bug of issue #11."""

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from efflab.attention import (
    FEATURE_MAPS,
    LinformerAttention,
    MultiheadAttention,
    PerformerAttention,
    SoftmaxAttention,
    causal_linear_attention,
    draw_random_features,
    favor_attention,
    favor_step,
    linformer_attention,
    softmax_attention,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0, dtype=F64, scale=1.0):
    return (scale * torch.randn(*shape, generator=_gen(seed), dtype=F64)).to(dtype)


def _finite_grads(*tensors):
    return all(t.grad is not None and torch.isfinite(t.grad).all() for t in tensors)


# ---------------------------------------------------------------- 1. a query that sees no key

def test_1_issue_example_left_padded_causal_has_finite_gradients():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 8, 16, requires_grad=True) for _ in range(3))
    pad = torch.tensor([[True] * 3 + [False] * 5])
    out = PerformerAttention(16, 32, causal=True)(q, k, v, pad)
    (10 * out).sum().backward()
    assert _finite_grads(q, k, v)
    assert torch.equal(out[0, 0, :3], torch.zeros(3, 16))
    assert torch.equal(q.grad[0, 0, :3], torch.zeros(3, 16))  # constant 0 output: no gradient


PATTERNS = {
    "none": [],
    "right": [(0, slice(6, 8))],
    "left": [(0, slice(0, 3)), (1, slice(0, 1))],
    "middle": [(1, slice(2, 5))],
    "all-padded-sample": [(0, slice(0, 8))],
    "everything": [(0, slice(0, 8)), (1, slice(0, 8))],
}


def _pad(name):
    pad = torch.zeros(2, 8, dtype=torch.bool)
    for row, cols in PATTERNS[name]:
        pad[row, cols] = True
    return pad


def _mechanisms():
    yield "softmax", False, lambda: SoftmaxAttention()
    yield "softmax", True, lambda: SoftmaxAttention(causal=True)
    yield "linformer", False, lambda: LinformerAttention(8, k=4)
    yield "linformer-mean", False, lambda: LinformerAttention(8, k=4, kind="mean")
    for kind in FEATURE_MAPS:
        for causal in (False, True):
            yield f"performer-{kind}", causal, \
                lambda kind=kind, causal=causal: PerformerAttention(16, 16, kind, causal=causal,
                                                                    chunk_size=3, block_size=3)


MECHS = list(_mechanisms())


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("name, causal, make", MECHS,
                         ids=[f"{n}-{'causal' if c else 'bi'}" for n, c, _ in MECHS])
def test_1_2_gradients_finite_for_every_padding_pattern_at_norm_50(name, causal, make, pattern):
    # float32, |q| = |k| = 50 at head_dim 16, padded keys holding huge values: the forward pass
    # is finite and so is every gradient (before: 0 * inf in the backward of empty rows and of
    # exp(padded key)).
    torch.manual_seed(1)
    attn = make()
    q = _rand(2, 2, 8, 16, seed=2, dtype=torch.float32)
    k = _rand(2, 2, 8, 16, seed=3, dtype=torch.float32)
    q = (50 * q / q.norm(dim=-1, keepdim=True)).requires_grad_()
    k = 50 * k / k.norm(dim=-1, keepdim=True)
    pad = _pad(pattern)
    k = k.masked_fill(pad[:, None, :, None], 1e4).requires_grad_()
    v = _rand(2, 2, 8, 16, seed=4, dtype=torch.float32).requires_grad_()
    out = attn(q, k, v, pad)
    (1000 * out).sum().backward()  # a loss scaler
    assert torch.isfinite(out).all() and _finite_grads(q, k, v)
    empty = pad.all(-1) if not causal else pad.cummin(-1).values  # rows with no key at all
    assert torch.equal(out.transpose(1, 2)[empty], torch.zeros_like(out.transpose(1, 2)[empty]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for t in (q, k, v):
            t.grad = None
        out = attn(q, k, v, pad)
        assert out.dtype == torch.bfloat16
        (1000 * out.float()).sum().backward()
    assert torch.isfinite(out).all() and _finite_grads(q, k, v)


@pytest.mark.parametrize("attention", ["softmax", "performer", "linformer"])
def test_1_all_padded_sample_does_not_poison_the_block_weights(attention):
    torch.manual_seed(2)
    opts = {"max_seq_len": 6} if attention == "linformer" else {}
    mha = MultiheadAttention(8, 2, attention, **opts)
    x = torch.randn(2, 6, 8)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1] = True
    (65536 * mha(x, key_padding_mask=pad).mean()).backward()
    assert torch.isfinite(mha.in_proj.weight.grad).all()


@pytest.mark.parametrize("kind", FEATURE_MAPS)
def test_2_large_real_keys_give_finite_gradients_with_a_trained_projection(kind):
    # the composed path (projection requires grad), |k| = 60 at d = 64 in float32
    q = _rand(1, 2, 12, 64, seed=5, dtype=torch.float32).requires_grad_()
    k = _rand(1, 2, 12, 64, seed=6, dtype=torch.float32)
    k = (60 * k / k.norm(dim=-1, keepdim=True)).requires_grad_()
    v = _rand(1, 2, 12, 64, seed=7, dtype=torch.float32).requires_grad_()
    w = draw_random_features(32, 64, generator=_gen(8), dtype=torch.float32).requires_grad_()
    pad = torch.zeros(1, 12, dtype=torch.bool)
    pad[0, 9:] = True
    for causal in (False, True):
        out = favor_attention(q, k, v, w, pad, causal, kind)
        out.sum().backward()
        assert torch.isfinite(out).all() and _finite_grads(q, k, v, w)


# ---------------------------------------------------------------- 3. second derivatives

def _small(seed, n=5, d=3, h=1):
    return tuple(_rand(1, h, n, d, seed=seed + i).requires_grad_() for i in range(3))


@pytest.mark.parametrize("kind", FEATURE_MAPS)
@pytest.mark.parametrize("causal", [False, True])
def test_3_gradgradcheck_favor_every_map_fused_and_composed(kind, causal):
    q, k, v = _small(10, n=4, d=2)
    w = draw_random_features(3, 2, generator=_gen(11))
    pad = torch.tensor([[False, True, False, False]])
    paths = [w] if kind != "positive" else [w, w.clone().requires_grad_()]  # fused, composed
    for proj in paths:
        def f(q, k, v, proj=proj):
            return favor_attention(q, k, v, proj, pad, causal, kind, chunk_size=2)
        assert torch.autograd.gradgradcheck(f, (q, k, v))


def test_3_issue_example_double_backward_equals_the_composed_path():
    # before: the fused path's hand-written backward was silently not differentiable
    q, k, v = _small(20, n=7, d=4, h=2)
    w = draw_random_features(8, 4, generator=_gen(21))
    for causal in (False, True):
        res = []
        for proj in (w, w.clone().requires_grad_()):
            out = favor_attention(q, k, v, proj, causal=causal, chunk_size=3)
            (gq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
            res.append(torch.autograd.grad(gq.square().sum(), (q, k, v)))
        for a, b in zip(*res):
            torch.testing.assert_close(a, b)


def test_3_gradgradcheck_scan_softmax_linformer_and_step():
    g = _gen(30)
    a, b, v = (torch.randn(1, 5, 2, generator=g, dtype=F64).requires_grad_() for _ in range(3))
    s = torch.cummax(torch.randn(1, 5, generator=g, dtype=F64), -1).values
    assert torch.autograd.gradgradcheck(lambda a, b, v: causal_linear_attention(a, b, v, s, 3),
                                        (a, b, v))
    q, k, v = _small(31, n=4, d=2)
    pad = torch.tensor([[False, True, False, False]])
    for causal in (False, True):
        assert torch.autograd.gradgradcheck(
            lambda q, k, v, c=causal: softmax_attention(q, k, v, pad, c), (q, k, v))
    e = _rand(1, 3, 4, seed=32)
    assert torch.autograd.gradgradcheck(
        lambda q, k, v: linformer_attention(q, k, v, e, e, pad), (q, k, v))
    w = draw_random_features(3, 2, generator=_gen(33))
    q1, k1, v1 = (t[:, :, :1].detach().requires_grad_() for t in (q, k, v))
    _, state = favor_step(q1.detach(), k1.detach(), v1.detach(), w)
    assert torch.autograd.gradgradcheck(
        lambda q, k, v: favor_step(q, k, v, w, state)[0], (q1, k1, v1))


def test_3_full_batch_regularizer_double_backprop_matches_finite_differences():
    # the double-backprop mode of the full-batch gradient regularizer differentiates
    # |grad L|^2 through the fused path: compare with a central difference of |grad L|^2
    torch.manual_seed(3)
    mha = MultiheadAttention(8, 2, "performer", causal=True, num_features=8).double()
    x = torch.randn(2, 6, 8, dtype=F64)
    params = [mha.in_proj.weight]

    def penalty():
        (g,) = torch.autograd.grad(mha(x).square().mean(), params, create_graph=True)
        return g.square().sum()

    (exact,) = torch.autograd.grad(penalty(), params)
    d = torch.randn_like(params[0])
    eps = 1e-5
    with torch.no_grad():
        params[0].add_(eps * d)
    up = penalty().item()
    with torch.no_grad():
        params[0].sub_(2 * eps * d)
    down = penalty().item()
    with torch.no_grad():
        params[0].add_(eps * d)
    assert abs((up - down) / (2 * eps) - (exact * d).sum().item()) < 1e-6 * max(1.0, abs(up))


# ---------------------------------------------------------------- 4. checkpointing, redraws

def test_4_checkpoint_recomputation_does_not_redraw():
    torch.manual_seed(4)
    attn = PerformerAttention(4, 6, causal=True, redraw_interval=1).train()
    q, k, v = (torch.randn(1, 2, 7, 4, requires_grad=True) for _ in range(3))
    attn(q, k, v)  # first pass; the next one is due for a redraw
    out = checkpoint(attn, q, k, v, use_reentrant=False)
    assert int(attn.redraw_count) == 1
    want = favor_attention(q, k, v, attn.projection.clone(), causal=True)
    torch.testing.assert_close(out, want)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert int(attn.redraw_count) == 1 and int(attn.forward_count) == 1  # not counted again
    for g, w in zip(grads, torch.autograd.grad(want.sum(), (q, k, v))):
        torch.testing.assert_close(g, w)


# ---------------------------------------------------------------- 5. per-layer features

def test_5_layers_get_their_own_features_reproducibly():
    def build():
        torch.manual_seed(5)
        return [MultiheadAttention(8, 2, "performer", num_features=4, seed=0) for _ in range(3)]

    a, b = build(), build()
    proj = [m.attention.projection for m in a]
    assert not torch.equal(proj[0], proj[1]) and not torch.equal(proj[1], proj[2])
    for x, y in zip(a, b):  # same torch seed: same features (and identical on every rank)
        assert torch.equal(x.attention.projection, y.attention.projection)
    # the stream is pinned by ``stream=`` and saved; the redraws of a loaded module continue it
    p = PerformerAttention(4, 4, seed=1, stream=2)
    assert torch.equal(p.projection, PerformerAttention(4, 4, seed=1, stream=2).projection)
    other = PerformerAttention(4, 4)
    other.load_state_dict(p.state_dict())
    p.redraw_features()
    other.redraw_features()
    assert torch.equal(p.projection, other.projection)
    assert {"seed", "stream"} <= set(p.state_dict())


# ---------------------------------------------------------------- 6. clear errors

def _q():
    return _rand(2, 2, 5, 4, seed=40)


@pytest.mark.parametrize("call, match", [
    (lambda: PerformerAttention(4, seed=-1), r"seed must be an int in \[0, 2\*\*63\), got -1"),
    (lambda: PerformerAttention(4, seed=1.5), "seed must be an int .* got 1.5"),
    (lambda: PerformerAttention(4, scale=0.0), "scale must be a finite number > 0"),
    (lambda: PerformerAttention(4, scale=-1.0), "scale must be a finite number > 0"),
    (lambda: SoftmaxAttention(scale=-2), "scale must be a finite number > 0"),
    (lambda: PerformerAttention(4, kernel_eps=-1e-3), "kernel_eps must be a finite number >= 0"),
    (lambda: PerformerAttention(4, orthogonal="no"), "orthogonal must be a bool"),
    (lambda: PerformerAttention(4, causal="yes"), "causal must be a bool"),
    (lambda: SoftmaxAttention(causal="yes"), "causal must be a bool"),
    (lambda: PerformerAttention(4)([_q()], _q(), _q()), "q must be a torch.Tensor, got list"),
    (lambda: PerformerAttention(8)(_q(), _q(), _q()),
     "q has head_dim 4 but this PerformerAttention was built with head_dim=8"),
    (lambda: MultiheadAttention(8, 2, attention=torch.nn.Linear(4, 4)),
     r"attention module Linear must be a q/k/v-level attention .* takes \(input\)"),
    (lambda: MultiheadAttention(8, 2, attention=PerformerAttention(8)),
     "attention module has head_dim=8 but embed_dim / num_heads = 4"),
    (lambda: PerformerAttention(4, causal=True).step(_q()[:, :, :1], _q()[:, :, :1],
                                                      _q()[:, :, :1], state=(1, 2)),
     r"must be a FavorState\(kv, shift, length\)"),
    (lambda: PerformerAttention(4, 3, causal=True).step(
        _q()[:, :, :1], _q()[:, :, :1], _q()[:, :, :1],
        state=(torch.zeros(2, 2, 3, 4), torch.zeros(2, 2))),
     r"must hold kv \(2, 2, 3, 5\) and shift \(2, 2\)"),
    (lambda: favor_attention(_q(), _q(), _q(), torch.randn(3, 4), dropout_p=0.1),
     "dropout_p=0.1: FAVOR\\+ never forms the attention weights"),
    (lambda: favor_attention(_q(), _q(), _q(), torch.randn(3, 4),
                             attn_mask=torch.ones(5, 5, dtype=torch.bool)),
     "can honour only key padding and causality"),
    (lambda: LinformerAttention(8, k=16), "k 16 must be <= max_seq_len 8"),
    (lambda: softmax_attention(_q(), _q(), _q(), attn_mask=torch.ones(3, 3, dtype=torch.bool)),
     r"attn_mask of shape \(3, 3\) does not broadcast"),
])
def test_6_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("n_q, n_k", [(0, 0), (0, 5), (5, 0)])
def test_6_empty_sequences_give_empty_or_zero_outputs_like_sdpa(n_q, n_k):
    q, k, v = _rand(2, 2, n_q, 4), _rand(2, 2, n_k, 4, seed=1), _rand(2, 2, n_k, 4, seed=2)
    want = torch.zeros(2, 2, n_q, 4, dtype=F64)
    w = draw_random_features(3, 4, generator=_gen(0))
    torch.testing.assert_close(softmax_attention(q, k, v), want)
    for kind in FEATURE_MAPS:
        torch.testing.assert_close(favor_attention(q, k, v, w, feature_map=kind), want)
        if n_q == n_k:
            torch.testing.assert_close(favor_attention(q, k, v, w, causal=True, feature_map=kind),
                                       want)
    torch.testing.assert_close(LinformerAttention(8, k=2).double()(q, k, v), want)
