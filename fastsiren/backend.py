r"""Backends: the contract every backend's per-layer ops fulfil, and the one place that picks one.

- ``torch``: the jet math of ``fastsiren.sine_jet`` in torch ops with the hand VJP; runs anywhere.
- ``triton``: the same Functions over the fused kernels of ``fastsiren.kernels.sine_jet``; CUDA
  tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (for tests).
- ``reference``: nested autograd on the plain SIREN of ``fastsiren.reference`` (tests, benchmarks).
- ``auto``: triton for CUDA tensors when Triton imports, else torch.

The environment variable ``FASTSIREN_BACKEND`` replaces ``auto`` for a whole run; an explicit
backend argument other than ``auto`` wins over it.

Dispatch (``run_siren_jet``) is the only code that knows which algorithm and which ops run:
order 1 with fewer outputs than coordinates takes the adjoint sweep on the torch backend
(``fastsiren.adjoint``); on the triton backend a jet no backward will follow runs as one kernel
for the whole network where it fits (``fastsiren.kernels.network``: widths <= 128, a linear last
layer; ``FASTSIREN_FUSED_NETWORK=0`` turns it off); everything else is the forward-mode jet
(``fastsiren.jet_function``) over the backend's ``JetOps``, and ``reference`` calls the
reference's autograd.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from fastsiren import env
from fastsiren.errors import InputError
from fastsiren.jet import Jet, JetLayout

BACKENDS = ("auto", "torch", "triton", "reference")
ENV_VAR = env.BACKEND

# Concrete backends that run the jet Functions, and the module holding each one's JetOps.
OPS_MODULES = {"torch": "fastsiren.sine_jet", "triton": "fastsiren.kernels.sine_jet"}


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

    Math. With omega folded into the matmul, a sine layer computes for all slabs at once
    ``G = S (omega W)^T`` plus ``omega b`` on the value slab: u = G_0 = omega h,
    g_i = G_i = omega Jh_i, g_L = omega Lh. With s = sin u, c = cos u::

        z' = s      J'_i = c g_i      L' = c g_L - s sum_i g_i^2    (per axis: c g_Li - s g_i^2)

    and its VJP, given cotangents (z̄', J̄'_i, L̄')::

        ū   = c z̄' - s sum_i J̄'_i g_i - L̄' (s g_L + c sum_i g_i^2)
        ḡ_i = c J̄'_i - 2 s L̄' g_i          ḡ_L = c L̄'
        W̄ = omega Ḡ^T S (one matmul over the stacked slabs)   b̄ = omega sum_n ū   S̄ = Ḡ (omega W)

    The first layer's input is x itself (J = I, L = 0): g_i = omega W[:, i] is one vector per
    coordinate, g_L = 0, and its jets need no matmul. The final linear layer is the matmul alone.
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
        keep_cos: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sine layer on the coordinates: (out [B, R, N, M], cos u [B, N, M]). ``keep_cos=False``
        (no backward will run): at order 0 the second value is u and no cosine is computed;
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
        keep_cos: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sine layer on a stacked jet: (out, G) with cos u written over u in G's slab 0.
        ``keep_cos=False`` (no backward will run): G keeps u at order 0; above, a backend may
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


# ----------------------------------------------------------------------------- names and choice


def check_name(name: str, where: str) -> str:
    """``name`` if it is one of ``BACKENDS``, else a one-line error naming where it came from."""
    if name not in BACKENDS:
        raise InputError(f"{where}: unknown backend {name!r}, expected one of {BACKENDS}")
    return name


_check_name = check_name  # the former private name, kept for one merge


@functools.cache
def _load_ops(name: str) -> JetOps | Exception:
    """The ops module of a concrete backend, or the exception importing it raised."""
    try:
        module = importlib.import_module(OPS_MODULES[name])
    except Exception as exc:  # ImportError, or a broken Triton install failing at import
        return exc
    if not isinstance(module, JetOps):
        missing = [m for m in _contract_members() if not hasattr(module, m)]
        raise TypeError(f"{OPS_MODULES[name]} does not implement JetOps: missing {missing}")
    return module


def _contract_members() -> list[str]:
    return sorted(n for n, v in vars(JetOps).items() if callable(v) and not n.startswith("_"))


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
    ops = _load_ops("triton")
    if isinstance(ops, Exception):
        first_line = (str(ops).strip().splitlines() or [type(ops).__name__])[0]
        return f"importing the Triton kernels failed ({first_line})"
    return None


def resolve(name: str | None, device: torch.device) -> str:
    """The concrete backend ("torch", "triton" or "reference") for tensors on ``device``."""
    name = check_name(name or "auto", "backend argument")
    if name == "auto":
        name = check_name(env.backend_override() or "auto", f"${ENV_VAR}")
    if name == "triton":
        reason = unavailable("triton", device)
        if reason is not None:
            raise RuntimeError(
                f"backend 'triton' is not available: {reason}. Install triton "
                "(pip install 'fastsiren[triton]') or use backend='torch'."
            )
    if name != "auto":
        return name
    if device.type == "cuda":
        ops = _load_ops("triton")
        if isinstance(ops, Exception):
            _warn_fallback(ops)
            return "torch"
        return "triton"
    return "torch"


@functools.cache
def _warn_fallback(exc: Exception) -> None:
    warnings.warn(
        f"fastsiren: Triton is unavailable ({exc}); using the torch backend", stacklevel=3
    )


def ops_for(name: str) -> JetOps:
    """The per-layer ops of a concrete backend ("torch" or "triton")."""
    if name not in OPS_MODULES:
        raise ValueError(f"backend {name!r} has no jet ops; expected one of {list(OPS_MODULES)}")
    ops = _load_ops(name)
    if isinstance(ops, Exception):
        raise RuntimeError(f"backend {name!r} is not available: {ops}") from ops
    return ops


# ----------------------------------------------------------------------------- dispatch


def prefers_adjoint(name: str, order: int, d: int, n_out: int) -> bool:
    """Order 1 by the adjoint sweep (``fastsiren.adjoint``) when it does fewer matmuls than the
    forward-mode jet: 3 (1 + n_out) against 3 (1 + d) slab-matmuls per layer. Torch backend only;
    the Triton kernels implement the forward-mode jet."""
    return name == "torch" and order == 1 and n_out < d


def _needs_backward(x, weights, biases) -> bool:
    """Whether autograd may differentiate the jet: grad mode on and some input requiring grad."""
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, *weights, *biases))


def run_siren_jet(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None],
    omegas: tuple[float, ...],
    layout: JetLayout,
    outermost_linear: bool,
    recompute: bool,
    name: str,
    compile_chunks: bool | None = None,
) -> Jet:
    """The jet of a SIREN on concrete backend ``name`` from canonical arguments: x [B, N, d],
    weights [B, M, K] and biases [B, M] (or None), validated and contiguous. Returns the ``Jet``
    with leading dims [B, N]."""
    if name == "reference":
        from fastsiren.reference import autograd_jet, siren_forward

        def network(coords):
            return siren_forward(coords, weights, biases, omegas, outermost_linear)

        ref = autograd_jet(network, x, layout.order, layout.hessian_diag)
        return Jet(ref.value, ref.grad, ref.lap, ref.hess_diag)

    from fastsiren.adjoint import SirenGradFunction
    from fastsiren.jet_function import SirenJetFunction, SirenJetSettings

    if not torch.is_grad_enabled():
        # Inference (torch.no_grad): a Function sees its inputs' requires_grad, not the grad
        # mode it was applied under, so with trainable weights it would keep every layer's
        # intermediates and cosines for a backward that cannot come. Detached, it keeps none.
        x = x.detach()
        weights = [w.detach() for w in weights]
        biases = [b if b is None else b.detach() for b in biases]

    if name == "triton" and not _needs_backward(x, weights, biases) and env.fused_network():
        from fastsiren.kernels import network

        if network.unsupported(x, weights, omegas, layout, outermost_linear) is None:
            return Jet.from_stack(network.siren_network_fwd(x, weights, biases, omegas, layout),
                                  layout)

    n_out = weights[-1].shape[-2]
    if prefers_adjoint(name, layout.order, layout.d, n_out):
        settings = SirenJetSettings(omegas, outermost_linear, layout)
        value, grad = SirenGradFunction.apply(x, settings, *weights, *biases)
        return Jet(value, grad.permute(0, 2, 1, 3))
    if compile_chunks is None:
        compile_chunks = env.compile_jets()
    ops, compiled = ops_for(name), name == "torch" and compile_chunks
    if compiled:
        from fastsiren.fused_epilogues import FUSED_OPS

        ops = FUSED_OPS
    settings = SirenJetSettings(omegas, outermost_linear, layout, recompute, ops, compiled)
    return Jet.from_stack(SirenJetFunction.apply(x, settings, *weights, *biases), layout)
