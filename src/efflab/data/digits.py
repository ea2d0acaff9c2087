"""The 8x8 handwritten digits that scikit-learn ships inside its package
(``sklearn.datasets.load_digits``: 1,797 images of 10 classes, UCI "optdigits" test set; read
from the installed package, never downloaded), as a small offline image task.

Images are scaled to [0, 1] (the raw pixels are 0..16), then standardized with the training
set's mean and standard deviation, and resized to ``size`` x ``size`` (bilinear upsampling, or
zero padding with ``resize="pad"``) so ResNets with stride-2 stages fit. The train/test split
is fixed by ``seed`` and stratified by class (the same arguments give the same tensors).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from efflab.data.mnist1d import Split

RESIZE = ("bilinear", "pad")


@lru_cache(maxsize=4)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(size: int = 16, test_fraction: float = 0.25, seed: int = 0,
                resize: str = "bilinear", channels: int = 1) -> Split:
    """The digits as images: x (n, channels, size, size) float32, y (n,) int64.

    ``size`` >= 8 (8 keeps the original images); ``channels`` > 1 repeats the gray image (for
    networks that expect RGB-like input); ``test_fraction`` in (0, 1) of each class is held out.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if resize not in RESIZE:
        raise ValueError(f"resize must be one of {RESIZE}, got {resize!r}")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be an int >= 1, got {channels!r}")
    images, labels = _raw()
    tr, te = _stratified_split(labels, test_fraction, seed)
    x = torch.from_numpy(images).unsqueeze(1)
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    if size != 8:
        if resize == "bilinear":
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        else:
            lo = (size - 8) // 2
            x = F.pad(x, (lo, size - 8 - lo, lo, size - 8 - lo))
    x = x.expand(-1, channels, -1, -1).contiguous()
    y = torch.from_numpy(labels)
    return Split(x[tr], y[tr], x[te], y[te])
