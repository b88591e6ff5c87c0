r"""Dispatch: the one place that picks the backend and the algorithm of a SIREN jet.

``resolve`` turns a backend argument into a concrete backend ("torch", "triton" or "reference";
the names are ``fastsiren.jet_ops.BACKENDS``): ``auto`` is triton for CUDA tensors when Triton
imports, else torch, and the environment variable ``FASTSIREN_BACKEND`` replaces ``auto`` for a
whole run (an explicit backend other than ``auto`` wins over it).

``run_siren_jet`` is the only code that knows which algorithm and which ops run: order 1 with
fewer outputs than coordinates takes the adjoint sweep on the torch backend
(``fastsiren.adjoint``); on the triton backend a jet no backward will follow runs as one kernel
for the whole network where it fits (``fastsiren.kernels.network``: widths <= 128, a linear last
layer; ``FASTSIREN_FUSED_NETWORK=0`` turns it off); everything else is the forward-mode jet
(``fastsiren.jet_function``) over the backend's ``JetOps``, with the traceable epilogues of
``fastsiren.fused_epilogues`` when chunks are compiled; ``reference`` calls the reference's
autograd.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import torch

from fastsiren import env, selfcheck
from fastsiren.adjoint import SirenGradFunction
from fastsiren.fused_epilogues import FUSED_OPS
from fastsiren.jet import Jet, JetLayout
from fastsiren.jet_function import SirenJetFunction, SirenJetSettings
from fastsiren.jet_ops import check_name, import_error, ops_for, unavailable, whole_network_kernel
from fastsiren.reference import autograd_jet, siren_forward

# Device types on which ``auto`` picks the Triton kernels (after their self-check,
# ``fastsiren.selfcheck``). Tests under TRITON_INTERPRET=1 add "cpu" to run that path without a
# GPU.
AUTO_TRITON_DEVICE_TYPES = ("cuda",)


def resolve(name: str | None, device: torch.device) -> str:
    """The concrete backend ("torch", "triton" or "reference") for tensors on ``device``."""
    name = check_name(name or "auto", "backend argument")
    if name == "auto":
        name = check_name(env.backend_override() or "auto", f"${env.BACKEND}")
    if name == "triton":
        reason = unavailable("triton", device)
        if reason is not None:
            raise RuntimeError(
                f"backend 'triton' is not available: {reason}. Install triton "
                "(pip install 'fastsiren[triton]') or use backend='torch'."
            )
    if name != "auto":
        return name
    if device.type in AUTO_TRITON_DEVICE_TYPES:
        exc = import_error("triton")
        if exc is not None:
            _warn_fallback(exc)
            return "torch"
        return "triton"
    return "torch"


def chosen_by_auto(name: str | None) -> bool:
    """Whether backend argument ``name`` leaves the choice to ``auto`` (no backend named by the
    argument or by ``FASTSIREN_BACKEND``): only then is a choice of Triton self-checked."""
    return (name or "auto") == "auto" and (env.backend_override() or "auto") == "auto"


@functools.cache
def _warn_fallback(exc: Exception) -> None:
    warnings.warn(
        f"fastsiren: Triton is unavailable ({exc}); using the torch backend", stacklevel=3
    )


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
    self_check: bool = False,
) -> Jet:
    """The jet of a SIREN on concrete backend ``name`` from canonical arguments: x [B, N, d],
    weights [B, M, K] and biases [B, M] (or None), validated and contiguous. Returns the ``Jet``
    with leading dims [B, N]. ``self_check`` (``auto`` chose ``name``): Triton runs only after
    the kernel families this call uses pass their one-time self-check, else the torch backend
    runs and a warning says so once (``fastsiren.selfcheck``)."""
    if name == "reference":

        def network(coords):
            return siren_forward(coords, weights, biases, omegas, outermost_linear)

        ref = autograd_jet(network, x, layout.order, layout.hessian_diag)
        return Jet(ref.value, ref.grad, ref.lap, ref.hess_diag)

    if not torch.is_grad_enabled():
        # Inference (torch.no_grad): a Function sees its inputs' requires_grad, not the grad
        # mode it was applied under, so with trainable weights it would keep every layer's
        # intermediates and cosines for a backward that cannot come. Detached, it keeps none.
        x = x.detach()
        weights = [w.detach() for w in weights]
        biases = [b if b is None else b.detach() for b in biases]

    for_backward = _needs_backward(x, weights, biases)
    network = None if for_backward else whole_network_kernel(name)
    fused = (network is not None and env.fused_network()
             and network.unsupported(x, weights, omegas, layout, outermost_linear) is None)
    if self_check and name == "triton":
        failed = selfcheck.failure(x, weights, omegas, layout, outermost_linear, for_backward,
                                   fused)
        if failed is not None:
            selfcheck.warn_once(failed, x.device)
            name, fused = "torch", False
    if fused:
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
        ops = FUSED_OPS
    settings = SirenJetSettings(omegas, outermost_linear, layout, recompute, ops, compiled)
    return Jet.from_stack(SirenJetFunction.apply(x, settings, *weights, *biases), layout)
