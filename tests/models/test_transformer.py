"""Transformer classifier / LM: padding, causality, sharing, mixture of experts, references."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from efflab.attention import LinformerProjection
from efflab.models import create_model, list_models
from efflab.models.transformer import (
    MoEFeedForward,
    lm_loss,
    moe_feed_forward,
    moe_feed_forward_reference,
)

ATTENTIONS = [
    ("softmax", {}),
    ("linformer", {"k": 8}),
    ("performer", {"num_features": 16}),
]
SMALL = dict(embed_dim=16, depth=2, num_heads=2, mlp_dim=24, max_seq_len=32)


def _classifier(attention="softmax", options=None, **kw):
    torch.manual_seed(0)
    return create_model("transformer_classifier", attention=attention,
                        attention_options=options, **{**SMALL, **kw}).double().eval()


def _tokens(b=3, n=20, vocab=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (b, n), generator=g)


def test_models_are_registered():
    assert {"transformer_classifier", "transformer_lm"} <= set(list_models())


@pytest.mark.parametrize("attention, options", ATTENTIONS)
def test_padding_does_not_change_the_classification(attention, options):
    """Logits of a padded batch equal the logits of each sequence run alone, unpadded."""
    model = _classifier(attention, options)
    x = _tokens(n=20)
    lengths = [20, 13, 7]
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    batched = model(x)
    for i, n in enumerate(lengths):
        alone = model(x[i:i + 1, :n])
        torch.testing.assert_close(batched[i:i + 1], alone, rtol=1e-9, atol=1e-9)
    # the derived mask is the explicit one
    torch.testing.assert_close(model(x, key_padding_mask=x == 0), batched)


def test_padding_mask_matters():
    """Without a pad id, padding tokens are attended to and the output changes."""
    x = _tokens(b=1, n=20)
    x[0, 10:] = 0
    masked = _classifier()(x)
    unmasked = _classifier(pad_id=None)(x)
    assert not torch.allclose(masked, unmasked)


@pytest.mark.parametrize("attention, options", [a for a in ATTENTIONS if a[0] != "linformer"])
def test_language_model_is_causal(attention, options):
    torch.manual_seed(0)
    model = create_model("transformer_lm", vocab_size=20, attention=attention,
                         attention_options=options, **SMALL).double().eval()
    x = torch.randint(1, 20, (2, 16), generator=torch.Generator().manual_seed(3))
    y = x.clone()
    y[:, 9] = (y[:, 9] % 19) + 1  # change position 9 only
    a, b = model(x), model(y)
    assert a.shape == (2, 16, 20)
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_linformer_language_model_is_refused():
    with pytest.raises(ValueError, match="causal"):
        create_model("transformer_lm", attention="linformer", attention_options={"k": 8}, **SMALL)


def test_classifier_matches_torch_transformer_encoder_layers():
    """An independent reference for the whole block wiring: torch's pre-norm encoder layer
    (GELU, no dropout) with the same weights, then our final norm, masked mean pool, head."""
    model = _classifier(depth=2)
    enc = model.encoder
    x = _tokens(n=12)
    x[1, 8:] = 0
    mask = x == 0
    ref_layers = []
    for blk in enc.blocks:
        layer = nn.TransformerEncoderLayer(16, 2, 24, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True).double().eval()
        with torch.no_grad():
            layer.self_attn.in_proj_weight.copy_(blk.attn.in_proj.weight)
            layer.self_attn.in_proj_bias.copy_(blk.attn.in_proj.bias)
            layer.self_attn.out_proj.weight.copy_(blk.attn.out_proj.weight)
            layer.self_attn.out_proj.bias.copy_(blk.attn.out_proj.bias)
            layer.linear1.load_state_dict(blk.ffn[0].state_dict())
            layer.linear2.load_state_dict(blk.ffn[2].state_dict())
            layer.norm1.load_state_dict(blk.norm1.state_dict())
            layer.norm2.load_state_dict(blk.norm2.state_dict())
        ref_layers.append(layer)
    with torch.no_grad():
        h = enc.token_embedding(x) + enc.position_embedding(torch.arange(12))
        for layer in ref_layers:
            h = layer(h, src_key_padding_mask=mask)
        h = enc.norm(h)
        keep = (~mask).double()[..., None]
        expected = model.head((h * keep).sum(1) / keep.sum(1))
    torch.testing.assert_close(model(x), expected, rtol=1e-9, atol=1e-9)


def test_shared_layers_store_one_block_and_apply_it_depth_times():
    shared = _classifier(depth=4, share_layers=True)
    unshared = _classifier(depth=4)
    blocks = shared.encoder.blocks
    assert all(b is blocks[0] for b in blocks)
    n_block = sum(p.numel() for p in blocks[0].parameters())
    n_shared = sum(p.numel() for p in shared.parameters())
    n_unshared = sum(p.numel() for p in unshared.parameters())
    assert n_unshared - n_shared == 3 * n_block
    # a naive count over registrations still sees four blocks
    naive = sum(p.numel() for _, p in shared.named_parameters(remove_duplicate=False))
    assert naive == n_unshared
    x = _tokens(n=10)
    with torch.no_grad():
        enc = shared.encoder
        h = enc.token_embedding(x) + enc.position_embedding(torch.arange(10))
        for _ in range(4):
            h = blocks[0](h)
        expected = shared.head(enc.norm(h).mean(1))
    torch.testing.assert_close(shared(x), expected)


def test_linformer_layerwise_sharing_hands_one_projection_to_every_layer():
    model = _classifier("linformer", {"k": 8, "sharing": "layerwise"}, depth=3)
    projections = [blk.attn.attention.key_projection for blk in model.encoder.blocks]
    projections += [blk.attn.attention.value_projection for blk in model.encoder.blocks]
    assert all(isinstance(p, LinformerProjection) for p in projections)
    assert all(p is projections[0] for p in projections)
    headwise = _classifier("linformer", {"k": 8}, depth=3)
    e_size = 8 * 32
    n_layerwise = sum(p.numel() for p in model.parameters())
    n_headwise = sum(p.numel() for p in headwise.parameters())
    assert n_headwise - n_layerwise == (2 * 3 - 1) * e_size  # 6 matrices -> 1


def test_moe_fast_path_matches_dense_reference_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    n, d, h, e = 40, 6, 10, 5
    args = [torch.randn(n, d, generator=g), torch.randn(e, d, generator=g),
            torch.randn(e, d, h, generator=g), torch.randn(e, h, generator=g),
            torch.randn(e, h, d, generator=g), torch.randn(e, d, generator=g)]
    args[1][4] = -100.0 * args[0].mean(0)  # make expert 4 unlikely: an empty group is covered
    args = [a.double().requires_grad_() for a in args]
    fast = moe_feed_forward(*args)
    ref = moe_feed_forward_reference(*args)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(n, d, generator=g).double()
    g_fast = torch.autograd.grad((fast * w).sum(), args)
    g_ref = torch.autograd.grad((ref * w).sum(), args)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_moe_token_uses_only_its_routed_expert():
    torch.manual_seed(0)
    moe = MoEFeedForward(8, 12, num_experts=4).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    expert = (x.reshape(-1, 8) @ moe.router.t()).argmax(-1)
    out = moe(x)
    unused = [e for e in range(4) if e not in expert.tolist()]
    with torch.no_grad():
        used = int(expert[0])
        for e in unused:
            moe.w1[e].normal_()
        torch.testing.assert_close(moe(x), out)  # unused experts do not matter
        moe.w2[used].mul_(2.0)
    changed = (moe(x) - out).abs().reshape(-1, 8).sum(-1) > 0
    assert torch.equal(changed, expert == used)


def test_moe_flops_per_token_stay_flat_as_experts_grow():
    """Measured FLOPs of a top-1 MoE: router 2*N*d*E plus one expert 2*(2*N*d*h)."""
    n, d, h = 64, 16, 32
    x = torch.randn(n, d)
    counts = {}
    for e in (1, 8):
        moe = MoEFeedForward(d, h, e)
        with FlopCounterMode(display=False) as fc:
            moe(x)
        counts[e] = fc.get_total_flops()
        assert counts[e] == 2 * n * d * e + 2 * 2 * n * d * h
    # beyond the router, eight experts cost what one does
    assert counts[8] - 2 * n * d * 8 == counts[1] - 2 * n * d * 1
    params = {e: sum(p.numel() for p in MoEFeedForward(d, h, e).parameters()) for e in (1, 8)}
    assert params[8] > 7.5 * params[1]


def test_moe_model_runs_and_pads_correctly():
    model = _classifier(moe_experts=3)
    x = _tokens(n=15)
    x[2, 6:] = 0
    torch.testing.assert_close(model(x)[2:], model(x[2:, :6]), rtol=1e-9, atol=1e-9)


def test_lm_loss_ignores_padding_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    tokens = torch.tensor([[3, 4, 5, 6, 1], [2, 6, 0, 0, 0]])
    terms = [-torch.log_softmax(logits[b, t], -1)[tokens[b, t + 1]]
             for b in range(2) for t in range(4) if tokens[b, t + 1] != 0]
    torch.testing.assert_close(lm_loss(logits, tokens), torch.stack(terms).mean())


def test_tied_embeddings_share_one_tensor():
    model = create_model("transformer_lm", vocab_size=30, tie_embeddings=True, **SMALL)
    assert model.head.weight is model.encoder.token_embedding.weight
    untied = create_model("transformer_lm", vocab_size=30, **SMALL)
    diff = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters())
    assert diff == 30 * 16


@pytest.mark.parametrize("call, match", [
    (lambda m: m(torch.rand(2, 5)), "integer tensor"),
    (lambda m: m(torch.full((2, 5), 16)), "token ids must be in"),
    (lambda m: m(torch.ones(2, 40, dtype=torch.long)), "exceeds max_seq_len=32"),
    (lambda m: m(torch.ones(2, 5, dtype=torch.long),
                 key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), r"\(2, 5\)"),
])
def test_bad_inputs_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(_classifier())


@pytest.mark.parametrize("kw, match", [
    ({"embed_dim": 15}, "divisible"), ({"depth": 0}, "depth"), ({"pooling": "max"}, "pooling"),
    ({"moe_experts": -1}, "moe_experts"), ({"pad_id": 99}, "pad_id"),
    ({"attention": "nope"}, "attention"),
    ({"attention_options": {"causal": True}}, "causal"),
])
def test_bad_configuration_is_named(kw, match):
    with pytest.raises(ValueError, match=match):
        create_model("transformer_classifier", **{**SMALL, **kw})
