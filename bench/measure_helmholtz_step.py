"""One Helmholtz training step at the official batch: analytic jets against nested autograd.

Both providers do the same step of the paper's Helmholtz experiment (a 2->256x3->2 SIREN, the
official batch of 230² = 52900 points with 100 of them near the source, k = 20, the PML of width
0.5, the official losses, Adam at lr 2e-5), in one process on the same points and weights:

- fastsiren: one jet of order 2 with ``hessian_diag=True`` (value, gradient, per-axis second
  derivatives), ``physics.helmholtz_residual``, the hand-derived backward;
- reference: ``fastsiren.reference.Siren`` and
  ``fastsiren.reference.physics.helmholtz_residual_autograd``, the official divergence form by
  nested autograd (``create_graph=True`` everywhere).

The two residuals are checked to agree before timing. Prints the median wall time of a step, its
spread, the peak memory of one step (CUDA allocator statistics, or the CPU profiler's allocation
timeline) and the machine line; ``--json`` writes them.

    python bench/measure_helmholtz_step.py [--n 52900] [--width 256] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from fastsiren.reference import Siren as RefSiren
from fastsiren.reference import physics as reference_physics

import fastsiren as fs
from fastsiren import physics
from fastsiren.benchmark import machine_info, machine_line
from fastsiren.benchmark.measure import peak_memory_bytes

K = 20.0


def make_step(model, residual_fn, xy, source, slowness2, lr):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step():
        residual = residual_fn(model, xy, slowness2)
        loss = sum(physics.helmholtz_loss(residual, source).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def fast_residual(model, xy, slowness2):
    jet = model.jet(xy, order=2, hessian_diag=True)
    return physics.helmholtz_residual(jet, xy, K, slowness2, physics.Pml())


def autograd_residual(model, xy, slowness2):
    x = xy.clone().requires_grad_(True)
    return reference_physics.helmholtz_residual_autograd(model(x), x, K, slowness2, physics.Pml())


def time_step(step, device, reps, min_time):
    step()  # warm-up
    times, cpu_times = [], []
    end = time.perf_counter() + min_time
    while len(times) < reps or time.perf_counter() < end:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
        cpu_times.append((time.process_time() - cpu_start) * 1e3)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    # CPU time of the process (all threads): on a machine shared with other work, wall time
    # measures the share the process got; CPU time the work it did.
    return {"median_ms": statistics.median(times), "q1_ms": q[0], "q3_ms": q[2],
            "cpu_median_ms": statistics.median(cpu_times), "reps": len(times)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=230**2, help="points per step (official 52900)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds per provider")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    gen = torch.Generator().manual_seed(0)
    xy = physics.sample_helmholtz_points(args.n, (0.0, 0.0), gen).to(device)
    source = (1 + 1j) * physics.gaussian_source(xy, (0.0, 0.0), physics.HELMHOLTZ_SIGMA)
    slowness2 = physics.squared_slowness(xy, "uniform")
    torch.manual_seed(0)
    fast = fs.Siren(2, args.width, args.depth, 2, outermost_linear=True).to(device)
    ref = RefSiren(2, args.width, args.depth, 2, outermost_linear=True).to(device)
    ref.load_state_dict(fast.state_dict())

    providers = {
        "fastsiren (jet, hand backward)": make_step(fast, fast_residual, xy, source, slowness2,
                                                    2e-5),
        "reference (nested autograd)": make_step(ref, autograd_residual, xy, source, slowness2,
                                                 2e-5),
    }
    # The same residual before any step: the two providers compute the same thing.
    with torch.no_grad():
        res_fast = fast_residual(fast, xy, slowness2)
    res_ref = autograd_residual(ref, xy, slowness2).detach()
    agreement = ((res_fast - res_ref).abs().max() / res_ref.abs().max()).item()
    if agreement > 1e-4:
        raise SystemExit(f"residuals differ: max relative difference {agreement:.2e}")

    machine = machine_info(device)
    print(machine_line(machine), flush=True)
    print(f"Helmholtz training step, 2->{args.width}x{args.depth}->2 SIREN, N = {args.n}, "
          f"fp32, {device.type}; residuals agree to {agreement:.1e} (max abs diff / max abs)",
          flush=True)
    results = {}
    for name, step in reversed(providers.items()):  # the reference first: the baseline
        timing = time_step(step, device, args.reps, args.min_time)
        peak, _ = peak_memory_bytes(step, device)
        results[name] = {**timing, "peak_bytes": peak}
        print(f"  measured {name}: {timing['median_ms']:.0f} ms", flush=True)
    base = results["reference (nested autograd)"]
    for name, r in results.items():
        print(f"  {name:32s} wall {r['median_ms']:9.1f} ms [{r['q1_ms']:.1f}, {r['q3_ms']:.1f}]"
              f" x{base['median_ms'] / r['median_ms']:.2f}  cpu {r['cpu_median_ms']:9.1f} ms"
              f" x{base['cpu_median_ms'] / r['cpu_median_ms']:.2f}  peak "
              f"{r['peak_bytes'] / 2**20:8.1f} MiB ({r['peak_bytes'] / base['peak_bytes']:.2f}x)"
              f"  reps {r['reps']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "n": args.n, "width": args.width, "depth": args.depth,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
