"""A dataset of thousands of small images fitted in groups: images per second, mean PSNR and the
peak memory of the process, for several group sizes (``--networks-per-batch``).

The dataset: ``--images`` random crops of ``--size`` px from the built-in photograph
(``fastsiren.data.sample("camera")``), written as one uint8 ``.npy`` stack [N, S, S]. Each group
size runs ``fastsiren fit image STACK`` in a fresh process (one torch thread), so that the
process's peak resident memory (``ru_maxrss`` of that child, from ``os.wait4``) is the fit's
alone; the machine's load average (``/proc/loadavg``) is read before and after each run.

    python bench/stream_dataset.py --groups 256 2048 --json bench/fit_results/stream-cpu-16px.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fastsiren as fs
from fastsiren.data import sample
from fastsiren.io.image import read_image


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def make_crops(path: Path, images: int, size: int, seed: int) -> None:
    photo = (read_image(sample("camera"))[..., 0] * 255).round().astype(np.uint8)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, photo.shape[0] - size + 1, images)
    cols = rng.integers(0, photo.shape[1] - size + 1, images)
    np.save(path, np.stack([photo[r:r + size, c:c + size] for r, c in zip(rows, cols)]))


def run(stack: Path, out: Path, group: int, args) -> dict:
    command = [sys.executable, "-m", "fastsiren", "fit", "image", str(stack), "--out", str(out),
               "--steps", str(args.steps), "--width", str(args.width), "--depth",
               str(args.depth), "--lr", str(args.lr), "--networks-per-batch", str(group),
               "--no-save-images", "--device", "cpu", "--quiet"]
    if args.target_psnr is not None:
        command += ["--target-psnr", str(args.target_psnr)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load_before = load_average()
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed ({status})")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "networks_per_batch": group, "groups": metrics["data"]["groups"],
        "images": metrics["metrics"]["n_images"],
        "images_per_second_training": metrics["signals_per_second"],
        "images_per_second_end_to_end": metrics["metrics"]["n_images"] / wall,
        "train_seconds": metrics["train_seconds"], "process_seconds": wall,
        "psnr_mean": metrics["metrics"]["psnr"], "psnr_min": metrics["metrics"]["psnr_min"],
        "steps_mean": metrics["metrics"]["steps_mean"],
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux: kilobytes
        "weights_file_mib": (out / "checkpoint.pt").stat().st_size / 2**20,
        "load_average_before": load_before, "load_average_after": load_average(),
        "command": " ".join(command[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--groups", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-psnr", type=float, help="stop each network at this PSNR")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                        help="only write --markdown from these records")
    args = parser.parse_args()
    if args.render:
        records = [json.loads(path.read_text()) for path in args.render]
        args.markdown.write_text(markdown(records))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        stack = Path(folder) / f"crops-{args.size}px.npy"
        make_crops(stack, args.images, args.size, args.seed)
        for group in args.groups:
            row = run(stack, Path(folder) / f"run-{group}", group, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    record = {
        "what": f"{args.images} crops of {args.size} px from the built-in photograph, fitted "
                f"in groups; 2->{args.width}x{args.depth}->1, {args.steps} steps, Adam lr "
                f"{args.lr}, one torch thread per fit" + (
                    "" if args.target_psnr is None
                    else f", each network stopped at {args.target_psnr:g} dB"),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "torch": __import__("torch").__version__,
                    "fastsiren": fs.__version__},
        "settings": vars(args) | {"json": None, "markdown": None, "render": None},
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown([record]))


def markdown(records: list[dict]) -> str:
    """One table per record: a row per group size, with the machine's load average."""
    machine = records[0]["machine"]
    lines = ["# A dataset fitted in groups: speed, PSNR and peak memory per group size", "",
             f"`python bench/stream_dataset.py` on {machine['cores']} {machine['cpu']} cores "
             f"(torch {machine['torch']}), each fit in its own process with one torch thread, "
             "its peak resident memory from the kernel (`ru_maxrss`). Every run had the machine "
             "to share with other jobs (the load averages beside each row); the runs took place "
             "one after another, so compare speeds across rows only roughly. The same seed and "
             "data give the same networks whatever the group size (the mean PSNR is equal).", ""]
    for record in records:
        lines += [f"## {record['what']}", "",
                  "| images per group | groups | images/s (training) | images/s (end to end) "
                  "| mean PSNR (dB) | mean steps | peak RSS (MiB) | load average before / after |",
                  "|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in record["rows"]:
            steps = r.get("steps_mean", record["settings"]["steps"])
            lines.append(
                f"| {r['networks_per_batch']} | {r['groups']} | "
                f"{r['images_per_second_training']:.2f} | "
                f"{r['images_per_second_end_to_end']:.2f} | {r['psnr_mean']:.2f} | "
                f"{steps:.1f} | {r['peak_rss_mib']:.0f} | {r['load_average_before'][0]:.2f} / "
                f"{r['load_average_after'][0]:.2f} |")
        lines.append("")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
