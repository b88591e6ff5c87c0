"""Models by class name: the one place that turns a checkpoint back into its model.

A checkpoint stores its model as a class name and constructor arguments (``model_class``,
``model_kwargs``; see ``fastsiren.checkpoint``). ``MODEL_CLASSES`` maps each name to its class;
``ALIASES`` maps other spellings of the same classes (their module paths) to those names, so
checkpoints that carry them keep loading. The fit loop builds its models here
(``build_model``), and ``load_model`` (``fastsiren.load_model``) gives a fitted model back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastsiren.checkpoint import load_checkpoint
from fastsiren.errors import InputError
from fastsiren.hypernet.models import NeuralProcessHypernet
from fastsiren.modules import BatchedSiren, LearnedStart, Siren

__all__ = ["ALIASES", "MODEL_CLASSES", "build_model", "load_model", "model_from_checkpoint"]

MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "Siren": Siren,
    "BatchedSiren": BatchedSiren,
    "LearnedStart": LearnedStart,
    "NeuralProcessHypernet": NeuralProcessHypernet,
}

ALIASES = {
    "fastsiren.Siren": "Siren",
    "fastsiren.modules.Siren": "Siren",
    "fastsiren.modules.BatchedSiren": "BatchedSiren",
    "fastsiren.fit.BatchedSiren": "BatchedSiren",
    "fastsiren.fit.models.BatchedSiren": "BatchedSiren",
    "fastsiren.hypernet.NeuralProcessHypernet": "NeuralProcessHypernet",
    "fastsiren.hypernet.models.NeuralProcessHypernet": "NeuralProcessHypernet",
}


def model_class(name: str) -> type[nn.Module]:
    """The class a checkpoint's ``model_class`` names."""
    cls = MODEL_CLASSES.get(ALIASES.get(name, name))
    if cls is None:
        raise InputError(f"model class {name!r} cannot be rebuilt; expected one of "
                         f"{sorted(MODEL_CLASSES)}")
    return cls


def build_model(name: str, model_kwargs: dict[str, Any], **options: Any) -> nn.Module:
    """An untrained model of class ``name`` from its stored constructor arguments, plus
    ``options`` that are not stored (``backend=``, ``compile_chunks=``)."""
    return model_class(name)(**model_kwargs, **options)


def model_from_checkpoint(state: dict[str, Any], index: int | None = None,
                          map_location: str | torch.device = "cpu",
                          **options: Any) -> nn.Module:
    """The fitted model of a checkpoint dict (``fastsiren.checkpoint.load_checkpoint``), in
    eval mode on ``map_location``; ``index=i`` picks network i of a ``BatchedSiren`` as a
    ``Siren``."""
    model = build_model(state["model_class"], state["model_kwargs"], **options)
    model.load_state_dict(state["model"])
    if index is not None:
        if not isinstance(model, BatchedSiren):
            raise InputError(f"index={index} given but the run fitted a single signal "
                             f"({state['model_class']})")
        model = model.siren(index)
    return model.to(map_location).eval()


def load_model(run: str | Path, index: int | None = None,
               map_location: str | torch.device = "cpu") -> nn.Module:
    """The fitted network of a run, ready to evaluate at any coordinates.

    ``run`` is a run folder (``--out DIR``) or a checkpoint file. A single-signal run gives a
    ``fs.Siren``; a batched run (a folder of images) gives its ``BatchedSiren``, or with
    ``index=i`` the ``fs.Siren`` of signal i. The model is in eval mode on ``map_location``.
    """
    state = load_checkpoint(run, map_location)
    try:
        return model_from_checkpoint(state, index, map_location)
    except InputError as exc:
        raise InputError(f"{run}: {exc}") from None
