"""The cost of one SDF training step, side by side: the official loss (order-1 jet), the
regularized loss with its Laplacian term (order 1 on the surface, order 2 off it, eager and
with compiled chunks), and the same regularized loss on nested autograd.

    python bench/measure_sdf_step.py [--width 128] [--batch 2500] [--repeats 9] [--threads 1]
        [--json PATH]

Every provider takes the same model, the same points (the built-in kitten's on the surface,
uniform ones off it) and the loss of ``fastsiren.tasks.sdf.sdf_loss``; the nested-autograd twin
is ``fastsiren.reference``'s plain SIREN with ``torch.autograd.grad`` (the gradient on both
halves, the Laplacian as the trace of the Hessian on the off-surface half only, each under
``create_graph``), the way DiGS computes its divergence term. The providers alternate within
each repeat; the median of each is reported, as a ratio to the official step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from fastsiren.reference import gradient, siren_forward

import fastsiren as fs
from fastsiren.benchmark import machine_info
from fastsiren.io.pointcloud import Normalization, read_oriented_points
from fastsiren.tasks.sdf import sample_point_cloud_path, sdf_loss

LAPLACIAN_WEIGHT = 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cloud = read_oriented_points(sample_point_cloud_path(), 100_000, 0)
    coords = torch.as_tensor(Normalization.fit(cloud.points).apply(cloud.points),
                             dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    pick = torch.randint(len(coords), (args.batch,), generator=generator)
    on, normals = coords[pick], torch.as_tensor(cloud.normals, dtype=torch.float32)[pick]
    off = torch.rand(args.batch, 3, generator=generator) * 2 - 1
    n = args.batch
    eager = fs.Siren(3, args.width, args.depth, 1, outermost_linear=True)
    compiled = fs.Siren(3, args.width, args.depth, 1, outermost_linear=True,
                        compile_chunks=True)
    compiled.load_state_dict(eager.state_dict())

    def official():
        jet = eager.jet(torch.cat([on, off]), order=1)
        loss, _ = sdf_loss(jet.value[:, 0], jet.grad[:, 0], normals, n)
        eager.zero_grad()
        loss.backward()

    def regularized(model):
        on_jet, off_jet = model.jet(on, order=1), model.jet(off, order=2)
        loss, _ = sdf_loss(torch.cat([on_jet.value[:, 0], off_jet.value[:, 0]]),
                           torch.cat([on_jet.grad[:, 0], off_jet.grad[:, 0]]), normals, n,
                           off_jet.lap[:, 0], LAPLACIAN_WEIGHT)
        model.zero_grad()
        loss.backward()

    def nested_autograd():
        weights, biases, omegas = eager.layer_parameters()
        x_on, x_off = on.clone().requires_grad_(True), off.clone().requires_grad_(True)
        v_on = siren_forward(x_on, weights, biases, omegas, True)
        v_off = siren_forward(x_off, weights, biases, omegas, True)
        g_on, g_off = gradient(v_on, x_on), gradient(v_off, x_off)
        lap = sum(torch.autograd.grad(g_off[:, i].sum(), x_off, create_graph=True)[0][:, i]
                  for i in range(3))
        loss, _ = sdf_loss(torch.cat([v_on[:, 0], v_off[:, 0]]), torch.cat([g_on, g_off]),
                           normals, n, lap, LAPLACIAN_WEIGHT)
        eager.zero_grad()
        loss.backward()

    providers = {"official (order 1)": official,
                 "regularized": lambda: regularized(eager),
                 "regularized, compiled chunks": lambda: regularized(compiled),
                 "regularized, nested autograd": nested_autograd}
    for run in providers.values():  # warm-up (and the compile)
        run()
        run()
    times: dict[str, list[float]] = {name: [] for name in providers}
    for _ in range(args.repeats):
        for name, run in providers.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["official (order 1)"]
    rows = {name: {"ms": 1e3 * m, "vs_official": m / base} for name, m in median.items()}
    nested = median["regularized, nested autograd"]
    for name in ("regularized", "regularized, compiled chunks"):
        rows[name]["nested_autograd_over_this"] = nested / median[name]
    for name, row in rows.items():
        print(f"{name:32s} {row['ms']:8.1f} ms  {row['vs_official']:5.2f}x the official step"
              + (f"  nested autograd {row['nested_autograd_over_this']:.2f}x slower"
                 if "nested_autograd_over_this" in row else ""))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_info(torch.device("cpu")),
                                         "settings": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
