"""Atomic training checkpoints that a killed run resumes from (paper 6's long full-batch runs).

One file, ``<checkpoint_dir>/checkpoint.pt``, replaced atomically (efflab.io): a reader sees
the previous checkpoint or the new one, never half of one. It is read back with
``torch.load(weights_only=True)``, so a checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from efflab.io import atomic_save

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
