"""`fastsiren demo`: analytic jets of a fresh SIREN against nested autograd.

    fastsiren demo [--n N] [--width W] [--device cpu|cuda] [--backend ...]

Prints the report as JSON on stdout; progress and a one-line summary go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from fastsiren.errors import InputError


def _check_args(args: argparse.Namespace) -> None:
    """One-line errors for arguments argparse cannot judge alone."""
    import torch

    if args.n < 1:
        raise InputError(f"--n must be a number of points >= 1, got {args.n}")
    if args.width < 1:
        raise InputError(f"--width must be a number of hidden features >= 1, got {args.width}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "--device cuda: no CUDA device is available to this torch build "
            f"(torch {torch.__version__}); use --device cpu"
        )


def _faster_or_slower(autograd_seconds: float, jet_seconds: float) -> str:
    """'2.1x faster' or '1.4x slower': the ratio of the two times, always read as >= 1."""
    ratio = autograd_seconds / jet_seconds
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def _progress(message: str) -> None:
    print(f"fastsiren demo: {message}", file=sys.stderr, flush=True)


def _demo(args: argparse.Namespace) -> int:
    """Jets of a freshly initialised SIREN against nested autograd: their agreement, and the
    median times of the order-2 jet and of a Laplacian-loss training step."""
    _check_args(args)
    import torch

    import fastsiren as fs
    import fastsiren.reference
    from fastsiren.dispatch import resolve
    from fastsiren.errors import InputError
    from fastsiren.jet_ops import unavailable
    from fastsiren.reference import autograd_jet

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    reason = unavailable(args.backend, device) if args.backend == "triton" else None
    if reason is not None:
        raise InputError(f"--backend triton: {reason}")
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

    backend = resolve(args.backend, device)
    _progress(f"2->{args.width}x3->1 SIREN, {args.n} points on {device}, backend {backend}: "
              "timing the order-2 jet (1/4)")
    fast, t_fast = timed(lambda: model.jet(x, order=2))
    _progress("timing nested autograd (2/4)")
    ref, t_ref = timed(lambda: autograd_jet(reference, x, order=2))
    _progress("timing a Laplacian-loss training step with jets (3/4)")
    _, t_fast_step = timed(lambda: laplacian_step(lambda: model.jet(x, order=2), model))
    _progress("timing the same step with nested autograd (4/4)")
    _, t_ref_step = timed(
        lambda: laplacian_step(lambda: autograd_jet(reference, x, order=2), reference)
    )
    report = {
        "siren": f"2->{args.width}x3->1",
        "points": args.n,
        "device": str(device),
        "backend": backend,
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
    worst = max(report[f"max_rel_err_{name}"] for name in ("value", "grad", "lap"))
    print(
        f"fastsiren demo: jets agree with nested autograd to {worst:.1e} (max relative error); "
        f"order-2 jet {_faster_or_slower(t_ref, t_fast)} and Laplacian-loss step "
        f"{_faster_or_slower(t_ref_step, t_fast_step)} than nested autograd "
        f"({report['siren']}, {args.n} points, {device}, {backend})",
        file=sys.stderr,
    )
    return 0


def register(sub) -> None:
    demo = sub.add_parser("demo", help="compare analytic jets with nested autograd")
    demo.add_argument("--n", type=int, default=16384, help="number of points")
    demo.add_argument("--width", type=int, default=256, help="hidden features")
    demo.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    demo.add_argument("--backend", default="auto", choices=("auto", "torch", "triton"))
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
