"""Performer / FAVOR+ attention (Choromanski et al. 2020, arXiv 2009.14794), laid out as
flash-linear-attention lays out an op (``fla/ops/<variant>/``):

* :mod:`.features`: random feature draws (orthogonal, Sec. 2.4) and feature maps (Sec. 2.2-2.3,
  the paper's formulas as the reference, and their stabilized pieces);
* :mod:`.scan`: causal linear attention by chunked prefix sums with its autograd and its
  (seq x seq) reference, usable by any linear-attention feature map;
* :mod:`.blockwise`: bidirectional FAVOR+, the composed formula and the positive map block by
  block (features recomputed in the backward, no (seq x m) matrix held);
* :mod:`.causal_blockwise`: causal positive FAVOR+ chunk by chunk (features recomputed in
  the backward, which rebuilds the chunk states group by group; no (seq x m) matrix held);
* :mod:`.favor`: FAVOR+ bidirectional and causal, one shared input preparation, the earlier
  fused causal path on whole feature matrices (``causal_algorithm="prefix-sum"``, the
  reference of the chunkwise one), the recurrent step and prefill state, and the reference;
* :mod:`.module`: :class:`PerformerAttention`, redraws and per-module feature streams.
(Section numbers follow arXiv v4 as recalled, unverified here; the names are the paper's.)
"""

from efflab.attention.performer.favor import (
    FavorState,
    favor_attention,
    favor_attention_reference,
    favor_step,
)
from efflab.attention.performer.features import (
    FEATURE_MAPS,
    NORMS,
    draw_random_features,
    features_seed,
    random_feature_map,
)
from efflab.attention.performer.module import PerformerAttention, redraw_due_features
from efflab.attention.performer.scan import (
    causal_linear_attention,
    causal_linear_attention_reference,
)

__all__ = [
    "FEATURE_MAPS", "NORMS", "FavorState", "PerformerAttention", "causal_linear_attention",
    "causal_linear_attention_reference", "draw_random_features", "favor_attention",
    "favor_attention_reference", "favor_step", "features_seed", "random_feature_map",
    "redraw_due_features",
]
