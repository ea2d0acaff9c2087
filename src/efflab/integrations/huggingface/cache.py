"""``FavorCache``: a ``transformers`` cache that keeps causal FAVOR+'s recurrent state
(Performer, arXiv 2009.14794, Sec. 2.1: unidirectional attention by prefix sums) instead of
the keys and values of every earlier position.

HF's attention modules call ``cache.update(k, v, layer_idx)`` and hand what it returns to the
attention function. A :class:`FavorCacheLayer` returns only the new positions and remembers
the layer they belong to; the efflab attention function then advances that layer's
:class:`~efflab.attention.FavorState` over them in one chunked causal pass
(``favor_attention(..., initial_state=..., output_final_state=True)``: a whole prompt at
once, then one token at a time). Per generated token and layer the work
is O(features x head_dim), whatever the length so far; the memory is one state per head.

The link between ``update`` and the attention function is the identity of the key tensor
(``take_pending``), so a stale entry can never be picked up by another call.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin

from efflab.attention import FavorState

_PENDING: dict[int, FavorCacheLayer] = {}


def take_pending(key: Tensor) -> FavorCacheLayer | None:
    """The cache layer whose ``update`` returned exactly ``key``, or None (no FavorCache)."""
    layer = _PENDING.pop(id(key), None)
    if layer is None or layer.pending_key is not key:
        return None
    layer.pending_key = None
    return layer


class FavorCacheLayer(CacheLayerMixin):
    """One layer's FAVOR+ state: ``state`` (a FavorState, None before the first token) and the
    number of positions seen, which HF's mask builder asks for."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, **kwargs):
        super().__init__()
        self.length = 0
        self.state: FavorState | None = None
        self.pending_key: Tensor | None = None

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs
               ) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.pending_key is not None:
            _PENDING.pop(id(self.pending_key), None)
        self.length += key_states.shape[-2]
        self.pending_key = key_states
        _PENDING[id(key_states)] = self
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.length = 0
        self.state = None

    def _map_state(self, fn) -> None:
        if self.state is not None:
            self.state = FavorState(fn(self.state.kv), fn(self.state.shift))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_state(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_state(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: Tensor) -> None:
        self._map_state(lambda t: t[indices])

    def crop(self, tokens_to_remove: int) -> None:
        raise ValueError("a FavorCache cannot be cropped: its state is a sum over all past "
                         "positions (assisted decoding and other rollbacks need a DynamicCache)")


class FavorCache(Cache):
    """The cache to pass to ``generate(..., cache=FavorCache())`` (or to a forward with
    ``use_cache=True``) for O(1)-per-token decoding of a model whose attention is Performer
    through :func:`~efflab.integrations.huggingface.use_efflab_attention`."""

    def __init__(self):
        super().__init__(layer_class_to_replicate=FavorCacheLayer)
