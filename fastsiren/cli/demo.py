"""`fastsiren demo`: analytic jets of a fresh SIREN against nested autograd.

    fastsiren demo [--n N] [--width W] [--device cpu|cuda] [--backend ...]
"""

from __future__ import annotations

import argparse
import json
import time


def _demo(args: argparse.Namespace) -> int:
    """Jets of a freshly initialised SIREN against nested autograd: their agreement, and the
    median times of the order-2 jet and of a Laplacian-loss training step."""
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

    def laplacian_step(jet_fn, module):
        """One training step on a Laplacian loss (gradients accumulated, then cleared)."""
        jet_fn().lap.square().mean().backward()
        module.zero_grad(set_to_none=True)

    fast, t_fast = timed(lambda: model.jet(x, order=2))
    ref, t_ref = timed(lambda: autograd_jet(reference, x, order=2))
    _, t_fast_step = timed(lambda: laplacian_step(lambda: model.jet(x, order=2), model))
    _, t_ref_step = timed(
        lambda: laplacian_step(lambda: autograd_jet(reference, x, order=2), reference)
    )
    report = {
        "siren": f"2->{args.width}x3->1",
        "points": args.n,
        "device": str(device),
        "backend": fs.backend.resolve(args.backend, device),
        "jet_forward_order2": {
            "median_seconds_fastsiren": t_fast,
            "median_seconds_autograd": t_ref,
            "speedup": t_ref / t_fast,
        },
        "laplacian_training_step": {
            "median_seconds_fastsiren": t_fast_step,
            "median_seconds_autograd": t_ref_step,
            "speedup": t_ref_step / t_fast_step,
        },
    }
    for name in ("value", "grad", "lap"):
        a, b = getattr(fast, name).detach(), getattr(ref, name).detach()
        report[f"max_rel_err_{name}"] = ((a - b).abs().max() / b.abs().max()).item()
    print(json.dumps(report, indent=2))
    return 0


def register(sub) -> None:
    demo = sub.add_parser("demo", help="compare analytic jets with nested autograd")
    demo.add_argument("--n", type=int, default=16384, help="number of points")
    demo.add_argument("--width", type=int, default=256, help="hidden features")
    demo.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    demo.add_argument("--backend", default="auto", choices=("auto", "torch", "triton"))
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
