"""``PerformerAttention``: FAVOR+ (Choromanski et al. 2020, arXiv 2009.14794) as a module, with
the feature redraws of Sec. 4 (``redraw_interval``) and a random-feature stream of its own.

Random features. Draw number r of a module is a pure function of ``(seed, stream, r)``
(:func:`features_seed`): identical on every rank without communication. ``stream`` tells the
modules of one model apart: by default it is drawn from torch's global generator when the module
is built (as parameters are initialized), so the layers of a model get different features and
``torch.manual_seed`` reproduces them; pass ``stream=`` (e.g. the layer index) to pin it.
``seed``, ``stream`` and ``redraw_count`` are buffers in the state dict, so a loaded checkpoint
continues the same sequence of draws.

Redraws. ``redraw_interval=N`` redraws before a training forward pass when N passes have run
since the last draw. Never during activation-checkpoint recomputation (that pass must see the
features of the original one), and not inside ``torch.compile``: a compiled forward only counts
(a tensor op, no graph break) and the due redraw happens at the next eager call of
:meth:`maybe_redraw_features` (:func:`redraw_due_features` does it for a whole model, outside
the compiled region, once per step).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from efflab.attention._checks import (
    check_bool,
    check_dropout,
    check_mask,
    check_positive_int,
    check_scale,
    check_seed,
    resolve_causal,
)
from efflab.attention.performer.favor import (
    FavorState,
    check_kernel_eps,
    favor_attention,
    favor_step,
)
from efflab.attention.performer.features import (
    NORMS,
    check_kind,
    draw_random_features,
    features_seed,
)


def _recomputing() -> bool:
    """True inside a backward pass: where activation checkpointing re-runs forward."""
    return torch._C._current_graph_task_id() != -1


class PerformerAttention(nn.Module):
    """FAVOR+ attention as a module: ``attn(q, k, v, key_padding_mask=None)``, SDPA keywords
    ``attn_mask`` (key masks only), ``is_causal``, ``enable_gqa`` as in :func:`favor_attention`.

    Args:
        head_dim: size of q and k per head (the random features live in this space).
        num_features: m, the number of random projections (paper default 256). ``hyperbolic``
            and ``trig`` output 2m features from them.
        feature_map: ``positive`` (FAVOR+, default), ``hyperbolic``, ``trig``, ``relu``.
        orthogonal: orthogonal random features (default) or iid Gaussian.
        norm: row norms of orthogonal features, ``chi`` (default) or ``fixed`` (sqrt(d)).
        causal: unidirectional attention by chunked prefix sums (``chunk_size`` positions);
            ``is_causal`` is an alias.
        redraw_interval: redraw the features every this many forward passes in training mode
            (None: never on its own; call :meth:`redraw_features`).
        seed: int >= 0; with ``stream``, fixes every draw.
        stream: int >= 0 or None (drawn from torch's global generator at construction).
        kernel_eps: added to ReLU features (paper default 1e-3), >= 0.
        scale: score scale, default 1/sqrt(head_dim).
        dropout: must be 0 (accepted so that builders can pass it; FAVOR+ has no weights).
        block_size: positions per tile of the bidirectional fused path (None: a rule on m,
            see :func:`favor_attention`).

    Buffers (saved in the state dict): ``projection`` (num_features, head_dim), ``seed``,
    ``stream``, ``redraw_count`` and ``forward_count`` (training forward passes since the last
    redraw).
    """

    def __init__(self, head_dim: int, num_features: int = 256, feature_map: str = "positive",
                 orthogonal: bool = True, norm: str = "chi", causal: bool = False,
                 chunk_size: int = 64, redraw_interval: int | None = None, seed: int = 0,
                 kernel_eps: float = 1e-3, scale: float | None = None, *,
                 is_causal: bool | None = None, stream: int | None = None,
                 dropout: float = 0.0, block_size: int | None = None):
        super().__init__()
        check_positive_int("head_dim", head_dim)
        check_positive_int("num_features", num_features)
        check_positive_int("chunk_size", chunk_size)
        check_kind(feature_map)
        check_bool("orthogonal", orthogonal)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if redraw_interval is not None:
            check_positive_int("redraw_interval", redraw_interval)
        check_seed("seed", seed)
        if stream is None:
            stream = int(torch.randint(0, 2 ** 62, (), dtype=torch.long))
        check_seed("stream", stream)
        check_dropout(dropout, False, "FAVOR+")
        if block_size is not None:
            check_positive_int("block_size", block_size)
        self.block_size = block_size
        self.head_dim = head_dim
        self.num_features = num_features
        self.feature_map = feature_map
        self.orthogonal = orthogonal
        self.norm = norm
        self.causal = resolve_causal(causal, is_causal)
        self.chunk_size = chunk_size
        self.redraw_interval = redraw_interval
        self.kernel_eps = check_kernel_eps(kernel_eps)
        self.scale = check_scale(scale)
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.long))
        self.register_buffer("stream", torch.tensor(stream, dtype=torch.long))
        self.register_buffer("redraw_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("forward_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("projection", self._draw(0))

    def _draw(self, count: int) -> Tensor:
        gen = torch.Generator().manual_seed(
            features_seed(int(self.seed), count, int(self.stream)))
        return draw_random_features(self.num_features, self.head_dim, self.orthogonal,
                                    self.norm, generator=gen, dtype=torch.float32)

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Draw the next set of features: draw number ``redraw_count + 1`` of this stream."""
        self.redraw_count += 1
        self.forward_count.zero_()
        w = self._draw(int(self.redraw_count))
        self.projection.copy_(w.to(self.projection.device, self.projection.dtype))

    @torch.no_grad()
    def maybe_redraw_features(self) -> bool:
        """Redraw if ``redraw_interval`` training passes have run since the last draw (eager
        only); returns whether it did."""
        if self.redraw_interval is None or int(self.forward_count) < self.redraw_interval:
            return False
        self.redraw_features()
        return True

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
                *, attn_mask: Tensor | None = None, is_causal: bool | None = None,
                enable_gqa: bool = False, dropout_p: float = 0.0) -> Tensor:
        if isinstance(q, Tensor) and q.dim() in (3, 4) and q.shape[-1] != self.head_dim:
            raise ValueError(f"q has head_dim {q.shape[-1]} but this PerformerAttention was "
                             f"built with head_dim={self.head_dim}")
        if self.training and self.redraw_interval is not None:
            if torch.compiler.is_compiling():
                self.forward_count.add_(1)
            elif not _recomputing():
                self.maybe_redraw_features()
                self.forward_count += 1
        causal = self.causal if is_causal is None else is_causal
        return favor_attention(q, k, v, self.projection, key_padding_mask, causal,
                               self.feature_map, self.kernel_eps, self.scale, self.chunk_size,
                               attn_mask=attn_mask, dropout_p=dropout_p,
                               enable_gqa=enable_gqa, block_size=self.block_size)

    def prefill(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
                state: FavorState | None = None, *, enable_gqa: bool = False
                ) -> tuple[Tensor, FavorState]:
        """The causal pass over a prompt (or a chunk of it, continuing ``state``) returning
        (out, state) for :meth:`step`."""
        self._need_causal("prefill")
        return favor_attention(q, k, v, self.projection, key_padding_mask, True,
                               self.feature_map, self.kernel_eps, self.scale, self.chunk_size,
                               enable_gqa=enable_gqa, initial_state=state,
                               output_final_state=True)

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: FavorState | None = None,
             key_padding_mask: Tensor | None = None, *, enable_gqa: bool = False
             ) -> tuple[Tensor, FavorState]:
        """Recurrent causal decoding, one position: see :func:`favor_step`."""
        self._need_causal("step")
        if isinstance(q, Tensor) and q.dim() == 4:
            check_mask(key_padding_mask, q.shape[0], 1, q.device)
        return favor_step(q, k, v, self.projection, state, key_padding_mask, self.feature_map,
                          self.kernel_eps, self.scale, enable_gqa=enable_gqa)

    def _need_causal(self, what: str) -> None:
        if not self.causal:
            raise ValueError(f"{what} is the recurrent form of causal attention; build "
                             "PerformerAttention with causal=True")

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, num_features={self.num_features}, "
                f"feature_map={self.feature_map!r}, orthogonal={self.orthogonal}, "
                f"causal={self.causal}, redraw_interval={self.redraw_interval}")


def redraw_due_features(model: nn.Module) -> int:
    """Call :meth:`PerformerAttention.maybe_redraw_features` on every Performer in ``model``
    (for training under ``torch.compile``: once per step, outside the compiled region).
    Returns how many redrew."""
    return sum(m.maybe_redraw_features() for m in model.modules()
               if isinstance(m, PerformerAttention))
