"""How close an extracted mesh is to the surface it came from: Chamfer distance, normal
consistency and watertightness against oriented points, and the cost of the extraction.

    chamfer             mean distance from each point to the mesh + mean distance from the mesh
                        to the points (the mesh represented by ``samples`` points drawn on its
                        area), in the points' units
    chamfer_relative    chamfer / the points' bounding-box diagonal
    normal_consistency  mean cosine between a point's normal and the normal of the nearest mesh
                        sample, both ways averaged (1: same orientation everywhere, -1: flipped)
    watertight          whether the mesh is closed (trimesh)
"""

from __future__ import annotations

import numpy as np

from .mesh import Mesh

__all__ = ["mesh_metrics", "mesh_stats"]


def mesh_stats(mesh: Mesh) -> dict:
    """Size and cost of the extracted mesh, for metrics.json."""
    stats = mesh.stats
    return {
        "mesh_vertices": int(len(mesh.vertices)), "mesh_faces": int(len(mesh.faces)),
        "mesh_mode": stats["mode"], "mesh_resolution": stats["resolution"],
        "mesh_evaluations": stats["evaluations"],
        "mesh_evaluations_saved": 1 - stats["evaluations"] / stats["dense_evaluations"],
        "mesh_seconds": stats["seconds"],
    }


def mesh_metrics(mesh: Mesh, points: np.ndarray, normals: np.ndarray, samples: int = 100_000,
                 seed: int = 0) -> dict:
    """Chamfer distance (absolute and relative to the bbox diagonal of ``points``), normal
    consistency and watertightness of ``mesh`` against oriented ``points`` (module docstring);
    ``samples`` points drawn on the mesh with ``seed``.
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
