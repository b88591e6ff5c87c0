"""Fitting: the one loop every task shares (``loop``), its checkpoints (``checkpoint``) and the
batched model of many-signal fits (``models``).

``fastsiren.fit`` is also callable: ``fs.fit("image", "photo.png", steps=500)`` is
``fastsiren.fit.fit(...)`` (see ``loop.fit``), so the package and the function share one name.
"""

import sys
import types

from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .loop import FitInterrupted, FitResult, fit
from .models import BatchedSiren

__all__ = ["BatchedSiren", "FitInterrupted", "FitResult", "fit", "load_checkpoint",
           "load_model", "save_checkpoint"]


class _CallableModule(types.ModuleType):
    """Lets ``fastsiren.fit(...)`` call ``fit`` while ``fastsiren.fit.load_model`` etc. stay
    reachable (a top-level function named ``fit`` would shadow this package)."""

    def __call__(self, *args, **kwargs):
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
