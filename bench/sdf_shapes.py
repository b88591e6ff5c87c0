"""The SDF task on several shapes, per loss: the standard metrics of the raw level set and of the
same mesh with its vertices projected onto the level set.

    python bench/sdf_shapes.py SHAPE [SHAPE ...] --out DIR [--losses official regularized]
        [--official-steps N] [--json PATH] [-- FIT OPTIONS]

Each SHAPE is a mesh (the reference for the metrics; 15,000 oriented points are sampled on it,
the task's ``points``) or an oriented point cloud (its points are the reference). Every run is
``fastsiren fit sdf SHAPE --loss LOSS`` through ``fastsiren.fit`` at the task's defaults for
the device (options after ``--`` go to every run), in DIR/<shape>-<loss>; ``--official-steps``
adds a run of the official loss at that many steps (an equal-wall-time comparison: the
regularized default costs about as much as N official steps, see the step costs in
``bench/fit_results/sdf-shapes-cpu.md``). One JSON row per run: the loss, the steps, the
training seconds, the raw mesh's metrics (``fastsiren.mesh_metrics``) and the projected mesh's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import fastsiren as fs
from fastsiren.benchmark import machine_info
from fastsiren.io.mesh import MESH_SUFFIXES, read_mesh
from fastsiren.mesh import Mesh
from fastsiren.mesh_metrics import mesh_metrics
from fastsiren.tasks.shapes import load_shape_field, project_onto_level_set

REPORTED = ("chamfer_relative", "chamfer_l1_relative", "hausdorff_relative", "fscore_1",
            "normal_consistency", "pieces", "watertight", "iou")


def evaluate_run(run: Path, shape: Path, samples: int, seed: int) -> dict:
    """Metrics of the run's written mesh and of the same mesh with projected vertices."""
    import trimesh

    from fastsiren.io.pointcloud import read_oriented_points

    settings = json.loads((run / "settings.json").read_text())
    cloud = read_oriented_points(shape, settings["points"], settings["seed"])
    reference = read_mesh(shape) if shape.suffix.lower() in MESH_SUFFIXES else None
    written = trimesh.load(run / "mesh.ply", process=False, force="mesh")  # empty: no faces
    raw = Mesh(np.asarray(written.vertices), np.asarray(written.faces))
    rows = {"raw": mesh_metrics(raw, cloud.points, cloud.normals, samples, seed,
                                reference=reference)}
    field, _, _, normalization = load_shape_field(run)
    scale, offset = normalization.scale, np.asarray(normalization.offset)
    network_units = (raw.vertices - offset) / scale
    moved = project_onto_level_set(field, network_units, 0.0, settings["resolution"]) * scale \
        + offset
    rows["projected"] = mesh_metrics(Mesh(moved, raw.faces), cloud.points, cloud.normals,
                                     samples, seed, reference=reference)
    return {kind: {k: m.get(k) for k in REPORTED} for kind, m in rows.items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fit_options: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, fit_options = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--losses", nargs="+", default=["official", "regularized"])
    parser.add_argument("--official-steps", type=int, default=None)
    parser.add_argument("--points", type=int, default=15_000)
    parser.add_argument("--metric-samples", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    extra = dict(zip(fit_options[::2], fit_options[1::2]))
    extra = {k.lstrip("-").replace("-", "_"): json.loads(v) if v[:1].isdigit() else v
             for k, v in extra.items()}

    runs = [(shape, loss, {}) for shape in args.shapes for loss in args.losses]
    if args.official_steps:
        runs += [(shape, "official", {"steps": args.official_steps}) for shape in args.shapes]
    rows = []
    for shape, loss, more in runs:
        tag = f"{shape.stem}-{loss}" + (f"-{more['steps']}" if more else "")
        out = args.out / tag
        settings = {"loss": loss, "points": args.points, "metric_samples": args.metric_samples,
                    **extra, **more}
        start = time.perf_counter()
        result = fs.fit("sdf", str(shape), out, progress=False, resume=out.exists(), **settings)
        seconds = time.perf_counter() - start
        row = {"shape": shape.stem, "loss": loss, "settings": settings,
               "steps": result.task.settings.steps, "seconds": seconds,
               **evaluate_run(out, shape, args.metric_samples, 0)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        machine = machine_info(torch.device("cpu") if not torch.cuda.is_available()
                               else torch.device("cuda"))
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
