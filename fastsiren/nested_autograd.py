r"""Backward under ``create_graph=True``: the path that lets autograd differentiate through a SIREN.

A user porting the official scripts computes derivatives with nested autograd on the model's
output (``diff_operators.gradient(model(x), x)``, then a loss on it). That calls the backward of
``SirenJetFunction`` (or ``SirenGradFunction``) with grad mode enabled and expects a result that is
itself differentiable. The fast backward cannot give one: it reads sin u, cos u and the layer jets
saved by a forward that ran without autograd, and it writes in place and through ``out=``
buffers, which autograd cannot trace. So when grad mode is on inside backward, the Functions
recompute their output here in plain, out-of-place torch ops from the saved inputs and let
autograd take the vector-Jacobian product of that recomputation with ``create_graph=True``. The
result is the same first derivative as the fast backward, and autograd can take every further
derivative through it (Laplacians of the gradient, Hessian-vector products on the weights).
This works on every backend: the Triton one falls back to these torch ops.

The recurrences are the forward ones of ``fastsiren.sine_jet`` (stated in its docstring),
written out of place. Cost: one more forward of the network with autograd recording, then
autograd's own backward; no chunking (this path holds the whole graph, as nested autograd on
the reference does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from fastsiren.jet import JetLayout


def _stacked(slabs: list[torch.Tensor]) -> torch.Tensor:
    """Slabs [B, r, N, M] joined along dim 1; a single slab (order 0) is used as it is."""
    return slabs[0] if len(slabs) == 1 else torch.cat(slabs, 1)


def jet_stack(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None],
    omegas: Sequence[float],
    layout: JetLayout,
    outermost_linear: bool,
) -> torch.Tensor:
    """The stacked jet [B, R, N, out] of a SIREN at x [B, N, d] (weights [B, M, K]), in
    differentiable torch ops."""
    n_layers = len(weights)
    w, b, omega = weights[0], biases[0], omegas[0]
    g = (omega * w).transpose(1, 2)  # [B, d, M]: du/dx_i, the same at every point
    u = x @ g
    if b is not None:
        u = u + (omega * b).unsqueeze(1)
    s, c = torch.sin(u), torch.cos(u)
    slabs = [s.unsqueeze(1)]
    if layout.order >= 1:
        slabs.append(c.unsqueeze(1) * g.unsqueeze(2))  # [B, d, N, M]
    if layout.order == 2:
        g2 = (g * g).unsqueeze(2)  # [B, d, 1, M]
        second = g2 if layout.hessian_diag else g2.sum(1, keepdim=True)
        slabs.append(-s.unsqueeze(1) * second)
    stack = _stacked(slabs)

    for l in range(1, n_layers):
        w, b, omega = weights[l], biases[l], omegas[l]
        if l == n_layers - 1 and outermost_linear:
            out = stack @ w.transpose(1, 2).unsqueeze(1)
            if b is None:
                return out
            # b shifts the value slab only: add it padded with zeros over the other slabs.
            return out + F.pad(b[:, None, None, :], (0, 0, 0, 0, 0, out.shape[1] - 1))
        G = stack @ (omega * w).transpose(1, 2).unsqueeze(1)  # [B, R, N, M]
        u = G[:, 0] if b is None else G[:, 0] + (omega * b).unsqueeze(1)
        s, c = torch.sin(u).unsqueeze(1), torch.cos(u).unsqueeze(1)
        slabs = [s]
        if layout.order >= 1:
            gj = G[:, layout.grad_slice]
            slabs.append(c * gj)
        if layout.order == 2:
            gl = G[:, layout.lap_slice]
            curvature = gj * gj if layout.hessian_diag else (gj * gj).sum(1, keepdim=True)
            slabs.append(c * gl - s * curvature)
        stack = _stacked(slabs)
    return stack


def graph_vjp(
    ctx,
    x: torch.Tensor,
    params: Sequence[torch.Tensor | None],
    recompute: Callable[[torch.Tensor, list, list], Sequence[torch.Tensor]],
    grad_outputs: Sequence[torch.Tensor],
) -> tuple:
    """A differentiable backward for ``Function.apply(x, settings, *weights, *biases)``.

    ``recompute(x, weights, biases)`` returns the Function's outputs in differentiable ops;
    autograd's vector-Jacobian product of them with ``grad_outputs`` is returned with its graph
    (``create_graph=True``), None for the settings and for inputs that need no gradient.
    """
    n_layers = len(params) // 2
    weights, biases = list(params[:n_layers]), list(params[n_layers:])
    inputs = [x, *params]
    needs = [ctx.needs_input_grad[0], *ctx.needs_input_grad[2:]]
    wanted = [i for i, (t, n) in enumerate(zip(inputs, needs)) if n and t is not None]
    with torch.enable_grad():
        outputs = recompute(x, weights, biases)
        grads = torch.autograd.grad(
            outputs, [inputs[i] for i in wanted], grad_outputs, create_graph=True,
            allow_unused=True,
        )
    result: list = [None] * len(inputs)
    for i, grad in zip(wanted, grads):
        result[i] = torch.zeros_like(inputs[i]) if grad is None else grad
    return (result[0], None, *result[1:])
