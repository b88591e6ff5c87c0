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
    "project_onto_level_set", "render_preview",
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
        """The mesh of the fitted field in input units (computed once per evaluation): its
        vertices moved onto the level set when the settings ask (``project_vertices``), and
        each vertex's mean curvature in ``vertex_values["mean_curvature"]`` (1 / input units,
        positive where the surface is convex).

        The curvature is taken on the network's own output (``model``): the occupancy field
        ``sigmoid(model)`` has the same level sets, and the raw model has a jet."""
        if self._mesh is None:
            from ..mesh import Mesh, extract_mesh, mean_curvature

            field, resolution = self.field(model), self.settings.resolution
            mesh = extract_mesh(field, resolution, level=self.level,
                                bounds=(-MESH_HALF_EXTENT, MESH_HALF_EXTENT),
                                inside=self.inside, **self.mesh_options())
            if getattr(self.settings, "project_vertices", False) and len(mesh.vertices):
                mesh = Mesh(project_onto_level_set(field, mesh.vertices, self.level, resolution),
                            mesh.faces, mesh.stats)
            n = self.normalization
            if len(mesh.vertices) and model is not None:
                # the gradient points outwards where the inside is below the level
                sign = 1.0 if self.inside == "below" else -1.0
                mesh.vertex_values["mean_curvature"] = \
                    sign * mean_curvature(model, mesh.vertices) / n.scale
            self._mesh = mesh.transformed(n.scale, np.asarray(n.offset))
        return self._mesh

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        from ..mesh import save_mesh

        mesh = self.final_mesh(model)
        paths = [save_mesh(mesh, out_dir / "mesh.ply")]
        curvature = mesh.vertex_values.get("mean_curvature")
        title = f"{self.name}: the level set {self.level:g} of the fitted field" + (
            f", {len(mesh.faces):,} faces" + (", coloured by mean curvature"
                                              if curvature is not None else ""))
        paths.append(render_preview(mesh, out_dir / "preview.png", curvature, title=title,
                                    values_label="mean curvature (1 / input units)"))
        paths.append(out_dir / NORMALIZATION_NAME)
        paths[-1].write_text(json.dumps(
            {"task": self.name, "level": self.level, "inside": self.inside,
             **self.normalization.to_dict()}, indent=2) + "\n")
        return paths


def project_onto_level_set(field, vertices: np.ndarray, level: float, resolution: int
                           ) -> np.ndarray:
    """Vertices (network units) of a mesh extracted at ``resolution`` moved onto the level set
    (``fastsiren.mesh.project_to_level_set``), each by at most one grid spacing."""
    from ..mesh import project_to_level_set

    spacing = 2 * MESH_HALF_EXTENT / (resolution - 1)
    return project_to_level_set(field, vertices, level, max_move=spacing)


def render_preview(mesh, path: Path, vertex_values: np.ndarray | None = None, size: int = 512,
                   azimuth: float = 35.0, elevation: float = 25.0, title: str = "",
                   values_label: str = "") -> Path:
    """A shaded picture of ``mesh`` from a fixed view, ``size`` pixels high: orthographic, one
    directional light, triangles drawn back to front (matplotlib's Agg backend; no display),
    ``title`` above. With ``vertex_values`` (e.g. the mean curvature), each triangle is
    coloured by the mean of its vertices' values on a diverging map (blue negative, white 0,
    red positive) symmetric about 0 and saturating at the 95th percentile of |value|, then
    shaded, and a colour bar labelled ``values_label`` gives the scale."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize

    plt = pyplot()
    bar = vertex_values is not None and len(mesh.faces) > 0
    # The picture keeps a square of size x size pixels; a colour bar adds a strip beside it.
    width = size * (1.22 if bar else 1.0)
    fig = plt.figure(figsize=(width / 100, size / 100), dpi=100)
    top = 0.92 if title else 1.0
    ax = fig.add_axes((0, 0, size / width * top, top))
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8, y=0.985)
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
        if vertex_values is None:
            base = np.broadcast_to([0.85, 0.8, 0.7], (len(mesh.faces), 3))
        else:
            face_values = np.asarray(vertex_values, np.float64)[mesh.faces].mean(axis=1)
            limit = np.percentile(np.abs(face_values), 95) or 1.0
            base = plt.get_cmap("coolwarm")(0.5 + 0.5 * np.clip(face_values / limit, -1, 1))
            base = base[:, :3]
            colorbar = fig.colorbar(
                ScalarMappable(Normalize(-limit, limit), plt.get_cmap("coolwarm")),
                cax=fig.add_axes((size / width * top + 0.02, 0.12, 0.035, top - 0.24)))
            colorbar.set_label(values_label, fontsize=7)
            colorbar.ax.tick_params(labelsize=6)
        colors = shade[facing][order][:, None] * base[facing][order]
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
