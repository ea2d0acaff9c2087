"""Atomic training checkpoints that a killed run resumes from (paper 6's long full-batch runs).

One file, ``<checkpoint_dir>/checkpoint.pt``, replaced atomically (efflab.io): a reader sees
the previous checkpoint or the new one, never half of one. It is read back with
``torch.load(weights_only=True)``, so a checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from efflab.io import atomic_save, remove_stale_tmp

FORMAT = "efflab.train.checkpoint/1"
FILENAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that belongs to another run."""


def checkpoint_path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / FILENAME


def save_checkpoint(checkpoint_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) atomically."""
    payload = {"format": FORMAT, **state}
    return atomic_save(checkpoint_path(checkpoint_dir), lambda tmp: torch.save(payload, tmp))


def load_checkpoint(checkpoint_dir: str | Path, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any] | None:
    """The checkpoint in ``checkpoint_dir``, or ``None`` when there is none yet."""
    path = checkpoint_path(checkpoint_dir)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same thing here
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable "
                              f"({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} is not an efflab training checkpoint "
                              f"(format {found!r}, expected {FORMAT!r})")
    return state


def fingerprint(config: dict[str, Any]) -> str:
    """A canonical string of the settings a resumed run must share with the one it resumes."""
    return json.dumps(config, sort_keys=True, default=str)


def model_fingerprint(model: torch.nn.Module) -> str:
    """The architecture a checkpoint belongs to: the module tree (its ``repr``, which names
    every layer and activation: ReLU swapped for Tanh changes it) and every parameter's and
    buffer's name, shape and dtype."""
    tensors = [f"{name}:{tuple(t.shape)}:{t.dtype}" for name, t in
               (*model.named_parameters(), *model.named_buffers())]
    text = repr(model) + "|" + ";".join(tensors)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def data_fingerprint(*tensors: torch.Tensor, sample: int = 1 << 16) -> str:
    """The data a checkpoint was trained on: shapes, dtypes, the float64 sum and the bytes of
    up to ``sample`` evenly spaced elements of each tensor (cheap for large data sets; two
    data sets that agree on all of these are treated as the same)."""
    h = hashlib.blake2b(digest_size=12)
    for t in tensors:
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // sample)
        picked = flat[::step].cpu().contiguous()
        h.update(f"{tuple(t.shape)}:{t.dtype}:{flat.double().sum().item()!r}".encode())
        h.update(picked.view(torch.uint8).numpy().tobytes() if picked.numel() else b"")
    return h.hexdigest()


def check_checkpoint_dir(checkpoint_dir: str | Path) -> Path:
    """``checkpoint_dir`` as a folder that exists or can be made and written, checked before
    training starts (not after the first step)."""
    path = Path(checkpoint_dir)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"checkpoint_dir {str(path)!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"checkpoint_dir {str(path)!r} cannot be created: "
                              f"{e.strerror or e}") from e
    if not os.access(path, os.W_OK):
        raise CheckpointError(f"checkpoint_dir {str(path)!r} is not writable")
    remove_stale_tmp(path)  # what a write killed half-way left beside the checkpoint
    return path
