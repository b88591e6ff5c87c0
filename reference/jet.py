"""Jets the slow ways: nested autograd (the truth) and naive jet recurrences (a benchmark peer).

``autograd_jet`` differentiates any function of the coordinates with the operators of
``diff_operators`` (``create_graph=True``), the official SIREN way.

``naive_jet`` runs the jet recurrences of the design (value, Jacobian and Laplacian carried
through each layer) in plain torch ops and lets autograd derive the backward. It is what a
careful PyTorch user would write without a hand VJP; ``torch.compile`` of it is the strongest
peer the benchmark knows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import diff_operators


@dataclass
class Jet:
    """Value and input-derivatives at a set of points, as the reference computes them.

    value [..., N, out]; grad [..., N, out, d]; lap [..., N, out]; hess_diag [..., N, out, d].
    The same fields as ``fastsiren.Jet``, defined here so that the truth imports nothing from the
    engine it checks. Fields an order does not compute are None.
    """

    value: torch.Tensor
    grad: torch.Tensor | None = None
    lap: torch.Tensor | None = None
    hess_diag: torch.Tensor | None = None

    def fields(self) -> dict[str, torch.Tensor]:
        """The computed fields by name, in the order value, grad, lap, hess_diag."""
        names = ("value", "grad", "lap", "hess_diag")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def autograd_jet(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    order: int = 2,
    hessian_diag: bool = False,
) -> Jet:
    """Value, gradient and Laplacian (or Hessian diagonal) of ``fn`` at x [..., N, d] by autograd.

    If x does not require grad, a leaf copy that does is differentiated (the official code's
    ``coords.clone().detach().requires_grad_(True)``); gradients then do not reach x.
    """
    if isinstance(order, bool) or order not in (0, 1, 2):
        raise ValueError(f"jet order must be 0, 1 or 2, got {order!r}")
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)
        if order == 0:
            return Jet(y)
        grad = diff_operators.jacobian(y, x)  # [..., N, out, d]
        if order == 1:
            return Jet(y, grad)
        d = x.shape[-1]
        diag = []
        for o in range(y.shape[-1]):
            per_axis = []
            for i in range(d):
                gi = grad[..., o, i]
                dgi = torch.autograd.grad(gi, x, torch.ones_like(gi), create_graph=True)[0]
                per_axis.append(dgi[..., i])
            diag.append(torch.stack(per_axis, dim=-1))
        hess_diag = torch.stack(diag, dim=-2)  # [..., N, out, d]
    lap = hess_diag.sum(-1)
    return Jet(y, grad, lap, hess_diag if hessian_diag else None)


def naive_jet(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    omegas: Sequence[float],
    outermost_linear: bool = True,
    order: int = 2,
) -> Jet:
    """Forward-mode jet recurrences in plain torch ops (unbatched weights, x [N, d]).

    Per sine layer, with h = z W^T + b, u = omega h:
    z' = sin u,  J'_i = omega cos(u) J_i W^T,
    L' = omega cos(u) L W^T - omega^2 sin(u) sum_i (J_i W^T)^2.
    """
    n, d = x.shape
    z = x
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    jac = eye[:, None, :].expand(d, n, d) if order >= 1 else None  # J_i = e_i for every point
    lap = torch.zeros_like(x) if order == 2 else None
    last = len(weights) - 1
    for i, (w, b, omega) in enumerate(zip(weights, biases, omegas)):
        h = z @ w.t() + b
        jh = jac @ w.t() if order >= 1 else None
        lh = lap @ w.t() if order == 2 else None
        if i == last and outermost_linear:
            z, jac, lap = h, jh, lh
            continue
        u = omega * h
        s, c = torch.sin(u), torch.cos(u)
        z = s
        if order >= 1:
            jac = omega * c * jh
        if order == 2:
            lap = omega * c * lh - omega**2 * s * (jh * jh).sum(0)
    grad = jac.permute(1, 2, 0) if order >= 1 else None
    return Jet(z, grad, lap)
