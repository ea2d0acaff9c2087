"""MultiheadAttention and build_attention: the block around every mechanism."""

import pytest
import torch

from efflab.attention import (
    MODEL_OPTIONS,
    LinformerProjection,
    MultiheadAttention,
    PerformerAttention,
    SoftmaxAttention,
    build_attention,
)

F64 = torch.float64


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_block_equals_torch_multihead_attention(causal):
    torch.manual_seed(0)
    ours = MultiheadAttention(12, 3, "softmax", causal=causal).double()
    ref = torch.nn.MultiheadAttention(12, 3, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj.weight)
        ref.in_proj_bias.copy_(torch.randn(36, dtype=F64))
        ours.in_proj.bias.copy_(ref.in_proj_bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(torch.randn(12, dtype=F64))
        ours.out_proj.bias.copy_(ref.out_proj.bias)
    x = torch.randn(2, 7, 12, dtype=F64)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 5:] = True
    attn_mask = torch.ones(7, 7, dtype=torch.bool).triu(1) if causal else None
    want, _ = ref(x, x, x, key_padding_mask=mask, attn_mask=attn_mask, need_weights=False)
    torch.testing.assert_close(ours(x, key_padding_mask=mask), want)


def test_model_options_are_accepted_by_every_mechanism():
    opts = dict(causal=False, max_seq_len=16)
    assert set(opts) <= set(MODEL_OPTIONS)
    x = torch.randn(2, 16, 8)
    for name in ("softmax", "performer", "linformer"):
        mha = MultiheadAttention(8, 2, name, **opts)
        assert mha(x).shape == (2, 16, 8)
    assert isinstance(MultiheadAttention(8, 2, "softmax", causal=True).attention,
                      SoftmaxAttention)
    perf = MultiheadAttention(8, 2, "performer", causal=True, num_features=5).attention
    assert perf.causal and perf.head_dim == 4 and perf.projection.shape == (5, 4)


def test_module_instance_and_shared_projection():
    attn = PerformerAttention(4, num_features=6)
    mha = MultiheadAttention(8, 2, attention=attn)
    assert mha.attention is attn
    shared = LinformerProjection(16, 4)
    a = build_attention("linformer", projection=shared, max_seq_len=16, causal=False)
    assert a.key_projection is shared and a.value_projection is shared


def test_step_decoding_through_the_block():
    torch.manual_seed(1)
    mha = MultiheadAttention(8, 2, "performer", causal=True, num_features=6).double()
    x = torch.randn(2, 9, 8, dtype=F64)
    state, outs = None, []
    for t in range(9):
        o, state = mha.step(x[:, t:t + 1], state)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), mha(x))
    with pytest.raises(ValueError, match="step needs an attention with a recurrent form"):
        MultiheadAttention(8, 2).step(x[:, :1])


def test_bad_input():
    with pytest.raises(ValueError, match="embed_dim 10 must be divisible by num_heads 3"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="attention must be one of"):
        MultiheadAttention(8, 2, "flash")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_feature'\]"):
        MultiheadAttention(8, 2, "performer", num_feature=4)
    with pytest.raises(ValueError, match="only apply when attention is given by name"):
        MultiheadAttention(8, 2, SoftmaxAttention(), causal=True)
    with pytest.raises(ValueError, match=r"\['head_dim'\] are set by MultiheadAttention"):
        MultiheadAttention(8, 2, "performer", head_dim=4)
    with pytest.raises(ValueError, match="performer' needs head_dim"):
        build_attention("performer")
    mha = MultiheadAttention(8, 2)
    with pytest.raises(ValueError, match=r"x must be a float tensor of shape \(batch, seq, 8\)"):
        mha(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(batch, seq\)"):
        mha(torch.randn(2, 5, 8), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="pass key_padding_mask= by keyword"):
        mha(torch.randn(2, 5, 8), torch.zeros(2, 5, dtype=torch.bool))
