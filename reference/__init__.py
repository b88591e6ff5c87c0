"""The truth: a plain PyTorch SIREN and autograd differential operators.

Nothing here is fast on purpose. The module tree, initialisation and operators follow the
official SIREN code (Sitzmann et al. 2020), so results and checkpoints compare one to one.
Every fastsiren backend is tested against this package, in float64.
"""

from .diff_operators import divergence, gradient, hessian, jacobian, laplace
from .jet import Jet, autograd_jet, naive_jet
from .siren import SineLayer, Siren, siren_forward

__all__ = [
    "Jet",
    "SineLayer",
    "Siren",
    "autograd_jet",
    "divergence",
    "gradient",
    "hessian",
    "jacobian",
    "laplace",
    "naive_jet",
    "siren_forward",
]
