"""zero_init_ on efflab's transformer (pre-norm blocks of Linear, LayerNorm, Embedding and
efflab.attention.MultiheadAttention)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from efflab.init import zero_init_, zero_matrix_reference
from efflab.models import create_model


def _classifier(**kw):
    return create_model("transformer_classifier", vocab_size=16, num_classes=5, max_seq_len=12,
                        embed_dim=16, depth=2, num_heads=2, mlp_dim=32, **kw)


def _branch_lasts(model):
    """The last layer of each residual branch: attention output and second feed-forward."""
    return [m for blk in model.encoder.blocks for m in (blk.attn.out_proj, blk.ffn[-1])]


def test_every_layer_follows_its_rule():
    model = zero_init_(_classifier(), zeros=[])
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            p, q = m.weight.shape
            assert torch.allclose(m.weight.double(), zero_matrix_reference(p, q), atol=1e-7), name
        elif isinstance(m, nn.LayerNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight)), name
            assert torch.count_nonzero(m.bias) == 0, name
    tok = model.encoder.token_embedding.weight.double()
    assert torch.allclose(tok, zero_matrix_reference(16, 16))
    pos = model.encoder.position_embedding.weight.double()
    assert torch.allclose(pos, zero_matrix_reference(12, 16))


def test_blocks_declare_their_branch_ends_and_classifier():
    model = _classifier()
    from efflab.init.zero import residual_zeros

    assert {id(m) for m in residual_zeros(model)} == {
        id(m) for m in [*_branch_lasts(model), model.head]}


def test_residual_zeros_make_every_block_an_identity():
    model = _classifier()
    zero_init_(model)  # one call: the blocks and the classifier say what starts at zero
    tokens = torch.randint(1, 16, (3, 12))
    enc = model.encoder
    x = enc.token_embedding(tokens) + enc.position_embedding(torch.arange(12))
    h, _ = enc(tokens)
    assert torch.allclose(h, enc.norm(x), atol=1e-6)
    assert torch.count_nonzero(model(tokens)) == 0


def test_gradients_reach_every_parameter_within_three_steps():
    torch.manual_seed(0)
    model = zero_init_(_classifier())
    tokens, y = torch.randint(1, 16, (16, 12)), torch.randint(0, 5, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: set[str] = set()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(tokens), y).backward()
        seen |= {n for n, p in model.named_parameters() if p.grad is not None
                 and p.grad.abs().max() > 0}
        opt.step()
    assert seen == {n for n, _ in model.named_parameters()}


def test_mixture_of_experts_follows_its_rule_and_starts_at_zero():
    model = zero_init_(_classifier(moe_experts=2))
    for blk in model.encoder.blocks:
        moe = blk.ffn
        assert torch.allclose(moe.router.double(), zero_matrix_reference(2, 16))
        for e in range(2):  # x @ w1[e] is the Algorithm 1 map 16 -> 32
            assert torch.allclose(moe.w1[e].T.double(), zero_matrix_reference(32, 16), atol=1e-7)
        assert torch.count_nonzero(moe.w2) == 0 and torch.count_nonzero(moe.b1) == 0
        assert torch.count_nonzero(blk.attn.out_proj.weight) == 0
    tokens = torch.randint(1, 16, (3, 12))
    assert torch.count_nonzero(model(tokens)) == 0


def test_linformer_projection_is_refused_by_name():
    model = _classifier(attention="linformer")
    with pytest.raises(TypeError, match=r"LinformerProjection"):
        zero_init_(model)
