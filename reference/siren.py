"""Plain SIREN, as the official implementation builds it.

A sine layer computes ``sin(omega_0 * (W x + b))``: omega_0 multiplies the bias too. Weights
start as in the paper's supplement (section 1.5):

- first layer: ``W ~ U(-1/n, 1/n)`` with n its fan-in, so that ``omega_0 * W x`` spans several
  periods over coordinates in [-1, 1];
- every later layer, the final linear one included:
  ``W ~ U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0)``, which keeps pre-activations
  arcsine-distributed through depth;
- biases keep ``nn.Linear``'s default ``U(-1/sqrt(n), 1/sqrt(n))``.

The module tree (``net.{i}.linear`` for sine layers, ``net.{L}`` for a final linear layer) is the
one of the official ``Siren`` module, so state dicts load both ways with ``fastsiren.Siren``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def sine_init_bound(fan_in: int, omega_0: float, is_first: bool) -> float:
    """Half-width of the uniform weight initialisation of a layer with ``fan_in`` inputs."""
    return 1.0 / fan_in if is_first else math.sqrt(6.0 / fan_in) / omega_0


class SineLayer(nn.Module):
    """``sin(omega_0 * linear(x))`` with SIREN initialisation."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        is_first: bool = False,
        omega_0: float = 30.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.is_first = is_first
        self.omega_0 = float(omega_0)
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.init_weights()

    def init_weights(self) -> None:
        bound = sine_init_bound(self.in_features, self.omega_0, self.is_first)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


class Siren(nn.Module):
    """The official SIREN MLP: one first sine layer, ``hidden_layers`` sine layers, and a final
    layer that is linear (``outermost_linear=True``) or sine."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        hidden_layers: int,
        out_features: int,
        outermost_linear: bool = False,
        first_omega_0: float = 30.0,
        hidden_omega_0: float = 30.0,
    ):
        super().__init__()
        self.outermost_linear = outermost_linear
        layers: list[nn.Module] = [
            SineLayer(in_features, hidden_features, is_first=True, omega_0=first_omega_0)
        ]
        for _ in range(hidden_layers):
            layers.append(SineLayer(hidden_features, hidden_features, omega_0=hidden_omega_0))
        if outermost_linear:
            final = nn.Linear(hidden_features, out_features)
            bound = sine_init_bound(hidden_features, hidden_omega_0, is_first=False)
            with torch.no_grad():
                final.weight.uniform_(-bound, bound)
            layers.append(final)
        else:
            layers.append(SineLayer(hidden_features, out_features, omega_0=hidden_omega_0))
        self.net = nn.Sequential(*layers)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.net(coords)

    def layer_parameters(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[float]]:
        """(weights, biases, omegas), one entry per layer, as ``siren_forward`` takes them (the
        same as ``fastsiren.Siren.layer_parameters``)."""
        weights, biases, omegas = [], [], []
        for layer in self.net:
            linear = layer.linear if isinstance(layer, SineLayer) else layer
            weights.append(linear.weight)
            biases.append(linear.bias)
            omegas.append(layer.omega_0 if isinstance(layer, SineLayer) else 1.0)
        return weights, biases, omegas

    parameters_by_layer = layer_parameters  # the former name, kept for one merge


def siren_forward(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    omegas: Sequence[float],
    outermost_linear: bool = True,
) -> torch.Tensor:
    """Functional SIREN with optionally batched weights.

    Unbatched: W [M, K], b [M], x [..., N, K]. Batched (B independent networks):
    W [B, M, K], b [B, M], x [B, N, K]. Returns [..., N, out].
    """
    h = x
    last = len(weights) - 1
    for i, (w, b, omega) in enumerate(zip(weights, biases, omegas)):
        h = h @ w.transpose(-1, -2)
        if b is not None:
            h = h + (b.unsqueeze(-2) if b.dim() == 2 else b)
        if not (i == last and outermost_linear):
            h = torch.sin(omega * h)
    return h
