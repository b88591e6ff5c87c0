"""fastsiren: SIRENs with analytic derivatives.

A SIREN's value, gradient and Laplacian come out of one forward pass (a "jet" carried through
every layer) and train through a hand-derived backward, on a torch backend (CPU and anywhere) or
fused Triton kernels (CUDA).
"""

from . import fit, functional
from .fit import load_model
from .functional import siren, siren_jet
from .jet import Jet, JetLayout
from .jet_ops import BACKENDS
from .modules import SineLayer, Siren, convert_official_state_dict

__version__ = "0.1.0"

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
