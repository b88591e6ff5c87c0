"""Functional SIREN: the network as a function of coordinates and explicit parameters.

``siren_jet`` is the one entry point every module and task goes through: it validates, brings the
arguments to the canonical batched layout (x [B, N, d], W [B, M, K]), hands them to
``fastsiren.dispatch.run_siren_jet`` (which picks the backend and the algorithm) and returns a
``Jet`` shaped like the coordinates. Weights may carry a leading batch dimension: B independent
SIRENs, as hypernetworks and many-signal fitting use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastsiren.dispatch import chosen_by_auto, resolve, run_siren_jet
from fastsiren.jet import Jet, JetLayout

__all__ = ["siren", "siren_jet"]


def _validate(x, weights, biases, omegas, outermost_linear) -> bool:
    """Check shapes, dtypes and devices; return whether the weights are batched."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"coordinates must be a torch.Tensor, got {type(x).__name__}")
    n_layers = len(weights)
    if n_layers == 0:
        raise ValueError("a SIREN needs at least one layer, got an empty weight list")
    if len(biases) != n_layers or len(omegas) != n_layers:
        raise ValueError(
            f"expected one bias and one omega per layer ({n_layers} layers), "
            f"got {len(biases)} biases and {len(omegas)} omegas"
        )
    if outermost_linear and n_layers < 2:
        raise ValueError("outermost_linear=True needs at least 2 layers (a first sine layer)")
    if not x.dtype.is_floating_point:
        raise TypeError(f"coordinates must be floating point, got dtype {x.dtype}")
    for kind, tensors in (("weight", weights), ("bias", biases)):
        for l, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor) and not (kind == "bias" and t is None):
                raise TypeError(
                    f"{kind} {l} must be a torch.Tensor{' or None' if kind == 'bias' else ''}, "
                    f"got {type(t).__name__}; convert it with torch.as_tensor"
                )
    batched = weights[0].dim() == 3
    w_dims = 3 if batched else 2
    for l, (w, b) in enumerate(zip(weights, biases)):
        if w.dim() != w_dims:
            raise ValueError(
                f"weight {l} has shape {tuple(w.shape)}; expected {w_dims} dims "
                f"({'[B, out, in]' if batched else '[out, in]'}) like weight 0"
            )
        if w.dtype != x.dtype or (b is not None and b.dtype != x.dtype):
            raise TypeError(
                f"layer {l}: weight/bias dtype {w.dtype}/{None if b is None else b.dtype} "
                f"differs from the coordinates' dtype {x.dtype}; cast them to one dtype"
            )
        if w.device != x.device or (b is not None and b.device != x.device):
            raise RuntimeError(
                f"layer {l}: parameters are on {w.device}, coordinates on {x.device}; "
                "move them to one device"
            )
        if l > 0 and w.shape[-1] != weights[l - 1].shape[-2]:
            raise ValueError(
                f"weight {l} expects {w.shape[-1]} input features but layer {l - 1} "
                f"produces {weights[l - 1].shape[-2]}"
            )
        if b is not None and tuple(b.shape) != tuple(w.shape[:-1]):
            raise ValueError(
                f"bias {l} has shape {tuple(b.shape)}; expected {tuple(w.shape[:-1])}"
            )
        if batched and w.shape[0] != weights[0].shape[0]:
            raise ValueError(
                f"weight {l} has batch {w.shape[0]}, weight 0 has {weights[0].shape[0]}"
            )
    d = weights[0].shape[-1]
    if x.dim() < 2 or x.shape[-1] != d:
        raise ValueError(
            f"coordinates have shape {tuple(x.shape)}; expected [..., N, {d}] "
            f"(the first layer takes {d} input features)"
        )
    if batched and x.dim() not in (2, 3):
        raise ValueError(
            f"with batched weights coordinates must be [B, N, {d}] or [N, {d}] (shared by all "
            f"networks), got shape {tuple(x.shape)}"
        )
    if batched and x.dim() == 3 and x.shape[0] != weights[0].shape[0]:
        raise ValueError(
            f"coordinates have batch {x.shape[0]} but the weights hold "
            f"{weights[0].shape[0]} networks"
        )
    return batched


def siren_jet(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None],
    omegas: Sequence[float],
    order: int = 2,
    outermost_linear: bool = True,
    backend: str = "auto",
    hessian_diag: bool = False,
    recompute: bool = False,
    compile_chunks: bool | None = None,
) -> Jet:
    """Value and input-derivatives of a SIREN in one pass.

    Args:
        x: coordinates [..., N, d] (unbatched weights) or [B, N, d] / [N, d] (batched weights).
        weights: per layer [out, in] or [B, out, in] (nn.Linear layout).
        biases: per layer [out] or [B, out], or None.
        omegas: per layer omega_0 (the final linear layer's is ignored).
        order: 0 value, 1 value and gradient, 2 also the Laplacian.
        hessian_diag: at order 2, also return the per-axis second derivatives d2y/dx_i2.
        recompute: keep only layer inputs for backward and redo matmuls there (less memory).
        backend: "auto", "torch", "triton" or "reference" (see ``fastsiren.jet_ops``).
        compile_chunks: torch backend: run each chunk of points through one ``torch.compile``
            graph (``fastsiren.jet_function``): seconds to a minute once per shape, faster calls
            after, so for fits of many steps. None takes the run-wide default
            (``$FASTSIREN_COMPILE``, off when unset).

    Returns:
        ``Jet`` with value [..., N, out], grad [..., N, out, d], lap [..., N, out].
    """
    weights, biases, omegas = list(weights), list(biases), tuple(float(o) for o in omegas)
    batched = _validate(x, weights, biases, omegas, outermost_linear)
    layout = JetLayout(order, x.shape[-1], hessian_diag)
    name = resolve(backend, x.device)

    d = x.shape[-1]
    if batched:
        n_nets = weights[0].shape[0]
        lead_shape = (n_nets, x.shape[-2])
        xb = x.expand(n_nets, *x.shape[-2:]) if x.dim() == 2 else x
    else:
        lead_shape = tuple(x.shape[:-1])
        xb = x.reshape(1, -1, d)
        weights = [w.unsqueeze(0) for w in weights]
        biases = [None if b is None else b.unsqueeze(0) for b in biases]
    xb = xb.contiguous()
    weights = [w.contiguous() for w in weights]
    biases = [None if b is None else b.contiguous() for b in biases]
    jet = run_siren_jet(xb, weights, biases, omegas, layout, outermost_linear, recompute, name,
                        compile_chunks, self_check=chosen_by_auto(backend))
    return jet.with_lead_shape(lead_shape)


def siren(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None],
    omegas: Sequence[float],
    outermost_linear: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """The SIREN's value alone: ``siren_jet(..., order=0).value``."""
    return siren_jet(x, weights, biases, omegas, 0, outermost_linear, backend).value
