"""What the shape tasks (sdf, occupancy) share: the mesh of the fitted field in the input's units,
the files a shape run writes (``mesh.ply``, ``preview.png``, ``normalization.json``), the shaded
preview, and the loader that turns such a run folder back into a field to mesh
(``fastsiren mesh``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import checkpoint_path, load_checkpoint
from ..errors import InputError
from ..io.pointcloud import Normalization
from ..registry import model_from_checkpoint
from .common import pyplot, save_figure

__all__ = [
    "MESH_HALF_EXTENT", "NORMALIZATION_NAME", "ShapeOutputs", "load_shape_field",
    "render_preview",
]

NORMALIZATION_NAME = "normalization.json"
# Half the side of the meshing cube in network units: the official normalisation puts the
# shape's extreme points exactly on +-1, and a grid ending there would cut the surface open.
MESH_HALF_EXTENT = 1.02


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


def render_preview(mesh, path: Path, size: int = 512, azimuth: float = 35.0,
                   elevation: float = 25.0) -> Path:
    """A shaded picture of ``mesh`` from a fixed view: orthographic, one directional light,
    triangles drawn back to front (matplotlib's Agg backend; no display)."""
    from matplotlib.collections import PolyCollection

    plt = pyplot()
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
    return save_figure(fig, path, facecolor="white")


def load_shape_field(run: str | Path, device: str | torch.device = "cpu"):
    """The fitted field of an sdf or occupancy run for meshing: ``(field, level, inside,
    normalization)``, where ``normalization`` (None if the run folder has no
    ``normalization.json``) maps the mesh back to input units."""
    state = load_checkpoint(run, device)
    task = state.get("task")
    if task not in ("sdf", "occupancy"):
        raise InputError(f"{run}: a checkpoint of the {task!r} task is not a shape; meshing "
                         "takes an sdf or occupancy run")
    model = model_from_checkpoint(state, map_location=device)
    file = checkpoint_path(run).parent / NORMALIZATION_NAME
    normalization = Normalization.from_dict(json.loads(file.read_text())) if file.is_file() \
        else None
    if task == "occupancy":
        return nn.Sequential(model, nn.Sigmoid()), 0.5, "above", normalization
    return model, 0.0, "below", normalization
