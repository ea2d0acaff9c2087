"""HF's 4-D masks read back as key padding + causal flag, and everything else refused."""

import pytest
import torch

from efflab.integrations.huggingface import allowed_pattern, key_padding_from_mask


def _random_pad(batch, seq, gen):
    pad = torch.rand(batch, seq, generator=gen) < 0.3
    pad[0] = False  # one row without padding
    return pad


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_q,seq_k", [(6, 6), (1, 6), (3, 7)])
def test_padding_and_causal_masks_are_read_back(causal, seq_q, seq_k):
    gen = torch.Generator().manual_seed(seq_q * 10 + seq_k)
    pad = _random_pad(3, seq_k, gen)
    pad[1, :] = True  # a row that is all padding
    allowed = allowed_pattern(pad, causal, 3, seq_q, seq_k)[:, None]
    additive = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(
        ~allowed, torch.finfo(torch.float64).min)
    for mask in (allowed, additive, additive.masked_fill(~allowed, float("-inf"))):
        got = key_padding_from_mask(mask, seq_q, seq_k, causal)
        assert got is not None
        assert torch.equal(got, pad)


def test_no_padding_gives_none_and_none_stays_none():
    allowed = allowed_pattern(None, True, 2, 5, 5)[:, None]
    assert key_padding_from_mask(allowed, 5, 5, causal=True) is None
    assert key_padding_from_mask(None, 5, 5, causal=True) is None


def test_a_causal_mask_is_refused_for_a_bidirectional_module_and_vice_versa():
    causal = allowed_pattern(None, True, 1, 4, 4)[:, None]
    with pytest.raises(ValueError, match="not key padding plus bidirectional"):
        key_padding_from_mask(causal, 4, 4, causal=False)
    full = allowed_pattern(None, False, 1, 4, 4)[:, None]
    with pytest.raises(ValueError, match="not key padding plus causal"):
        key_padding_from_mask(full, 4, 4, causal=True)


def test_sliding_window_bias_heads_and_shapes_are_refused():
    window = allowed_pattern(None, True, 1, 6, 6) & torch.ones(6, 6, dtype=torch.bool).triu(-2)
    with pytest.raises(ValueError, match="sliding windows"):
        key_padding_from_mask(window[:, None], 6, 6, causal=True)
    alibi = torch.zeros(1, 1, 4, 4, dtype=torch.float32)
    alibi[0, 0, 2, 1] = -0.5
    with pytest.raises(ValueError, match=r"additive biases .*-0\.5"):
        key_padding_from_mask(alibi, 4, 4, causal=False)
    heads = torch.ones(1, 2, 4, 4, dtype=torch.bool)
    heads[0, 1, :, 3] = False
    with pytest.raises(ValueError, match="differs between heads"):
        key_padding_from_mask(heads, 4, 4, causal=False)
    with pytest.raises(ValueError, match=r"must end in \(seq_q, seq_k\) = \(4, 5\)"):
        key_padding_from_mask(torch.ones(1, 1, 4, 4, dtype=torch.bool), 4, 5, causal=False)
    with pytest.raises(ValueError, match="4-D"):
        key_padding_from_mask(torch.ones(1, 4, dtype=torch.bool), 4, 4, causal=False)
    with pytest.raises(ValueError, match="dtype torch.int64"):
        key_padding_from_mask(torch.ones(1, 1, 4, 4, dtype=torch.long), 4, 4, causal=False)
