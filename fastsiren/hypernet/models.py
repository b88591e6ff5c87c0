"""Hypernetworks that turn a few context pixels of an image into a SIREN of the whole image.

The neural-process experiment of the SIREN paper (section 4.4): an encoder maps the context (a
set of pixels, or the sparse image) to a latent z of 256 numbers; a hypernetwork maps z to every
weight and bias of a 2 -> 256x3 -> C SIREN; that SIREN, evaluated on the pixel grid, is the
completed image. Every image of a meta-batch gets its own SIREN, so the predicted parameters
carry a leading batch dimension and the B SIRENs run as ONE ``fastsiren.siren_jet`` call
(W [B, M, K], x [B, N, 2]), never a Python loop over images.

Encoders (both give z [B, latent]):

- ``SetEncoder``: a 4-layer sine MLP over each context pixel's (coordinate, value), averaged over
  the context (a mask leaves out padding, so images with different context sizes share a batch).
  Its MLP is an ``fs.Siren`` with a sine last layer; the official encoder draws the first layer
  like the others (``U(+-sqrt(6/n)/30)``), not with the SIREN first-layer bound.
- ``ConvEncoder``: the sparse image (zero away from the context) through a 3x3 conv to 128
  channels, a 3x3 conv to 256, four residual blocks of two 5x5 convs, a 1x1 conv, and a linear
  map over the H*W positions to one number per channel.

Hypernetworks (both give a dict of parameters in the ``fs.Siren`` state-dict layout, each
[B, *shape]):

- ``OfficialHeads``: one ReLU MLP per SIREN parameter (latent -> 256 -> 256 -> numel). The last
  layer of each head starts 100x smaller than Kaiming, so the first predictions are close to its
  bias, drawn ``U(-1/K, 1/K)`` for a weight of fan-in K (about the SIREN init) and
  ``U(-1/256, 1/256)`` for a bias. For a 2 -> 256x3 -> 3 SIREN that is 52.4M parameters, 98%
  of them in the last layers (256 x numel).
- ``LowRankHeads``: the lighter alternative. A shared SIREN theta_0 (SIREN-initialised, learned)
  plus a per-image offset predicted from one shared ReLU trunk: a weight matrix [M, K] whose full
  offset would need more outputs than a rank-r product gets ``U V`` with U [M, r], V [r, K]
  (r (M + K) outputs instead of M K); small weights and all biases get a full offset. With
  r = 8 the same SIREN needs 4.1M parameters. The offsets start at about a tenth of each
  parameter's init scale or below, so training starts from a well-initialised SIREN.

Loss (``hypernetwork_loss``, official weights): image MSE on [-1, 1] values, plus
``latent_weight`` (0.1) times the mean squared latent, plus ``param_weight`` (100) times the mean
squared predicted SIREN parameter.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..functional import siren_jet
from ..jet import Jet
from ..jet_ops import check_name
from ..modules import Siren
from ..reference.siren import sine_init_bound

__all__ = [
    "Context",
    "ConvEncoder",
    "HypernetOutput",
    "LowRankHeads",
    "NeuralProcessHypernet",
    "OfficialHeads",
    "SetEncoder",
    "SirenSpec",
    "hypernetwork_loss",
]


# ---------------------------------------------------------------------------------------------
# The predicted SIREN and the context


@dataclass(frozen=True)
class SirenSpec:
    """The architecture of the predicted SIREN (the official hypo-network: sin(30 x) everywhere,
    a linear last layer)."""

    in_features: int = 2
    hidden_features: int = 256
    hidden_layers: int = 3
    out_features: int = 3
    omega_0: float = 30.0
    first_omega_0: float = 30.0

    def build(self) -> Siren:
        """An ``fs.Siren`` of this shape (SIREN initialisation); its parameter names and shapes
        are the ones the hypernetworks predict."""
        return Siren(
            self.in_features, self.hidden_features, self.hidden_layers, self.out_features,
            outermost_linear=True, first_omega_0=self.first_omega_0,
            hidden_omega_0=self.omega_0,
        )

    @property
    def n_layers(self) -> int:
        return self.hidden_layers + 2

    def parameter_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every parameter in ``fs.Siren`` state-dict order."""
        sizes = [self.in_features] + [self.hidden_features] * (self.hidden_layers + 1)
        sizes.append(self.out_features)
        shapes = []
        for l in range(self.n_layers):
            prefix = f"net.{l}." if l == self.n_layers - 1 else f"net.{l}.linear."
            shapes.append((prefix + "weight", (sizes[l + 1], sizes[l])))
            shapes.append((prefix + "bias", (sizes[l + 1],)))
        return shapes

    def numel(self) -> int:
        return sum(math.prod(shape) for _, shape in self.parameter_shapes())

    def layer_parameters(self, params: dict[str, torch.Tensor]):
        """(weights, biases, omegas) for ``siren_jet`` from a predicted parameter dict."""
        names = [name for name, _ in self.parameter_shapes()]
        weights = [params[name] for name in names[0::2]]
        biases = [params[name] for name in names[1::2]]
        omegas = [self.first_omega_0] + [self.omega_0] * (self.n_layers - 2) + [1.0]
        return weights, biases, omegas


@dataclass
class Context:
    """The context pixels of a batch of images: ``index`` [B, K] flat (row-major) pixel
    indices and ``mask`` [B, K] (1 for a context pixel, 0 for padding when the images of a
    batch have different context sizes)."""

    index: torch.Tensor
    mask: torch.Tensor

    def to(self, device) -> Context:
        return Context(self.index.to(device), self.mask.to(device))

    def counts(self) -> torch.Tensor:
        return self.mask.sum(dim=1)


# ---------------------------------------------------------------------------------------------
# Encoders


class SetEncoder(nn.Module):
    """z = mean over the context of a sine MLP applied to (coordinate, value) of each pixel."""

    def __init__(self, channels: int, latent_dim: int = 256, hidden_layers: int = 2,
                 in_features: int = 2, omega_0: float = 30.0):
        super().__init__()
        self.in_features = in_features
        self.net = Siren(in_features + channels, latent_dim, hidden_layers, latent_dim,
                         outermost_linear=False, first_omega_0=omega_0, hidden_omega_0=omega_0)
        first = self.net.net[0].linear
        bound = sine_init_bound(first.in_features, omega_0, is_first=False)
        with torch.no_grad():
            first.weight.uniform_(-bound, bound)

    def forward(self, pixels: torch.Tensor, coords: torch.Tensor, context: Context):
        """pixels [B, P, C], coords [P, 2] -> z [B, latent]."""
        index = context.index.unsqueeze(-1)
        values = pixels.gather(1, index.expand(-1, -1, pixels.shape[-1]))
        where = coords[context.index]  # [B, K, 2]
        embeddings = self.net(torch.cat((where, values), dim=-1))  # [B, K, latent]
        mask = context.mask.to(embeddings.dtype).unsqueeze(-1)
        return (embeddings * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


class _ResBlock(nn.Module):
    """relu(x + relu(conv5(relu(conv5(x)))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, channels, 5, 1, 2), nn.ReLU(),
            nn.Conv2d(channels, channels, 5, 1, 2), nn.ReLU(),
        )

    def forward(self, x):
        return torch.relu(x + self.convs(x))


class ConvEncoder(nn.Module):
    """z [B, latent] from the sparse image [B, C, H, W] (zero away from the context)."""

    def __init__(self, channels: int, resolution: tuple[int, int], latent_dim: int = 256,
                 width: int = 128, res_blocks: int = 4):
        super().__init__()
        self.resolution = tuple(resolution)
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(width, latent_dim, 3, 1, 1), nn.ReLU(),
            *[_ResBlock(latent_dim) for _ in range(res_blocks)],
            nn.Conv2d(latent_dim, latent_dim, 1, 1, 0), nn.ReLU(),
        )
        self.fc = nn.Linear(math.prod(self.resolution), 1)  # one weight per position

    def forward(self, pixels: torch.Tensor, coords: torch.Tensor, context: Context):
        """pixels [B, P, C] (P = H*W, row-major) -> z [B, latent]."""
        b, p, c = pixels.shape
        keep = torch.zeros(b, p, dtype=pixels.dtype, device=pixels.device)
        keep.scatter_(1, context.index, context.mask.to(pixels.dtype))
        sparse = (pixels * keep.unsqueeze(-1)).transpose(1, 2).reshape(b, c, *self.resolution)
        features = self.cnn(sparse)  # [B, latent, H, W]
        return self.fc(features.flatten(2)).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Hypernetworks


def _relu_mlp(in_features: int, hidden_features: int, hidden_layers: int,
              out_features: int | None) -> nn.Sequential:
    """Linear+ReLU x (hidden_layers + 1), then a linear output layer when out_features is set;
    Kaiming-normal (fan-in, ReLU) weights as the official FCBlock, nn.Linear's default biases."""
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(hidden_layers + 1):
        layers += [nn.Linear(width, hidden_features), nn.ReLU()]
        width = hidden_features
    if out_features is not None:
        layers.append(nn.Linear(width, out_features))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, a=0.0, nonlinearity="relu", mode="fan_in")
    return nn.Sequential(*layers)


class OfficialHeads(nn.Module):
    """One ReLU MLP per SIREN parameter; latent [B, L] -> dict of [B, *shape]."""

    def __init__(self, spec: SirenSpec, latent_dim: int = 256, hidden_features: int = 256,
                 hidden_layers: int = 1):
        super().__init__()
        self.shapes = spec.parameter_shapes()
        self.heads = nn.ModuleList()
        for name, shape in self.shapes:
            head = _relu_mlp(latent_dim, hidden_features, hidden_layers, math.prod(shape))
            last = head[-1]
            with torch.no_grad():
                last.weight.mul_(1e-2)
                # about the SIREN init of a weight of fan-in K; 1/fan-in of the head for a bias
                fan_in = shape[-1] if name.endswith("weight") else last.in_features
                last.bias.uniform_(-1.0 / fan_in, 1.0 / fan_in)
            self.heads.append(head)

    def forward(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        return OrderedDict(
            (name, head(latent).reshape(-1, *shape))
            for (name, shape), head in zip(self.shapes, self.heads)
        )


class LowRankHeads(nn.Module):
    """theta_i = theta_0 + offset(z_i): a shared SIREN plus per-image offsets from one shared
    ReLU trunk, rank-``rank`` products for the weight matrices where that is cheaper."""

    def __init__(self, spec: SirenSpec, latent_dim: int = 256, hidden_features: int = 256,
                 hidden_layers: int = 1, rank: int = 8):
        super().__init__()
        self.rank = rank
        self.base = spec.build()  # theta_0, in the same state-dict layout
        self.shapes = spec.parameter_shapes()
        self.trunk = _relu_mlp(latent_dim, hidden_features, hidden_layers, None)
        # per parameter: (name, shape, low_rank, number of outputs)
        self.layout = []
        for name, shape in self.shapes:
            low_rank = len(shape) == 2 and rank * sum(shape) < math.prod(shape)
            self.layout.append((name, shape, low_rank,
                                rank * sum(shape) if low_rank else math.prod(shape)))
        self.out = nn.Linear(hidden_features, sum(n for *_, n in self.layout))
        # Offsets start at about a tenth of each parameter's SIREN-init scale (or below): a
        # full offset's rows are Kaiming times 0.1 x that scale; for U V, U's rows are Kaiming
        # / 100 (as the official last layer) with a zero bias and V's bias is drawn at the
        # scale over sqrt(r), so U V starts tiny while its gradient w.r.t. U does not vanish.
        with torch.no_grad():
            nn.init.kaiming_normal_(self.out.weight, a=0.0, nonlinearity="relu", mode="fan_in")
            self.out.bias.zero_()
            start = 0
            for name, shape, low_rank, n in self.layout:
                fan_in = dict(self.shapes)[name.replace("bias", "weight")][1]
                if name.endswith("weight"):
                    first = name.startswith("net.0.")
                    scale = sine_init_bound(fan_in, spec.first_omega_0 if first else spec.omega_0,
                                            first)
                else:
                    scale = 1.0 / math.sqrt(fan_in)  # nn.Linear's default bias bound
                rows = self.out.weight[start:start + n]
                if low_rank:
                    rows.mul_(1e-2)
                    self.out.bias[start + rank * shape[0]:start + n].uniform_(
                        -scale / math.sqrt(rank), scale / math.sqrt(rank))
                else:
                    rows.mul_(0.1 * scale)
                start += n

    def forward(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.out(self.trunk(latent))  # [B, sum of outputs]
        base = dict(self.base.named_parameters())
        params = OrderedDict()
        start = 0
        for name, shape, low_rank, n in self.layout:
            chunk = outputs[:, start:start + n]
            start += n
            if low_rank:
                m, k = shape
                u = chunk[:, :self.rank * m].reshape(-1, m, self.rank)
                v = chunk[:, self.rank * m:].reshape(-1, self.rank, k)
                offset = u @ v
            else:
                offset = chunk.reshape(-1, *shape)
            params[name] = base[name] + offset
        return params


# ---------------------------------------------------------------------------------------------
# The model and the loss


@dataclass
class HypernetOutput:
    """What the model returns: the predicted image [B, P, C] (or the jet), the latent and the
    predicted SIREN parameters."""

    value: torch.Tensor
    latent: torch.Tensor
    params: dict[str, torch.Tensor]
    jet: Jet


class NeuralProcessHypernet(nn.Module):
    """Context pixels -> latent -> SIREN parameters -> the image, on the batched fast path.

    Args:
        channels: image channels C (the SIREN has C outputs).
        resolution: (H, W) of the images; the conv encoder's last layer depends on it.
        encoder: "set" (the paper's default) or "conv".
        heads: "official" (per-parameter MLP heads) or "lowrank" (shared SIREN + offsets).
        rank: rank of the low-rank offsets.
        latent_dim, hyper_hidden_features, hyper_hidden_layers: the latent and head widths.
        siren_hidden_features, siren_hidden_layers, omega_0, first_omega_0: the predicted
            SIREN (the official one: 256 features, 3 hidden layers, omega_0 = 30 everywhere).
        backend: engine backend of the predicted SIRENs ("auto", "torch", "triton").
        compile_chunks: ``fastsiren.siren_jet``'s option of that name for the predicted SIRENs.
    """

    def __init__(self, channels: int = 3, resolution: tuple[int, int] = (32, 32),
                 encoder: str = "set", heads: str = "official", rank: int = 8,
                 latent_dim: int = 256, hyper_hidden_features: int = 256,
                 hyper_hidden_layers: int = 1, siren_hidden_features: int = 256,
                 siren_hidden_layers: int = 3, omega_0: float = 30.0,
                 first_omega_0: float = 30.0, backend: str = "auto",
                 compile_chunks: bool | None = None):
        super().__init__()
        if encoder not in ("set", "conv"):
            raise ValueError(f"encoder must be 'set' or 'conv', got {encoder!r}")
        if heads not in ("official", "lowrank"):
            raise ValueError(f"heads must be 'official' or 'lowrank', got {heads!r}")
        self.resolution = tuple(resolution)
        self.backend = check_name(backend, "backend argument")
        self.compile_chunks = compile_chunks
        self.spec = SirenSpec(2, siren_hidden_features, siren_hidden_layers, channels, omega_0,
                              first_omega_0)
        if encoder == "set":
            self.encoder = SetEncoder(channels, latent_dim)
        else:
            self.encoder = ConvEncoder(channels, self.resolution, latent_dim)
        if heads == "official":
            self.hypernet = OfficialHeads(self.spec, latent_dim, hyper_hidden_features,
                                          hyper_hidden_layers)
        else:
            self.hypernet = LowRankHeads(self.spec, latent_dim, hyper_hidden_features,
                                         hyper_hidden_layers, rank)

    def encode(self, pixels: torch.Tensor, coords: torch.Tensor, context: Context):
        """pixels [B, P, C] on the grid coords [P, 2] -> latent [B, latent_dim]."""
        return self.encoder(pixels, coords, context)

    def predict_parameters(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """latent [B, L] -> the B SIRENs' parameters, ``fs.Siren`` names, each [B, *shape]."""
        return self.hypernet(latent)

    def render(self, params: dict[str, torch.Tensor], coords: torch.Tensor,
               order: int = 0) -> Jet:
        """The B predicted SIRENs at coords [P, 2] (shared) or [B, P, 2]: one batched call."""
        weights, biases, omegas = self.spec.layer_parameters(params)
        return siren_jet(coords, weights, biases, omegas, order=order, outermost_linear=True,
                         backend=self.backend, compile_chunks=self.compile_chunks)

    def forward(self, pixels: torch.Tensor, coords: torch.Tensor, context: Context,
                order: int = 0) -> HypernetOutput:
        latent = self.encode(pixels, coords, context)
        params = self.predict_parameters(latent)
        jet = self.render(params, coords, order)
        return HypernetOutput(jet.value, latent, params, jet)


def hypernetwork_loss(output: HypernetOutput, target: torch.Tensor, latent_weight: float = 0.1,
                      param_weight: float = 100.0) -> dict[str, torch.Tensor]:
    """The official loss: image MSE + latent_weight * mean(z^2) + param_weight * mean(theta^2)
    over every predicted SIREN parameter of the batch. Returns the terms and their sum."""
    image = (output.value - target).square().mean()
    latent = latent_weight * output.latent.square().mean()
    squares = sum(p.square().sum() for p in output.params.values())
    count = sum(p.numel() for p in output.params.values())
    params = param_weight * squares / count
    return {"loss": image + latent + params, "image_mse": image, "latent": latent,
            "params": params}
