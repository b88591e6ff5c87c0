"""``BatchedSiren``: B independent SIRENs trained together through the batched-weights path.

Each parameter carries a leading batch dimension (W [B, out, in], b [B, out]), and ``jet`` is
one ``fs.siren_jet`` call for all B networks: one fused call per step for a whole batch of
signals, never a Python loop over them. Network i is exactly the ``fs.Siren`` that
``siren(i)`` returns, with the same initialisation distribution.
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional import siren_jet
from ..jet import Jet
from ..modules import Siren
from ..reference.siren import sine_init_bound

__all__ = ["BatchedSiren"]


class BatchedSiren(nn.Module):
    """``n_networks`` SIRENs of one architecture (arguments as ``fs.Siren``), stacked."""

    def __init__(
        self,
        n_networks: int,
        in_features: int,
        hidden_features: int,
        hidden_layers: int,
        out_features: int,
        outermost_linear: bool = True,
        first_omega_0: float = 30.0,
        hidden_omega_0: float = 30.0,
        backend: str = "auto",
    ):
        super().__init__()
        self.n_networks = n_networks
        self.kwargs = {
            "in_features": in_features, "hidden_features": hidden_features,
            "hidden_layers": hidden_layers, "out_features": out_features,
            "outermost_linear": outermost_linear, "first_omega_0": float(first_omega_0),
            "hidden_omega_0": float(hidden_omega_0),
        }
        self.outermost_linear = outermost_linear
        self.backend = backend
        self.compile_chunks: bool | None = None  # as fs.Siren's (not a constructor argument)
        sizes = [in_features] + [hidden_features] * (hidden_layers + 1) + [out_features]
        self.omegas = [float(first_omega_0)] + [float(hidden_omega_0)] * hidden_layers
        self.omegas.append(1.0 if outermost_linear else float(hidden_omega_0))
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            # fs.Siren's initialisation, network by network (see fastsiren.reference.siren).
            omega = self.omegas[l] if self.omegas[l] != 1.0 else float(hidden_omega_0)
            w_bound = sine_init_bound(fan_in, omega, is_first=l == 0)
            b_bound = 1.0 / fan_in**0.5  # nn.Linear's default bias
            self.weights.append(nn.Parameter(
                torch.empty(n_networks, fan_out, fan_in).uniform_(-w_bound, w_bound)))
            self.biases.append(nn.Parameter(
                torch.empty(n_networks, fan_out).uniform_(-b_bound, b_bound)))

    @classmethod
    def from_sirens(cls, sirens: list[Siren]) -> BatchedSiren:
        """Stack trained or fresh ``fs.Siren``s of one architecture."""
        first = sirens[0]
        weights, _, omegas = first.layer_parameters()
        model = cls(len(sirens), first.in_features, weights[0].shape[0], len(weights) - 2,
                    first.out_features, first.outermost_linear, omegas[0],
                    omegas[1] if len(omegas) > 2 else 30.0, first.backend)
        with torch.no_grad():
            for l in range(len(weights)):
                model.weights[l].copy_(torch.stack([s.layer_parameters()[0][l] for s in sirens]))
                model.biases[l].copy_(torch.stack([s.layer_parameters()[1][l] for s in sirens]))
        return model

    def siren(self, index: int) -> Siren:
        """Network ``index`` as an ``fs.Siren`` (a copy)."""
        if not -self.n_networks <= index < self.n_networks:
            raise IndexError(f"network index {index} out of range for {self.n_networks}")
        model = Siren(**self.kwargs, backend=self.backend)
        weights, biases, _ = model.layer_parameters()
        with torch.no_grad():
            for l in range(len(weights)):
                weights[l].copy_(self.weights[l][index])
                biases[l].copy_(self.biases[l][index])
        return model.to(self.weights[0].device)

    def to(self, *args, backend: str | None = None, **kwargs):
        if backend is not None:
            self.backend = backend
        return super().to(*args, **kwargs) if args or kwargs else self

    def jet(self, x: torch.Tensor, order: int = 2, hessian_diag: bool = False) -> Jet:
        """Jets of all networks: x [B, N, d] (or [N, d] shared) -> value [B, N, out], ..."""
        return siren_jet(x, list(self.weights), list(self.biases), self.omegas, order,
                         self.outermost_linear, self.backend, hessian_diag=hessian_diag,
                         compile_chunks=self.compile_chunks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.jet(x, order=0).value

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip each network's gradient norm separately (a joint norm would couple networks
        that are meant to train independently); returns the B norms before clipping."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norms = torch.stack([g.reshape(self.n_networks, -1).square().sum(1) for g in grads])
        norms = norms.sum(0).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
        return norms

    def extra_repr(self) -> str:
        return f"n_networks={self.n_networks}, {self.kwargs}, backend={self.backend!r}"
