"""occupancy: inside/outside of a watertight mesh (the Occupancy Networks view of a shape).

Data: a watertight mesh (PLY, OBJ, OFF, STL; ``fastsiren.io.mesh.read_mesh``; an open one is
refused: inside/outside would be undefined); the built-in sample is a torus generated with
``trimesh.creation.torus`` (no file). Coordinates are normalised as the sdf task's (the official
``PointCloud`` map, fitted to the mesh's vertices), shrunk so that the extreme points sit at
+-0.9 instead of +-1 (``SHAPE_EXTENT``): the labels then cover outside beyond every side.

Labels come from trimesh's containment test, once, on a pool of ``pool`` points: half uniform in
[-1, 1]^3, half on the surface displaced by Gaussian noise of ``surface_noise`` (the boundary is
where a classifier needs its samples). Each step draws ``batch`` of them. The network's value is
a logit; the loss is binary cross-entropy on it (order-0 jet), so the surface is the 0.5 level
of ``sigmoid(f)``, meshed densely (an occupancy field has no Lipschitz bound for coarse-to-fine).

Metrics: ``iou`` (intersection over union of inside, predicted ``sigmoid(f) > 0.5`` against the
mesh's own containment) and ``accuracy`` on ``held_out`` uniform points that were never trained
on; the standard evaluation of the extracted mesh against the input mesh
(``fastsiren.mesh_metrics``: Chamfer, Hausdorff, F-scores, normal consistency, pieces,
watertightness, and its volumetric IoU as ``mesh_iou``).

Outputs: ``mesh.ply`` (input units), ``preview.png``, ``normalization.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..deps import require
from ..io.mesh import read_mesh
from ..io.pointcloud import Normalization
from ..mesh import check_mesh_memory
from ..mesh_metrics import mesh_metrics, mesh_stats
from .base import FitContext, FitSettings, Task, setting
from .shapes import ShapeOutputs

__all__ = ["OccupancySettings", "OccupancyTask", "sample_mesh"]


# The shape's extreme points sit at +-SHAPE_EXTENT in network units, not at +-1: the uniform
# samples in [-1, 1]^3 then see outside beyond every side of the shape, and the meshing cube
# ([-1.02, 1.02]^3) ends well outside it (a shape filling its box had its surface on the cube's
# edge, with no labels beyond it).
SHAPE_EXTENT = 0.9


def sample_mesh():
    """The built-in shape: a torus (major radius 1, minor radius 0.35), generated."""
    import trimesh

    return trimesh.creation.torus(major_radius=1.0, minor_radius=0.35, major_sections=64,
                                  minor_sections=32)


@dataclass
class OccupancySettings(FitSettings):
    """Fit the inside/outside of a watertight mesh (PLY, OBJ, OFF, STL)."""

    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=300, cuda=10000)
    width: int | None = setting(None, "hidden features per layer", positive=True, cpu=128,
                                cuda=256)
    batch: int | None = setting(None, "labelled points per step", positive=True, cpu=4096,
                                cuda=65536)
    pool: int | None = setting(
        None, "labelled points drawn once, half uniform, half near the surface", positive=True,
        cpu=40_000, cuda=1_000_000)
    surface_noise: float = setting(
        0.02, "std of the near-surface samples' offsets (network units)", positive=True)
    held_out: int = setting(20_000, "uniform points held back for IoU", positive=True)
    resolution: int | None = setting(
        None, "grid points per axis of the output mesh", low=8, cpu=128, cuda=512)
    metric_samples: int = setting(
        100_000, "points drawn on each mesh for Chamfer and normal consistency", positive=True)


class OccupancyTask(ShapeOutputs, Task):
    name = "occupancy"
    settings_class = OccupancySettings
    order = 0
    progress_metric = "accuracy"
    example = "fastsiren fit occupancy shape.stl --out runs/shape"
    level = 0.5
    inside = "above"

    def __init__(self, settings: OccupancySettings, context: FitContext):
        super().__init__(settings, context)
        require("mesh", "fit occupancy")  # trimesh labels the points, mcubes meshes the fit
        # the mesh comes after training: its size is checked before the first step
        check_mesh_memory(settings.resolution)
        import trimesh

        if self.single_input("mesh") is not None:
            self.source = settings.input[0]
            mesh = read_mesh(settings.input[0], watertight=True)
        else:
            self.source, mesh = "built-in torus", sample_mesh()
        self.mesh = mesh
        official = Normalization.fit(np.asarray(mesh.vertices))
        self.normalization = Normalization(official.scale / SHAPE_EXTENT, official.offset)
        unit = trimesh.Trimesh(self.normalization.apply(np.asarray(mesh.vertices)), mesh.faces,
                               process=False)
        gen = np.random.default_rng(settings.seed)
        uniform = gen.uniform(-1, 1, (settings.pool - settings.pool // 2, 3))
        surface, _ = trimesh.sample.sample_surface(unit, settings.pool // 2, seed=settings.seed)
        near = surface + gen.normal(scale=settings.surface_noise, size=surface.shape)
        pool = np.concatenate([uniform, near])
        held = gen.uniform(-1, 1, (settings.held_out, 3))
        inside = unit.contains(np.concatenate([pool, held]))
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)  # noqa: E731
        self.coords, self.labels = as_tensor(pool), as_tensor(inside[: len(pool), None])
        self.held_coords = as_tensor(held)
        self.held_labels = torch.as_tensor(inside[len(pool):], device=self.device)
        self.in_features, self.out_features = 3, 1

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pick = torch.randint(len(self.coords), (self.settings.batch,), generator=generator,
                             device=self.device)
        return {"coords": self.coords[pick], "labels": self.labels[pick]}

    def loss(self, jet, batch):
        bce = nn.functional.binary_cross_entropy_with_logits(jet.value, batch["labels"])
        accuracy = ((jet.value.detach() > 0) == (batch["labels"] > 0.5)).float().mean()
        return bce, {"bce": bce.detach(), "accuracy": accuracy}

    def field(self, model: nn.Module) -> nn.Module:
        return nn.Sequential(model, nn.Sigmoid())

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        from ..mesh import evaluate_field

        predicted = torch.as_tensor(evaluate_field(model, self.held_coords) > 0,
                                    device=self.device)
        truth = self.held_labels
        union = (predicted | truth).sum().item()
        metrics = {
            "iou": (predicted & truth).sum().item() / union if union else 1.0,
            "accuracy": (predicted == truth).float().mean().item(),
        }
        self._mesh = None
        mesh = self.final_mesh(model)
        surface = mesh_metrics(mesh, None, None, self.settings.metric_samples,
                               self.settings.seed, reference=self.mesh)
        # "iou" above is the field's, on held-back points; the mesh's own is mesh_iou
        surface["mesh_iou"] = surface.pop("iou", None)
        metrics.update(surface)
        metrics.update(mesh_stats(mesh))
        return metrics

    def describe(self) -> dict:
        return {
            "source": self.source, "vertices": len(self.mesh.vertices),
            "faces": len(self.mesh.faces), "pool": len(self.coords),
            "inside_fraction_uniform": float(self.held_labels.float().mean()),
            "normalization": self.normalization.to_dict(),
        }
