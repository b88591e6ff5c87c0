"""fastsiren: SIRENs with analytic derivatives.

A SIREN's value, gradient and Laplacian come out of one forward pass (a "jet" carried through
every layer) and train through a hand-derived backward, on a torch backend (CPU and anywhere) or
fused Triton kernels (CUDA).

``fastsiren.fit`` (the fit loop and, through it, every task) is imported on first use, so
``import fastsiren`` loads the engine alone.
"""

import importlib

from . import functional
from ._version import __version__ as __version__
from .functional import siren, siren_jet
from .jet import Jet, JetLayout
from .jet_ops import BACKENDS
from .modules import SineLayer, Siren, convert_official_state_dict
from .registry import load_model

__all__ = [
    "BACKENDS",
    "Jet",
    "JetLayout",
    "SineLayer",
    "Siren",
    "convert_official_state_dict",
    "fit",
    "functional",
    "load_model",
    "siren",
    "siren_jet",
]


def __getattr__(name: str):
    """``fastsiren.fit``, imported when first asked for."""
    if name == "fit":
        return importlib.import_module(".fit", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
