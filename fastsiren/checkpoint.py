"""Checkpoint files: atomic writes and ``weights_only`` reads.

A checkpoint is a plain dict (tensors, numbers, strings, lists), so ``torch.load(path,
weights_only=True)`` reads it without running pickled code. The fit loop writes::

    format          CHECKPOINT_FORMAT
    task            the task's name; settings: its settings as a dict
    step            optimizer steps completed
    model_class     the model's class name ("Siren", "BatchedSiren", "NeuralProcessHypernet";
                    ``fastsiren.registry`` turns it back into a model); model_kwargs: its
                    constructor arguments
    model           the model's state_dict; optimizer: Adam's state_dict
    rng             {"generator": sampling generator state, "torch": CPU RNG, "cuda": CUDA RNG}
    train_seconds   time spent in steps so far; points: coordinates evaluated so far
    sharded         whether the process fitted its own shard of the items (torchrun), with its
                    rank and world_size: each shard resumes from its own checkpoint

It is written to a temporary file in the same folder and renamed over the old one, so a crash
or Ctrl-C during the write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from fastsiren.errors import InputError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "checkpoint_path", "load_checkpoint",
           "save_checkpoint"]

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else the run folder's checkpoint."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint at ``path`` (a file, or a run folder holding one), read with
    ``weights_only=True``."""
    file = checkpoint_path(path)
    if not file.is_file():
        raise InputError(f"{path}: no checkpoint ({CHECKPOINT_NAME}) to load")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputError(f"{file}: not a readable fastsiren checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{file}: not a fastsiren fit checkpoint (format "
                         f"{CHECKPOINT_FORMAT} expected)")
    return state
