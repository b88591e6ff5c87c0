"""`fastsiren eval-mesh`: the standard evaluation of a mesh against a reference surface.

    fastsiren eval-mesh PRED GT [--samples N] [--seed S]

PRED is a mesh file (PLY, OBJ, OFF, STL); GT is a mesh file, or an oriented point cloud (``.xyz``
rows x y z nx ny nz, or a PLY point cloud with normals) such as a scan. Prints one JSON line:
Chamfer L1 and squared, Hausdorff, the two one-sided mean distances (absolute, in GT's units, and
relative to GT's bounding-box diagonal), F-scores at 0.5% and 1% of the diagonal, normal
consistency, the number of connected pieces, watertightness, and volumetric IoU when both are
watertight meshes. The protocol (samples, normalisation, inside test) is
``fastsiren.mesh_metrics``'s docstring.
"""

from __future__ import annotations

import argparse
import json


def _eval_mesh(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..io.mesh import read_mesh
    from ..io.pointcloud import read_oriented_points
    from ..mesh_metrics import compare_meshes

    if args.samples < 1:
        raise InputError(f"--samples: expected a positive number, got {args.samples}")
    gt = Path(args.gt)
    pred = read_mesh(args.pred)
    if not gt.is_file():
        raise InputError(f"reference file {str(gt)!r} does not exist")
    suffix = gt.suffix.lower()
    if suffix == ".xyz":
        reference = read_oriented_points(gt)
    else:
        try:
            reference = read_mesh(gt)
        except InputError:
            if suffix != ".ply":
                raise
            # A PLY without faces is a point cloud; reading it as one names what it lacks.
            reference = read_oriented_points(gt)
    if not hasattr(reference, "faces"):
        reference = (reference.points, reference.normals)
    metrics = compare_meshes(pred, reference, args.samples, args.seed)
    print(json.dumps({"pred": args.pred, "gt": args.gt, **metrics}))
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "eval-mesh", help="Chamfer, Hausdorff, F-score, normal consistency, pieces, IoU of a mesh",
        description="Compare a mesh with a reference mesh or oriented point cloud the way the "
        "SDF papers report it (fastsiren.mesh_metrics); prints one JSON line.",
    )
    parser.add_argument("pred", metavar="PRED", help="the mesh to evaluate (.ply .obj .off .stl)")
    parser.add_argument("gt", metavar="GT", help="the reference: a mesh, or an oriented point "
                        "cloud (.xyz x y z nx ny nz, PLY with normals)")
    parser.add_argument("--samples", type=int, default=100_000,
                        help="points drawn on each mesh (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    parser.set_defaults(func=_eval_mesh)
