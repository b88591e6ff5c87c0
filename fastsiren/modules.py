"""Drop-in SIREN modules on the analytic-jet engine.

``SineLayer`` and ``Siren`` have the module tree, parameter names and initialisation of the
official SIREN code (and of ``fastsiren.reference``), so state dicts load both ways;
``BatchedSiren`` holds B independent SIRENs of one architecture with batched parameters. Their
forward and ``jet`` run through ``fastsiren.functional.siren_jet`` on the selected backend. The
layer math is stated in ``fastsiren.sine_jet``, the initialisation in ``fastsiren.reference.siren``.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fastsiren.functional import siren_jet
from fastsiren.jet import Jet, JetLayout
from fastsiren.jet_ops import check_name
from fastsiren.reference.siren import sine_init_bound
from fastsiren.sine_jet import points_per_chunk

__all__ = ["BatchedSiren", "LearnedStart", "SineLayer", "Siren", "batched_siren_jet",
           "convert_official_state_dict", "network_group"]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a SIREN: its sizes, its omega_0 (1.0 for a final linear layer) and the
    half-width of its uniform weight initialisation."""

    fan_in: int
    fan_out: int
    omega: float
    is_first: bool
    sine: bool
    weight_bound: float


def siren_layers(
    in_features: int,
    hidden_features: int,
    hidden_layers: int,
    out_features: int,
    outermost_linear: bool,
    first_omega_0: float,
    hidden_omega_0: float,
) -> list[LayerSpec]:
    """The layers of a SIREN, first to last, after checking the sizes: a first sine layer,
    ``hidden_layers`` sine layers, and a final layer that is linear or sine. Every layer after
    the first, the final linear one included, is initialised with ``hidden_omega_0``."""
    _check_sizes(in_features=in_features, hidden_features=hidden_features,
                 out_features=out_features)
    if not _is_int(hidden_layers) or hidden_layers < 0:
        raise ValueError(f"hidden_layers must be a whole number >= 0, got {hidden_layers!r}")
    sizes = [in_features] + [hidden_features] * (hidden_layers + 1) + [out_features]
    specs = []
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        first, last = l == 0, l == len(sizes) - 2
        init_omega = float(first_omega_0 if first else hidden_omega_0)
        sine = not (last and outermost_linear)
        specs.append(LayerSpec(fan_in, fan_out, init_omega if sine else 1.0, first, sine,
                               sine_init_bound(fan_in, init_omega, first)))
    return specs


class _BackendMixin:
    """A ``backend`` attribute, settable through ``module.to(backend=...)`` (checked by name)."""

    backend: str = "auto"

    def to(self, *args, backend: str | None = None, **kwargs):
        if backend is not None:
            check_name(backend, "backend argument")
            for module in self.modules():
                if isinstance(module, _BackendMixin):
                    module.backend = backend
        if args or kwargs:
            return super().to(*args, **kwargs)
        return self


class SineLayer(_BackendMixin, nn.Module):
    """``sin(omega_0 * (W x + b))`` with SIREN initialisation and a hand-derived backward.

    Args:
        in_features, out_features, bias: as ``nn.Linear`` (kept as ``self.linear``).
        is_first: first layer of a SIREN or a later one, which sets the weights' initial range
            (``fastsiren.reference.siren``).
        omega_0: frequency factor; it multiplies the bias too.
        backend: "auto", "torch", "triton" or "reference".
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        is_first: bool = False,
        omega_0: float = 30.0,
        backend: str = "auto",
    ):
        super().__init__()
        _check_sizes(in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self.is_first = is_first
        self.omega_0 = float(omega_0)
        self.backend = check_name(backend, "backend argument")
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = sine_init_bound(self.in_features, self.omega_0, self.is_first)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    init_weights = reset_parameters  # the official name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.linear.weight, self.linear.bias
        jet = siren_jet(x, [weight], [bias], [self.omega_0], 0, False, self.backend)
        return jet.value

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"omega_0={self.omega_0}, is_first={self.is_first}"
        )


class Siren(_BackendMixin, nn.Module):
    """The SIREN MLP: a first sine layer, ``hidden_layers`` sine layers, and a final layer that is
    linear (``outermost_linear=True``) or sine.

    ``forward(x)`` returns the value [..., N, out]; ``jet(x, order)`` also the gradient and the
    Laplacian (or the Hessian diagonal), computed analytically in the same pass. ``recompute``
    and ``compile_chunks`` are ``fastsiren.siren_jet``'s options of the same names.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        hidden_layers: int,
        out_features: int,
        outermost_linear: bool = False,
        first_omega_0: float = 30.0,
        hidden_omega_0: float = 30.0,
        backend: str = "auto",
        recompute: bool = False,
        compile_chunks: bool | None = None,
    ):
        super().__init__()
        specs = siren_layers(in_features, hidden_features, hidden_layers, out_features,
                             outermost_linear, first_omega_0, hidden_omega_0)
        self.in_features, self.out_features = in_features, out_features
        self.outermost_linear = outermost_linear
        self.recompute = recompute
        self.compile_chunks = compile_chunks
        layers: list[nn.Module] = []
        for spec in specs:
            if spec.sine:
                layers.append(SineLayer(spec.fan_in, spec.fan_out, is_first=spec.is_first,
                                        omega_0=spec.omega))
            else:
                final = nn.Linear(spec.fan_in, spec.fan_out)
                with torch.no_grad():
                    final.weight.uniform_(-spec.weight_bound, spec.weight_bound)
                layers.append(final)
        self.net = nn.Sequential(*layers)
        self.to(backend=backend)

    def layer_parameters(self) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[float]]:
        """(weights, biases, omegas), one entry per layer, as ``siren_jet`` takes them."""
        weights, biases, omegas = [], [], []
        for layer in self.net:
            linear = layer.linear if isinstance(layer, SineLayer) else layer
            weights.append(linear.weight)
            biases.append(linear.bias)
            omegas.append(layer.omega_0 if isinstance(layer, SineLayer) else 1.0)
        return weights, biases, omegas

    def jet(self, x: torch.Tensor, order: int = 2, hessian_diag: bool = False) -> Jet:
        """Value, gradient [..., N, out, d] and Laplacian [..., N, out] at x [..., N, d]."""
        weights, biases, omegas = self.layer_parameters()
        return siren_jet(
            x, weights, biases, omegas, order, self.outermost_linear, self.backend,
            hessian_diag=hessian_diag, recompute=self.recompute,
            compile_chunks=self.compile_chunks,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.jet(x, order=0).value

    def extra_repr(self) -> str:
        return (f"backend={self.backend!r}, recompute={self.recompute}, "
                f"compile_chunks={self.compile_chunks}")


def network_group(x: torch.Tensor, n_networks: int, width: int, order: int = 0,
                  hessian_diag: bool = False) -> int:
    """Networks per ``siren_jet`` call in ``batched_siren_jet``: on the CPU as many whole
    networks as fit the torch backend's chunk budget (``sine_jet.points_per_chunk``), at least
    one (whose points that call then chunks as a single fit's); elsewhere all of them."""
    if x.device.type != "cpu":
        return n_networks
    n_points = max(x.shape[-2], 1)
    rows = JetLayout(order, x.shape[-1], hessian_diag).rows
    return max(1, points_per_chunk(n_points * n_networks, rows, width, x) // n_points)


def batched_siren_jet(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                      omegas: list[float], order: int = 2, outermost_linear: bool = True,
                      backend: str = "auto", hessian_diag: bool = False,
                      compile_chunks: bool | None = None) -> Jet:
    """``siren_jet`` of B networks (weights [B, out, in], x [B, N, d] or [N, d] shared), called
    on groups of ``network_group`` networks and joined: the same jet and gradients as one call.

    One call for all B would size its chunks of points for one network, so its stacked
    activations grow with B (64 networks of 64x64 pixels at width 64: 64 MiB per layer), fall
    out of cache and make a batch slower per network than fitting the networks one after
    another. Groups of whole networks keep each call's activations within the budget one
    network's chunk has (``torch.split`` of the parameters: one concatenation in backward)."""
    n_networks = weights[0].shape[0]
    group = network_group(x, n_networks, max(w.shape[1] for w in weights), order, hessian_diag)

    def call(coords, w, b):
        return siren_jet(coords, w, b, omegas, order, outermost_linear, backend,
                         hessian_diag=hessian_diag, compile_chunks=compile_chunks)

    if group >= n_networks:
        return call(x, list(weights), list(biases))
    weight_groups = [torch.split(w, group) for w in weights]
    bias_groups = [torch.split(b, group) for b in biases]
    n_groups = len(weight_groups[0])
    coords = torch.split(x, group) if x.dim() == 3 else [x] * n_groups
    jets = [call(coords[g], [w[g] for w in weight_groups], [b[g] for b in bias_groups])
            for g in range(n_groups)]
    fields = zip(*((j.value, j.grad, j.lap, j.hess_diag) for j in jets))
    return Jet(*(None if parts[0] is None else torch.cat(parts) for parts in fields))


class BatchedSiren(_BackendMixin, nn.Module):
    """``n_networks`` independent SIRENs of one architecture (the other arguments as ``Siren``'s),
    trained together through the batched-weights path.

    Each parameter carries a leading batch dimension (``weights.{l}`` [B, out, in], ``biases.{l}``
    [B, out]), and ``jet`` is ``batched_siren_jet``: batched ``siren_jet`` calls over groups of
    networks sized to the CPU's cache (one network per call only where one alone fills it; all B
    in one call on a GPU), and one optimizer step for all of them. Network i is exactly the
    ``Siren`` that ``siren(i)`` returns, with the same initialisation distribution.
    """

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
        compile_chunks: bool | None = None,
    ):
        super().__init__()
        _check_sizes(n_networks=n_networks)
        specs = siren_layers(in_features, hidden_features, hidden_layers, out_features,
                             outermost_linear, first_omega_0, hidden_omega_0)
        self.n_networks = n_networks
        self.kwargs = {
            "in_features": in_features, "hidden_features": hidden_features,
            "hidden_layers": hidden_layers, "out_features": out_features,
            "outermost_linear": outermost_linear, "first_omega_0": float(first_omega_0),
            "hidden_omega_0": float(hidden_omega_0),
        }
        self.outermost_linear = outermost_linear
        self.compile_chunks = compile_chunks
        self.omegas = [spec.omega for spec in specs]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for spec in specs:  # Siren's initialisation, network by network
            b_bound = 1.0 / spec.fan_in**0.5  # nn.Linear's default bias
            self.weights.append(nn.Parameter(
                torch.empty(n_networks, spec.fan_out, spec.fan_in).uniform_(
                    -spec.weight_bound, spec.weight_bound)))
            self.biases.append(nn.Parameter(
                torch.empty(n_networks, spec.fan_out).uniform_(-b_bound, b_bound)))
        self.to(backend=backend)

    @classmethod
    def from_sirens(cls, sirens: list[Siren], compile_chunks: bool | None = None
                    ) -> BatchedSiren:
        """Stack trained or fresh ``Siren``s of one architecture (on the first one's backend)."""
        first = sirens[0]
        weights, _, omegas = first.layer_parameters()
        model = cls(len(sirens), first.in_features, weights[0].shape[0], len(weights) - 2,
                    first.out_features, first.outermost_linear, omegas[0],
                    omegas[1] if len(omegas) > 2 else 30.0, first.backend, compile_chunks)
        with torch.no_grad():
            for l in range(len(weights)):
                model.weights[l].copy_(torch.stack([s.layer_parameters()[0][l] for s in sirens]))
                model.biases[l].copy_(torch.stack([s.layer_parameters()[1][l] for s in sirens]))
        return model

    def siren(self, index: int) -> Siren:
        """Network ``index`` as a ``Siren`` (a copy)."""
        if not -self.n_networks <= index < self.n_networks:
            raise IndexError(f"network index {index} out of range for {self.n_networks}")
        model = Siren(**self.kwargs, backend=self.backend, compile_chunks=self.compile_chunks)
        weights, biases, _ = model.layer_parameters()
        with torch.no_grad():
            for l in range(len(weights)):
                weights[l].copy_(self.weights[l][index])
                biases[l].copy_(self.biases[l][index])
        return model.to(self.weights[0].device, self.weights[0].dtype)

    def jet(self, x: torch.Tensor, order: int = 2, hessian_diag: bool = False) -> Jet:
        """Jets of all networks: x [B, N, d] (or [N, d] shared) -> value [B, N, out], ..."""
        return batched_siren_jet(x, list(self.weights), list(self.biases), self.omegas, order,
                                 self.outermost_linear, self.backend, hessian_diag,
                                 self.compile_chunks)

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
        return (f"n_networks={self.n_networks}, {self.kwargs}, backend={self.backend!r}, "
                f"compile_chunks={self.compile_chunks}")


class LearnedStart(nn.Module):
    """A learned initialisation for one kind of signal: the starting network ``siren`` (a
    ``Siren``) and per-element step sizes for the first ``inner_steps`` steps of a fit from it.

    A fit from the start takes ``inner_steps`` plain gradient steps
    ``theta <- theta - s * grad L(theta)`` with ``s = step_sizes()`` (one positive size per
    weight, in ``Siren.layer_parameters`` order: the weights, then the biases), then continues
    with Adam. Both ``siren`` and the step sizes are meta-learned (``fastsiren fit init``); the
    step sizes are stored as their logarithms (``log_step_sizes``) so that they stay positive.
    ``jet`` and ``forward`` evaluate the start itself.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        hidden_layers: int,
        out_features: int,
        outermost_linear: bool = True,
        first_omega_0: float = 30.0,
        hidden_omega_0: float = 30.0,
        inner_steps: int = 3,
        initial_step_size: float = 1e-2,
        backend: str = "auto",
        compile_chunks: bool | None = None,
    ):
        super().__init__()
        _check_sizes(inner_steps=inner_steps)
        self.kwargs = {
            "in_features": in_features, "hidden_features": hidden_features,
            "hidden_layers": hidden_layers, "out_features": out_features,
            "outermost_linear": outermost_linear, "first_omega_0": float(first_omega_0),
            "hidden_omega_0": float(hidden_omega_0),
        }
        self.inner_steps = inner_steps
        self.siren = Siren(**self.kwargs, backend=backend, compile_chunks=compile_chunks)
        weights, biases, _ = self.siren.layer_parameters()
        self.log_step_sizes = nn.ParameterList(
            nn.Parameter(torch.full_like(p, math.log(initial_step_size)))
            for p in weights + biases)

    @property
    def backend(self) -> str:
        return self.siren.backend

    def to(self, *args, backend: str | None = None, **kwargs):
        if backend is not None:
            self.siren.to(backend=backend)
        return super().to(*args, **kwargs) if args or kwargs else self

    def start_parameters(self) -> list[torch.Tensor]:
        """The starting network's weights, then its biases (``Siren.layer_parameters``)."""
        weights, biases, _ = self.siren.layer_parameters()
        return weights + biases

    def step_sizes(self) -> list[torch.Tensor]:
        """The per-element step sizes, one tensor per entry of ``start_parameters``."""
        return [log_size.exp() for log_size in self.log_step_sizes]

    def jet(self, x: torch.Tensor, order: int = 2, hessian_diag: bool = False) -> Jet:
        return self.siren.jet(x, order, hessian_diag)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.siren(x)

    def extra_repr(self) -> str:
        return f"inner_steps={self.inner_steps}"


_OFFICIAL_FCBLOCK_KEY = re.compile(r"^(?:module\.)?(?:net\.)?net\.(\d+)\.0\.(weight|bias)$")


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor], outermost_linear: bool = True
) -> dict[str, torch.Tensor]:
    """Map a checkpoint of the official ``SingleBVPNet`` / ``FCBlock`` (type "sine") to the
    ``Siren`` layout.

    The official ``FCBlock`` keeps each layer as ``net.{i}.0`` (a ``BatchLinear`` inside a
    sequential with its nonlinearity) and ``SingleBVPNet`` nests it as ``net.net.{i}.0``; its sine
    is ``sin(30 x)`` everywhere, so build the ``Siren`` with ``first_omega_0=hidden_omega_0=30``.
    Keys already in the ``Siren`` layout pass through; anything else raises.
    """
    if not state_dict:
        raise ValueError(
            "empty state dict: expected an official SIREN checkpoint (keys like "
            "'net.net.0.0.weight') or a Siren one ('net.0.linear.weight')"
        )
    indices = []
    for key in state_dict:
        match = _OFFICIAL_FCBLOCK_KEY.match(key)
        if match:
            indices.append(int(match.group(1)))
    if not indices:
        if all(re.match(r"^net\.\d+\.(linear\.)?(weight|bias)$", k) for k in state_dict):
            return dict(state_dict)
        raise ValueError(
            "not an official SIREN checkpoint: expected keys like 'net.net.0.0.weight' "
            f"(SingleBVPNet) or 'net.0.0.weight' (FCBlock), got {list(state_dict)[:4]}"
        )
    last = max(indices)
    converted = {}
    for key, value in state_dict.items():
        match = _OFFICIAL_FCBLOCK_KEY.match(key)
        if not match:
            continue  # e.g. the parameter-free image_downsampling submodule
        i, name = int(match.group(1)), match.group(2)
        linear_last = i == last and outermost_linear
        converted[f"net.{i}.{name}" if linear_last else f"net.{i}.linear.{name}"] = value
    return converted
