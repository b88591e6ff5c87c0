"""What a fit reports in its run folder: the JSON-lines log, metrics.json and curve.png, and the
facts about the machine they carry."""

from __future__ import annotations

import contextlib
import json
import math
import platform
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import atomic_write

__all__ = [
    "ExpectedTime", "Log", "backend_name", "device_name", "format_duration", "plot_curve",
    "versions", "write_json",
]


class Log:
    """The JSON-lines curve (``log.jsonl``; a run in groups numbers each line's ``group``). A
    group that starts or resumes drops the lines at or after its (group, step): they are
    redone."""

    def __init__(self, path: Path):
        self.path = path
        self.first, self.last = None, None
        entries = self.entries()
        if entries:
            self.first, self.last = entries[0][1], entries[-1][1]

    def entries(self) -> list[tuple[str, dict]]:
        """(line, entry) for every readable line so far."""
        found = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    found.append((line, json.loads(line)))
        return found

    def keep_before(self, group: int, step: int) -> None:
        """Drop the lines of ``group`` from ``step`` on and of every later group."""
        kept = [(line, entry) for line, entry in self.entries()
                if (entry.get("group", 0), entry.get("step", math.inf)) < (group, step)]
        with atomic_write(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line, _ in kept))
        self.first = kept[0][1] if kept else None
        self.last = kept[-1][1] if kept else None

    def write(self, entry: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        self.first = self.first or entry
        self.last = entry


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON, replaced atomically (a reader never sees half a file)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def backend_name(model: nn.Module, device: torch.device) -> str:
    """The backend the model's "auto" (or explicit) backend resolves to on ``device``."""
    from ..dispatch import resolve

    return resolve(getattr(model, "backend", "auto"), device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    from .._version import __version__

    found = {"fastsiren": __version__, "torch": torch.__version__,
             "python": platform.python_version()}
    with contextlib.suppress(Exception):
        import triton

        found["triton"] = triton.__version__
    return found


def plot_curve(log_path: Path, png_path: Path, metric: str | None) -> None:
    """Loss (log scale) and the progress metric against the step."""
    from ..tasks.common import pyplot, save_figure

    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    if not entries:
        return
    groups = len({e.get("group", 0) for e in entries})
    if groups > 1:  # a run in groups: each step's values averaged over the groups
        by_step: dict[int, list[dict]] = {}
        for entry in entries:
            by_step.setdefault(entry["step"], []).append(entry)
        entries = [{"step": step, **{key: sum(e[key] for e in group) / len(group)
                                      for key in group[0] if key not in ("step", "group")}}
                   for step, group in sorted(by_step.items())]
    plt = pyplot()
    steps = [e["step"] for e in entries]
    panels = [("loss", True)] + ([(metric, False)] if metric and metric in entries[0] else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (name, log_scale) in zip(axes[0], panels):
        ax.plot(steps, [e[name] for e in entries])
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(f"{name} against the step"
                     + (f" (mean of {groups} groups)" if groups > 1 else ""))
        if log_scale and all(e[name] > 0 for e in entries):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png_path)


class ExpectedTime:
    """Says once, before most of a fit has run, how long it will take: the median time of a few
    steps (the first left out: it warms caches and compiles) times the steps to go.

    Call ``step_done(seconds)`` after each step; ``say`` gets one line once ``min_steps`` steps
    and ``min_seconds`` of them are timed (or ``max_steps`` steps), and only when the fit as a
    whole will take at least ``quiet_below`` seconds.
    """

    def __init__(self, task: str, steps_to_go: int, say, min_steps: int = 3,
                 min_seconds: float = 2.0, max_steps: int = 20, quiet_below: float = 20.0,
                 groups: int = 1):
        self.task, self.steps_to_go, self.say, self.groups = task, steps_to_go, say, groups
        self.min_steps, self.min_seconds, self.max_steps = min_steps, min_seconds, max_steps
        self.quiet_below = quiet_below
        self.seen, self.first = 0, 0.0
        self.timed: list[float] | None = []  # None once said

    def step_done(self, seconds: float) -> None:
        if self.timed is None:
            return
        self.seen += 1
        if self.seen == 1:
            self.first = seconds
            return
        self.timed.append(seconds)
        enough = len(self.timed) >= self.min_steps and sum(self.timed) >= self.min_seconds
        if enough or len(self.timed) >= self.max_steps:
            self.report()

    def skip(self, steps: int) -> None:
        """``steps`` of the work will not run (done in an earlier session, or not needed)."""
        if self.timed is not None:
            self.steps_to_go -= steps

    def report(self) -> None:
        per_step = sorted(self.timed)[len(self.timed) // 2]
        total = self.first + sum(self.timed) + per_step * (self.steps_to_go - self.seen)
        if total >= self.quiet_below and self.say is not None:
            work = f"{self.steps_to_go} steps" + (
                f" in {self.groups} groups" if self.groups > 1 else "")
            self.say(f"fit {self.task}: expected {format_duration(total)} for {work} "
                     f"({per_step:.3g} s per step over steps 2 to {self.seen}; evaluation and "
                     "outputs come after)")
        self.timed = None


def format_duration(seconds: float) -> str:
    """'45 s', '3.5 min', '2.1 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
