"""The interface a user of SDPA and nn.MultiheadAttention expects: SDPA keywords and shapes,
fewer kv heads, cross-attention, the nn.MultiheadAttention-compatible mode and its state dict,
prefill into decoding, rotary embeddings; each against a float64 reference."""

import pytest
import torch
import torch.nn.functional as F

from efflab.attention import (
    FEATURE_MAPS,
    LinformerAttention,
    LinformerProjection,
    MultiheadAttention,
    PerformerAttention,
    apply_rotary_embedding,
    draw_random_features,
    favor_attention,
    favor_attention_reference,
    favor_step,
    linformer_attention,
    linformer_attention_reference,
    rotary_embedding_reference,
    softmax_attention,
    softmax_attention_reference,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=_gen(seed), dtype=F64)


def _w(m=6, d=4, seed=1):
    return draw_random_features(m, d, generator=_gen(seed))


# ---------------------------------------------------------------- SDPA keywords

def test_softmax_takes_sdpa_keywords_and_3d_inputs():
    q, k, v = _rand(6, 5, 4), _rand(6, 7, 4, seed=1), _rand(6, 7, 3, seed=2)
    bool_mask = _rand(6, 5, 7, seed=3) > -0.5
    add_mask = _rand(6, 5, 7, seed=4)
    for mask in (bool_mask, add_mask):
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
        torch.testing.assert_close(softmax_attention(q, k, v, attn_mask=mask, scale=0.3), want)
        torch.testing.assert_close(softmax_attention_reference(q, k, v, attn_mask=mask,
                                                               scale=0.3), want)
    q4 = _rand(2, 3, 7, 4)
    torch.testing.assert_close(softmax_attention(q4, q4, q4, is_causal=True),
                               F.scaled_dot_product_attention(q4, q4, q4, is_causal=True))
    with pytest.raises(ValueError, match="causal=True and is_causal=False contradict"):
        softmax_attention(q4, q4, q4, None, True, is_causal=False)


def test_dropout_on_the_softmax_weights():
    q = _rand(1, 2, 6, 4)
    torch.manual_seed(0)
    a = softmax_attention(q, q, q, dropout_p=0.5)
    torch.manual_seed(0)
    b = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, softmax_attention(q, q, q))


@pytest.mark.parametrize("mech", ["softmax", "performer", "linformer"])
def test_output_dtype_under_autocast_matches_sdpa(mech):
    q = torch.randn(1, 2, 8, 4)
    attn = {"softmax": lambda: None, "performer": lambda: PerformerAttention(4, 8),
            "linformer": lambda: LinformerAttention(8, k=4)}[mech]()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.scaled_dot_product_attention(q, q, q).dtype
        got = (softmax_attention(q, q, q) if attn is None else attn(q, q, q)).dtype
    assert got == want == torch.bfloat16


def test_linear_mechanisms_take_key_masks_as_attn_mask():
    q, k, v = _rand(2, 2, 6, 4), _rand(2, 2, 6, 4, seed=1), _rand(2, 2, 6, 4, seed=2)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, 4:] = True
    keep = ~pad[:, None, None, :]
    torch.testing.assert_close(favor_attention(q, k, v, _w(), attn_mask=keep),
                               favor_attention(q, k, v, _w(), pad))
    e = _rand(1, 3, 6, seed=3)
    torch.testing.assert_close(linformer_attention(q, k, v, e, e, attn_mask=keep),
                               linformer_attention(q, k, v, e, e, pad))
    with pytest.raises(ValueError, match="Linformer cannot be causal"):
        linformer_attention(q, k, v, e, e, is_causal=True)


# ---------------------------------------------------------------- fewer kv heads

@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_attention_equals_repeated_kv(kv_heads):
    q = _rand(2, 4, 7, 4)
    k, v = _rand(2, kv_heads, 7, 4, seed=1), _rand(2, kv_heads, 7, 3, seed=2)
    rep = 4 // kv_heads
    kr, vr = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    torch.testing.assert_close(softmax_attention(q, k, v, pad, enable_gqa=True),
                               softmax_attention_reference(q, kr, vr, pad))
    for kind in FEATURE_MAPS:
        for causal in (False, True):
            want = favor_attention_reference(q, kr, vr, _w(), pad, causal, kind)
            torch.testing.assert_close(
                favor_attention(q, k, v, _w(), pad, causal, kind, enable_gqa=True, chunk_size=3),
                want)
            torch.testing.assert_close(
                favor_attention_reference(q, k, v, _w(), pad, causal, kind, enable_gqa=True),
                want)
    e = _rand(1, 3, 7, seed=3)
    torch.testing.assert_close(linformer_attention(q, k, v, e, e, pad, enable_gqa=True),
                               linformer_attention_reference(q, kr, vr, e, e, pad))
    # the step shares one kv state across the heads of a group
    w = _w()
    state, outs = None, []
    for t in range(7):
        o, state = favor_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], w, state,
                              pad[:, t:t + 1], enable_gqa=True)
        outs.append(o)
    assert state.kv.shape == (2, kv_heads, 6, 4)
    torch.testing.assert_close(torch.cat(outs, 2),
                               favor_attention(q, k, v, w, pad, True, enable_gqa=True))


@pytest.mark.parametrize("attention", ["softmax", "performer", "linformer"])
def test_block_with_fewer_kv_heads(attention):
    torch.manual_seed(0)
    opts = {"max_seq_len": 9} if attention == "linformer" else {}
    mha = MultiheadAttention(16, 4, attention, num_kv_heads=2, **opts).double()
    assert mha.in_proj.weight.shape == (16 + 2 * 8, 16)  # nothing repeated in the projection
    x = _rand(2, 9, 16)
    q, k, v = mha._project(x, x, x, True)
    assert q.shape == (2, 4, 9, 4) and k.shape == (2, 2, 9, 4)
    want = mha.attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    torch.testing.assert_close(mha(x), mha._merge(want))


# ---------------------------------------------------------------- cross-attention, nn.MHA mode

def _torch_mha(e, h, kdim=None, vdim=None):
    torch.manual_seed(1)
    ref = torch.nn.MultiheadAttention(e, h, kdim=kdim, vdim=vdim, batch_first=False).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return ref


@pytest.mark.parametrize("kdim, vdim", [(None, None), (6, 10)])
def test_loads_an_nn_multihead_attention_state_dict_and_matches_it(kdim, vdim):
    ref = _torch_mha(8, 2, kdim, vdim)
    ours = MultiheadAttention(8, 2, kdim=kdim, vdim=vdim, batch_first=False).double()
    ours.load_state_dict(ref.state_dict())
    query = _rand(5, 3, 8)  # (seq, batch, embed): batch_first=False
    key, value = _rand(7, 3, kdim or 8, seed=1), _rand(7, 3, vdim or 8, seed=2)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[2, 4:] = True
    mask = _rand(5, 7, seed=3) > 1.0  # True = not allowed, nn.MultiheadAttention's convention
    want, want_w = ref(query, key, value, key_padding_mask=pad, attn_mask=mask)
    got, got_w = ours(query, key, value, key_padding_mask=pad, attn_mask=mask,
                      need_weights=True)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_w, want_w)
    out, none = ours(query, key, value, need_weights=False)
    assert none is None and out.shape == (5, 3, 8)


def test_cross_attention_with_context_and_linear_mechanisms():
    torch.manual_seed(2)
    x, ctx = _rand(2, 5, 8), _rand(2, 9, 8, seed=1)
    for name, opts in (("softmax", {}), ("performer", {}), ("linformer", {"max_seq_len": 9})):
        mha = MultiheadAttention(8, 2, name, **opts).double()
        q, k, v = mha._project(x, ctx, ctx, False)
        assert q.shape == (2, 2, 5, 4) and k.shape == (2, 2, 9, 4)
        torch.testing.assert_close(mha(x, ctx), mha._merge(mha.attention(q, k, v)))
        torch.testing.assert_close(mha(x, ctx, ctx), mha(x, ctx))
        out, w = mha(x, ctx, need_weights=True)
        assert (w is None) == (name != "softmax")


def test_causal_with_a_shorter_query_is_chunked_prefill():
    # queries are the last seq_q positions: equal to the tail of the full causal pass
    q, k, v = _rand(2, 2, 10, 4), _rand(2, 2, 10, 4, seed=1), _rand(2, 2, 10, 4, seed=2)
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[1, :3] = True
    full = softmax_attention(q, k, v, pad, causal=True)
    torch.testing.assert_close(softmax_attention(q[:, :, 6:], k, v, pad, causal=True),
                               full[:, :, 6:])
    for kind in FEATURE_MAPS:
        full = favor_attention(q, k, v, _w(), pad, True, kind)
        torch.testing.assert_close(favor_attention(q[:, :, 6:], k, v, _w(), pad, True, kind),
                                   full[:, :, 6:])
        torch.testing.assert_close(favor_attention_reference(q[:, :, 6:], k, v, _w(), pad, True,
                                                             kind), full[:, :, 6:])


# ---------------------------------------------------------------- prefill into decoding

@pytest.mark.parametrize("kind", FEATURE_MAPS)
def test_prefill_then_steps_equals_the_parallel_pass(kind):
    q, k, v = _rand(2, 2, 13, 4), _rand(2, 2, 13, 4, seed=1), _rand(2, 2, 13, 4, seed=2)
    pad = torch.zeros(2, 13, dtype=torch.bool)
    pad[1, :4] = True
    pad[0, 8] = True
    w = _w()
    full = favor_attention(q, k, v, w, pad, True, kind)
    # prompt of 6 in one chunked pass, then 3 more as a second chunk, then single steps
    out1, state = favor_attention(q[:, :, :6], k[:, :, :6], v[:, :, :6], w, pad[:, :6], True,
                                  kind, chunk_size=4, output_final_state=True)
    out2, state = favor_attention(q[:, :, 6:9], k[:, :, 6:9], v[:, :, 6:9], w, pad[:, 6:9],
                                  True, kind, initial_state=state, output_final_state=True)
    outs = [out1, out2]
    for t in range(9, 13):
        o, state = favor_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], w, state,
                              pad[:, t:t + 1], kind)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 2), full)
    assert state.length == 13


def test_block_prefill_and_steps_with_rotary_and_gqa():
    torch.manual_seed(3)
    mha = MultiheadAttention(16, 4, "performer", causal=True, num_kv_heads=2, rotary=True,
                             num_features=8).double()
    x = _rand(2, 11, 16)
    full = mha(x)
    out, state = mha.prefill(x[:, :7])
    outs = [out]
    for t in range(7, 11):
        o, state = mha.step(x[:, t:t + 1], state)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), full)


# ---------------------------------------------------------------- rotary embeddings

def test_rotary_matches_the_per_pair_rotation_and_is_relative():
    x = _rand(2, 3, 5, 6)
    pos = torch.arange(3, 8)
    torch.testing.assert_close(apply_rotary_embedding(x, pos),
                               rotary_embedding_reference(x, pos))
    # q_i . k_j depends on i - j only
    q, k = _rand(1, 1, 1, 6, seed=1), _rand(1, 1, 1, 6, seed=2)

    def score(i, j):
        qi = apply_rotary_embedding(q, torch.tensor([i]))
        kj = apply_rotary_embedding(k, torch.tensor([j]))
        return (qi * kj).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10))
    assert not torch.allclose(score(5, 2), score(5, 3))


def test_rotary_in_the_block_rotates_q_and_k_before_the_mechanism():
    torch.manual_seed(4)
    for name in ("softmax", "performer"):
        mha = MultiheadAttention(8, 2, name, causal=True, rotary=True).double()
        x = _rand(2, 6, 8)
        q, k, v = mha._project(x, x, x, True)
        pos = torch.arange(6)
        want = mha.attention(apply_rotary_embedding(q, pos), apply_rotary_embedding(k, pos), v)
        torch.testing.assert_close(mha(x), mha._merge(want))
    with pytest.raises(ValueError, match="rotary=True needs an even head_dim"):
        MultiheadAttention(6, 2, rotary=True)


# ---------------------------------------------------------------- Linformer details

def test_linformer_mean_pooling_divides_by_unpadded_keys():
    q, k, v = _rand(1, 1, 3, 2), _rand(1, 1, 8, 2, seed=1), _rand(1, 1, 8, 2, seed=2)
    pad = torch.zeros(1, 8, dtype=torch.bool)
    pad[0, 5:] = True  # windows of 2: (0, 1), (2, 3), (4 | 5 padded), (6, 7 padded)
    attn = LinformerAttention(8, k=4, kind="mean").double()
    kp = torch.stack([k[0, 0, 0:2].mean(0), k[0, 0, 2:4].mean(0), k[0, 0, 4]])[None, None]
    vp = torch.stack([v[0, 0, 0:2].mean(0), v[0, 0, 2:4].mean(0), v[0, 0, 4]])[None, None]
    torch.testing.assert_close(attn(q, k, v, pad), softmax_attention_reference(q, kp, vp))
    with pytest.raises(ValueError, match="k 9 must be <= max_seq_len 8"):
        LinformerProjection(8, 9)


def test_three_d_inputs_for_the_linear_mechanisms():
    q, k, v = _rand(6, 5, 4), _rand(6, 5, 4, seed=1), _rand(6, 5, 3, seed=2)
    pad = torch.zeros(6, 5, dtype=torch.bool)
    pad[2, 3:] = True
    for causal in (False, True):
        torch.testing.assert_close(favor_attention(q, k, v, _w(), pad, causal),
                                   favor_attention(q[:, None], k[:, None], v[:, None], _w(), pad,
                                                   causal)[:, 0])
    e = _rand(1, 2, 5, seed=3)
    torch.testing.assert_close(linformer_attention(q, k, v, e, e, pad),
                               linformer_attention_reference(q, k, v, e, e, pad))
