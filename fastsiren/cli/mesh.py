"""`fastsiren mesh`: the surface of a fitted sdf or occupancy run, as a mesh file.

    fastsiren mesh RUN [--resolution N] [--out mesh.ply] [--coarse-to-fine] [--lipschitz L]
                       [--block B] [--device cpu|cuda] [--normalized]

RUN is a run folder (``fastsiren fit sdf --out RUN``) or its checkpoint file. The grid covers
[-1.02, 1.02]^3 in network units, as the fit's own mesh. The level is the task's (0 for sdf, 0.5
for occupancy); the mesh goes back into the input's units through the
run's ``normalization.json`` unless ``--normalized``. Prints one JSON line: the file, its size,
the field evaluations and the time.
"""

from __future__ import annotations

import argparse
import json


def _mesh(args: argparse.Namespace) -> int:
    import numpy as np

    from ..deps import require
    from ..errors import InputError
    from ..mesh import check_mesh_path, extract_mesh, save_mesh
    from ..tasks.shapes import MESH_HALF_EXTENT, load_shape_field

    require("mesh", "fastsiren mesh")
    check_mesh_path(args.out)

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: CUDA is not available here")
    field, level, inside, normalization = load_shape_field(args.run, args.device)
    if args.coarse_to_fine and level != 0.0:
        raise InputError("--coarse-to-fine relies on a signed distance (sdf runs); an occupancy "
                         "field has no such bound: mesh it without --coarse-to-fine")
    mesh = extract_mesh(
        field, args.resolution, level=level, inside=inside, coarse_to_fine=args.coarse_to_fine,
        lipschitz=args.lipschitz, block=args.block,
        bounds=(-MESH_HALF_EXTENT, MESH_HALF_EXTENT),
    )
    if normalization is not None and not args.normalized:
        mesh = mesh.transformed(normalization.scale, np.asarray(normalization.offset))
    path = save_mesh(mesh, args.out)
    stats = mesh.stats
    print(json.dumps({
        "mesh": str(path), "vertices": len(mesh.vertices), "faces": len(mesh.faces),
        "units": "input" if normalization is not None and not args.normalized else "network",
        "mode": stats["mode"], "resolution": stats["resolution"], "level": level,
        "evaluations": stats["evaluations"],
        "evaluations_saved": 1 - stats["evaluations"] / stats["dense_evaluations"],
        "seconds": round(stats["seconds"], 3),
    }))
    return 0


def register(sub) -> None:
    mesh = sub.add_parser(
        "mesh", help="mesh the surface of a fitted sdf or occupancy run",
        description="Extract the level set of a fitted sdf (level 0) or occupancy (level 0.5) "
        "field with marching cubes and write it as PLY, OBJ, STL or OFF.",
    )
    mesh.add_argument("run", metavar="RUN", help="run folder or checkpoint file of a fit")
    mesh.add_argument("--resolution", type=int, default=256,
                      help="grid points per axis (default 256)")
    mesh.add_argument("--out", default="mesh.ply", help="output file: .ply, .obj, .stl or .off")
    mesh.add_argument("--coarse-to-fine", action="store_true",
                      help="evaluate only blocks near the surface (sdf runs; memory grows with "
                      "the surface, not the volume)")
    mesh.add_argument("--lipschitz", type=float, default=1.5,
                      help="bound on |grad f| that --coarse-to-fine relies on (default 1.5)")
    mesh.add_argument("--block", type=int, default=8,
                      help="cells per axis of a coarse-to-fine leaf block (default 8)")
    mesh.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    mesh.add_argument("--normalized", action="store_true",
                      help="keep the network's [-1, 1] coordinates instead of the input's units")
    mesh.set_defaults(func=_mesh)
