r"""The backend contract: the per-layer ops a backend provides (``JetOps``), the backend names,
and the module that holds each concrete backend's ops.

- ``torch``: the jet math of ``fastsiren.sine_jet`` in torch ops with the hand VJP; runs anywhere.
- ``triton``: the same ops as fused kernels (``fastsiren.kernels.sine_jet``); CUDA tensors, or
  CPU tensors under ``TRITON_INTERPRET=1`` (for tests).
- ``reference``: nested autograd on the plain SIREN of ``fastsiren.reference`` (tests,
  benchmarks); it has no ``JetOps``.
- ``auto``: triton for CUDA tensors when Triton imports, else torch (``fastsiren.dispatch``).

The ops modules are imported by name on first use (``ops_for``): the Triton one needs the optional
Triton package, and Triton fixes interpret-or-compile when its kernels are imported.
"""

from __future__ import annotations

import functools
import importlib
from typing import Protocol, runtime_checkable

import torch

from fastsiren import env
from fastsiren.errors import InputError
from fastsiren.jet import JetLayout

BACKENDS = ("auto", "torch", "triton", "reference")

# Concrete backends that run the jet Functions, and the module holding each one's JetOps.
OPS_MODULES = {"torch": "fastsiren.sine_jet", "triton": "fastsiren.kernels.sine_jet"}

# Backends with a kernel for a whole network's inference jet, and its module: ``unsupported(x,
# weights, omegas, layout, outermost_linear)`` (None where it runs) and ``siren_network_fwd``.
WHOLE_NETWORK_MODULES = {"triton": "fastsiren.kernels.network"}


@runtime_checkable
class JetOps(Protocol):
    r"""The per-layer operations a backend provides; ``fastsiren.jet_function`` chains them.

    Implemented as module-level functions by ``fastsiren.sine_jet`` (torch, the executable
    specification) and ``fastsiren.kernels.sine_jet`` (Triton); ``ops_for`` checks a module
    against this class when it loads it, and a test compares every signature.

    Shapes (B independent networks; unbatched weights arrive with B = 1), all contiguous:
      S   [B, R, N, K]  stacked input jet (``fastsiren.jet.JetLayout``: value, d gradient slabs,
                        then the Laplacian or d per-axis second derivatives)
      x   [B, N, d]     coordinates, the first layer's input
      w   [B, M, K]     weights in nn.Linear layout;   b [B, M] or None
      G   [B, R, N, M]  the scaled pre-activation jet;   out [B, R, N, M] the output jet

    The math of each op (the jet recurrence of a sine layer with omega folded into the matmul,
    and its VJP) is in ``fastsiren.sine_jet``'s docstring.
    """

    def points_per_chunk(self, n_points: int, rows: int, width: int, like: torch.Tensor) -> int:
        """How many points to push through the whole network at a time (all of them on GPU)."""

    def first_layer_preact(
        self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, omega: float
    ) -> torch.Tensor:
        """u = omega (x W^T + b): [B, N, M] (backward's recompute of cos u)."""

    def first_layer_fwd(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        omega: float,
        layout: JetLayout,
        for_backward: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sine layer on the coordinates: (out [B, R, N, M], cos u [B, N, M]).
        ``for_backward=False`` (no backward will run): at order 0 the second value is u and no
        cosine is computed;
        above, a backend may skip it and return None (Triton does)."""

    def first_layer_bwd(
        self,
        grad_out: torch.Tensor,
        x: torch.Tensor,
        w: torch.Tensor,
        omega: float,
        layout: JetLayout,
        s: torch.Tensor | None,
        c: torch.Tensor,
        need_x_grad: bool,
        has_bias: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """VJP of ``first_layer_fwd`` given s = sin u (order >= 1) and c = cos u:
        (x̄ or None, W̄, b̄ or None)."""

    def sine_layer_preact(
        self, stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, omega: float
    ) -> torch.Tensor:
        """G = S (omega W)^T with omega b on the value slab: [B, R, N, M]."""

    def sine_layer_saved(
        self, stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, omega: float
    ) -> torch.Tensor:
        """What ``sine_layer_fwd`` returns for ``sine_layer_bwd`` (its G), recomputed from the
        layer's input for ``recompute=True``: G with cos u over u in slab 0, except where a
        backend keeps u and takes the cosine in backward (the compiled torch epilogues)."""

    def sine_layer_fwd(
        self,
        stack: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        omega: float,
        layout: JetLayout,
        for_backward: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sine layer on a stacked jet: (out, G) with cos u written over u in G's slab 0.
        ``for_backward=False`` (no backward will run): G keeps u at order 0; above, a backend may
        skip G and return None (Triton does)."""

    def sine_layer_bwd(
        self,
        grad_out: torch.Tensor,
        stack: torch.Tensor,
        w: torch.Tensor,
        omega: float,
        layout: JetLayout,
        s: torch.Tensor,
        G: torch.Tensor,
        need_input_grad: bool = True,
        has_bias: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """VJP of ``sine_layer_fwd`` given s = sin u and G with cos u in slab 0:
        (S̄ or None, W̄, b̄ or None)."""

    def linear_layer_fwd(
        self, stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None
    ) -> torch.Tensor:
        """Final linear layer: S W^T for every slab, b on the value slab: [B, R, N, M]."""

    def linear_layer_bwd(
        self,
        grad_out: torch.Tensor,
        stack: torch.Tensor,
        w: torch.Tensor,
        need_input_grad: bool = True,
        has_bias: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """VJP of ``linear_layer_fwd``: (S̄ or None, W̄, b̄ or None)."""


def check_name(name: str, where: str) -> str:
    """``name`` if it is one of ``BACKENDS``, else a one-line error naming where it came from."""
    if name not in BACKENDS:
        raise InputError(f"{where}: unknown backend {name!r}, expected one of {BACKENDS}")
    return name


@functools.cache
def _import(module_name: str):
    """The module, or the exception importing it raised."""
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or a broken Triton install failing at import
        return exc


def _contract_members() -> list[str]:
    return sorted(n for n, v in vars(JetOps).items() if callable(v) and not n.startswith("_"))


def import_error(name: str) -> Exception | None:
    """The exception importing concrete backend ``name``'s ops raised, or None if they import.
    A module that imports but lacks part of the contract raises ``TypeError`` here."""
    module = _import(OPS_MODULES[name])
    if isinstance(module, Exception):
        return module
    if not isinstance(module, JetOps):
        missing = [m for m in _contract_members() if not hasattr(module, m)]
        raise TypeError(f"{OPS_MODULES[name]} does not implement JetOps: missing {missing}")
    return None


def unavailable(name: str, device: torch.device | str = "cuda") -> str | None:
    """Why backend ``name`` cannot run tensors on ``device`` (one line), or None if it can."""
    check_name(name, "backend argument")
    device = torch.device(device)
    if name != "triton":
        return None
    # Checked before importing the kernels: Triton fixes interpret-or-compile at that import.
    if device.type != "cuda" and not env.interpreting():
        return (
            f"the Triton kernels need CUDA tensors, got tensors on {device}; set "
            "TRITON_INTERPRET=1 before importing fastsiren to run them on the CPU (slow)"
        )
    exc = import_error("triton")
    if exc is not None:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"importing the Triton kernels failed ({first_line})"
    return None


def ops_for(name: str) -> JetOps:
    """The per-layer ops of a concrete backend ("torch" or "triton")."""
    if name not in OPS_MODULES:
        raise ValueError(f"backend {name!r} has no jet ops; expected one of {list(OPS_MODULES)}")
    exc = import_error(name)
    if exc is not None:
        raise RuntimeError(f"backend {name!r} is not available: {exc}") from exc
    return _import(OPS_MODULES[name])


def whole_network_kernel(name: str):
    """The module of backend ``name``'s whole-network inference kernel, or None if it has none
    (see ``WHOLE_NETWORK_MODULES``)."""
    if name not in WHOLE_NETWORK_MODULES:
        return None
    ops_for(name)  # the backend's own ops import first (a clear error if they cannot)
    module = _import(WHOLE_NETWORK_MODULES[name])
    if isinstance(module, Exception):
        raise RuntimeError(f"backend {name!r}: {WHOLE_NETWORK_MODULES[name]} did not import "
                           f"({module})") from module
    return module
