"""Symmetric label noise for classification data.

Used by the deep double descent experiment of "A Farewell to the Bias-Variance Tradeoff?"
(arXiv 2109.02355, §7; Nakkiran et al. 2019): each training label is replaced, with
probability p, by a class drawn uniformly from the *other* classes, so a flipped label is
always wrong. Which samples were flipped is returned too, so that one can measure how much of
the noise a network memorizes.

Shapes: y (n,) int64 class labels in [0, num_classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoisyLabels:
    """``labels``: (n,) the noisy labels; ``flipped``: (n,) bool, True where a label changed."""

    labels: torch.Tensor
    flipped: torch.Tensor

    @property
    def fraction(self) -> float:
        """Fraction of labels actually flipped."""
        return float(self.flipped.float().mean()) if self.flipped.numel() else 0.0


def _check(y: torch.Tensor, p: float, num_classes: int) -> None:
    if y.dim() != 1 or y.dtype != torch.int64:
        raise ValueError(f"y must be a 1-D int64 tensor of class labels, got shape "
                         f"{tuple(y.shape)} and dtype {y.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (a flip needs another class), "
                         f"got {num_classes}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels in y must lie in [0, {num_classes}), got range "
                         f"[{int(y.min())}, {int(y.max())}]")


def _draws(n: int, p: float, num_classes: int, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The random numbers both implementations consume: a uniform per sample (flip if < p)
    and an offset in [1, num_classes) per sample (the new class is y + offset mod C)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    offset = torch.randint(1, num_classes, (n,), generator=generator)
    return u, offset


def flip_labels(y: torch.Tensor, p: float, num_classes: int, generator: torch.Generator
                ) -> NoisyLabels:
    """Replace each label, with probability ``p``, by a uniformly drawn *other* class.

    A uniform offset in [1, C) added modulo C gives each of the C - 1 other classes
    probability 1/(C - 1) and never the original one. Deterministic given the generator's
    state; ``y`` is not modified.
    """
    _check(y, p, num_classes)
    u, offset = _draws(y.numel(), p, num_classes, generator)
    flipped = (u < p).to(y.device)
    new = (y + offset.to(y.device)) % num_classes
    return NoisyLabels(torch.where(flipped, new, y), flipped)


def flip_labels_reference(y: torch.Tensor, p: float, num_classes: int,
                          generator: torch.Generator) -> NoisyLabels:
    """Sample by sample in Python, for tests only: same draws, same result as above."""
    _check(y, p, num_classes)
    u, offset = _draws(y.numel(), p, num_classes, generator)
    labels, flipped = [], []
    for i in range(y.numel()):
        label = int(y[i])
        if float(u[i]) < p:
            others = [c for c in range(num_classes) if c != label]
            # offset o maps to label + o mod C; list the other classes in that order
            others.sort(key=lambda c, lab=label: (c - lab) % num_classes)
            labels.append(others[int(offset[i]) - 1])
            flipped.append(True)
        else:
            labels.append(label)
            flipped.append(False)
    return NoisyLabels(torch.tensor(labels, dtype=torch.int64),
                       torch.tensor(flipped, dtype=torch.bool))
