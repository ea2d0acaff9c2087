"""Data augmentation as batched tensor ops on the device, airbench style (used by paper 6's
full-batch recipe, Geiping et al. 2022, Sec. 3: random crops with padding and flips, either
drawn afresh at every step or drawn once as a fixed set of augmented copies).

Every function takes the batch and a ``torch.Generator`` on the batch's device, so the same
generator state gives the same augmentation. The spatial axes are the last ``spatial`` ones:
``x: (n, C, H, W)`` with ``spatial=2`` (images), ``(n, L)`` or ``(n, C, L)`` with ``spatial=1``
(signals such as MNIST-1D).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check(x: torch.Tensor, spatial: int) -> None:
    if spatial not in (1, 2):
        raise ValueError(f"spatial must be 1 or 2, got {spatial}")
    if x.dim() < spatial + 1:
        raise ValueError(f"x must have a batch axis and {spatial} spatial axes, got shape "
                         f"{tuple(x.shape)}")


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator, spatial: int = 2,
                mode: str = "reflect") -> torch.Tensor:
    """Pad the last ``spatial`` axes by ``pad`` on each side (``mode``: "reflect" or
    "constant" zeros), then cut each sample back to its size at an offset drawn uniformly
    from ``[0, 2 pad]`` per axis. Output has the shape of ``x``."""
    _check(x, spatial)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0:
        return x
    n = x.shape[0]
    size = x.shape[-spatial:]
    # F.pad's reflect mode wants a channel axis and a float tensor
    lead = x.shape[1:-spatial]
    h = x.reshape(n, -1, *size)
    padded = F.pad(h if h.is_floating_point() else h.float(), (pad, pad) * spatial, mode=mode)
    padded = padded.to(x.dtype)
    offsets = torch.randint(0, 2 * pad + 1, (spatial, n), generator=generator, device=x.device)
    batch = torch.arange(n, device=x.device)
    if spatial == 1:
        cols = offsets[0][:, None] + torch.arange(size[0], device=x.device)  # (n, L)
        out = padded[batch[:, None], :, cols]  # (n, L, C')
        out = out.movedim(-1, 1)
    else:
        rows = offsets[0][:, None] + torch.arange(size[0], device=x.device)  # (n, H)
        cols = offsets[1][:, None] + torch.arange(size[1], device=x.device)  # (n, W)
        out = padded[batch[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (n,H,W,C')
        out = out.movedim(-1, 1)
    return out.reshape(n, *lead, *size)


def random_crop_reference(x: torch.Tensor, pad: int, generator: torch.Generator,
                          spatial: int = 2, mode: str = "reflect") -> torch.Tensor:
    """Slow reference of :func:`random_crop`: the same draws, one slice per sample."""
    _check(x, spatial)
    if pad == 0:
        return x
    n = x.shape[0]
    size = x.shape[-spatial:]
    offsets = torch.randint(0, 2 * pad + 1, (spatial, n), generator=generator, device=x.device)
    out = torch.empty_like(x)
    for i in range(n):
        s = x[i].reshape(-1, *size).double()
        p = F.pad(s[None], (pad, pad) * spatial, mode=mode)[0]
        if spatial == 1:
            o = int(offsets[0, i])
            crop = p[:, o:o + size[0]]
        else:
            r, c = int(offsets[0, i]), int(offsets[1, i])
            crop = p[:, r:r + size[0], c:c + size[1]]
        out[i] = crop.reshape(x.shape[1:]).to(x.dtype)
    return out


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror the last axis of each sample with probability ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def crop_flip(pad: int = 4, flip: bool = True, spatial: int = 2, mode: str = "reflect"
              ) -> Augment:
    """The standard CIFAR augmentation as one ``augment(x, generator)``: a random crop after
    padding by ``pad``, then (if ``flip``) a random horizontal flip."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = random_crop(x, pad, generator, spatial=spatial, mode=mode)
        return random_flip(x, generator) if flip else x

    return augment


def fixed_copies(x: torch.Tensor, y: torch.Tensor, augment: Augment, copies: int,
                 generator: torch.Generator, include_original: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed augmented data set: ``copies`` augmented versions of ``(x (n, *), y (n,))``
    drawn once, concatenated (after the original when ``include_original``).

    Returns ``(x', y')`` with ``(copies + include_original) * n`` samples; train on them with
    no per-step augmentation to get the paper's "fixed augmentation" setting.
    """
    if copies < 0 or (copies == 0 and not include_original):
        raise ValueError(f"copies must be >= 1 (or 0 with include_original), got {copies}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {x.shape[0]} "
                         f"and {y.shape[0]}")
    xs = [x] if include_original else []
    xs += [augment(x, generator) for _ in range(copies)]
    return torch.cat(xs), y.repeat(len(xs))
