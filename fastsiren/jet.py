"""The jet: a SIREN's value together with its derivatives with respect to the input coordinates.

Inside the engine a jet is one stacked tensor ``[B, R, N, C]``: R "slabs" of activations, each
[N, C], laid out so that a linear layer maps all of them with a single matmul
(``[B, R*N, K] @ [B, K, M]``)::

    slab 0            value z
    slabs 1 .. d      dz/dx_i                         (order >= 1)
    slab d+1          Laplacian sum_i d2z/dx_i2       (order 2)
    slabs d+1 .. 2d   d2z/dx_i2, one slab per axis    (order 2, hessian_diag=True)

``JetLayout`` names these slices; ``Jet`` is the user-facing view with the shapes of section 4 of
the design: value [..., N, out], grad [..., N, out, d], lap [..., N, out],
hess_diag [..., N, out, d].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class JetLayout:
    """Which slabs a stacked jet holds: ``order`` 0, 1 or 2 over ``d`` input coordinates."""

    order: int
    d: int
    hessian_diag: bool = False

    def __post_init__(self):
        if isinstance(self.order, bool) or self.order not in (0, 1, 2):
            raise ValueError(f"jet order must be 0, 1 or 2, got {self.order!r}")
        if self.hessian_diag and self.order != 2:
            raise ValueError("hessian_diag=True needs order=2")

    @property
    def n_grad(self) -> int:
        return self.d if self.order >= 1 else 0

    @property
    def n_lap(self) -> int:
        if self.order < 2:
            return 0
        return self.d if self.hessian_diag else 1

    @property
    def rows(self) -> int:
        """R, the number of slabs."""
        return 1 + self.n_grad + self.n_lap

    @property
    def grad_slice(self) -> slice:
        return slice(1, 1 + self.n_grad)

    @property
    def lap_slice(self) -> slice:
        return slice(1 + self.n_grad, self.rows)


@dataclass
class Jet:
    """Value and input-derivatives of a network at a set of points.

    value: [..., N, out]; grad: [..., N, out, d] (order >= 1); lap: [..., N, out] (order 2);
    hess_diag: [..., N, out, d] (order 2 with ``hessian_diag=True``; then ``lap`` is its sum).
    Fields an order does not compute are None. All fields are differentiable.
    """

    value: torch.Tensor
    grad: torch.Tensor | None = None
    lap: torch.Tensor | None = None
    hess_diag: torch.Tensor | None = None

    def fields(self) -> dict[str, torch.Tensor]:
        """The computed fields by name, in the order value, grad, lap, hess_diag."""
        names = ("value", "grad", "lap", "hess_diag")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def with_lead_shape(self, lead_shape: tuple[int, ...]) -> Jet:
        """The same jet with its two leading dims [B, N] reshaped to ``lead_shape``."""

        def reshape(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(*lead_shape, *t.shape[2:])

        return Jet(*(reshape(t) for t in (self.value, self.grad, self.lap, self.hess_diag)))

    @staticmethod
    def from_stack(
        stack: torch.Tensor, layout: JetLayout, lead_shape: tuple[int, ...] | None = None
    ) -> Jet:
        """Split a stacked jet [B, R, N, out] into user-facing views with leading dims [B, N], or
        ``lead_shape`` (the shape of the coordinates without their last dim)."""
        B, _, N, out = stack.shape
        lead_shape = (B, N) if lead_shape is None else lead_shape

        def per_point(t: torch.Tensor) -> torch.Tensor:  # [B, N, out] -> [*lead, out]
            return t.reshape(*lead_shape, out)

        def per_axis(t: torch.Tensor) -> torch.Tensor:  # [B, d, N, out] -> [*lead, out, d]
            return t.permute(0, 2, 3, 1).reshape(*lead_shape, out, t.shape[1])

        value = per_point(stack[:, 0])
        grad = per_axis(stack[:, layout.grad_slice]) if layout.order >= 1 else None
        lap = hess_diag = None
        if layout.order == 2:
            second = stack[:, layout.lap_slice]
            if layout.hessian_diag:
                hess_diag = per_axis(second)
                lap = hess_diag.sum(-1)
            else:
                lap = per_point(second[:, 0])
        return Jet(value, grad, lap, hess_diag)
