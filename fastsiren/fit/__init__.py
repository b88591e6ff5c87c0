"""Fitting: the one loop every task shares (``loop``), with the checkpoint files it writes
(``fastsiren.checkpoint``), the model registry that reads them back (``fastsiren.registry``) and
the batched model of many-signal fits (``fastsiren.modules.BatchedSiren``) re-exported here.

``fastsiren.fit`` is also callable: ``fs.fit("image", "photo.png", steps=500)`` is
``fastsiren.fit.fit(...)`` (see ``loop.fit``), so the package and the function share one name.
"""

import sys
import types

from ..checkpoint import load_checkpoint, save_checkpoint
from ..modules import BatchedSiren
from ..registry import load_model
from .loop import FitInterrupted, FitResult, fit

__all__ = ["BatchedSiren", "FitInterrupted", "FitResult", "fit", "load_checkpoint",
           "load_model", "save_checkpoint"]


class _CallableModule(types.ModuleType):
    """Lets ``fastsiren.fit(...)`` call ``fit`` while ``fastsiren.fit.load_model`` etc. stay
    reachable (a top-level function named ``fit`` would shadow this package)."""

    def __call__(self, *args, **kwargs):
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
