"""Performer / FAVOR+: fast paths against float64 references, and the estimator's statistics."""

import math

import pytest
import torch

from efflab.attention import (
    FEATURE_MAPS,
    PerformerAttention,
    causal_linear_attention,
    causal_linear_attention_reference,
    draw_random_features,
    favor_attention,
    favor_attention_reference,
    favor_step,
    features_seed,
    random_feature_map,
    softmax_attention_reference,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _qkv(b=2, h=2, n=13, d=4, seed=0, dtype=F64, scale=1.0):
    g = _gen(seed)
    return tuple(scale * torch.randn(b, h, n, d, generator=g, dtype=F64).to(dtype)
                 for _ in range(3))


def _w(m=8, d=4, seed=1, orthogonal=True):
    return draw_random_features(m, d, orthogonal, generator=_gen(seed))


# ---------------------------------------------------------------- random features

def test_orthogonal_blocks_are_orthogonal_with_fixed_or_chi_norms():
    d, m = 6, 15  # three blocks, the last one cut to 3 rows
    w = draw_random_features(m, d, norm="fixed", generator=_gen(0))
    assert w.shape == (m, d)
    torch.testing.assert_close(w.norm(dim=1), torch.full((m,), math.sqrt(d), dtype=F64))
    for start in range(0, m, d):
        blk = w[start:start + d]
        gram = blk @ blk.T
        torch.testing.assert_close(gram, torch.diag(torch.diagonal(gram)), atol=1e-12, rtol=0)
    chi = draw_random_features(3000, d, norm="chi", generator=_gen(1))
    sq = chi.norm(dim=1) ** 2  # chi(d)^2 = chi-square(d): mean d, variance 2d
    assert abs(sq.mean().item() - d) < 5 * math.sqrt(2 * d / 3000)
    assert sq.std().item() > 1.0  # not all equal to d


def test_orthogonal_draw_has_sign_correction():
    # Householder QR returns Q with a fixed sign pattern; without Q diag(sign(diag R)) the first
    # entry of each block would always have the same sign.
    d, blocks = 4, 2000
    w = draw_random_features(d * blocks, d, norm="fixed", generator=_gen(2))
    first = torch.sign(w[::d, 0])
    assert abs(first.mean().item()) < 4 / math.sqrt(blocks)


def test_draws_are_a_function_of_seed_and_count():
    a = draw_random_features(5, 3, generator=_gen(features_seed(7, 2)))
    b = draw_random_features(5, 3, generator=_gen(features_seed(7, 2)))
    c = draw_random_features(5, 3, generator=_gen(features_seed(7, 3)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert features_seed(7, 2) != features_seed(2, 7)


# ---------------------------------------------------------------- estimator statistics

@pytest.mark.parametrize("kind", ["positive", "hyperbolic", "trig"])
@pytest.mark.parametrize("orthogonal", [False, True])
def test_kernel_estimate_is_unbiased(kind, orthogonal):
    d, blocks = 4, 20000
    x = torch.tensor([0.3, -0.5, 0.2, 0.4], dtype=F64)
    y = torch.tensor([-0.1, 0.6, 0.3, -0.2], dtype=F64)
    w = draw_random_features(d * blocks, d, orthogonal, generator=_gen(3))
    # phi(x).phi(y) over all m features is the mean of per-block estimates: use their spread
    # for the statistical bound (blocks are independent draws).
    per_block = (random_feature_map(x, w, kind) * random_feature_map(y, w, kind))
    m = w.shape[0]
    if kind != "positive":
        per_block = per_block[:m] + per_block[m:]
    est = per_block.view(blocks, d).sum(1) * blocks  # each an unbiased estimate
    target = math.exp((x @ y).item())
    stderr = est.std().item() / math.sqrt(blocks)
    assert abs(est.mean().item() - target) < 5 * stderr
    assert stderr < 0.05 * target  # the bound is tight enough to mean something


def _assert_same_values_and_grads(new, ref, inputs, gen):
    """new == ref in float64, and so are their gradients for a random cotangent."""
    torch.testing.assert_close(new, ref, rtol=1e-10, atol=1e-12)
    cot = torch.randn(new.shape, generator=gen, dtype=F64)
    for a, b in zip(torch.autograd.grad(new, inputs, cot), torch.autograd.grad(ref, inputs, cot)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _gqa_padded_case(seed, n_q, n_k, growing_keys=False):
    """q (3, 4, n_q, 4) over k, v with 2 kv heads; mask: a padded tail, a padded head (seven
    positions) and an all-padded item; ``growing_keys``: key norms rising along seq (later
    keys raise the running key max)."""
    g = _gen(seed)
    q = torch.randn(3, 4, n_q, 4, generator=g, dtype=F64).requires_grad_()
    k = torch.randn(3, 2, n_k, 4, generator=g, dtype=F64)
    if growing_keys:
        k = k * torch.linspace(0.5, 2.5, n_k, dtype=F64)[:, None]
    k.requires_grad_()
    v = torch.randn(3, 2, n_k, 3, generator=g, dtype=F64).requires_grad_()
    mask = torch.zeros(3, n_k, dtype=torch.bool)
    mask[0, n_k - 3:] = True
    mask[1, :min(7, n_k - 1)] = True
    mask[2] = True
    return q, k, v, mask, g


def _attention_mse(m, orthogonal, kind="positive", draws=12, n=64, d=8, seed=0):
    q, k, v = _qkv(b=1, h=1, n=n, d=d, seed=seed, scale=0.6)
    exact = softmax_attention_reference(q, k, v)
    errs = []
    for r in range(draws):
        w = draw_random_features(m, d, orthogonal, generator=_gen(1000 * m + r))
        errs.append(((favor_attention(q, k, v, w, feature_map=kind) - exact) ** 2).mean())
    return torch.stack(errs).mean().item()


def test_error_falls_roughly_as_one_over_m():
    ms = [8, 32, 128, 512]
    mse = [_attention_mse(m, orthogonal=False) for m in ms]
    slope = (math.log(mse[-1]) - math.log(mse[0])) / (math.log(ms[-1]) - math.log(ms[0]))
    assert -1.4 < slope < -0.6, (mse, slope)


def test_orthogonal_beats_iid_on_average():
    # Theorem 2 of the paper: orthogonal features have lower MSE for the positive estimator.
    # Many independent one-block estimates (m = d) per pair give a tight comparison.
    d, blocks = 16, 5000
    g = _gen(11)
    x, y = torch.randn(8, d, generator=g, dtype=F64), torch.randn(8, d, generator=g, dtype=F64)
    x, y = 0.8 * x / x.norm(dim=1, keepdim=True), 0.8 * y / y.norm(dim=1, keepdim=True)
    target = torch.exp((x * y).sum(-1, keepdim=True))
    mse = {}
    for orthogonal in (True, False):
        w = draw_random_features(d * blocks, d, orthogonal, generator=_gen(12))
        est = (random_feature_map(x, w) * random_feature_map(y, w)).view(8, blocks, d).sum(-1)
        mse[orthogonal] = ((est * blocks - target) ** 2).mean().item()
    assert mse[True] < 0.9 * mse[False], mse


# ---------------------------------------------------------------- fast path = reference

@pytest.mark.parametrize("kind", FEATURE_MAPS)
@pytest.mark.parametrize("causal", [False, True])
def test_favor_matches_reference(kind, causal):
    q, k, v = _qkv(seed=FEATURE_MAPS.index(kind) + 10 * causal)
    mask = torch.zeros(2, 13, dtype=torch.bool)
    mask[0, 9:] = True
    mask[1, :2] = True
    w = _w()
    for m in (None, mask):
        out = favor_attention(q, k, v, w, m, causal, kind, chunk_size=5)
        ref = favor_attention_reference(q, k, v, w, m, causal, kind)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


@pytest.fixture(params=[1024, 6], ids=["one-group", "groups-of-few-chunks"])
def group_positions(request, monkeypatch):
    """The scan mixes chunks in groups of 1024 positions; also test many small groups."""
    from efflab.attention.performer import scan

    monkeypatch.setattr(scan, "_GROUP_POSITIONS", request.param)
    return request.param


@pytest.mark.parametrize("chunk", [1, 3, 5, 13, 20])
def test_chunked_scan_matches_naive(chunk, group_positions):
    g = _gen(chunk)
    a = torch.randn(2, 13, 6, generator=g, dtype=F64)
    b = torch.rand(2, 13, 6, generator=g, dtype=F64)
    v = torch.randn(2, 13, 3, generator=g, dtype=F64)
    s = torch.cummax(torch.randn(2, 13, generator=g, dtype=F64) * 3, -1).values
    torch.testing.assert_close(causal_linear_attention(a, b, v, s, chunk),
                               causal_linear_attention_reference(a, b, v, s))


def test_chunked_scan_gradcheck(group_positions):
    g = _gen(5)
    a, b, v = (torch.randn(1, 10, 4, generator=g, dtype=F64).requires_grad_() for _ in range(3))
    s = torch.cummax(torch.randn(1, 10, generator=g, dtype=F64), -1).values
    assert torch.autograd.gradcheck(lambda a, b, v: causal_linear_attention(a, b, v, s, 3),
                                    (a, b, v))


@pytest.mark.parametrize("kind", FEATURE_MAPS)
def test_gradcheck_favor(kind, group_positions):
    q, k, v = (x.requires_grad_() for x in _qkv(b=1, h=1, n=7, d=3, seed=4))
    w = _w(5, 3)
    mask = torch.tensor([[True, False, False, False, False, True, False]])
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, k, v, c=causal: favor_attention(q, k, v, w, mask, c, kind, chunk_size=3,
                                                      block_size=3),
            (q, k, v))


# ---------------------------------------------------------------- causality, padding

@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("kind", FEATURE_MAPS)
def test_causal_outputs_ignore_the_future_bit_for_bit(dtype, kind, group_positions):
    q, k, v = _qkv(n=20, d=4, seed=6, dtype=dtype)
    w = _w().to(dtype)
    attn = lambda q, k, v: favor_attention(q, k, v, w, None, True, kind, chunk_size=3)  # noqa: E731
    base = attn(q, k, v)
    for t in (0, 5, 7, 8, 13):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        for x in (q2, k2, v2):
            # large future keys would move a whole-sequence stabilizer: the known leak
            x[:, :, t + 1:] = 4 * torch.randn_like(x[:, :, t + 1:])
        out = attn(q2, k2, v2)
        assert torch.equal(out[:, :, : t + 1], base[:, :, : t + 1]), t
        assert not torch.equal(out[:, :, t + 1:], base[:, :, t + 1:])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", FEATURE_MAPS)
def test_padding_content_has_no_effect(causal, kind):
    q, k, v = _qkv(n=12, seed=7)
    w = _w()
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, 8:] = True
    mask[1, 3:5] = True
    k2, v2 = k.clone(), v.clone()
    k2[mask[:, None, :, None].expand_as(k2)] = 30.0
    v2[mask[:, None, :, None].expand_as(v2)] = -1e4
    a = favor_attention(q, k, v, w, mask, causal, kind, chunk_size=5)
    b = favor_attention(q, k2, v2, w, mask, causal, kind, chunk_size=5)
    keep = ~mask[:, None, :, None].expand_as(a)
    assert torch.equal(a[keep], b[keep])
    # and padding is excluded, not just down-weighted: same as dropping those keys
    short = favor_attention(q[:1, :, :8], k[:1, :, :8], v[:1, :, :8], w, None, causal, kind)
    torch.testing.assert_close(a[:1, :, :8], short)


@pytest.mark.parametrize("kind", FEATURE_MAPS)
def test_step_loop_equals_parallel_causal_form(kind):
    q, k, v = _qkv(n=11, seed=8)
    w = _w()
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[1, :3] = True
    mask[0, 6] = True
    attn = PerformerAttention(4, num_features=8, feature_map=kind, causal=True)
    attn.projection.copy_(w)
    attn.double()
    state, outs = None, []
    for t in range(11):
        o, state = attn.step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], state,
                             mask[:, t:t + 1])
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 2), attn(q, k, v, mask), rtol=1e-10, atol=1e-10)
    assert state.kv.shape == (2, 2, w.shape[0] * (1 + (kind in ("hyperbolic", "trig"))), 5)


# ---------------------------------------------------------------- precision

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["positive", "hyperbolic", "relu"])
def test_large_norms_stay_finite_in_float32_and_bf16(causal, kind):
    q, k, v = _qkv(b=1, h=2, n=40, d=16, seed=9, dtype=torch.float32)
    q = (30 * q / q.norm(dim=-1, keepdim=True)).requires_grad_()
    k = (30 * k / k.norm(dim=-1, keepdim=True)).requires_grad_()
    attn = PerformerAttention(16, num_features=32, feature_map=kind, causal=causal, chunk_size=16)
    out = attn(q, k, v)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all() and \
        torch.isfinite(k.grad).all()
    # float32 agrees with float64 at this size
    ref = favor_attention(q.detach().double(), k.double(), v.double(), attn.projection.double(),
                          causal=causal, feature_map=kind)
    torch.testing.assert_close(out.double(), ref, rtol=1e-3, atol=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.nn.Linear(16, 16)(q.detach())  # bf16 under autocast
        out_bf = attn(x, x, x)
    assert x.dtype == torch.bfloat16 and out_bf.dtype == torch.bfloat16
    assert torch.isfinite(out_bf).all()


# ---------------------------------------------------------------- module: redraw, state dict

def test_redraw_is_deterministic_counted_and_saved():
    a = PerformerAttention(4, num_features=6, redraw_interval=2, seed=3, stream=5)
    b = PerformerAttention(4, num_features=6, redraw_interval=2, seed=3, stream=5)
    expect0 = draw_random_features(6, 4, generator=_gen(features_seed(3, 0, 5))).float()
    assert torch.equal(a.projection, expect0) and torch.equal(a.projection, b.projection)
    q, k, v = _qkv(b=1, h=1, n=5, d=4, dtype=torch.float32)
    a.eval()
    for _ in range(3):
        a(q, k, v)
    assert int(a.redraw_count) == 0  # eval passes do not count
    a.train()
    a(q, k, v)
    a(q, k, v)
    assert int(a.redraw_count) == 0 and torch.equal(a.projection, expect0)
    a(q, k, v)  # third training pass: interval of 2 reached
    expect1 = draw_random_features(6, 4, generator=_gen(features_seed(3, 1, 5))).float()
    assert int(a.redraw_count) == 1 and torch.equal(a.projection, expect1)
    b.redraw_features()
    assert torch.equal(b.projection, expect1)  # another "process": same draw, no messages
    c = PerformerAttention(4, num_features=6, seed=99)
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.projection, a.projection) and int(c.redraw_count) == 1
    assert {"projection", "redraw_count", "forward_count", "seed", "stream"} <= \
        set(a.state_dict())
    assert int(c.seed) == 3 and int(c.stream) == 5  # the loaded stream continues the draws


# ---------------------------------------------------------------- bad input

def test_bad_input():
    q, k, v = _qkv()
    w = _w()
    with pytest.raises(ValueError, match="num_features must be a positive int, got 0"):
        PerformerAttention(4, num_features=0)
    with pytest.raises(ValueError, match="num_features must be a positive int, got -3"):
        draw_random_features(-3, 4)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        PerformerAttention(4, feature_map="cosine")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        favor_attention(q, k, v, w, causal=True, chunk_size=0)
    with pytest.raises(ValueError, match=r"projection must have shape \(num_features, head_dim=4"):
        favor_attention(q, k, v, w[:, :3])
    with pytest.raises(ValueError, match="projection must be a"):
        favor_attention(q, k, v, w[0])
    with pytest.raises(ValueError, match="projection needs num_features > 0"):
        favor_attention(q, k, v, w[:0])
    with pytest.raises(ValueError, match="q must have shape"):
        favor_attention(q[0, 0, 0], k, v, w)
    with pytest.raises(ValueError, match="all be 3-d or all 4-d"):
        favor_attention(q[0], k, v, w)
    with pytest.raises(ValueError, match="share a dtype"):
        favor_attention(q, k.float(), v, w)
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        favor_attention(q, k, v, w, torch.zeros(2, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match="one device"):
        favor_attention(q, k, v.to("meta"), w)
    with pytest.raises(ValueError, match="norm must be one of"):
        PerformerAttention(4, norm="unit")
    with pytest.raises(ValueError, match="step is the recurrent form of causal"):
        PerformerAttention(4).step(q[:, :, :1], k[:, :, :1], v[:, :, :1])
    with pytest.raises(ValueError, match="favor_step takes one position"):
        favor_step(q, k, v, w)


def test_fused_positive_path_equals_composed_path_and_gradients():
    # A projection that requires grad takes the autograd-composed path: both must agree,
    # values and gradients, and the projection gets a gradient.
    q, k, v = (x.requires_grad_() for x in _qkv(b=1, n=10, seed=13))
    mask = torch.tensor([[False] * 8 + [True] * 2])
    for causal in (False, True):
        w = _w()
        fused = favor_attention(q, k, v, w, mask, causal, chunk_size=4)
        gf = torch.autograd.grad(fused.square().sum(), (q, k, v))
        wg = w.clone().requires_grad_()
        composed = favor_attention(q, k, v, wg, mask, causal, chunk_size=4)
        gc = torch.autograd.grad(composed.square().sum(), (q, k, v, wg))
        torch.testing.assert_close(fused, composed)
        for a, b in zip(gf, gc[:3]):
            torch.testing.assert_close(a, b)
        assert gc[3].abs().sum() > 0


@pytest.mark.parametrize("block", [1, 3, 5, 64])
def test_blockwise_bidirectional_equals_reference_values_and_gradients(block):
    # Several blocks, the running key max raised by later blocks (keys grow along seq), GQA,
    # seq_q != seq_k, a batch row whose first blocks are all padding and one all padded.
    q, k, v, mask, g = _gqa_padded_case(40 + block, 11, 13, growing_keys=True)
    w = _w()
    out = favor_attention(q, k, v, w, mask, enable_gqa=True, block_size=block)
    ref = favor_attention_reference(q, k, v, w, mask, enable_gqa=True)
    assert out[2].abs().max() == 0
    _assert_same_values_and_grads(out, ref, (q, k, v), g)


def test_blockwise_large_norms_float32_match_float64():
    q, k, v = _qkv(b=1, h=2, n=40, d=16, seed=41, dtype=torch.float32)
    q = (50 * q / q.norm(dim=-1, keepdim=True)).requires_grad_()
    k = (50 * k / k.norm(dim=-1, keepdim=True)).requires_grad_()
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[0, 30:] = True
    w = _w(32, 16, seed=42).float()
    outs, grads = [], []
    for dt in (torch.float32, F64):
        qd, kd = (t.detach().to(dt).requires_grad_() for t in (q, k))
        out = favor_attention(qd, kd, v.to(dt), w.to(dt), mask, block_size=7)
        outs.append(out.double())
        grads.append([t.double() for t in torch.autograd.grad(out.square().sum(), (qd, kd))])
    assert all(torch.isfinite(t).all() for t in [outs[0], *grads[0]])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-3)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())


@pytest.mark.parametrize("rows,n,block", [(5, 7, 16), (5, 7, 7), (3, 10, 4), (4, 1, 3),
                                          (2, 9, 9), (1, 0, 4)])
def test_tiles_cover_each_position_once_in_order_and_contiguously(rows, n, block):
    from efflab.attention.performer.blockwise import tiles

    seen = torch.zeros(rows, n, dtype=torch.int64)
    last = [-1] * rows
    t = torch.empty(rows, n, 3)
    for rs, ps in tiles(rows, n, block):
        seen[rs, ps] += 1
        assert t[rs, ps].is_contiguous()
        assert (rs.stop - rs.start) * (ps.stop - ps.start) <= max(block, n)
        for r in range(rs.start, rs.stop):  # a row's tiles in order of position
            assert ps.start > last[r]
            last[r] = ps.stop - 1
    assert torch.equal(seen, torch.ones(rows, n, dtype=torch.int64))


def test_default_block_size_rule():
    from efflab.attention.performer.blockwise import default_block_size

    assert default_block_size(256) == 1024
    assert default_block_size(16) == 4096 and default_block_size(1 << 12) == 128
    assert default_block_size(256, "cuda") == 16384
    assert default_block_size(16, "cuda") == 65536
    with pytest.raises(ValueError, match="block_size"):
        favor_attention(*_qkv(), _w(), block_size=0)
    with pytest.raises(ValueError, match="block_size"):
        PerformerAttention(4, block_size=-1)


@pytest.fixture(params=[1024, 6], ids=["one-group", "groups-of-few-positions"])
def causal_groups(request, monkeypatch):
    """The chunkwise causal backward walks groups of 1024 positions; also test small ones."""
    from efflab.attention.performer import causal_blockwise

    monkeypatch.setattr(causal_blockwise, "GROUP_POSITIONS", request.param)
    return request.param


def _causal_case(seed, b=3, h=2, n=13, d=4, e=3):
    # keys growing along seq raise the running key max inside and across chunks
    g = _gen(seed)
    x = torch.randn(b, h, n, d, generator=g, dtype=F64).requires_grad_()
    y = (torch.randn(b, h, n, d, generator=g, dtype=F64)
         * torch.linspace(0.5, 2.5, n, dtype=F64)[:, None]).requires_grad_()
    v = torch.randn(b, h, n, e, generator=g, dtype=F64).requires_grad_()
    pad = torch.zeros(b, 1, n, dtype=torch.bool)
    pad[0, 0, n - 4:] = True   # padded tail
    pad[1, 0, :7] = True       # padded head: g is reset to 0 and then decreases
    pad[2] = True              # all padded
    return x, y, v, pad


@pytest.mark.parametrize("chunk", [1, 3, 5, 13, 64])
def test_chunkwise_causal_equals_prefix_sum_path_values_and_gradients(chunk, causal_groups):
    # The new fused causal path against the prefix-sum path it replaces (kept as reference)
    from efflab.attention.performer.causal_blockwise import blockwise_causal_positive_favor
    from efflab.attention.performer.favor import _CausalPositiveFavor

    x, y, v, pad = _causal_case(50 + chunk)
    w = _w()
    for p, root in ((None, 1.0), (pad, 1.0), (pad, 0.8)):
        # root = sqrt(scale) is folded into the projection; the old path takes scaled inputs
        new = blockwise_causal_positive_favor(x, y, v, w, p, chunk, root)
        old = _CausalPositiveFavor.apply(x * root, y * root, v, w, p, 4)
        _assert_same_values_and_grads(new, old, (x, y, v), _gen(chunk))
    assert new[2].abs().max() == 0


@pytest.mark.parametrize("chunk", [2, 5])
def test_chunkwise_causal_favor_gqa_padding_against_the_reference(chunk, causal_groups):
    q, k, v, mask, g = _gqa_padded_case(60 + chunk, 11, 11)
    w = _w()
    out = favor_attention(q, k, v, w, mask, causal=True, chunk_size=chunk, enable_gqa=True)
    ref = favor_attention_reference(q, k, v, w, mask, causal=True, enable_gqa=True)
    _assert_same_values_and_grads(out, ref, (q, k, v), g)


@pytest.mark.parametrize(("chunk", "group"), [(4, 12), (7, 21)])
def test_chunkwise_causal_several_groups_and_a_partial_last_chunk(chunk, group, monkeypatch):
    # n = 50 is a multiple of neither: three chunks per backward group, the last group shorter
    # and ending in a partial chunk; the state (normalizer as its last column) crosses groups
    from efflab.attention.performer import causal_blockwise
    from efflab.attention.performer.favor import _CausalPositiveFavor

    monkeypatch.setattr(causal_blockwise, "GROUP_POSITIONS", group)
    x, y, v, pad = _causal_case(80 + chunk, n=50)
    pad[1, 0, :30] = True  # the padded head spans whole groups
    w = _w()
    new = causal_blockwise.blockwise_causal_positive_favor(x, y, v, w, pad, chunk, 0.9)
    old = _CausalPositiveFavor.apply(x * 0.9, y * 0.9, v, w, pad, 4)
    _assert_same_values_and_grads(new, old, (x, y, v), _gen(chunk))


@pytest.mark.parametrize("chunk", [3, 13])
def test_chunkwise_causal_backward_leaves_the_incoming_gradient_unchanged(chunk):
    # chunk = n: the chunk's slice of the incoming gradient is the whole tensor, so an
    # in-place step on it would write into the caller's gradient
    from efflab.attention.performer.causal_blockwise import blockwise_causal_positive_favor

    x, y, v, pad = _causal_case(90)
    out = blockwise_causal_positive_favor(x, y, v, _w(), pad, chunk, 1.0)
    cot = torch.randn(out.shape, generator=_gen(91), dtype=F64)
    kept = cot.clone()
    torch.autograd.grad(out, (x, y, v), cot)
    assert torch.equal(cot, kept)


@pytest.mark.slow
def test_chunkwise_causal_gradcheck_and_gradgradcheck(causal_groups):
    # first order: the hand-written backward; second order: the composed path it falls back to
    from efflab.attention.performer.causal_blockwise import blockwise_causal_positive_favor

    x, y, v, pad = (t.detach() for t in _causal_case(70, h=1, n=8, d=3, e=2))
    x, y, v = (t.requires_grad_() for t in (x, y, v))
    w = _w(5, 3)
    f = lambda x, y, v: blockwise_causal_positive_favor(x, y, v, w, pad, 2, 0.8)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, y, v))
    small = [t[1:2, :, :5].detach().requires_grad_() for t in (x, y, v)]  # padded head
    g = lambda x, y, v: blockwise_causal_positive_favor(x, y, v, w, pad[1:2, :, :5], 2, 0.8)  # noqa: E731,E501
    assert torch.autograd.gradgradcheck(g, small)


def test_causal_algorithm_selects_the_fused_path_and_is_checked():
    q, k, v = (x.requires_grad_() for x in _qkv(b=1, n=10, seed=73))
    w = _w()
    outs = [favor_attention(q, k, v, w, causal=True, chunk_size=3, causal_algorithm=a)
            for a in ("chunkwise", "prefix-sum")]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="causal_algorithm must be one of"):
        favor_attention(q, k, v, w, causal=True, causal_algorithm="scan")


def test_chunkwise_causal_large_norms_float32_match_float64():
    q, k, v = _qkv(b=1, h=2, n=40, d=16, seed=71, dtype=torch.float32)
    q = 50 * q / q.norm(dim=-1, keepdim=True)
    k = 50 * k / k.norm(dim=-1, keepdim=True)
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[0, :5] = True
    w = _w(32, 16, seed=72).float()
    outs, grads = [], []
    for dt in (torch.float32, F64):
        qd, kd = (t.detach().to(dt).requires_grad_() for t in (q, k))
        out = favor_attention(qd, kd, v.to(dt), w.to(dt), mask, causal=True, chunk_size=7)
        outs.append(out.double())
        grads.append([t.double() for t in torch.autograd.grad(out.square().sum(), (qd, kd))])
    assert all(torch.isfinite(t).all() for t in [outs[0], *grads[0]])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-3)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())
