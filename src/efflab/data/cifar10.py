"""CIFAR-10 from the standard ``cifar-10-batches-py`` folder the user already has (the data
set of paper 6's main experiments, Geiping et al. 2022, Sec. 4). Nothing is downloaded.

The batch files are pickles, and unpickling runs whatever a file asks for; they are read with a
restricted unpickler that builds only plain containers, strings, numbers and numpy arrays, and
refuses every other global (``os.system``, ``builtins.eval``, ...) before anything runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from efflab.data.mnist1d import Split

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
# per-channel mean and std of the training images, in [0, 1] units
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

# the globals a numpy array pickle needs (numpy 1.x and 2.x module names), and the codec
# function that protocol-2 pickles written by Python 3 use for bytes
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class CifarError(ValueError):
    """A CIFAR-10 file or folder that is missing, corrupt or not what it claims to be."""


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise _ForbiddenGlobal(f"global {module}.{name} is not allowed in a CIFAR-10 "
                                         "batch file")
        return super().find_class(module, name)


def _restricted_load(data: bytes) -> object:
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> ``images (n, 3, 32, 32) uint8``, ``labels (n,) int64``."""
    path = Path(path)
    if not path.is_file():
        raise CifarError(f"CIFAR-10 batch file {path} does not exist")
    try:
        obj = _restricted_load(path.read_bytes())
    except _ForbiddenGlobal as e:
        raise CifarError(f"refusing CIFAR-10 file {path}: {e}") from e
    except Exception as e:  # noqa: BLE001 - truncated or garbled files fail in many ways
        raise CifarError(f"CIFAR-10 file {path} is corrupt ({type(e).__name__}: "
                         f"{str(e)[:200]})") from e
    if not isinstance(obj, dict):
        raise CifarError(f"CIFAR-10 file {path} holds a {type(obj).__name__}, expected a dict")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise CifarError(f"CIFAR-10 file {path} lacks 'data' or 'labels' (keys: {sorted(d)})")
    data, labels = d["data"], d["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise CifarError(f"CIFAR-10 file {path}: 'data' must be a uint8 array of shape "
                         f"(n, 3072), got {desc}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise CifarError(f"CIFAR-10 file {path}: 'labels' are not integers ({e})") from e
    if labels.shape != (data.shape[0],):
        raise CifarError(f"CIFAR-10 file {path}: {data.shape[0]} images but labels of shape "
                         f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CifarError(f"CIFAR-10 file {path}: labels must be in [0, 9], got "
                         f"[{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, 32, 32), labels


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(n, 3, 32, 32)`` -> float32, per-channel standardized."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def load_cifar10(root: str | Path, standardize: bool = True, max_train: int | None = None,
                 device: str | torch.device = "cpu") -> Split:
    """CIFAR-10 from ``root`` (the ``cifar-10-batches-py`` folder, or its parent).

    Returns a :class:`Split` with x (n, 3, 32, 32) float32 standardized per channel (or uint8
    with ``standardize=False``) and y (n,) int64, on ``device``: 50000 train, 10000 test.
    ``max_train`` keeps the first that many training images (for subsets).
    """
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise CifarError(f"CIFAR-10 folder {root} does not exist (expected the "
                         "'cifar-10-batches-py' folder of the python version of CIFAR-10)")
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (root / f).is_file()]
    if missing:
        raise CifarError(f"CIFAR-10 folder {root} lacks {', '.join(missing)}")
    parts = [read_batch(root / f) for f in TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    if max_train is not None:
        if max_train < 1:
            raise ValueError(f"max_train must be >= 1 or None, got {max_train}")
        x_train, y_train = x_train[:max_train], y_train[:max_train]
    x_test, y_test = read_batch(root / TEST_FILE)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(device)
               for a in (x_train, y_train, x_test, y_test)]
    if standardize:
        tensors[0], tensors[2] = normalize(tensors[0]), normalize(tensors[2])
    return Split(*tensors)


def cifar10_available(root: str | Path | None) -> bool:
    """Whether ``root`` holds the CIFAR-10 python batches (no reading, no download)."""
    if root is None:
        return False
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    return all((root / f).is_file() for f in (*TRAIN_FILES, TEST_FILE))
