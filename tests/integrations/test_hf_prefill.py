"""Prompt prefill into a FavorCache: one chunked causal pass with the state carried in and
out gives the outputs and the state of the step-by-step reference (favor_step per position),
in float64, with padding, a state carried in from an earlier call, and an empty chunk."""

from types import SimpleNamespace

import pytest
import torch

from efflab.attention import PerformerAttention
from efflab.integrations.huggingface.attention import _favor_recurrent, _favor_recurrent_steps


def _qkv(g, n, b=2, h=2, d=8):
    return [torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("feature_map", ["positive", "relu"])
def test_prefill_in_one_pass_equals_the_steps(feature_map):
    g = torch.Generator().manual_seed(0)
    mech = PerformerAttention(8, num_features=16, feature_map=feature_map, causal=True,
                              chunk_size=3, seed=1).double()
    fast, ref = SimpleNamespace(state=None), SimpleNamespace(state=None)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[0, :3] = True  # the first row left-padded
    # a prompt of 7 positions (chunks of 3: a partial last one), one token, 5 more at once
    for *qkv, new_pad in [(*_qkv(g, 7), pad), (*_qkv(g, 1), None), (*_qkv(g, 5), None)]:
        out = _favor_recurrent(mech, fast, *qkv, new_pad, None)
        expected = _favor_recurrent_steps(mech, ref, *qkv, new_pad, None)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fast.state.kv, ref.state.kv, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fast.state.shift, ref.state.shift, rtol=0, atol=0)
        assert fast.state.length == ref.state.length
    assert fast.state.length == 7 + 1 + 5
    before = fast.state
    out = _favor_recurrent(mech, fast, *_qkv(g, 0), None, None)
    assert out.shape == (2, 2, 0, 8) and fast.state.length == before.length
    assert torch.equal(fast.state.kv, before.kv)
