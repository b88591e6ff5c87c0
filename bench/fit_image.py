"""The image task measured: fidelity against the reference and the many-images throughput.

    python bench/fit_image.py fidelity [--size 128] [--width 128] [--steps 200] [--json PATH]
    python bench/fit_image.py many [--images 16] [--size 64] [--width 64] [--steps 100]

fidelity: the same image, settings and seed fitted twice through ``fs.fit``: on the fast path
(``backend="auto"``) and on the reference (``backend="reference"``: the plain SIREN trained with
autograd). Reports both PSNRs, their difference, and both training times (the loop's
``train_seconds``: steps only, no I/O).

many: K crops of the built-in sample fitted as one folder (one BatchedSiren, one batched call
per step) and one after another (K single-image fits), same settings and seed. Reports images
per second both ways (images / training seconds) and the speed-up; the PSNRs agree because each
network of the batch follows its single fit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import fastsiren as fs
from fastsiren.benchmark import machine_info
from fastsiren.io import read_image, write_image
from fastsiren.tasks.image import sample_image_path


def publish(report: dict, json_path: Path | None) -> None:
    """Print a measurement with the benchmark suite's machine line, and write it as JSON."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = json.dumps({"machine": machine_info(device), **report}, indent=2)
    print(text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")


def fidelity(args) -> dict:
    common = {"steps": args.steps, "width": args.width, "lr": args.lr, "max_size": args.size,
              "seed": args.seed, "progress": False}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("auto", "reference"):
            result = fs.fit("image", out=Path(tmp) / backend, backend=backend, **common)
            rows[backend] = {"psnr": result.metrics["metrics"]["psnr"],
                             "train_seconds": result.metrics["train_seconds"],
                             "backend": result.metrics["backend"]}
    return {
        "workload": f"image {args.size}px, 2->{args.width}x3->1, {args.steps} steps, "
                    f"lr {args.lr}, seed {args.seed}",
        "fast": rows["auto"], "reference": rows["reference"],
        "psnr_difference_db": rows["auto"]["psnr"] - rows["reference"]["psnr"],
        "speedup": rows["reference"]["train_seconds"] / rows["auto"]["train_seconds"],
    }


def many(args) -> dict:
    camera = read_image(sample_image_path())
    rng = np.random.default_rng(args.seed)
    common = {"steps": args.steps, "width": args.width, "lr": args.lr, "max_size": 0,
              "seed": args.seed, "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "crops"
        for i in range(args.images):
            r, c = rng.integers(0, camera.shape[0] - args.size, size=2)
            write_image(folder / f"crop{i:03d}.png", camera[r:r + args.size, c:c + args.size])
        batched = fs.fit("image", folder, out=Path(tmp) / "batched", **common)
        singles = [fs.fit("image", path, out=Path(tmp) / path.stem, **common)
                   for path in sorted(folder.iterdir())]
    batched_seconds = batched.metrics["train_seconds"]
    single_seconds = sum(r.metrics["train_seconds"] for r in singles)
    psnr_batched = [row["psnr"] for row in batched.metrics["metrics"]["images"]]
    psnr_single = [r.metrics["metrics"]["psnr"] for r in singles]
    return {
        "workload": f"{args.images} crops of {args.size}x{args.size}, 2->{args.width}x3->1, "
                    f"{args.steps} steps",
        "batched_images_per_second": args.images / batched_seconds,
        "one_at_a_time_images_per_second": args.images / single_seconds,
        "speedup": single_seconds / batched_seconds,
        "batched_train_seconds": batched_seconds, "one_at_a_time_train_seconds": single_seconds,
        "mean_psnr_batched": float(np.mean(psnr_batched)),
        "mean_psnr_one_at_a_time": float(np.mean(psnr_single)),
        "max_abs_psnr_difference_db": float(np.max(np.abs(np.subtract(psnr_batched,
                                                                      psnr_single)))),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("fidelity", "many"))
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    defaults = {"fidelity": (128, 128, 200), "many": (64, 64, 100)}[args.what]
    args.size = args.size or defaults[0]
    args.width = args.width or defaults[1]
    args.steps = args.steps or defaults[2]
    publish(fidelity(args) if args.what == "fidelity" else many(args), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
