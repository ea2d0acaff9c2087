"""FLOPs counted by running the model, with the ops that have no formula listed, never zeroed.

Efficiency Misnomer (arXiv 2110.12894), Sec. 2 ("FLOPs") and its warnings on counters: many
tools count multiply-adds (MACs) and call them FLOPs, miss ``scaled_dot_product_attention``,
``matmul`` or ``einsum``, and report zero for them without a word.

Built on :class:`torch.utils.flop_counter.FlopCounterMode`, which sees every ATen op the
model runs (forward and backward). Conventions:

* 1 multiply-add = 2 FLOPs: ``Linear(i, o)`` on ``b`` rows costs ``2·b·i·o``.
* Counted: matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions and
  their backward, fused attention kernels. PyTorch's own formula table misses the CPU
  kernel of ``scaled_dot_product_attention`` (``_scaled_dot_product_flash_attention_for_cpu``
  and its backward), so it is added here: ``2·b·h·s_q·s_k·(d + d_v)`` forward, twice that
  backward. Causal masks are not discounted (a full score matrix is counted).
* Not counted: element-wise arithmetic, normalization, softmax, reductions, the optimizer's
  update. They are listed in :attr:`FlopCount.uncounted_ops` with call counts, so that a
  reader sees what the number leaves out. Ops that do no arithmetic at all (views, copies,
  allocation, random draws) are counted separately in :attr:`FlopCount.free_op_calls`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

CONVENTION = (
    "1 multiply-add = 2 FLOPs; counted: matrix products, convolutions, attention kernels "
    "(forward and backward; causal attention counted as the full matrix that runs, its "
    "useful triangle reported separately); element-wise, normalization, "
    "softmax, reductions and optimizer updates are not counted and are listed as uncounted ops"
)

# Ops that move, view, allocate or draw random numbers but do no floating-point arithmetic.
NO_ARITHMETIC_OPS = frozenset(
    f"aten.{n}" for n in (
        "view _unsafe_view reshape _reshape_alias t transpose permute expand expand_as "
        "unsqueeze squeeze select slice narrow as_strided alias detach lift_fresh clone copy_ "
        "_to_copy to contiguous empty empty_like empty_strided new_empty new_empty_strided "
        "new_zeros new_ones new_full zeros zeros_like ones ones_like full full_like fill_ zero_ "
        "arange split split_with_sizes chunk unbind cat stack index_select gather embedding "
        "slice_backward select_backward unsqueeze_copy view_copy t_copy transpose_copy "
        "permute_copy expand_copy split_copy unbind_copy randn randn_like rand rand_like "
        "randint randint_like randperm uniform_ normal_ bernoulli_ scalar_tensor "
        "_local_scalar_dense item set_ resize_ _unsafe_split unfold flatten movedim "
        "repeat_interleave repeat roll flip tril triu constant_pad_nd"
    ).split()
)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def sdpa_forward_flops(query: Any, key: Any, value: Any) -> int:
    """``softmax(Q Kᵀ) V``: ``QKᵀ`` is ``b·h·s_q·s_k·d`` multiply-adds, ``P V`` is
    ``b·h·s_q·s_k·d_v``; 2 FLOPs each.

    query: (batch, heads, s_q, d), key: (batch, heads, s_k, d), value: (batch, heads, s_k, d_v)
    """
    *lead_q, s_q, d = _shape(query)
    s_k = _shape(key)[-2]
    d_v = _shape(value)[-1]
    rows = 1
    for n in lead_q:  # batch x query heads (grouped keys are broadcast to every query head)
        rows *= n
    return 2 * rows * s_q * s_k * (d + d_v)


def sdpa_backward_flops(grad_out: Any, query: Any, key: Any, value: Any) -> int:
    """Backward of :func:`sdpa_forward_flops`: ``dV = Pᵀ dO``, ``dP = dO Vᵀ``, ``dQ = dS K``,
    ``dK = dSᵀ Q``: four products, twice the forward (recomputing P inside fused kernels is
    not counted, as with PyTorch's own formulas)."""
    return 2 * sdpa_forward_flops(query, key, value)


def _cpu_sdpa_forward(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_forward_flops(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_backward_flops(grad_out, query, key, value)


# Raw formulas (receive tensors); marked so FlopCounterMode does not wrap them again.
_cpu_sdpa_forward._get_raw = True  # type: ignore[attr-defined]
_cpu_sdpa_backward._get_raw = True  # type: ignore[attr-defined]

EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {}
if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
    EXTRA_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_forward
if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
    EXTRA_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward


def causal_fraction(s_q: int, s_k: int) -> float:
    """Share of the ``s_q x s_k`` score matrix a causal mask keeps (top-left aligned)."""
    if s_q < 1 or s_k < 1:
        return 0.0
    kept = sum(min(i + 1, s_k) for i in range(s_q))
    return kept / (s_q * s_k)


@dataclass
class FlopCount:
    """FLOPs of one call, split by op; ops without a formula listed with their call counts.

    ``useful_total`` is ``total`` less the masked-out part of causal attention kernels;
    ``by_module`` maps a module path (``"MLP.layers.0"``; ``"Global"`` is the whole call) to
    ``{"forward": flops, "backward": flops}``, nested modules included in their parents.
    """

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    free_op_calls: int = 0
    convention: str = CONVENTION
    useful_total: int | None = None
    causal_attention_calls: int = 0
    by_module: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.useful_total is None:
            self.useful_total = self.total


def _is_causal(func_packet, args, kwargs) -> bool:
    """The ``is_causal`` argument of an attention op's call, found through its schema."""
    try:
        schema = func_packet.default._schema
    except AttributeError:
        return False
    for i, arg in enumerate(schema.arguments):
        if arg.name == "is_causal":
            if "is_causal" in kwargs:
                return bool(kwargs["is_causal"])
            return bool(args[i]) if i < len(args) else False
    return False


def _query_key_lengths(func_packet, args) -> tuple[int, int]:
    """``(s_q, s_k)`` of an attention op: forward ops take (query, key, ...), backward ops
    (grad_out, query, key, ...)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    q, k = (tensors[1], tensors[2]) if "backward" in str(func_packet) else (tensors[0],
                                                                            tensors[1])
    return int(q.shape[-2]), int(k.shape[-2])


class _RecordingFlopCounter(FlopCounterMode):
    """FlopCounterMode that also remembers every op it saw (so the ones without a formula
    are reported instead of silently contributing zero), splits each module's FLOPs into
    forward and backward, and measures what causal masks leave out."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=EXTRA_FORMULAS)
        self.op_calls: Counter[str] = Counter()
        self.by_module: dict[str, Counter[str]] = {}
        self.causal_masked = 0.0
        self.causal_calls = 0

    def _count_flops(self, func_packet, out, args, kwargs):
        self.op_calls[str(func_packet)] += 1
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            phase = "backward" if self.mod_tracker.is_bw else "forward"
            for parent in set(self.mod_tracker.parents):
                self.flop_counts[parent][func_packet] += flops
                self.by_module.setdefault(parent, Counter())[phase] += flops
            if "attention" in str(func_packet) and _is_causal(func_packet, args, kwargs):
                s_q, s_k = _query_key_lengths(func_packet, args)
                self.causal_masked += flops * (1.0 - causal_fraction(s_q, s_k))
                self.causal_calls += 1
        return out


def count_flops(fn: Callable[[], Any]) -> tuple[Any, FlopCount]:
    """Run ``fn()`` once under the counter; return its result and the :class:`FlopCount`."""
    counter = _RecordingFlopCounter()
    with counter:
        result = fn()
    counted = counter.get_flop_counts().get("Global", {})
    by_op = {str(k): int(v) for k, v in sorted(counted.items(), key=lambda kv: str(kv[0]))}
    has_formula = {str(k) for k in counter.flop_registry}
    uncounted: dict[str, int] = {}
    free = 0
    for op, calls in sorted(counter.op_calls.items()):
        if op in has_formula:
            continue
        if op in NO_ARITHMETIC_OPS:
            free += calls
        else:
            uncounted[op] = calls
    total = sum(by_op.values())
    by_module = {name: {"forward": int(c["forward"]), "backward": int(c["backward"])}
                 for name, c in counter.by_module.items()}
    return result, FlopCount(total=total, by_op=by_op, uncounted_ops=uncounted,
                             free_op_calls=free,
                             useful_total=int(round(total - counter.causal_masked)),
                             causal_attention_calls=counter.causal_calls, by_module=by_module)
