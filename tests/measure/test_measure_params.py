"""Parameter counts: tied and shared tensors once, embeddings split out, frozen ones apart."""

import pytest
import torch
from torch import nn

from efflab.measure import count_parameters
from efflab.models import create_model


class TiedLM(nn.Module):
    """Input embedding and output projection share one (vocab, dim) matrix."""

    def __init__(self, vocab=50, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.body = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.body(self.embed(tokens))))


def test_tied_weight_is_counted_once():
    m = TiedLM(vocab=50, dim=8)
    c = count_parameters(m)
    vocab_matrix, body = 50 * 8, 8 * 8 + 8
    assert c.unique == vocab_matrix + body
    assert c.total == 2 * vocab_matrix + body  # each registration
    assert c.embedding == vocab_matrix
    assert c.non_embedding == body
    assert c.unique_bytes == 4 * c.unique


def test_one_layer_repeated_six_times_has_a_sixth_of_the_naive_count():
    layer = nn.Linear(16, 16)
    shared = nn.Sequential(*[layer] * 6)
    c = count_parameters(shared)
    assert c.total == 6 * (16 * 16 + 16)
    assert c.unique * 6 == c.total
    separate = nn.Sequential(*[nn.Linear(16, 16) for _ in range(6)])
    assert count_parameters(separate).unique == c.total


def test_frozen_parameters_are_not_trainable_and_buffers_are_apart():
    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    m[0].weight.requires_grad_(False)
    c = count_parameters(m)
    assert c.unique == 4 * 3 + 3 + 2 * 3
    assert c.trainable == c.unique - 4 * 3
    assert c.buffers == 3 + 3 + 1  # running mean, running var, num_batches_tracked


def test_matches_plain_sum_for_models_without_sharing():
    for model in (create_model("mlp", width=17, depth=3), create_model("cnn", width=5)):
        c = count_parameters(model)
        assert c.unique == c.total == sum(p.numel() for p in model.parameters())


def test_rejects_non_modules():
    with pytest.raises(TypeError, match="model must be an nn.Module, got Tensor"):
        count_parameters(torch.zeros(3))
