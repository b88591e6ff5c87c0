"""Meshing cost: dense and coarse-to-fine marching cubes of a SIREN SDF, time and peak memory.

    python bench/measure_mesh.py --run RUN_DIR            a `fastsiren fit sdf` run
    python bench/measure_mesh.py --weights state.pt       a 3->256x3->1 Siren state_dict (SDF)
    python bench/measure_mesh.py --sphere                 the exact SDF of a sphere (r = 0.6)
        [--case dense:512 --case c2f:512 --case plan:1024 --case rate:262144]
        [--compare dense:512,c2f:512] [--out bench/results/mesh]

Cases: ``dense:N`` and ``c2f:N`` extract the mesh; ``plan:N`` runs only the coarse-to-fine
octree descent and counts the evaluations the leaf blocks would take
(``fastsiren.mesh.plan_coarse_to_fine``); ``rate:M`` times the field on M grid-like points (wall
and CPU seconds), the figure that turns evaluation counts into time on this machine.

Each case runs in a fresh process, so its peak resident memory (``ru_maxrss``) is its own;
the process's memory after loading the field (before the case) is reported beside it. The
mesh of each case is kept (``.npz``) so that ``--compare A,B`` can check that coarse-to-fine
found the same triangles as the dense grid (the number of triangles, and the largest distance
from a vertex of one to the nearest vertex of the other, in voxels). Results go to one JSON per
case with a machine line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _load_field(args):
    import fastsiren as fs

    if args.sphere:
        return (lambda x: x.norm(dim=-1) - 0.6), 0.0, "below", "sphere SDF, r = 0.6"
    if args.run:
        from fastsiren.tasks.shapes import load_shape_field

        field, level, inside, _ = load_shape_field(args.run)
        return field, level, inside, str(args.run)
    model = fs.Siren(3, 256, 3, 1, outermost_linear=True)
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    return model.eval(), 0.0, "below", str(args.weights)


def run_case(args) -> int:
    """Child process: mesh one case, write its JSON and mesh."""
    from fastsiren.mesh import evaluate_field, extract_mesh, plan_coarse_to_fine

    mode, size = args.child.split(":")
    field, level, inside, source = _load_field(args)
    rss_before = _rss_mib()
    start, cpu_start = time.perf_counter(), time.process_time()
    if mode in ("plan", "rate"):
        if mode == "plan":
            result = plan_coarse_to_fine(field, int(size), level=level, lipschitz=args.lipschitz)
        else:
            points = torch.rand(int(size), 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
            evaluate_field(field, points)
            result = {"points": int(size)}
        result.update(case=args.child, field=source, seconds=time.perf_counter() - start,
                      cpu_seconds=time.process_time() - cpu_start,
                      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      rss_before_mib=rss_before, machine=machine_line())
        if mode == "rate":
            result["points_per_second"] = int(size) / result["seconds"]
            result["points_per_cpu_second"] = int(size) / result["cpu_seconds"]
        _write(Path(args.out), args.child, result)
        return 0
    mesh = extract_mesh(field, int(size), level=level, inside=inside,
                        coarse_to_fine=mode == "c2f", lipschitz=args.lipschitz)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stats = mesh.stats
    result = {
        "case": args.child, "field": source, "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_start,
        "peak_rss_mib": peak, "rss_before_meshing_mib": rss_before,
        "evaluations": stats["evaluations"], "dense_evaluations": stats["dense_evaluations"],
        "evaluations_saved": 1 - stats["evaluations"] / stats["dense_evaluations"],
        "vertices": len(mesh.vertices), "faces": len(mesh.faces),
        "leaf_blocks": stats.get("leaf_blocks"),
        "leaf_blocks_total": stats.get("leaf_blocks_total"),
        "lipschitz": args.lipschitz if mode == "c2f" else None,
        "machine": machine_line(),
    }
    np.savez(Path(args.out) / f"{args.child.replace(':', '-')}.npz", vertices=mesh.vertices,
             faces=mesh.faces)
    _write(Path(args.out), args.child, result)
    return 0


def _write(out: Path, case: str, result: dict) -> None:
    (out / f"{case.replace(':', '-')}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def machine_line() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def compare(out: Path, a: str, b: str) -> dict:
    """Same triangles? Counts, and the largest vertex-to-nearest-vertex distance in voxels."""
    from scipy.spatial import cKDTree

    meshes = [np.load(out / f"{c.replace(':', '-')}.npz") for c in (a, b)]
    resolution = int(a.split(":")[1])
    voxel = 2.0 / (resolution - 1)
    va, vb = meshes[0]["vertices"], meshes[1]["vertices"]
    gap = max(cKDTree(vb).query(va)[0].max(), cKDTree(va).query(vb)[0].max()) / voxel
    result = {"compare": [a, b], "faces": [len(m["faces"]) for m in meshes],
              "max_vertex_gap_voxels": float(gap)}
    (out / f"compare-{a.replace(':', '-')}-{b.replace(':', '-')}.json").write_text(
        json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a `fastsiren fit sdf` run folder or checkpoint")
    source.add_argument("--weights", help="state_dict of a 3->256x3->1 Siren SDF")
    source.add_argument("--sphere", action="store_true", help="the exact SDF of a sphere")
    parser.add_argument("--case", action="append",
                        help="MODE:SIZE with MODE dense, c2f or plan (SIZE: grid points per "
                        "axis), or rate (SIZE: points)")
    parser.add_argument("--compare", action="append", default=[], help="CASE_A,CASE_B")
    parser.add_argument("--lipschitz", type=float, default=1.5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mesh"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.child:
        return run_case(args)
    passthrough = (["--sphere"] if args.sphere else ["--run", args.run] if args.run
                   else ["--weights", args.weights])
    for case in args.case or ["rate:262144", "dense:512", "c2f:512", "plan:1024"]:
        subprocess.run([sys.executable, __file__, *passthrough, "--child", case,
                        "--lipschitz", str(args.lipschitz), "--out", args.out], check=True)
    for pair in args.compare:
        print(json.dumps(compare(Path(args.out), *pair.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
