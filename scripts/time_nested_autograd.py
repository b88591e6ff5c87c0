"""Time nested autograd through ``fs.Siren`` against the same code on the reference SIREN.

    python scripts/time_nested_autograd.py [--n 8192] [--widths 256 64] [--repeats 7]

Each training step is the official scripts' way: ``y = model(x)``, derivatives by
``fastsiren.reference.diff_operators`` (autograd with ``create_graph=True``), a loss on them,
``backward()``. For scale, the same loss through ``Siren.jet`` (the analytic path) is timed too.
Every variant runs in this process on the same inputs, interleaved, after one warm-up; the
median of ``--repeats`` runs is printed with the min-max spread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from fastsiren.reference import diff_operators

import fastsiren as fs
from fastsiren import reference


def eikonal_nested(model, x):
    g = diff_operators.gradient(model(x), x)
    return (g.norm(dim=-1) - 1).square().mean()


def laplacian_nested(model, x):
    return diff_operators.laplace(model(x), x).square().mean()


def eikonal_jet(model, x):
    return (model.jet(x, order=1).grad[..., 0, :].norm(dim=-1) - 1).square().mean()


def laplacian_jet(model, x):
    return model.jet(x, order=2).lap.square().mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N = {args.n}, fp32, "
          f"2->Wx3->1, median (min-max) of {args.repeats} over seconds per training step")
    for width in args.widths:
        torch.manual_seed(0)
        ours = fs.Siren(2, width, 3, 1, outermost_linear=True, backend="torch")
        ref = reference.Siren(2, width, 3, 1, outermost_linear=True)
        ref.load_state_dict(ours.state_dict())
        x = (torch.rand(args.n, 2) * 2 - 1).requires_grad_()
        variants = {
            "eikonal   reference nested": (eikonal_nested, ref),
            "eikonal   fs.Siren nested ": (eikonal_nested, ours),
            "eikonal   fs.Siren.jet    ": (eikonal_jet, ours),
            "laplacian reference nested": (laplacian_nested, ref),
            "laplacian fs.Siren nested ": (laplacian_nested, ours),
            "laplacian fs.Siren.jet    ": (laplacian_jet, ours),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats + 1):
            for name, (loss_fn, model) in variants.items():
                start = time.perf_counter()
                loss_fn(model, x).backward()
                elapsed = time.perf_counter() - start
                model.zero_grad(set_to_none=True)
                x.grad = None
                if repeat:  # the first round warms up
                    times[name].append(elapsed)
        print(f"width {width}")
        for loss in ("eikonal", "laplacian"):
            base = statistics.median(times[f"{loss:<9} reference nested"])
            for name, t in times.items():
                if name.startswith(loss):
                    med = statistics.median(t)
                    print(f"  {name}  {med * 1e3:8.1f} ms ({min(t) * 1e3:.1f}-{max(t) * 1e3:.1f})"
                          f"  {base / med:5.2f}x of reference nested")


if __name__ == "__main__":
    main()
