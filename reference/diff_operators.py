"""Differential operators by nested autograd, the way the official SIREN code computes them.

Every call keeps ``create_graph=True`` so that losses on derivatives can be trained, which is
exactly what makes this path slow and memory-hungry: each derivative builds a graph of its own.
Points are independent (output row n depends only on input row n), so a vector-Jacobian product
with all-ones cotangents returns each row's own gradient.
"""

from __future__ import annotations

import torch


def gradient(y: torch.Tensor, x: torch.Tensor, grad_outputs: torch.Tensor | None = None):
    """dy/dx for a scalar field y [..., N, 1] (or the sum over channels): [..., N, d]."""
    if grad_outputs is None:
        grad_outputs = torch.ones_like(y)
    return torch.autograd.grad(y, [x], grad_outputs=grad_outputs, create_graph=True)[0]


def divergence(field: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i d field_i / d x_i for a vector field [..., N, d]: [..., N, 1]."""
    div = torch.zeros_like(field[..., :1])
    for i in range(field.shape[-1]):
        component = field[..., i]
        di = torch.autograd.grad(component, x, torch.ones_like(component), create_graph=True)[0]
        div = div + di[..., i : i + 1]
    return div


def laplace(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Laplacian of a scalar field y [..., N, 1]: divergence of its gradient, [..., N, 1]."""
    return divergence(gradient(y, x), x)


def jacobian(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dy_o/dx_i for y [..., N, out]: [..., N, out, d]."""
    rows = []
    for o in range(y.shape[-1]):
        yo = y[..., o]
        rows.append(torch.autograd.grad(yo, x, torch.ones_like(yo), create_graph=True)[0])
    return torch.stack(rows, dim=-2)


def hessian(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d2 y_o / dx_i dx_j for y [..., N, out]: [..., N, out, d, d]."""
    jac = jacobian(y, x)
    d = x.shape[-1]
    out = []
    for o in range(y.shape[-1]):
        rows = []
        for i in range(d):
            gi = jac[..., o, i]
            rows.append(torch.autograd.grad(gi, x, torch.ones_like(gi), create_graph=True)[0])
        out.append(torch.stack(rows, dim=-2))
    return torch.stack(out, dim=-3)
