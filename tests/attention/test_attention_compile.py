"""torch.compile (inductor, fullgraph=True) of each mechanism inside the block, eval and training
(Performer with a redraw interval: the counter is a tensor op, no graph break)."""

import pytest
import torch

from efflab.attention import MultiheadAttention, redraw_due_features


@pytest.mark.slow
@pytest.mark.parametrize("attention, opts", [
    ("softmax", {"causal": True}),
    ("linformer", {"max_seq_len": 8, "k": 4, "kind": "mean"}),
    ("performer", {"causal": True, "num_features": 6, "chunk_size": 4, "redraw_interval": 1}),
], ids=["softmax", "linformer", "performer"])
def test_compile_fullgraph_inductor_eval_and_train(attention, opts):
    torch.manual_seed(0)
    mha = MultiheadAttention(8, 2, attention, **opts)
    x = torch.randn(2, 8, 8, requires_grad=True)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[1, 6:] = True
    compiled = torch.compile(mha, backend="inductor", fullgraph=True)
    mha.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, key_padding_mask=pad),
                                   mha(x, key_padding_mask=pad), rtol=1e-4, atol=1e-5)
    mha.train()
    out = compiled(x, key_padding_mask=pad)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    if attention == "performer":
        assert int(mha.attention.forward_count) == 1  # counted inside the compiled graph
    mha.eval()  # the eager reference pass must not count or redraw
    want = mha(x, key_padding_mask=pad)
    (wx,) = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx, wx, rtol=1e-4, atol=1e-5)
    if attention == "performer":  # the due redraw happens outside the compiled region
        before = mha.attention.projection.clone()
        assert redraw_due_features(mha) == 1
        assert not torch.equal(before, mha.attention.projection)
