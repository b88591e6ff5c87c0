"""The residuals of the Helmholtz and wave tasks computed as the official code does, by nested
autograd on the network output: the twins ``fastsiren.physics`` is tested against (its docstring
states the equations). Slow on purpose.
"""

from __future__ import annotations

import torch

from . import diff_operators

__all__ = ["helmholtz_residual_autograd", "wave_residual_autograd"]


def helmholtz_residual_autograd(
    y: torch.Tensor, x: torch.Tensor, wavenumber: float, slowness2: torch.Tensor, pml
) -> torch.Tensor:
    """The residual of ``fastsiren.physics.helmholtz_residual``, computed as the official
    ``helmholtz_pml`` does: y [N, 2] = f(x) with x [N, 2] requiring grad, the divergence form
    ∂x(A ∂x u) differentiated by autograd through the coefficients (the official clamp-based
    distances into the layer), every derivative with ``create_graph=True``. ``pml`` is read for
    its ``inner``, ``width`` and ``strength`` (a ``fastsiren.physics.Pml``). The truth for tests
    and the baseline of the benchmark.
    """

    def stretch(c):  # e = 1 − i s/k, s = k a0 ((d_lo/L)² + (d_hi/L)²)
        d_lo, d_hi = -torch.clamp(c + pml.inner, max=0), torch.clamp(c - pml.inner, min=0)
        s = pml.strength * ((d_lo / pml.width) ** 2 + (d_hi / pml.width) ** 2)
        return torch.complex(torch.ones_like(s), -s)

    du = diff_operators.jacobian(y, x)  # [N, 2 outputs, 2 coordinates]
    ex, ey = stretch(x[:, 0]), stretch(x[:, 1])
    flux_x = ey / ex * torch.complex(du[:, 0, 0], du[:, 1, 0])
    flux_y = ex / ey * torch.complex(du[:, 0, 1], du[:, 1, 1])

    def d_dx(z, axis):  # ∂/∂x_axis of a complex per-point field
        parts = [diff_operators.gradient(p[:, None], x)[:, axis] for p in (z.real, z.imag)]
        return torch.complex(*parts)

    u = torch.complex(y[:, 0], y[:, 1])
    return d_dx(flux_x, 0) + d_dx(flux_y, 1) + ex * ey * slowness2 * wavenumber**2 * u


def wave_residual_autograd(
    y: torch.Tensor, x: torch.Tensor, speed2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual, u_t) of ``fastsiren.physics.wave_residual`` computed as the official
    ``wave_pml`` does: y [N, 1] = f(x) with x [N, 3] = (t, x, y) requiring grad; the Jacobian of
    the gradient by autograd."""
    du = diff_operators.jacobian(y, x)  # [N, 1, 3]
    hess = diff_operators.jacobian(du[:, 0, :], x)  # [N, 3, 3]
    return hess[:, 0, 0] - speed2 * (hess[:, 1, 1] + hess[:, 2, 2]), du[:, 0, 0]
