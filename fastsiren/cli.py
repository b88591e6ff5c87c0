"""`fastsiren` command line: thin argument parsing over the library.

    fastsiren demo  [--n N] [--width W] [--device cpu|cuda] [--backend ...]
    fastsiren bench [--quick] [--json FILE] [--markdown FILE] ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    """Jets of a freshly initialised SIREN against nested autograd, with timings."""
    import torch

    import fastsiren as fs
    import fastsiren.reference
    from fastsiren.reference import autograd_jet

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = fs.Siren(
        2, args.width, 3, 1, outermost_linear=True, backend=args.backend
    ).to(device)
    x = torch.rand(args.n, 2, device=device) * 2 - 1

    def timed(fn, repeats=5):
        """(result, median seconds over ``repeats`` runs after one warm-up)."""
        result = fn()
        seconds = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
        return result, sorted(seconds)[repeats // 2]

    reference = fs.reference.Siren(2, args.width, 3, 1, outermost_linear=True).to(device)
    reference.load_state_dict(model.state_dict())
    fast, t_fast = timed(lambda: model.jet(x, order=2))
    ref, t_ref = timed(lambda: autograd_jet(reference, x, order=2))
    report = {
        "points": args.n,
        "width": args.width,
        "device": str(device),
        "backend": fs.backend.resolve(args.backend, device),
        "median_seconds_fastsiren": t_fast,
        "median_seconds_autograd": t_ref,
        "speedup": t_ref / t_fast,
    }
    for name in ("value", "grad", "lap"):
        a, b = getattr(fast, name).detach(), getattr(ref, name).detach()
        report[f"max_rel_err_{name}"] = ((a - b).abs().max() / b.abs().max()).item()
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsiren", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="compare analytic jets with nested autograd")
    demo.add_argument("--n", type=int, default=16384, help="number of points")
    demo.add_argument("--width", type=int, default=256, help="hidden features")
    demo.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    demo.add_argument("--backend", default="auto", choices=("auto", "torch", "triton"))
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    from .benchmark import add_arguments as add_bench_arguments
    from .benchmark import main as bench_main

    bench = sub.add_parser("bench", help="every provider side by side (see bench/)")
    add_bench_arguments(bench)
    bench.set_defaults(func=bench_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
