"""MNIST-1D (Greydanus 2020), generated locally with the ``mnist1d`` package.

Only ``make_dataset`` is used: the package's ``get_dataset`` tries the network first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """Train and test tensors: x (n, 40) float32, y (n,) int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device: torch.device | str) -> Split:
        tensors = (self.x_train, self.y_train, self.x_test, self.y_test)
        return Split(*(t.to(device) for t in tensors))


@lru_cache(maxsize=8)
def _generate(num_samples: int, train_split: float, seed: int) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.train_split = train_split
    args.seed = seed
    data = make_dataset(args)
    return data["x"], data["y"], data["x_test"], data["y_test"]


def load_mnist1d(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> Split:
    """Generate MNIST-1D: ``num_samples`` signals of length 40, ``train_split`` for training.

    The defaults are the package's standard set (4000 train / 1000 test, seed 42), the one the
    published MNIST-1D numbers use. The same arguments give the same data, bit for bit.
    """
    if num_samples < 10:
        raise ValueError(f"num_samples must be >= 10, got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"train_split must be in (0, 1), got {train_split}")
    x, y, xt, yt = _generate(int(num_samples), float(train_split), int(seed))
    return Split(
        torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64),
        torch.as_tensor(xt, dtype=torch.float32), torch.as_tensor(yt, dtype=torch.int64),
    )
