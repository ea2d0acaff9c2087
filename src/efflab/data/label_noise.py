"""Symmetric label noise for classification data, in the two conventions found in the papers.

* :func:`flip_labels`: each label is replaced, with probability p, by a class drawn uniformly
  from the *other* classes, so a flipped label is always wrong (Nakkiran et al. 2019);
* :func:`resample_labels`: each label is replaced, with probability p, by a class drawn
  uniformly from *all* classes, so only ``p (1 - 1/C)`` of the labels change (13.5% for
  p = 0.15 and C = 10). This is the MNIST-1D deep double descent notebook's noise (Greydanus,
  ``notebooks/deep-double-descent.ipynb``), used by the ``double-descent-deep`` experiment of
  "A Farewell to the Bias-Variance Tradeoff?" (arXiv 2109.02355, §7).

Which samples changed is returned too, so that one can measure how much of the noise a network
memorizes.

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


def _resample_draws(n: int, p: float, num_classes: int, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform per sample (resample if < p) and a class in [0, num_classes) per sample."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    new = torch.randint(0, num_classes, (n,), generator=generator)
    return u, new


def resample_labels(y: torch.Tensor, p: float, num_classes: int, generator: torch.Generator
                    ) -> NoisyLabels:
    """Replace each label, with probability ``p``, by a class drawn uniformly from all
    ``num_classes`` (the original one included): the expected fraction changed is
    ``p (1 - 1 / num_classes)``. ``flipped`` marks the labels that changed. Deterministic given
    the generator's state; ``y`` is not modified.
    """
    _check(y, p, num_classes)
    u, new = _resample_draws(y.numel(), p, num_classes, generator)
    labels = torch.where((u < p).to(y.device), new.to(y.device), y)
    return NoisyLabels(labels, labels != y)


def resample_labels_reference(y: torch.Tensor, p: float, num_classes: int,
                              generator: torch.Generator) -> NoisyLabels:
    """Sample by sample in Python, for tests only: same draws, same result as above."""
    _check(y, p, num_classes)
    u, new = _resample_draws(y.numel(), p, num_classes, generator)
    labels = [int(new[i]) if float(u[i]) < p else int(y[i]) for i in range(y.numel())]
    out = torch.tensor(labels, dtype=torch.int64)
    return NoisyLabels(out, out != y.cpu())
