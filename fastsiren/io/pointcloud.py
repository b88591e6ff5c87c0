"""Oriented point clouds (points with unit normals) from text, PLY and meshes, and the official
SIREN normalisation into [-1, 1] with its exact inverse.

Formats (by extension):

- ``.xyz``: text rows ``x y z nx ny nz`` (the SIREN paper's format; whitespace separated).
- ``.ply`` without faces: a point cloud whose vertices carry ``nx ny nz`` properties.
- ``.ply`` with faces, ``.obj``, ``.off``, ``.stl``: a mesh; ``points`` oriented points are
  sampled uniformly on its area, each with the normal of the face it lies on.

Normalisation (the official ``dataio.PointCloud``, aspect ratio kept): centre on the mean, then
map the smallest and the largest coordinate over all three axes to -1 and 1,

    x_n = 2 (x - mean - lo) / (hi - lo) - 1,       x = x_n s + t,
    s = (hi - lo) / 2,  t = mean + lo + s,

so the longest extent spans [-1, 1] and the others fit inside. Normals are unchanged (the map is
a uniform scale and a shift) and are rescaled to unit length on reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, check_not_folder
from .mesh import MESH_SUFFIXES, read_mesh

__all__ = [
    "POINT_CLOUD_SUFFIXES",
    "Normalization",
    "OrientedPoints",
    "read_oriented_points",
]

POINT_CLOUD_SUFFIXES = (".xyz",) + MESH_SUFFIXES
# Relative size under which a singular value of the centred cloud counts as zero: the points are
# all equal (rank 0) or on a line (rank 1) and bound no surface.
DEGENERATE_RANK_TOL = 1e-9

_HOW_TO_GET_NORMALS = (
    "estimate oriented normals first (e.g. Open3D's estimate_normals followed by "
    "orient_normals_consistent_tangent_plane, or MeshLab's 'Compute normals for point sets') "
    "and save the rows as x y z nx ny nz, or give a mesh, whose face normals are used"
)


@dataclass(frozen=True)
class Normalization:
    """``x_n = (x - offset) / scale`` and back; from ``fit`` (the official normalisation)."""

    scale: float
    offset: tuple[float, float, float]

    @classmethod
    def fit(cls, points: np.ndarray) -> Normalization:
        centred = points - points.mean(axis=0, keepdims=True)
        lo, hi = float(centred.min()), float(centred.max())
        scale = (hi - lo) / 2
        mean = points.mean(axis=0)
        return cls(scale, tuple(float(v) for v in mean + lo + scale))

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (points - np.asarray(self.offset)) / self.scale

    def invert(self, normalized: np.ndarray) -> np.ndarray:
        return normalized * self.scale + np.asarray(self.offset)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "offset": list(self.offset)}

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        return cls(float(data["scale"]), tuple(float(v) for v in data["offset"]))


@dataclass
class OrientedPoints:
    """Points ``[N, 3]`` and unit normals ``[N, 3]`` (float64) in the input's own units."""

    points: np.ndarray
    normals: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.points)


def read_oriented_points(
    path: str | Path, points: int = 100_000, seed: int = 0
) -> OrientedPoints:
    """Oriented points from ``path`` (see the module docstring); ``points`` and ``seed`` choose
    the samples drawn from a mesh. Raises ``InputError`` naming the problem: unsupported
    extension, no normals, NaN or infinite values, zero normals, a degenerate cloud."""
    path = Path(path)
    check_not_folder(path, "point cloud file")
    if not path.is_file():
        raise InputError(f"point cloud file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in POINT_CLOUD_SUFFIXES:
        raise InputError(
            f"{path.name}: unsupported extension {path.suffix!r}; expected .xyz (x y z nx ny nz), "
            f"a PLY point cloud with normals, or a mesh ({', '.join(MESH_SUFFIXES)})"
        )
    if suffix == ".xyz":
        xyz, normals = _read_xyz(path)
    elif suffix == ".ply" and _ply_has_no_faces(path):
        xyz, normals = _read_ply_points(path)
    else:
        xyz, normals = _sample_mesh(path, points, seed)
    return _checked(xyz, normals, path.name)


def _read_xyz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        rows = np.loadtxt(path, ndmin=2, comments="#")
    except ValueError as exc:
        raise InputError(f"{path.name}: not a table of numbers x y z nx ny nz ({exc})") from None
    if rows.size == 0:
        raise InputError(f"{path.name}: no points")
    if rows.shape[1] == 3:
        raise InputError(f"{path.name}: the points have no normals (3 columns); "
                         + _HOW_TO_GET_NORMALS)
    if rows.shape[1] != 6:
        raise InputError(
            f"{path.name}: expected 6 columns x y z nx ny nz, got {rows.shape[1]}"
        )
    return rows[:, :3], rows[:, 3:]


def _ply_has_no_faces(path: Path) -> bool:
    """Whether the PLY header declares no face element (or zero faces)."""
    with open(path, "rb") as f:
        for raw in f:
            line = raw.strip().decode("ascii", "replace")
            if line.startswith("element face"):
                return int(line.split()[2]) == 0
            if line == "end_header":
                return True
    return True


def _read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    try:
        cloud = trimesh.load(path, process=False)
        vertex = cloud.metadata["_ply_raw"]["vertex"]["data"]
    except Exception as exc:
        raise InputError(f"{path.name}: not a readable PLY point cloud ({exc})") from None
    if not all(k in vertex for k in ("nx", "ny", "nz")):
        raise InputError(f"{path.name}: the PLY vertices have no nx ny nz properties; "
                         + _HOW_TO_GET_NORMALS)
    column = lambda k: np.asarray(vertex[k], dtype=np.float64).reshape(-1)  # noqa: E731
    xyz = np.stack([column(k) for k in ("x", "y", "z")], axis=1)
    return xyz, np.stack([column(k) for k in ("nx", "ny", "nz")], axis=1)


def _sample_mesh(path: Path, points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    if points < 1:
        raise InputError(f"--points: expected a positive number of samples, got {points}")
    mesh = read_mesh(path)
    if mesh.area <= 0:
        raise InputError(f"{path.name}: the mesh has zero surface area")
    xyz, face = trimesh.sample.sample_surface(mesh, points, seed=seed)
    return np.asarray(xyz, dtype=np.float64), np.asarray(mesh.face_normals[face], np.float64)


def _checked(xyz: np.ndarray, normals: np.ndarray, name: str) -> OrientedPoints:
    xyz, normals = np.asarray(xyz, np.float64), np.asarray(normals, np.float64)
    if not np.isfinite(xyz).all():
        rows = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
        raise InputError(f"{name}: {len(rows)} point(s) have NaN or infinite coordinates "
                         f"(first at row {rows[0]})")
    if not np.isfinite(normals).all():
        rows = np.flatnonzero(~np.isfinite(normals).all(axis=1))
        raise InputError(f"{name}: {len(rows)} normal(s) are NaN or infinite "
                         f"(first at row {rows[0]})")
    length = np.linalg.norm(normals, axis=1)
    if (length == 0).any():
        rows = np.flatnonzero(length == 0)
        raise InputError(f"{name}: {len(rows)} normal(s) have zero length "
                         f"(first at row {rows[0]})")
    centred = xyz - xyz.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False) if len(xyz) > 1 else np.zeros(1)
    if len(singular) < 2 or singular[0] == 0 or singular[1] <= DEGENERATE_RANK_TOL * singular[0]:
        shape = "all at one point" if len(singular) < 1 or singular[0] == 0 else "on one line"
        raise InputError(f"{name}: degenerate point cloud ({len(xyz)} points {shape}); a "
                         "surface needs points spread over two dimensions at least")
    return OrientedPoints(xyz, normals / length[:, None], name)
