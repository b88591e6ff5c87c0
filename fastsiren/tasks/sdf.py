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
comments record two other sets, "Exp" (surface 1e4, off-surface 1e2, normal 1e2, eikonal 1e1)
and "Lapl" (3e3, 1e3, -, 5e1), so they were tuned per experiment; the paper's own weight table
(supplement) was not checked against them here. Gradients are clipped to norm 1 as the official
run (``clip_grad=True``).

Metrics (the mesh extracted at the 0 level, ``fastsiren.mesh``), in the input's units:
``chamfer`` = mean distance from each input point to the mesh + mean distance from the mesh to
the input points (the mesh represented by ``metric_samples`` points drawn on its area),
``chamfer_relative`` = chamfer / input bounding-box diagonal, ``normal_consistency`` = mean
cosine between an input normal and the normal of the nearest mesh sample, both ways averaged
(1: same orientation everywhere, -1: flipped), ``watertight``.

Outputs: ``mesh.ply`` (input units), ``preview.png`` (shaded, fixed view, no display needed),
``normalization.json`` (the map between input and network coordinates, read by
``fastsiren mesh``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.pointcloud import Normalization, OrientedPoints, read_oriented_points
from .base import FitContext, FitSettings, Task, setting

__all__ = [
    "SDF_LOSS_WEIGHTS",
    "SdfSettings",
    "SdfTask",
    "ShapeOutputs",
    "load_shape_field",
    "mesh_metrics",
    "render_preview",
    "sample_point_cloud_path",
    "sdf_loss",
]

# The official loss_functions.sdf weights and the off-surface falloff exp(-alpha |f|).
SDF_LOSS_WEIGHTS = {"sdf": 3e3, "inter": 1e2, "normal": 1e2, "grad": 5e1}
OFF_SURFACE_ALPHA = 1e2
NORMALIZATION_NAME = "normalization.json"
# Half the side of the meshing cube in network units: the official normalisation puts the
# shape's extreme points exactly on +-1, and a grid ending there would cut the surface open.
MESH_HALF_EXTENT = 1.02


def sample_point_cloud_path() -> Path:
    """The built-in sample (kitten.xyz, CC0; see fastsiren/data/README.md)."""
    return Path(str(resources.files("fastsiren") / "data" / "kitten.xyz"))


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


class ShapeOutputs:
    """Meshing and outputs shared by the shape tasks (sdf, occupancy): the level set of
    ``field(model)`` at ``level`` on a ``settings.resolution`` grid over [-1.02, 1.02]^3, in
    input units."""

    level: float
    inside: str
    normalization: Normalization
    _mesh = None

    def field(self, model: nn.Module) -> nn.Module:
        """The fitted field in network coordinates, as ``fastsiren.mesh`` takes it."""
        return model

    def mesh_options(self) -> dict:
        return {}

    def final_mesh(self, model: nn.Module):
        """The mesh of the fitted field in input units (computed once per evaluation)."""
        if self._mesh is None:
            from ..mesh import extract_mesh

            mesh = extract_mesh(self.field(model), self.settings.resolution, level=self.level,
                                bounds=(-MESH_HALF_EXTENT, MESH_HALF_EXTENT),
                                inside=self.inside, **self.mesh_options())
            n = self.normalization
            self._mesh = mesh.transformed(n.scale, np.asarray(n.offset))
        return self._mesh

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        from ..mesh import save_mesh

        mesh = self.final_mesh(model)
        paths = [save_mesh(mesh, out_dir / "mesh.ply")]
        paths.append(render_preview(mesh, out_dir / "preview.png"))
        paths.append(out_dir / NORMALIZATION_NAME)
        paths[-1].write_text(json.dumps(
            {"task": self.name, "level": self.level, "inside": self.inside,
             **self.normalization.to_dict()}, indent=2) + "\n")
        return paths


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


def mesh_stats(mesh) -> dict:
    """Size and cost of the extracted mesh, for metrics.json."""
    stats = mesh.stats
    return {
        "mesh_vertices": int(len(mesh.vertices)), "mesh_faces": int(len(mesh.faces)),
        "mesh_mode": stats["mode"], "mesh_resolution": stats["resolution"],
        "mesh_evaluations": stats["evaluations"],
        "mesh_evaluations_saved": 1 - stats["evaluations"] / stats["dense_evaluations"],
        "mesh_seconds": stats["seconds"],
    }


def mesh_metrics(mesh, points: np.ndarray, normals: np.ndarray, samples: int = 100_000,
                 seed: int = 0) -> dict:
    """Chamfer distance (absolute and relative to the bbox diagonal of ``points``), normal
    consistency and watertightness of ``mesh`` against oriented ``points`` (module docstring).
    An empty mesh gets ``None`` distances and ``watertight = False``."""
    import trimesh
    from scipy.spatial import cKDTree

    diagonal = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))
    if len(mesh.faces) == 0:
        return {"chamfer": None, "chamfer_relative": None, "normal_consistency": None,
                "watertight": False}
    tm = mesh.to_trimesh()
    surface, face = trimesh.sample.sample_surface(tm, samples, seed=seed)
    surface_normals = tm.face_normals[face]
    to_mesh, nearest_on_mesh = cKDTree(surface).query(points)
    to_points, nearest_point = cKDTree(points).query(surface)
    chamfer = float(to_mesh.mean() + to_points.mean())
    consistency = 0.5 * (
        (normals * surface_normals[nearest_on_mesh]).sum(-1).mean()
        + (surface_normals * normals[nearest_point]).sum(-1).mean()
    )
    return {
        "chamfer": chamfer, "chamfer_relative": chamfer / diagonal,
        "normal_consistency": float(consistency), "watertight": bool(tm.is_watertight),
    }


def render_preview(mesh, path: Path, size: int = 512, azimuth: float = 35.0,
                   elevation: float = 25.0) -> Path:
    """A shaded picture of ``mesh`` from a fixed view: orthographic, one directional light,
    triangles drawn back to front (matplotlib's Agg backend; no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    fig = plt.figure(figsize=(size / 100, size / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    if len(mesh.faces):
        a, e = math.radians(azimuth), math.radians(elevation)
        # View rotation: about z by the azimuth, then tilt by the elevation; camera looks at -y.
        rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
        v = mesh.vertices @ (rx @ rz).T
        tri = v[mesh.faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(1e-30)
        light = np.array([0.4, -1.0, 0.6]) / np.linalg.norm([0.4, -1.0, 0.6])
        shade = 0.25 + 0.75 * np.clip(normal @ light, 0, 1)
        facing = normal[:, 1] < 0  # towards the camera at -y
        order = np.argsort(-tri[facing, :, 1].mean(axis=1))  # far (large y) first
        polys = tri[facing][order][:, :, [0, 2]]
        colors = np.outer(shade[facing][order], [0.85, 0.8, 0.7])
        # Edges in the face colour, no antialiasing: seams between triangles stay closed.
        ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors=colors,
                                         linewidths=0.3, antialiased=False))
        lo, hi = polys.reshape(-1, 2).min(axis=0), polys.reshape(-1, 2).max(axis=0)
        centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * 1.05
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_aspect("equal")
    fig.savefig(path, facecolor="white")
    plt.close(fig)
    return Path(path)


def load_shape_field(run: str | Path, device: str | torch.device = "cpu"):
    """The fitted field of an sdf or occupancy run for meshing: ``(field, level, inside,
    normalization)``, where ``normalization`` (None if the run folder has no
    ``normalization.json``) maps the mesh back to input units."""
    from ..fit.checkpoint import checkpoint_path, load_checkpoint, load_model

    state = load_checkpoint(run, device)
    task = state.get("task")
    if task not in ("sdf", "occupancy"):
        raise InputError(f"{run}: a checkpoint of the {task!r} task is not a shape; meshing "
                         "takes an sdf or occupancy run")
    model = load_model(run, map_location=device)
    file = checkpoint_path(run).parent / NORMALIZATION_NAME
    normalization = Normalization.from_dict(json.loads(file.read_text())) if file.is_file() \
        else None
    if task == "occupancy":
        return nn.Sequential(model, nn.Sigmoid()), 0.5, "above", normalization
    return model, 0.0, "below", normalization
