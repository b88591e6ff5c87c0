"""Poisson from the Laplacian (or the gradient) measured: the fast path against the reference.

    python bench/fit_poisson.py [--supervise lap|grad] [--size 64] [--width 64] [--steps 300]
                                [--lr 1e-3] [--seed 0] [--json PATH]

The same image, settings and seed fitted twice through ``fs.fit("poisson", ...)``: on the fast
path (``backend="auto"``: analytic jets, hand-derived backward) and on the reference
(``backend="reference"``: the plain SIREN with its Laplacian by nested autograd, the official
``diff_operators`` way, trained through double backward). Reports both PSNRs (after the
least-squares gain and offset), their difference, and both training times (the loop's
``train_seconds``: steps only, no I/O) with the speed-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from fit_image import publish  # the image measurements' report format and machine line

import fastsiren as fs


def fidelity(args) -> dict:
    common = {"supervise": args.supervise, "steps": args.steps, "width": args.width,
              "lr": args.lr, "max_size": args.size, "seed": args.seed, "progress": False}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("auto", "reference"):
            result = fs.fit("poisson", out=Path(tmp) / backend, backend=backend, **common)
            metrics = result.metrics["metrics"]
            rows[backend] = {"psnr": metrics["psnr"],
                             f"{args.supervise}_rel_err": metrics[f"{args.supervise}_rel_err"],
                             "train_seconds": result.metrics["train_seconds"],
                             "backend": result.metrics["backend"]}
    return {
        "workload": f"poisson --supervise {args.supervise}, camera {args.size}px, "
                    f"2->{args.width}x3->1, {args.steps} steps, lr {args.lr}, seed {args.seed}",
        "fast": rows["auto"], "reference": rows["reference"],
        "psnr_difference_db": rows["auto"]["psnr"] - rows["reference"]["psnr"],
        "speedup": rows["reference"]["train_seconds"] / rows["auto"]["train_seconds"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supervise", choices=("lap", "grad"), default="lap")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    publish(fidelity(args), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
