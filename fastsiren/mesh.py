"""Meshes from fields: chunked and coarse-to-fine marching cubes (the ``mesh`` extra).

A field is any callable that maps points ``x [M, 3]`` (a float32 tensor) to values ``[M]`` or
``[M, 1]``: a ``fastsiren.Siren``, or a plain function. Its level set ``{x : f(x) = level}`` is
extracted on the grid of ``resolution`` points per axis spanning ``bounds`` (both ends included,
as the official ``sdf_meshing.create_mesh``: spacing ``h = (hi - lo) / (resolution - 1)``), by
marching cubes (PyMCubes), and written with trimesh. Level 0 for a signed distance function
(inside negative), 0.5 for an occupancy probability (inside above).

Two modes produce the same triangles:

- **dense**: the field on every grid point, evaluated in chunks of ``chunk_points`` points into
  one float32 volume (``4 N^3`` bytes: 512 MiB at 512^3, 4 GiB at 1024^3), then one marching-
  cubes pass. Memory grows with the volume; a resolution that cannot fit is refused up front
  with the number of bytes it needs.
- **coarse-to-fine**: the grid's cells are grouped into leaf blocks of ``block^3`` cells, and the
  blocks into an octree. At every level the field is evaluated once at each node's centre ``c``;
  a node whose centre value is farther from the level than the field can change over the node,

      |f(c) - level| > lipschitz * r,     r = half the node's diagonal,

  contains no point of the level set (``|f(x) - f(c)| <= lipschitz * |x - c|``), hence no cell
  with a sign change, and is dropped; the others are split into 8 children. Only the surviving
  leaf blocks are evaluated on their ``(block + 1)^3`` grid points and meshed, one marching-cubes
  call each; the pieces are welded by grid edge (a marching-cubes vertex lies on one grid edge,
  and blocks that share the edge compute it from the same two values). Evaluations and memory
  grow with the surface, not the volume.

  ``lipschitz`` bounds ``|grad f|``: 1 for an exact SDF. A SIREN trained with the eikonal loss
  holds ``|grad f| ~ 1`` where it was trained and only roughly elsewhere, hence the margin of
  the default (1.5). An occupancy field has no such bound (its value jumps from 0 to 1 across
  the surface): coarse-to-fine refuses ``lipschitz=None`` and the dense mode is the one to use.

After marching cubes, ``project_to_level_set`` moves vertices onto the level set by Newton steps
along the field's gradient (sub-voxel vertices from a coarse grid), and ``mean_curvature`` gives
the mean curvature of the level set at any points (per-vertex colouring); both take a ``Siren``'s
analytic jet, or autograd through any other callable.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write, check_output_file
from .deps import require
from .errors import InputError

__all__ = [
    "MESH_FORMATS",
    "Mesh",
    "available_memory",
    "check_mesh_memory",
    "check_mesh_path",
    "dense_volume",
    "evaluate_field",
    "extract_mesh",
    "mean_curvature",
    "plan_coarse_to_fine",
    "project_to_level_set",
    "save_mesh",
]

Field = Callable[[torch.Tensor], torch.Tensor]

# Points per field call: at most 2^16 points x 256 features x 4 B = 64 MiB per activation for a
# field that keeps whole layers (a Siren's own cache-sized chunking stays far below that).
DEFAULT_CHUNK_POINTS = 2**16
# Leaf blocks of 8^3 cells: (8 + 1)^3 / 8^3 = 1.42 evaluations per cell, and few enough blocks
# that the per-block marching-cubes call stays a small part of the time.
DEFAULT_BLOCK = 8
# The octree's top level has at most this many nodes per axis.
TOP_NODES_PER_AXIS = 16
# Bytes per grid point in the dense mode: the float32 volume (PyMCubes reads float32 in place).
DENSE_BYTES_PER_POINT = 4
# Bytes per leaf block of the coarse-to-fine descent when every block is a candidate: its node
# triples, their children and the cell bounds and centres computed from them (int64/float64).
COARSE_TO_FINE_BYTES_PER_LEAF = 160
MESH_FORMATS = (".ply", ".obj", ".stl", ".off")


@dataclass
class Mesh:
    """A triangle mesh in field coordinates, with what it cost to extract.

    ``vertices [V, 3]`` float64, ``faces [F, 3]`` int64, oriented with normals pointing out of
    the inside region; ``stats`` holds ``mode``, ``resolution``, ``level``, ``evaluations``
    (field values computed), ``dense_evaluations`` (``resolution^3``), ``seconds`` and, for
    coarse-to-fine, ``leaf_blocks`` and ``leaf_blocks_total``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    stats: dict = dataclass_field(default_factory=dict)
    vertex_values: dict[str, np.ndarray] = dataclass_field(default_factory=dict)

    def to_trimesh(self):
        """A trimesh; each of ``vertex_values`` (one number per vertex, e.g. the mean curvature)
        becomes a vertex attribute, written as a PLY vertex property of that name."""
        import trimesh

        mesh = trimesh.Trimesh(self.vertices, self.faces, process=False)
        for name, values in self.vertex_values.items():
            mesh.vertex_attributes[name] = np.asarray(values, dtype=np.float32)
        return mesh

    def transformed(self, scale: float, offset: np.ndarray) -> Mesh:
        """The mesh under ``x -> x * scale + offset`` (orientation kept: ``scale > 0``); vertex
        values are carried over unchanged (a curvature must be divided by ``scale`` by its
        owner)."""
        return Mesh(self.vertices * scale + np.asarray(offset), self.faces, dict(self.stats),
                    dict(self.vertex_values))


def _field_device(field: Field, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(field, torch.nn.Module):
        for parameter in field.parameters():
            return parameter.device
    return torch.device("cpu")


@contextlib.contextmanager
def _frozen(field: Field):
    """A module field's parameters marked as needing no gradient while it is evaluated (restored
    after): the engine then keeps nothing for a backward and skips the cosines only a backward
    reads (median CPU time per 2^15 points at 3->256x3->1 on the shared 2-core EPYC: 1.42 -> 1.06
    s)."""
    if not isinstance(field, torch.nn.Module):
        yield
        return
    flags = [(p, p.requires_grad) for p in field.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def evaluate_field(
    field: Field,
    points: torch.Tensor,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """``field`` at ``points [M, 3]`` in chunks, without autograd: float32 values ``[M]``.

    Raises ``InputError`` if the field returns the wrong shape or a NaN (a broken checkpoint).
    """
    device = _field_device(field, device)
    out = np.empty(points.shape[0], dtype=np.float32)
    with torch.no_grad(), _frozen(field):
        for start in range(0, points.shape[0], chunk_points):
            x = points[start : start + chunk_points].to(device=device, dtype=torch.float32)
            values = torch.as_tensor(field(x))
            if values.shape not in ((x.shape[0],), (x.shape[0], 1)):
                raise InputError(
                    f"a field maps points [M, 3] to values [M] or [M, 1]; got {tuple(values.shape)}"
                    f" for M = {x.shape[0]}"
                )
            out[start : start + x.shape[0]] = values.reshape(-1).float().cpu().numpy()
    bad = np.isnan(out).sum()
    if bad:
        raise InputError(f"the field returned NaN at {bad} of {out.size} points")
    return out


def _grid_points(index, lo: float, h: float) -> torch.Tensor:
    """Coordinates of grid points given by integer indices (one formula for both modes, so a
    point gets the same float32 coordinates whichever mode evaluates it)."""
    return torch.as_tensor(lo + h * np.asarray(index, dtype=np.float64))


def available_memory(device: str | torch.device | None = None) -> int | None:
    """Bytes that can still be allocated: free memory of a CUDA ``device``, else what the system
    can still give (Linux ``MemAvailable``); None where unknown."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def dense_volume(
    field: Field,
    resolution: int,
    bounds: tuple[float, float] = (-1.0, 1.0),
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """The field on the full grid: float32 ``[N, N, N]`` with ``volume[i, j, k] = f(x_i, y_j,
    z_k)``, filled chunk by chunk (coordinates are built per chunk, never for the whole grid)."""
    n = resolution
    lo, h = bounds[0], (bounds[1] - bounds[0]) / (n - 1)
    volume = np.empty((n, n, n), dtype=np.float32)
    flat = volume.reshape(-1)
    for start in range(0, n**3, chunk_points):
        index = np.arange(start, min(start + chunk_points, n**3))
        i, jk = index // (n * n), index % (n * n)
        points = _grid_points(np.stack([i, jk // n, jk % n], axis=1), lo, h)
        flat[start : start + len(index)] = evaluate_field(field, points, chunk_points, device)
    return volume


def check_mesh_memory(resolution: int, coarse_to_fine: bool = False, block: int = DEFAULT_BLOCK,
                      memory_limit: int | None = None) -> None:
    """An InputError with the bytes needed when meshing at ``resolution`` may not fit in
    ``memory_limit`` (default: what the system has available); call it before the work that
    leads to the mesh. Dense: the float32 volume. Coarse-to-fine: its worst case, every leaf
    block a candidate, ``COARSE_TO_FINE_BYTES_PER_LEAF`` for the descent's arrays of each."""
    if coarse_to_fine:
        leaves = math.ceil((resolution - 1) / block) ** 3
        need, what = COARSE_TO_FINE_BYTES_PER_LEAF * leaves, (
            f"coarse-to-fine at {resolution}^3 may need {{need}} ({leaves} leaf blocks of "
            f"{block}^3 cells, all candidates at worst)")
        advice = "lower the resolution or raise --block"
    else:
        need, what = DENSE_BYTES_PER_POINT * resolution**3, (
            f"a dense {resolution}^3 grid needs {{need}} for its values")
        advice = "lower the resolution or mesh coarse-to-fine"
    limit = memory_limit if memory_limit is not None else available_memory()
    if limit is not None and need > limit:
        raise InputError(f"{what.format(need=_gib(need))} and {_gib(limit)} is available: "
                         f"{advice}")


def _check_arguments(resolution, level, bounds, block, lipschitz, coarse_to_fine, inside):
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise InputError(f"resolution must be an integer >= 2, got {resolution!r}")
    if resolution > 2**20:
        raise InputError(f"resolution must be at most 2^20, got {resolution}")
    if not math.isfinite(level):
        raise InputError(f"level must be finite, got {level}")
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"bounds must be two finite numbers lo < hi, got {bounds}")
    if inside not in ("below", "above"):
        raise InputError(f"inside must be 'below' (an SDF) or 'above' (occupancy), got {inside!r}")
    if coarse_to_fine:
        if lipschitz is None or not (lipschitz > 0 and math.isfinite(lipschitz)):
            raise InputError(
                "coarse-to-fine meshing needs a bound on |grad f| (lipschitz > 0, 1 for a "
                f"signed distance function), got {lipschitz!r}; mesh this field densely"
            )
        if not isinstance(block, int) or block < 1:
            raise InputError(f"block must be a positive integer, got {block!r}")
    return lo, hi


def extract_mesh(
    field: Field,
    resolution: int = 256,
    level: float = 0.0,
    bounds: tuple[float, float] = (-1.0, 1.0),
    coarse_to_fine: bool = False,
    lipschitz: float | None = 1.5,
    block: int = DEFAULT_BLOCK,
    inside: str = "below",
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    device: str | torch.device | None = None,
    memory_limit: int | None = None,
) -> Mesh:
    """The ``level`` set of ``field`` on a ``resolution^3`` grid over ``bounds^3``.

    Args:
        field: callable ``x [M, 3] -> [M]`` or ``[M, 1]`` (a ``Siren``: evaluated on its device).
        level: 0 for an SDF, 0.5 for occupancy.
        coarse_to_fine: refine only blocks the Lipschitz bound cannot rule out (module docstring).
        lipschitz: bound on ``|grad f|`` used by coarse-to-fine.
        block: cells per axis of a coarse-to-fine leaf block.
        inside: "below" if the inside has values below the level (SDF), "above" (occupancy);
            faces are oriented with normals pointing outside.
        memory_limit: bytes the dense volume may take (default: what the system has available);
            a dense grid larger than that raises ``InputError`` with the size it needs.

    Returns a ``Mesh`` in field coordinates (empty if the level set misses the grid).
    """
    lo, hi = _check_arguments(resolution, level, bounds, block, lipschitz, coarse_to_fine, inside)
    check_mesh_memory(resolution, coarse_to_fine, block, memory_limit)
    require("mesh", "extract_mesh")  # before the field's evaluations, not after
    start = time.perf_counter()
    if coarse_to_fine:
        vertices, faces, stats = _coarse_to_fine(
            field, resolution, level, (lo, hi), lipschitz, block, chunk_points, device
        )
    else:
        import mcubes

        volume = dense_volume(field, resolution, (lo, hi), chunk_points, device)
        vertices, faces = mcubes.marching_cubes(volume, float(level))
        del volume
        faces = faces.astype(np.int64)
        stats = {"evaluations": resolution**3}
    h = (hi - lo) / (resolution - 1)
    vertices = lo + vertices * h
    if inside == "below":
        faces = faces[:, ::-1]  # PyMCubes orients normals towards higher values
    stats.update(
        mode="coarse_to_fine" if coarse_to_fine else "dense",
        resolution=resolution,
        level=float(level),
        bounds=[lo, hi],
        dense_evaluations=resolution**3,
        seconds=time.perf_counter() - start,
    )
    return Mesh(np.ascontiguousarray(vertices), np.ascontiguousarray(faces), stats)


def _octree_levels(leaves_per_axis: int) -> int:
    """Number of halvings from the top level (at most TOP_NODES_PER_AXIS nodes per axis) to the
    leaf blocks."""
    levels = 0
    while math.ceil(leaves_per_axis / 2**levels) > TOP_NODES_PER_AXIS:
        levels += 1
    return levels


def plan_coarse_to_fine(
    field: Field,
    resolution: int,
    level: float = 0.0,
    bounds: tuple[float, float] = (-1.0, 1.0),
    lipschitz: float = 1.5,
    block: int = DEFAULT_BLOCK,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    device: str | torch.device | None = None,
) -> dict:
    """What coarse-to-fine meshing at ``resolution`` would cost, from the octree descent alone
    (a small fraction of the work): the leaf blocks it keeps and the field evaluations of the
    descent, of the leaves and in all, beside ``resolution^3`` for the dense grid."""
    lo, hi = _check_arguments(resolution, level, bounds, block, lipschitz, True, "below")
    leaves, descent = _descend(field, resolution, level, (lo, hi), lipschitz, block, chunk_points,
                               device)
    leaf_evaluations = len(leaves) * (block + 1) ** 3
    return {
        "resolution": resolution, "block": block, "lipschitz": float(lipschitz),
        "leaf_blocks": int(len(leaves)),
        "leaf_blocks_total": math.ceil((resolution - 1) / block) ** 3,
        "descent_evaluations": descent, "leaf_evaluations": leaf_evaluations,
        "evaluations": descent + leaf_evaluations, "dense_evaluations": resolution**3,
        "evaluations_saved": 1 - (descent + leaf_evaluations) / resolution**3,
    }


def _coarse_to_fine(field, resolution, level, bounds, lipschitz, block, chunk_points, device):
    """Octree descent to the leaf blocks that may hold the level set, then marching cubes per
    leaf, welded by grid edge. Returns (vertices in grid-index units, faces, stats)."""
    lo, hi = bounds
    h = (hi - lo) / (resolution - 1)
    cells = resolution - 1
    leaves_per_axis = math.ceil(cells / block)
    nodes, evaluations = _descend(field, resolution, level, bounds, lipschitz, block,
                                  chunk_points, device)
    vertices, faces, evaluated = _mesh_leaf_blocks(
        field, nodes, block, cells, level, lo, h, chunk_points, device
    )
    stats = {
        "evaluations": evaluations + evaluated,
        "leaf_blocks": int(len(nodes)),
        "leaf_blocks_total": leaves_per_axis**3,
        "block": block,
        "lipschitz": float(lipschitz),
    }
    return vertices, faces, stats


def _descend(field, resolution, level, bounds, lipschitz, block, chunk_points, device):
    """The octree descent: (leaf blocks [L, 3] that may hold the level set, evaluations)."""
    lo, hi = bounds
    h = (hi - lo) / (resolution - 1)
    cells = resolution - 1
    leaves_per_axis = math.ceil(cells / block)
    depth = _octree_levels(leaves_per_axis)
    evaluations = 0

    # Nodes are integer triples; a node of group size g covers leaf blocks [idx g, (idx + 1) g)
    # per axis, i.e. cells [idx g B, min((idx + 1) g B, cells)).
    group = 2**depth
    top = math.ceil(leaves_per_axis / group)
    nodes = np.stack(np.meshgrid(*[np.arange(top)] * 3, indexing="ij"), -1).reshape(-1, 3)
    children = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    while True:
        cell_lo = nodes * group * block
        cell_hi = np.minimum((nodes + 1) * group * block, cells)
        centres = lo + h * 0.5 * (cell_lo + cell_hi)
        radius = 0.5 * h * np.linalg.norm(cell_hi - cell_lo, axis=1)
        values = evaluate_field(field, torch.from_numpy(centres), chunk_points, device)
        evaluations += len(nodes)
        nodes = nodes[np.abs(values.astype(np.float64) - level) <= lipschitz * radius]
        if group == 1 or len(nodes) == 0:
            break
        group //= 2
        nodes = (nodes[:, None, :] * 2 + children[None]).reshape(-1, 3)
        nodes = nodes[(nodes * group < leaves_per_axis).all(axis=1)]
    return nodes, evaluations


def _mesh_leaf_blocks(field, leaves, block, cells, level, lo, h, chunk_points, device):
    """Marching cubes on each leaf block's ``(block + 1)^3`` grid points (clipped at the grid's
    end), the pieces welded into one mesh. Returns (vertices in grid units, faces, evaluations)."""
    import mcubes

    side = block + 1
    offsets = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    per_batch = max(1, chunk_points // side**3)
    keys, positions, faces = [], [], []
    n_vertices = 0
    evaluations = 0
    for first in range(0, len(leaves), per_batch):
        batch = leaves[first : first + per_batch] * block  # first grid point of each leaf
        index = np.minimum(batch[:, None, :] + offsets[None], cells).reshape(-1, 3)
        values = evaluate_field(field, _grid_points(index, lo, h), chunk_points, device)
        values = values.reshape(len(batch), side, side, side)
        evaluations += values.size
        for origin, block_values in zip(batch, values):
            extent = np.minimum(origin + block, cells) - origin + 1
            v, f = mcubes.marching_cubes(
                np.ascontiguousarray(block_values[: extent[0], : extent[1], : extent[2]]),
                float(level),
            )
            if len(f) == 0:
                continue
            keys.append(_edge_keys(v, origin))
            positions.append(v + origin)
            faces.append(f.astype(np.int64) + n_vertices)
            n_vertices += len(v)
    if not faces:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), evaluations
    keys = np.concatenate(keys)
    unique, first_index, remap = np.unique(keys, return_index=True, return_inverse=True)
    faces = remap.reshape(-1)[np.concatenate(faces)]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
                  & (faces[:, 0] != faces[:, 2])]
    return np.concatenate(positions)[first_index], faces, evaluations


def _edge_keys(vertices: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """One int64 per marching-cubes vertex naming the grid edge it lies on: the edge's lower grid
    point (20 bits per axis) and its axis (0-2, or 3 for a vertex exactly on a grid point)."""
    base = np.floor(vertices)
    fractional = vertices != base
    axis = np.where(fractional.any(axis=1), fractional.argmax(axis=1), 3)
    point = base.astype(np.int64) + origin
    return ((point[:, 0] << 42) | (point[:, 1] << 22) | (point[:, 2] << 2) | axis).astype(np.int64)



def _gradient(field: Field, x: torch.Tensor, order: int = 1):
    """(value [M], gradient [M, 3], Laplacian [M] or None) of ``field`` at ``x``: from the jet
    of a field that has one (a ``Siren``: the analytic order-1 or order-2 jet), else by autograd
    through the callable (plain functions, ``Sequential(model, Sigmoid)``)."""
    if hasattr(field, "jet"):
        jet = field.jet(x, order=order)
        lap = jet.lap.reshape(-1) if order == 2 else None
        return jet.value.reshape(-1), jet.grad.reshape(-1, x.shape[-1]), lap
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = torch.as_tensor(field(x)).reshape(-1)
        (grad,) = torch.autograd.grad(value.sum(), x, create_graph=order == 2)
        lap = None
        if order == 2:
            lap = sum(torch.autograd.grad(grad[:, i].sum(), x, retain_graph=True)[0][:, i]
                      for i in range(x.shape[-1]))
        return value.detach(), grad.detach(), None if lap is None else lap.detach()


def project_to_level_set(
    field: Field,
    vertices: np.ndarray,
    level: float = 0.0,
    steps: int = 3,
    max_move: float | None = None,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """``vertices`` moved onto ``{f = level}`` by Newton steps along the gradient,

        x <- x - (f(x) - level) grad f(x) / |grad f(x)|^2,

    ``steps`` times (float64 in, float64 out; the field runs in float32). Marching cubes puts
    each vertex where the linear interpolation of the two grid values along its edge crosses
    the level, off the true surface by O(h^2 |f''|) for grid spacing h; one Newton step on a
    field with a nonzero gradient reduces that to O(|f - level|^2 |f''| / |grad f|^3), so a
    128^3 grid gives vertices as accurate as a much finer one (the triangles between them
    still chord the surface). Each step moves a vertex at most ``max_move`` (the grid spacing
    is the natural bound: a marching-cubes vertex lies on a grid edge that the level set
    crosses); a vertex where the gradient vanishes stays where it is.
    """
    device = _field_device(field, device)
    x_all = np.array(vertices, dtype=np.float64, copy=True)
    with _frozen(field):
        for start in range(0, len(x_all), chunk_points):
            x = torch.as_tensor(x_all[start : start + chunk_points], device=device)
            for _ in range(steps):
                with torch.no_grad() if hasattr(field, "jet") else contextlib.nullcontext():
                    value, grad, _ = _gradient(field, x.float())
                value, grad = value.double(), grad.double()
                norm2 = grad.square().sum(-1)
                move = torch.where(norm2[:, None] > 0,
                                   -((value - level) / norm2.clamp_min(1e-30))[:, None] * grad,
                                   torch.zeros_like(grad))
                if max_move is not None:
                    length = move.norm(dim=-1, keepdim=True)
                    move = move * (max_move / length.clamp_min(max_move))
                x = x + move
            x_all[start : start + chunk_points] = x.cpu().numpy()
    return x_all


def mean_curvature(
    field: Field,
    points: np.ndarray,
    step: float = 1e-3,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """The mean curvature of the level set of ``field`` through each of ``points [M, 3]``:

        H = div(n) / 2 = (lap f - n^T (Hess f) n) / (2 |grad f|),     n = grad f / |grad f|,

    positive where the surface bends away from its outward normal (a sphere of radius R: 1/R
    with f increasing outwards). ``lap f`` is the trace of the Hessian from the order-2 jet (a
    ``Siren``; autograd for a plain callable); the normal-normal second derivative comes from a
    central difference of the gradient along n,

        n^T (Hess f) n = (grad f(x + s n) - grad f(x - s n)) . n / (2 s) + O(s^2),

    so the mixed second derivatives are never formed (the engine's order-2 jet holds the
    Hessian's trace and diagonal only). ``step`` s is in the field's coordinates: 1e-3 of a
    [-1, 1] cube keeps the O(s^2 f'''') error near 1e-4 relative for a SIREN at omega_0 = 30
    and the float32 round-off (~1e-7 |grad f| / s) below it. Float64 array [M].
    """
    device = _field_device(field, device)
    out = np.empty(len(points), dtype=np.float64)
    with _frozen(field), torch.no_grad() if hasattr(field, "jet") else contextlib.nullcontext():
        for start in range(0, len(points), chunk_points):
            x = torch.as_tensor(points[start : start + chunk_points], dtype=torch.float32,
                                device=device)
            _, grad, lap = _gradient(field, x, order=2)
            norm = grad.norm(dim=-1).clamp_min(1e-12)
            n = grad / norm[:, None]
            _, grad_plus, _ = _gradient(field, x + step * n)
            _, grad_minus, _ = _gradient(field, x - step * n)
            normal_second = ((grad_plus - grad_minus) * n).sum(-1) / (2 * step)
            out[start : start + len(x)] = ((lap - normal_second) / (2 * norm)).double().cpu()
    return out


def check_mesh_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if a mesh can be written there (known extension, existing folder),
    else ``InputError``: call it before a long extraction, not after."""
    path = Path(path)
    if path.suffix.lower() not in MESH_FORMATS:
        raise InputError(
            f"mesh output must end in one of {', '.join(MESH_FORMATS)}, got {path.name!r}"
        )
    check_output_file(path, f"mesh output {str(path)!r}")
    return path


def save_mesh(mesh: Mesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` as PLY, OBJ, STL or OFF (by extension) with trimesh, atomically: the file
    appears complete or not at all, and an existing file is replaced only on success."""
    path = check_mesh_path(path)
    data = mesh.to_trimesh().export(file_type=path.suffix.lower()[1:])
    if isinstance(data, str):
        data = data.encode()
    with atomic_write(path) as tmp:  # with the umask's permissions, as every other output
        tmp.write_bytes(data)
    return path
