"""A Helmholtz fit measured: its settings, training time, final error and error curve.

    fastsiren fit helmholtz --out RUN [options]      # the fit (resumable: add --resume)
    python bench/fit_helmholtz.py RUN [--json PATH] [--picture PNG]

Reads a finished run folder (``settings.json``, ``metrics.json``, ``log.jsonl``) and reports the
command that reproduces it, the steps, the training time (the loop's ``train_seconds``: steps
only, no I/O, summed over resumed pieces), the relative L2 error against the analytic field on
the evaluation grid, and the curve of the batch estimate of that error at every logged step.
``--picture`` writes the run's side-by-side panel (``helmholtz.png``) for the README, as a
palette PNG (a quarter of the size, no visible change).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fit_image import publish  # the fit measurements' report format and machine line

from fastsiren.tasks.helmholtz import HelmholtzSettings

# Settings that do not change the result (where and how it is logged and saved).
NOT_RESULT = {"task", "input", "device", "backend", "log_every", "checkpoint_every"}


def command(settings: dict) -> str:
    """The ``fastsiren fit helmholtz`` options that differ from the CPU defaults."""
    import torch

    defaults = HelmholtzSettings().resolved(torch.device("cpu")).to_dict()
    options = [f"--{name.replace('_', '-')} {value}" for name, value in settings.items()
               if name not in NOT_RESULT and defaults.get(name) != value]
    return " ".join(["fastsiren fit helmholtz --out RUN", *options])


def summary(run: Path) -> dict:
    settings = json.loads((run / "settings.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {
        "workload": f"helmholtz k={settings['wavenumber']}, 2->{settings['width']}x"
                    f"{settings['depth']}->2, {settings['points']} points per step "
                    f"({settings['near_points']} near the source), lr {settings['lr']}",
        "command": command(settings),
        "steps": settings["steps"],
        "train_seconds": metrics["train_seconds"],
        "rel_error": metrics["metrics"]["rel_error"],
        "pde_residual_mean_abs": metrics["metrics"]["pde_residual_mean_abs"],
        "curve": [{"step": e["step"], "seconds": round(e["seconds"], 1),
                   "rel_error": round(e["rel_error"], 4)} for e in log if "rel_error" in e],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `fastsiren fit helmholtz` folder")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--picture", type=Path, default=None)
    args = parser.parse_args(argv)
    publish(summary(args.run), args.json)
    if args.picture:
        from PIL import Image

        panel = Image.open(args.run / "helmholtz.png").convert("RGB")
        panel.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.picture,
                                                                         optimize=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
