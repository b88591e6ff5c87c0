"""sdf: a signed distance function from oriented points (the official ``train_sdf.py``).

Data: an oriented point cloud (``fastsiren.io.pointcloud``: ``.xyz`` rows x y z nx ny nz, a PLY
point cloud with normals, or a mesh sampled to ``points`` oriented points); the built-in sample
is the kitten (5,210 points, CGAL, CC0). Coordinates are normalised as the official
``dataio.PointCloud`` (centre on the mean, the extreme coordinates to -1 and 1, aspect ratio
kept); the output mesh goes back through the exact inverse into the input's own units.

Each step draws ``batch`` points of the cloud (on the surface, with their normals) and ``batch``
points uniform in [-1, 1]^3 (off the surface), and evaluates the order-1 jet (value and
gradient: the adjoint sweep on the torch backend, the fused kernels on CUDA). The loss is the
official ``loss_functions.sdf``, every term averaged over all 2 * batch points (a term that
applies to one half counts zero on the other):

    3e3 * mean(|f| on the surface)                         the surface is the zero set
  + 1e2 * mean(exp(-100 |f|) off the surface)              no spurious zeros elsewhere
  + 1e2 * mean(1 - cos(grad f, n) on the surface)          gradients follow the normals
  + 5e1 * mean(| |grad f| - 1 |) everywhere                eikonal: |grad f| = 1

Paper and code differ; this follows the code (``loss_functions.sdf`` as run by
``train_sdf.py``). The paper (eq. 6) writes the normal term as 1 - <grad f, n> (the code: the
cosine, blind to |grad f|) and integrates each term over its own domain (the code's means over
all samples halve the on- and off-surface terms). The weights are the code's active ones; its
comments list two other sets, "Exp" (surface 1e4, off-surface 1e2, normal 1e2, eikonal 1e1) and
"Lapl" (3e3, 1e3, -, 5e1): the weights are tuned per experiment. Gradients are clipped to norm 1
as the official run (``clip_grad=True``).

Metrics (the mesh extracted at the 0 level, ``fastsiren.mesh``), in the input's units:
``chamfer``, ``chamfer_relative``, ``normal_consistency`` and ``watertight`` against the input
points (``fastsiren.mesh_metrics``, with ``metric_samples`` points drawn on the mesh).

Outputs (``tasks.shapes``): ``mesh.ply`` (input units), ``preview.png`` (shaded, fixed view),
``normalization.json`` (the map between input and network coordinates, read by
``fastsiren mesh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..deps import require
from ..io.pointcloud import Normalization, OrientedPoints, read_oriented_points
from ..mesh import check_mesh_memory
from ..mesh_metrics import mesh_metrics, mesh_stats
from .base import FitContext, FitSettings, Task, setting
from .common import data_file
from .shapes import ShapeOutputs

__all__ = ["SDF_LOSS_WEIGHTS", "SdfSettings", "SdfTask", "sample_point_cloud_path", "sdf_loss"]

# The official loss_functions.sdf weights and the off-surface falloff exp(-alpha |f|).
SDF_LOSS_WEIGHTS = {"sdf": 3e3, "inter": 1e2, "normal": 1e2, "grad": 5e1}
OFF_SURFACE_ALPHA = 1e2


def sample_point_cloud_path() -> Path:
    """The built-in sample (kitten.xyz, CC0; see fastsiren/data/README.md)."""
    return data_file("kitten.xyz")


def sdf_loss(
    value: torch.Tensor, grad: torch.Tensor, normals: torch.Tensor, n_on: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official SDF loss from the order-1 jet at ``[on-surface; off-surface]`` points.

    Args:
        value: ``[P]`` field values, the first ``n_on`` on the surface.
        grad: ``[P, 3]`` their gradients.
        normals: ``[n_on, 3]`` the on-surface points' normals.
    Returns (total, terms): the weighted sum and each weighted term (``sdf``, ``inter``,
    ``normal``, ``grad``), every term a mean over all P points.
    """
    total_points = value.shape[0]
    on_value, off_value = value[:n_on], value[n_on:]
    on_grad = grad[:n_on]
    # cos(g, n) as torch's cosine_similarity (each norm clamped at 1e-8).
    cosine = (on_grad * normals).sum(-1) / (
        on_grad.norm(dim=-1).clamp_min(1e-8) * normals.norm(dim=-1).clamp_min(1e-8)
    )
    terms = {
        "sdf": on_value.abs().sum() / total_points,
        "inter": torch.exp(-OFF_SURFACE_ALPHA * off_value.abs()).sum() / total_points,
        "normal": (1 - cosine).sum() / total_points,
        "grad": (grad.norm(dim=-1) - 1).abs().mean(),
    }
    terms = {name: SDF_LOSS_WEIGHTS[name] * term for name, term in terms.items()}
    return sum(terms.values()), terms


@dataclass
class SdfSettings(FitSettings):
    """Fit a signed distance function to an oriented point cloud (.xyz, PLY) or a mesh."""

    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=300, cuda=10000)
    width: int | None = setting(None, "hidden features per layer", positive=True, cpu=128,
                                cuda=256)
    clip_grad: float | None = setting(1.0, "clip the gradient norm to this value (official: 1)",
                                      positive=True)
    batch: int | None = setting(
        None, "on-surface points per step (as many uniform off-surface points are added)",
        positive=True, cpu=2500, cuda=50000)
    points: int = setting(100_000, "oriented points sampled from a mesh input", positive=True)
    resolution: int | None = setting(
        None, "grid points per axis of the output mesh", low=8, cpu=128, cuda=512)
    coarse_to_fine: bool | None = setting(
        None, "mesh coarse-to-fine (only blocks near the surface; pays from about 256^3 on); "
        "false: dense grid", cpu=False, cuda=True)
    lipschitz: float = setting(
        1.5, "bound on |grad f| that coarse-to-fine relies on (1 for an exact SDF)",
        positive=True)
    metric_samples: int = setting(
        100_000, "points drawn on the mesh for Chamfer and normal consistency", positive=True)


class SdfTask(ShapeOutputs, Task):
    name = "sdf"
    settings_class = SdfSettings
    order = 1
    progress_metric = "sdf"
    example = "fastsiren fit sdf --out runs/kitten"
    level = 0.0
    inside = "below"

    def __init__(self, settings: SdfSettings, context: FitContext):
        super().__init__(settings, context)
        require("mesh", "fit sdf")  # the mesh comes after training: its packages checked now
        # the mesh comes after training: its size is checked before the first step
        check_mesh_memory(settings.resolution, bool(settings.coarse_to_fine))
        self.path = path = self.single_input("point cloud") or sample_point_cloud_path()
        self.cloud: OrientedPoints = read_oriented_points(path, settings.points, settings.seed)
        self.normalization = Normalization.fit(self.cloud.points)
        self.in_features, self.out_features = 3, 1
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)  # noqa: E731
        self.coords = as_tensor(self.normalization.apply(self.cloud.points))
        self.normals = as_tensor(self.cloud.normals)

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = self.settings.batch
        pick = torch.randint(len(self.coords), (n,), generator=generator, device=self.device)
        off = torch.rand(n, 3, generator=generator, device=self.device) * 2 - 1
        return {"coords": torch.cat([self.coords[pick], off]), "normals": self.normals[pick]}

    def loss(self, jet, batch):
        total, terms = sdf_loss(jet.value[:, 0], jet.grad[:, 0, :], batch["normals"],
                                batch["normals"].shape[0])
        return total, {k: v.detach() for k, v in terms.items()}

    def mesh_options(self) -> dict:
        s = self.settings
        return {"coarse_to_fine": s.coarse_to_fine, "lipschitz": s.lipschitz}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self._mesh = None
        mesh = self.final_mesh(model)
        metrics = mesh_metrics(mesh, self.cloud.points, self.cloud.normals,
                               self.settings.metric_samples, self.settings.seed)
        metrics.update(mesh_stats(mesh))
        return metrics

    def describe(self) -> dict:
        lo, hi = self.cloud.points.min(axis=0), self.cloud.points.max(axis=0)
        return {
            "source": str(self.path), "points": len(self.cloud),
            "bbox_min": lo.tolist(), "bbox_max": hi.tolist(),
            "normalization": self.normalization.to_dict(),
        }
