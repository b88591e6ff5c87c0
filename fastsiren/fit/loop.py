"""The one fit loop: every task's training runs here.

    settings -> seed -> task (data) -> model -> Adam -> [sample -> jet -> loss -> backward ->
    (all-reduce) -> clip -> step] x steps -> evaluate -> outputs, metrics.json, curve.png

The run folder (``out``) holds everything needed to understand and redo a run, under stable names:

    settings.json   the resolved settings (device-dependent defaults filled in)
    log.jsonl       one JSON line per logged step: step, loss, the task's scalars, seconds
    checkpoint.pt   model, optimizer, step and RNG state (``fastsiren.fit.checkpoint``)
    metrics.json    final metrics, settings, data, wall time, points/s, backend, device, versions
    curve.png       loss (and the task's progress metric) against the step
    ...             the task's own outputs

Exact resume: the checkpoint holds the weights, Adam's moments, the step, the sampling generator
and torch's RNG state, so a run stopped at step k and resumed reaches the weights of an
uninterrupted run with the same seed. Ctrl-C stops at the next step boundary, writes a checkpoint
and raises ``FitInterrupted`` (a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..tasks import FitContext, FitSettings, Task, get_task
from ..tasks.base import settings_from_kwargs
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, load_checkpoint, save_checkpoint

__all__ = ["FitInterrupted", "FitResult", "fit"]

# Options that may change when a run is resumed: how far it goes and how it reports, never what
# it computes.
RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every")


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C during a fit: a checkpoint was written; ``--resume`` continues from it."""


@dataclass
class FitResult:
    """What ``fit`` returns: the run folder, the final metrics, the trained model and task."""

    out_dir: Path
    metrics: dict[str, Any]
    model: nn.Module
    task: Task


def fit(
    task: str | type[Task],
    input: str | Path | list | tuple | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **settings: Any,
) -> FitResult:
    """Fit a task's signal; the Python face of ``fastsiren fit TASK [INPUT] --out DIR``.

    Args:
        task: a registered name ("image", ...) or a ``Task`` subclass.
        input: file(s) or folder; None fits the task's built-in sample.
        out: the run folder (default ``runs/<task>``); created if missing.
        resume: continue the run in ``out`` from its checkpoint (its saved settings are used;
            only ``steps``, ``log_every`` and ``checkpoint_every`` may be changed).
        overwrite: start afresh in an ``out`` that already holds a run (otherwise refused, so
            that a rerun never replaces a finished or stopped run by accident).
        progress: show a progress bar.
        **settings: fields of the task's settings dataclass (``steps=500, lr=1e-4, ...``).

    Example::

        result = fs.fit("image", "photo.png", out="runs/photo", steps=500)
        result.metrics["metrics"]["psnr"]
        model = fs.load_model("runs/photo")    # the fitted fs.Siren, at any coordinates
    """
    task_cls = get_task(task) if isinstance(task, str) else task
    out_dir = Path(out) if out is not None else Path("runs") / task_cls.name
    if input is not None:
        settings["input"] = input
    checkpoint = None
    if resume:
        checkpoint, settings_obj = _resume_settings(task_cls, out_dir, settings)
    else:
        if not overwrite and (out_dir / CHECKPOINT_NAME).is_file():
            raise InputError(
                f"--out {out_dir} already holds a run ({CHECKPOINT_NAME}); continue it with "
                f"--resume {out_dir}, choose another --out, or pass --overwrite to replace it")
        settings_obj = settings_from_kwargs(task_cls.settings_class, settings)
    settings_obj.validate()
    context = _make_context(settings_obj.device)
    try:
        return _run(task_cls, settings_obj.resolved(context.device), context, out_dir,
                    checkpoint, progress)
    finally:
        if context.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# -- setting up ----------------------------------------------------------------------------------
def _resume_settings(task_cls, out_dir: Path, overrides: dict) -> tuple[dict, FitSettings]:
    rank, world_size = _env_rank()
    own = _rank_checkpoint(out_dir, rank)
    # Sharded processes each wrote their own; replicated ones share rank 0's.
    checkpoint = load_checkpoint(own if own.is_file() else out_dir)
    if checkpoint.get("sharded") and (checkpoint["rank"], checkpoint["world_size"]) != (
            rank, world_size):
        raise InputError(
            f"--resume {out_dir}: the run was sharded over {checkpoint['world_size']} processes "
            f"and has no checkpoint for process {rank} of {world_size}; resume it with "
            f"--nproc_per_node {checkpoint['world_size']}")
    if checkpoint["task"] != task_cls.name:
        raise InputError(f"--resume {out_dir}: the checkpoint is from task "
                         f"{checkpoint['task']!r}, not {task_cls.name!r}")
    saved = settings_from_kwargs(task_cls.settings_class, checkpoint["settings"])
    for name, value in overrides.items():
        if name in RESUMABLE_CHANGES or value is None:
            continue
        given = settings_from_kwargs(task_cls.settings_class, {name: value})
        if getattr(given, name) != getattr(saved, name):
            raise InputError(
                f"--resume {out_dir}: --{name.replace('_', '-')} differs from the run being "
                f"resumed ({getattr(saved, name)!r}); only {', '.join(RESUMABLE_CHANGES)} "
                "may change"
            )
    changes = {k: v for k, v in overrides.items() if k in RESUMABLE_CHANGES and v is not None}
    return checkpoint, dataclasses.replace(saved, **changes)


def _env_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _make_context(device_name: str) -> FitContext:
    rank, world_size = _env_rank()
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (torch "
                         f"{torch.__version__}, cuda build: {torch.version.cuda})")
    device = torch.device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return FitContext(device, rank, world_size)


def _rank_checkpoint(out_dir: Path, rank: int) -> Path:
    return out_dir / (CHECKPOINT_NAME if rank == 0 else f"checkpoint-rank{rank}.pt")


def _prepare_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None


# -- the loop -----------------------------------------------------------------------------------
def _run(task_cls, settings: FitSettings, context: FitContext, out_dir: Path,
         checkpoint: dict | None, progress: bool) -> FitResult:
    from tqdm.auto import tqdm

    wall_start = time.perf_counter()
    settings.validate()
    primary = context.rank == 0
    torch.manual_seed(settings.seed)
    task = task_cls.create(settings, context)  # reads the data: bad input fails before any write
    _prepare_out_dir(out_dir)
    model = task.build_model().to(context.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator(device=context.device).manual_seed(settings.seed + context.rank)
    replicated = context.world_size > 1 and not task.shards_items
    step, train_seconds, points = 0, 0.0, 0
    if checkpoint is not None:
        if checkpoint["model_kwargs"] != task.model_kwargs():
            raise InputError(
                f"--resume {out_dir}: the data no longer matches the checkpoint (model "
                f"{checkpoint['model_kwargs']} saved, {task.model_kwargs()} now); did the "
                "input change?")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        generator.set_state(checkpoint["rng"]["generator"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if context.device.type == "cuda" and "cuda" in checkpoint["rng"]:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], context.device)
        step, train_seconds = checkpoint["step"], checkpoint["train_seconds"]
        points = checkpoint["points"]
    if primary:
        _write_json(out_dir / "settings.json", {"task": task.name, **settings.to_dict()})
    log = _Log(out_dir / _rank_name("log.jsonl", context), keep_below=step)

    def save() -> None:
        rng = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
        if context.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(context.device)
        if primary or task.shards_items:
            save_checkpoint(_rank_checkpoint(out_dir, context.rank), {
                "format": CHECKPOINT_FORMAT, "task": task.name, "step": step,
                "settings": settings.to_dict(), "model_class": task.model_class,
                "model_kwargs": task.model_kwargs(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "rng": rng,
                "train_seconds": train_seconds, "points": points,
                "sharded": task.shards_items, "rank": context.rank,
                "world_size": context.world_size,
            })

    bar = tqdm(total=settings.steps, initial=step, desc=f"fit {task.name}",
               disable=not (progress and primary), dynamic_ncols=True)
    first_loss = log.first.get("loss") if log.first else None
    with bar, _StopOnSigint() as stop:
        while step < settings.steps:
            tick = time.perf_counter()
            batch = task.sample(step, generator)
            loss, logged = task.loss(task.jet(model, batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if replicated:
                _average_gradients(model, context.world_size)
            if settings.clip_grad is not None:
                if hasattr(model, "clip_grad_norm_"):
                    model.clip_grad_norm_(settings.clip_grad)
                else:
                    nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
            optimizer.step()
            if step % settings.log_every == 0 or step == settings.steps - 1:
                values = {"loss": loss.item(), **{k: float(v) for k, v in logged.items()}}
                if not math.isfinite(values["loss"]):
                    raise FloatingPointError(
                        f"loss became {values['loss']} at step {step}; lower --lr or set "
                        "--clip-grad")
                first_loss = values["loss"] if first_loss is None else first_loss
                log.write({"step": step, **values, "seconds": train_seconds})
                shown = {"loss": f"{values['loss']:.3g}"}
                if task.progress_metric in values:
                    shown[task.progress_metric] = f"{values[task.progress_metric]:.4g}"
                bar.set_postfix(shown, refresh=False)
            # (loss.item() at each logged step, the last included, waits for the GPU: the
            # per-step ticks add up to the real time without a synchronisation every step.)
            train_seconds += time.perf_counter() - tick
            points += batch["coords"].shape[:-1].numel()
            step += 1
            bar.update(1)
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                save()
            if stop.requested:
                save()
                raise FitInterrupted(
                    f"interrupted at step {step}/{settings.steps}; checkpoint written to "
                    f"{_rank_checkpoint(out_dir, context.rank)}; continue with --resume "
                    f"{out_dir}")
    model.eval()
    with torch.no_grad():
        metrics = task.evaluate(model)
        # Replicated processes hold the same model: one of them writes the files.
        outputs = task.write_outputs(model, out_dir) if primary or task.shards_items else []
    shards = _gather(
        {"metrics": metrics, "train_seconds": train_seconds, "points": points,
         "signals": task.n_signals, "outputs": [str(Path(p).relative_to(out_dir))
                                                for p in outputs]},
        context)
    # Processes run side by side: the fit took as long as the slowest one.
    train_seconds = max(s["train_seconds"] for s in shards)
    summary = {
        "task": task.name,
        "metrics": task.summarize([s["metrics"] for s in shards], out_dir) if primary else
        metrics,
        "steps": step,
        "first_logged_loss": first_loss,
        "final_logged_loss": log.last.get("loss") if log.last else None,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - wall_start,
        "points_per_second": sum(s["points"] for s in shards) / train_seconds
        if train_seconds > 0 else None,
        "signals_per_second": sum(s["signals"] for s in shards) / train_seconds
        if train_seconds > 0 else None,
        "backend": _backend_name(model, context.device),
        "device": _device_name(context.device),
        "world_size": context.world_size,
        "data": task.describe(),
        "settings": settings.to_dict(),
        "outputs": sorted(p for s in shards for p in s["outputs"]),
        "versions": _versions(),
    }
    if primary:
        _write_json(out_dir / "metrics.json", summary)
        _plot_curve(out_dir / "log.jsonl", out_dir / "curve.png", task.progress_metric)
    return FitResult(out_dir, summary, model, task)


def _rank_name(name: str, context: FitContext) -> str:
    if context.rank == 0:
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}-rank{context.rank}{dot}{suffix}"


def _average_gradients(model: nn.Module, world_size: int) -> None:
    """Replicated training under torchrun: every process sampled its own points; the mean of
    their gradients is the gradient of the mean loss."""
    for p in model.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world_size)


def _gather(value: dict, context: FitContext) -> list[dict]:
    """Every process's ``value`` (under torchrun), in rank order."""
    if context.world_size == 1:
        return [value]
    gathered: list = [None] * context.world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


class _Log:
    """The JSON-lines curve; on resume, lines from steps at or after the checkpoint are
    dropped (they are redone)."""

    def __init__(self, path: Path, keep_below: int):
        self.path, self.first, self.last = path, None, None
        kept = []
        if keep_below > 0 and path.is_file():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("step", math.inf) < keep_below:
                        kept.append(line)
                        self.first = self.first or entry
                        self.last = entry
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, entry: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        self.last = entry


class _StopOnSigint:
    """Turns the first Ctrl-C into a request to stop at the next step boundary (a second one
    interrupts at once). Only in the main thread, where Python delivers signals."""

    def __enter__(self):
        self.requested = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


# -- reporting ----------------------------------------------------------------------------------
def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _backend_name(model: nn.Module, device: torch.device) -> str:
    from ..dispatch import resolve

    return resolve(getattr(model, "backend", "auto"), device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _versions() -> dict[str, str]:
    from .. import __version__

    versions = {"fastsiren": __version__, "torch": torch.__version__,
                "python": platform.python_version()}
    with contextlib.suppress(Exception):
        import triton

        versions["triton"] = triton.__version__
    return versions


def _plot_curve(log_path: Path, png_path: Path, metric: str | None) -> None:
    """Loss (log scale) and the progress metric against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    if not entries:
        return
    steps = [e["step"] for e in entries]
    panels = [("loss", True)] + ([(metric, False)] if metric and metric in entries[0] else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (name, log_scale) in zip(axes[0], panels):
        ax.plot(steps, [e[name] for e in entries])
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if log_scale and all(e[name] > 0 for e in entries):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
