"""Learned initialisation against the standard SIREN init on held-out images of one kind, each at
its best Adam rate: does the learned start reach 30 dB in a third of the steps?

    python bench/fit_learned_init.py --kind photo --size 32 --steps 1000 \\
        --json bench/fit_results/learned-init-photo-32px.json
    python bench/fit_learned_init.py --report bench/fit_results/learned-init-*.json \\
        --markdown bench/fit_results/learned-init.md --plot bench/fit_results/learned-init.png

Data of one kind, with a train/held-out split that shares no pixel:

- ``photo``: grayscale crops of the built-in photograph, training crops from its top half,
  held-out crops from its bottom half;
- ``video``: RGB crops of the frames of the built-in clip (bunny_clip.npz), training crops from
  the left half of every frame, held-out crops from the right half.

A run is ``fastsiren fit init`` on a stack of ``--train`` training crops followed by
``--held-out`` held-out ones (the task holds the last ones back), so what is measured is the
product: meta-training (Meta-SGD, second order, K learned steps), then the held-out fits on the
engine's batched path from the learned start (K learned steps, then Adam) and from the standard
init, each at every Adam rate of ``fastsiren.tasks.learned_start.CURVE_LRS``. Reported: the mean
held-out PSNR after 1 ... 100 steps at each start's best rate, and the first step at which it
reaches 30 dB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import fastsiren as fs
from fastsiren.benchmark import machine_info
from fastsiren.io.image import read_image
from fastsiren.tasks.common import data_file, pyplot, sample_image_path, save_figure
from fastsiren.tasks.learned_start import TARGET_DB, best_rate, steps_to

TABLE_STEPS = (1, 3, 5, 10, 20, 50, 100)


def crops(kind: str, n: int, size: int, part: str, seed: int) -> np.ndarray:
    """n crops [n, size, size, C] in [0, 1] from the training or held-out part of a sample."""
    rng = np.random.default_rng(seed)
    if kind == "photo":
        photo = read_image(sample_image_path())  # [512, 512, 1]
        rows = photo.shape[0] // 2
        top = 0 if part == "train" else rows
        r = rng.integers(top, top + rows - size + 1, n)
        c = rng.integers(0, photo.shape[1] - size + 1, n)
        return np.stack([photo[i:i + size, j:j + size] for i, j in zip(r, c)])
    frames = np.load(data_file("bunny_clip.npz"))["frames"]  # [T, 144, 256, 3] uint8
    cols = frames.shape[2] // 2
    left = 0 if part == "train" else cols
    f = rng.integers(0, len(frames), n)
    r = rng.integers(0, frames.shape[1] - size + 1, n)
    c = rng.integers(left, left + cols - size + 1, n)
    return np.stack([frames[k, i:i + size, j:j + size] for k, i, j in zip(f, r, c)]
                    ).astype(np.float32) / 255.0


def run(args) -> dict:
    stack = np.concatenate([crops(args.kind, args.train, args.size, "train", seed=1),
                            crops(args.kind, args.held_out, args.size, "held", seed=2)])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / f"{args.kind}-{args.size}.npy"
        np.save(data, stack.astype(np.float32))
        start = time.perf_counter()
        result = fs.fit("init", data, out=Path(tmp) / "run", steps=args.steps, width=args.width,
                        depth=args.depth, held_out=args.held_out, meta_batch=args.meta_batch,
                        inner_steps=args.inner_steps, batch_fraction=args.batch_fraction,
                        curve_steps=args.curve_steps, device="cpu", progress=args.progress)
        wall = time.perf_counter() - start
    metrics = result.metrics["metrics"]
    curves = metrics["held_out_curves"]
    best = {"standard": f"{metrics['standard_lr']:g}", "learned": f"{metrics['adam_lr']:g}"}
    reach = {kind: {lr: steps_to({int(k): v for k, v in curve.items()}, TARGET_DB)
                    for lr, curve in curves[kind].items()} for kind in curves}
    return {
        "machine": machine_info(torch.device("cpu")),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "kind": args.kind, "size": args.size,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "report")},
        "meta_train_seconds": result.metrics["train_seconds"], "wall_seconds": wall,
        "best_lr": best, "steps_to_30db": reach,
        "steps_to_30db_at_best": {kind: reach[kind][best[kind]] for kind in best},
        "curves": curves,
        "step_size_mean_per_tensor": metrics["step_size_mean_per_tensor"],
    }


def fastest_rate(rec: dict, kind: str) -> str:
    """The Adam rate at which ``kind`` reaches 30 dB first (``learned_start.best_rate``)."""
    curves = {lr: {int(k): v for k, v in curve.items()}
              for lr, curve in rec["curves"][kind].items()}
    return best_rate(curves, rec["settings"]["curve_steps"], TARGET_DB)


def report(paths: list[Path], markdown: Path | None, plot: Path | None) -> None:
    records = [json.loads(p.read_text()) for p in paths]
    for rec in records:
        rec["best_lr"] = {kind: fastest_rate(rec, kind) for kind in ("standard", "learned")}
        rec["steps_to_30db_at_best"] = {kind: rec["steps_to_30db"][kind][lr]
                                        for kind, lr in rec["best_lr"].items()}
    lines = [
        "| data | start (best Adam rate) | " + " | ".join(f"{s} steps" for s in TABLE_STEPS)
        + f" | steps to {TARGET_DB:g} dB | ratio |",
        "|---|---|" + "---:|" * (len(TABLE_STEPS) + 2),
    ]
    for rec in records:
        reach = rec["steps_to_30db_at_best"]
        ratio = (f"{reach['standard'] / reach['learned']:.1f}x"
                 if reach["standard"] and reach["learned"] else "-")
        for kind in ("standard", "learned"):
            lr = rec["best_lr"][kind]
            curve = rec["curves"][kind][lr]
            label = f"{kind} ({lr}" + (f", after {rec['settings']['inner_steps']} learned steps)"
                                      if kind == "learned" else ")")
            cells = [f"{curve[str(s)]:.1f}" if str(s) in curve else "-" for s in TABLE_STEPS]
            lines.append(f"| {rec['kind']} {rec['size']} px | {label} | " + " | ".join(cells)
                         + f" | {reach[kind] if reach[kind] is not None else '> 100'} | "
                         + (ratio if kind == "learned" else "") + " |")
    lines += ["", "| data | train / held-out crops | meta-steps x images | pixels per meta-step "
              "| meta-training | load average (1 min) before, after |", "|---|---|---|---|---|---|"]
    for rec in records:
        s = rec["settings"]
        lines.append(
            f"| {rec['kind']} {rec['size']} px | {s['train']} / {s['held_out']} "
            f"| {s['steps']} x {s['meta_batch']} | {s['batch_fraction']:g} "
            f"| {rec['meta_train_seconds'] / 60:.0f} min | {rec['load_average_before'][0]:.1f}, "
            f"{rec['load_average_after'][0]:.1f} |")
    text = "\n".join(lines)
    print(text)
    if markdown:
        markdown.write_text(text + "\n")
    if plot:
        plt = pyplot()
        fig, axes = plt.subplots(1, len(records), figsize=(4.2 * len(records), 3.4),
                                 squeeze=False)
        for ax, rec in zip(axes[0], records):
            for kind, style in (("standard", "--"), ("learned", "-")):
                lr = rec["best_lr"][kind]
                curve = {int(k): v for k, v in rec["curves"][kind][lr].items()}
                steps = sorted(s for s in curve if s > 0)
                ax.plot(steps, [curve[s] for s in steps], style,
                        label=f"{kind} init (Adam {lr})")
            ax.axhline(TARGET_DB, color="grey", lw=0.5)
            ax.set_xscale("log")
            ax.set_xlabel("fit steps")
            ax.set_ylabel("held-out PSNR (dB)")
            ax.set_title(f"{rec['kind']} crops, {rec['size']} px")
            ax.legend(fontsize=7)
        fig.suptitle("Learned start vs standard SIREN init, each at its best rate", y=1.03)
        save_figure(fig, plot, dpi=90, bbox_inches="tight")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("photo", "video"), default="photo")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--held-out", type=int, default=24)
    parser.add_argument("--steps", type=int, default=1000, help="meta-training steps")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--inner-steps", type=int, default=3)
    parser.add_argument("--batch-fraction", type=float, default=1.0)
    parser.add_argument("--curve-steps", type=int, default=100)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report", type=Path, nargs="+",
                        help="write the table (and plot) of these records instead of running")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    if args.report:
        report(args.report, args.markdown, args.plot)
        return 0
    torch.set_num_threads(1)
    record = run(args)
    text = json.dumps(record, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(json.dumps({k: record[k] for k in ("kind", "size", "best_lr", "steps_to_30db_at_best",
                                             "meta_train_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
