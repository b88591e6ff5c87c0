"""How close an extracted mesh is to a reference surface: the standard evaluation of the SDF
papers, and the cost of the extraction.

Protocol (``compare_meshes``; ``fastsiren eval-mesh PRED GT`` prints the same numbers):

- The prediction is represented by ``samples`` points drawn uniformly on its area (trimesh,
  ``seed``), each with its face's normal. The reference is a mesh, represented the same way
  (``samples`` points, seed + 1), or an oriented point cloud, used as it is (SRB's protocol for
  scans: distances to the scan's points).
- Distances are Euclidean, from each sample to the nearest sample of the other set (a KD-tree),
  in the reference's units; each ``*_relative`` one is divided by the diagonal of the
  reference's bounding box (of its vertices, or of its points; squared distances by its
  square), the normalisation the tables of DiGS, StEik and Neural-Pull use to compare shapes
  of different sizes.
- ``pred_to_ref`` = mean distance from the prediction to the reference (the papers'
  "accuracy"), ``ref_to_pred`` = mean distance from the reference to the prediction (their
  "completeness"; SRB's one-sided distance to the scan), ``chamfer_l1`` = their mean,
  ``chamfer_l2`` = the mean of the two mean squared distances, ``hausdorff`` = the largest
  distance either way.
- ``fscore_0.5`` and ``fscore_1`` (tau = 0.5% and 1% of the diagonal): precision = the fraction
  of prediction samples within tau of the reference, recall = the fraction of reference samples
  within tau of the prediction, F = 2 P R / (P + R) (0 when both are 0).
- ``normal_consistency``: the mean cosine between a sample's normal and the normal of its
  nearest sample in the other set, both ways averaged; signed, so a flipped surface scores -1
  (Occupancy Networks average the absolute value, which hides flips).
- ``pieces``: connected components of the prediction (faces joined through shared vertices,
  after merging vertices at equal positions); ``watertight``: every edge shared by exactly two
  faces (trimesh).
- ``iou`` (only when both meshes are watertight, else None): volumetric intersection over union
  on ``iou_points`` points uniform in the reference's bounding box padded by 5% per side. A point
  is inside a mesh when it lies behind the face normal of the nearest of ``4 * samples`` samples
  drawn on it, which decides every point farther from the surface than the sample spacing
  (about sqrt(area / samples)); nearer ones are the only possible misses.

``mesh_metrics`` adds to these the names a fit run has always written: ``chamfer`` (the sum of
the two one-sided means, i.e. twice ``chamfer_l1``) and ``chamfer_relative``.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .mesh import Mesh

__all__ = ["FSCORE_THRESHOLDS", "compare_meshes", "count_pieces", "mesh_metrics", "mesh_stats"]

# F-score thresholds as fractions of the reference's bounding-box diagonal, with their names.
FSCORE_THRESHOLDS = {"fscore_0.5": 0.005, "fscore_1": 0.01}
# Each side of the IoU box is padded by this fraction of its length, so that the volume near
# the reference's extreme points is sampled from both sides.
IOU_PADDING = 0.05


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


def _as_trimesh(mesh, what: str):
    """A trimesh of ``mesh`` (a ``Mesh`` or a trimesh), checked: faces exist, every vertex is
    finite, the area is positive; else one-line ``InputError`` naming ``what``."""
    import trimesh

    tm = mesh.to_trimesh() if isinstance(mesh, Mesh) else mesh
    if not isinstance(tm, trimesh.Trimesh):
        raise InputError(f"{what}: expected a triangle mesh, got {type(mesh).__name__}")
    if len(tm.faces) == 0:
        raise InputError(f"{what}: the mesh has no faces")
    if not np.isfinite(tm.vertices).all():
        bad = int((~np.isfinite(tm.vertices).all(axis=1)).sum())
        raise InputError(f"{what}: {bad} vertex(es) have NaN or infinite coordinates")
    if not tm.area > 0:
        raise InputError(f"{what}: the mesh has zero surface area")
    return tm


def _oriented_samples(tm, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    points, face = trimesh.sample.sample_surface(tm, samples, seed=seed)
    return np.asarray(points, np.float64), np.asarray(tm.face_normals[face], np.float64)


def count_pieces(tm) -> int:
    """Connected components of a mesh's faces (joined through shared vertices, after merging
    vertices at equal positions)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(tm.faces) == 0:
        return 0
    _, index = np.unique(np.asarray(tm.vertices), axis=0, return_inverse=True)
    faces = index.reshape(-1)[np.asarray(tm.faces)]
    used = np.unique(faces)
    remap = np.full(int(faces.max()) + 1, -1)
    remap[used] = np.arange(len(used))
    f = remap[faces]
    rows = np.concatenate([f[:, 0], f[:, 1]])
    cols = np.concatenate([f[:, 1], f[:, 2]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(used), len(used)))
    return int(connected_components(graph, directed=False)[0])


def _inside(points: np.ndarray, tm, samples: int, seed: int) -> np.ndarray:
    """Whether each point lies behind the face normal of the nearest of ``samples`` points
    drawn on ``tm`` (module docstring: exact beyond the sample spacing)."""
    from scipy.spatial import cKDTree

    surface, normals = _oriented_samples(tm, samples, seed)
    _, nearest = cKDTree(surface).query(points, workers=-1)
    return ((points - surface[nearest]) * normals[nearest]).sum(-1) < 0


def compare_meshes(pred, reference, samples: int = 100_000, seed: int = 0,
                   iou_points: int = 100_000) -> dict:
    """The standard evaluation of ``pred`` (a ``Mesh`` or trimesh) against ``reference``: a mesh,
    or oriented points ``(points [N, 3], normals [N, 3])`` (the protocol is the module
    docstring). Raises ``InputError`` for a mesh without faces, non-finite vertices or a point
    cloud without normals."""
    from scipy.spatial import cKDTree

    pred_tm = _as_trimesh(pred, "predicted mesh")
    if isinstance(reference, tuple):
        if len(reference) != 2 or reference[1] is None:
            raise InputError("reference point cloud: expected (points, normals); the points "
                             "have no normals")
        ref_points, ref_normals = (np.asarray(a, np.float64) for a in reference)
        if ref_points.ndim != 2 or ref_points.shape[1] != 3 or ref_normals.shape != \
                ref_points.shape:
            raise InputError("reference point cloud: expected points [N, 3] and normals [N, 3],"
                             f" got {ref_points.shape} and {ref_normals.shape}")
        if not (np.isfinite(ref_points).all() and np.isfinite(ref_normals).all()):
            raise InputError("reference point cloud: NaN or infinite values")
        ref_tm = None
    else:
        ref_tm = _as_trimesh(reference, "reference mesh")
        ref_points, ref_normals = _oriented_samples(ref_tm, samples, seed + 1)
    pred_points, pred_normals = _oriented_samples(pred_tm, samples, seed)
    lo, hi = (ref_tm.bounds if ref_tm is not None
              else (ref_points.min(axis=0), ref_points.max(axis=0)))
    diagonal = float(np.linalg.norm(np.asarray(hi) - np.asarray(lo)))

    to_ref, nearest_ref = cKDTree(ref_points).query(pred_points)
    to_pred, nearest_pred = cKDTree(pred_points).query(ref_points)
    pred_to_ref, ref_to_pred = float(to_ref.mean()), float(to_pred.mean())
    out = {
        "pred_to_ref": pred_to_ref, "ref_to_pred": ref_to_pred,
        "chamfer_l1": 0.5 * (pred_to_ref + ref_to_pred),
        "chamfer_l2": 0.5 * float(np.square(to_ref).mean() + np.square(to_pred).mean()),
        "hausdorff": float(max(to_ref.max(), to_pred.max())),
    }
    for name in list(out):
        power = 2 if name == "chamfer_l2" else 1
        out[f"{name}_relative"] = out[name] / diagonal**power
    for name, fraction in FSCORE_THRESHOLDS.items():
        tau = fraction * diagonal
        precision, recall = float((to_ref < tau).mean()), float((to_pred < tau).mean())
        total = precision + recall
        out[name] = 2 * precision * recall / total if total > 0 else 0.0
    out["normal_consistency"] = float(0.5 * (
        (pred_normals * ref_normals[nearest_ref]).sum(-1).mean()
        + (ref_normals * pred_normals[nearest_pred]).sum(-1).mean()))
    out["pieces"] = count_pieces(pred_tm)
    out["watertight"] = bool(pred_tm.is_watertight)
    out["iou"] = None
    if ref_tm is not None and ref_tm.is_watertight and out["watertight"]:
        lo, hi = ref_tm.bounds
        pad = IOU_PADDING * (hi - lo)
        rng = np.random.default_rng(seed + 2)
        query = rng.uniform(lo - pad, hi + pad, size=(iou_points, 3))
        a = _inside(query, pred_tm, 4 * samples, seed + 3)
        b = _inside(query, ref_tm, 4 * samples, seed + 4)
        union = int((a | b).sum())
        out["iou"] = float((a & b).sum() / union) if union else None
    out["diagonal"] = diagonal
    return out


def mesh_metrics(mesh: Mesh, points: np.ndarray, normals: np.ndarray | None = None,
                 samples: int = 100_000, seed: int = 0, reference=None) -> dict:
    """``compare_meshes`` of ``mesh`` against ``reference`` (a mesh) if given, else against the
    oriented ``points``, plus ``chamfer`` (the sum of the two one-sided means) and
    ``chamfer_relative``. An empty mesh gets ``None`` distances, ``pieces = 0`` and
    ``watertight = False``."""
    if len(mesh.faces) == 0:
        return {"chamfer": None, "chamfer_relative": None, "normal_consistency": None,
                "pieces": 0, "watertight": False}
    out = compare_meshes(mesh, reference if reference is not None else (points, normals),
                         samples, seed)
    out["chamfer"] = 2 * out["chamfer_l1"]
    out["chamfer_relative"] = 2 * out["chamfer_l1_relative"]
    return out
