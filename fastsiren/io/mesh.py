"""Reading triangle meshes (PLY, OBJ, OFF, STL through trimesh) with the checks the shape tasks
need: a mesh with faces, finite coordinates, and, where asked, a closed (watertight) surface.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, check_not_folder

__all__ = ["MESH_SUFFIXES", "read_mesh"]

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl")


def read_mesh(path: str | Path, watertight: bool = False):
    """The triangle mesh in ``path`` as a ``trimesh.Trimesh`` (scenes are concatenated).

    Raises ``InputError`` for a missing file, an extension trimesh cannot read as a mesh, a file
    that holds no faces (a point cloud), NaN or infinite vertices, and, with ``watertight=True``,
    a surface that is not closed (an inside/outside test needs one).
    """
    import trimesh

    path = Path(path)
    check_not_folder(path, "mesh file")
    if not path.is_file():
        raise InputError(f"mesh file {str(path)!r} does not exist")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise InputError(
            f"{path.name}: unsupported mesh extension {path.suffix!r}; expected one of "
            f"{', '.join(MESH_SUFFIXES)}"
        )
    try:
        loaded = trimesh.load(path, force="mesh", process=True)
    except Exception as exc:  # trimesh raises many kinds on a malformed file
        kind = path.suffix[1:].upper()
        raise InputError(f"{path.name}: not a readable {kind} mesh ({exc})") from None
    faces = getattr(loaded, "faces", None)
    if faces is None or len(faces) == 0:
        raise InputError(
            f"{path.name}: the file has no faces (a point cloud?); a mesh needs triangles"
        )
    if not np.isfinite(loaded.vertices).all():
        raise InputError(f"{path.name}: the mesh has NaN or infinite vertex coordinates")
    if watertight and not loaded.is_watertight:
        raise InputError(
            f"{path.name}: the mesh is not watertight (open boundary or non-manifold edges), so "
            "inside/outside is undefined; close it first (e.g. trimesh.repair.fill_holes, or "
            "MeshLab's 'Close Holes')"
        )
    return loaded
