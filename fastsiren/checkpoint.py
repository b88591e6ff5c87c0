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
or Ctrl-C during the write leaves the previous checkpoint intact (``atomic_write``, which every
file of a run folder goes through, with the permissions the user's umask gives a new file).

Reading one never runs pickled code, and an unreadable file is reported in one line: never with
torch's advice to load it with ``weights_only=False``, which would run whatever it holds.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fastsiren.errors import InputError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "atomic_write", "checkpoint_path",
           "load_checkpoint", "new_file_mode", "save_checkpoint", "unwritable"]

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"


def new_file_mode() -> int:
    """The permissions a newly created file gets under the process's umask (0o666 & ~umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block ends without an exception the
    file written there is renamed over ``path`` (a reader never sees half a file), with the
    umask's permissions (``mkstemp`` alone would leave it 0600). On an exception it is removed
    and ``path`` stays as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unwritable(folder: str | Path) -> str | None:
    """Why a file cannot be created in ``folder`` (one phrase), or None when it can: a real
    temporary file is made and removed, since permission bits alone do not tell (root, read-only
    mounts, full disks)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(tmp)
    return None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    with atomic_write(path) as tmp, tmp.open("wb") as handle:
        torch.save(state, handle)
    return path


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else the run folder's checkpoint."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint at ``path`` (a file, or a run folder holding one), read with
    ``weights_only=True``."""
    file = checkpoint_path(path)
    if not file.is_file() and Path(path).is_dir():
        raise InputError(f"{path}: a folder with no checkpoint ({CHECKPOINT_NAME}) in it; "
                         "expected a run folder or a checkpoint file")
    if not file.is_file():
        raise InputError(f"{path}: no checkpoint ({CHECKPOINT_NAME}) to load")
    try:
        with warnings.catch_warnings():  # torch's remarks on odd pickle protocols
            warnings.simplefilter("ignore")
            state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputError(f"{file}: not a readable fastsiren checkpoint "
                         f"({_load_failure(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{file}: not a fastsiren fit checkpoint (format "
                         f"{CHECKPOINT_FORMAT} expected)")
    return state


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load`` failed, in one line: the unpickler's own reason without torch's
    surrounding advice (which suggests ``weights_only=False``)."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if found:
        return found.group(1).strip().splitlines()[0]
    if "weights_only" in text or not text.strip():
        return f"{type(exc).__name__}: not a file written by torch.save"
    return f"{type(exc).__name__}: {text.strip().splitlines()[0]}"


def check_output_file(path: Path, label: str) -> None:
    """An InputError (message led by ``label``, which names the option or output) when a file
    cannot be written at ``path``: a folder there, no parent folder, or a parent that refuses new
    files. Checked before the work that produces the file."""
    if path.is_dir():
        raise InputError(f"{label}: is a folder; expected a file name")
    if not path.parent.is_dir():
        raise InputError(f"{label}: the folder {path.parent} does not exist")
    reason = unwritable(path.parent)
    if reason is not None:
        raise InputError(f"{label}: cannot write there ({reason})")
