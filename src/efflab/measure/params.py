"""Parameter counts, with tied and shared tensors counted once (Efficiency Misnomer, Sec. 2-3).

The Efficiency Misnomer (arXiv 2110.12894) points out that "number of parameters" is
ambiguous as soon as weights are shared (ALBERT, Universal Transformers) or tied (input
embedding = output softmax). :func:`count_parameters` therefore reports several numbers:

* ``total``: every registration in the module tree counted, so a block placed six times in a
  ``ModuleList`` counts six times (what a naive ``sum(p.numel() for ...)`` over registrations
  gives),
* ``unique``: each distinct tensor (by storage, offset, shape and stride) counted once,
* ``trainable``: the unique tensors with ``requires_grad``,
* ``embedding`` / ``non_embedding``: unique tensors owned by an ``nn.Embedding`` (or whose
  name contains ``embed``) versus the rest, the split scaling-law papers use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ParameterCount:
    """Parameter counts of one model (numbers of scalars, not bytes, except ``unique_bytes``)."""

    total: int
    unique: int
    trainable: int
    embedding: int
    non_embedding: int
    unique_bytes: int
    buffers: int


def _tensor_key(t: torch.Tensor) -> tuple:
    """Identity of the memory a tensor views: two parameters with the same key are one tensor."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # meta or exotic tensors have no storage
        ptr = id(t)
    if ptr == 0:  # zero-sized or meta storage: fall back on object identity
        ptr = id(t)
    return (t.device, ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def _embedding_keys(model: nn.Module) -> set[tuple]:
    keys: set[tuple] = set()
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        is_embedding = isinstance(mod, (nn.Embedding, nn.EmbeddingBag))
        for p_name, p in mod.named_parameters(recurse=False, remove_duplicate=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if is_embedding or "embed" in full.lower():
                keys.add(_tensor_key(p))
    return keys


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count ``model``'s parameters every way the cost report needs (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    total = 0
    unique: dict[tuple, torch.Tensor] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        total += p.numel()
        unique.setdefault(_tensor_key(p), p)
    embedding_keys = _embedding_keys(model)
    n_unique = sum(p.numel() for p in unique.values())
    n_embedding = sum(p.numel() for k, p in unique.items() if k in embedding_keys)
    buffers = {_tensor_key(b): b for b in model.buffers()}
    return ParameterCount(
        total=total,
        unique=n_unique,
        trainable=sum(p.numel() for p in unique.values() if p.requires_grad),
        embedding=n_embedding,
        non_embedding=n_unique - n_embedding,
        unique_bytes=sum(p.numel() * p.element_size() for p in unique.values()),
        buffers=sum(b.numel() for b in buffers.values()),
    )
