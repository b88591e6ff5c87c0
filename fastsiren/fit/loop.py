"""The one fit loop: every task's training runs here.

    settings -> seed -> task (data) -> model -> Adam -> [sample -> jet -> loss -> backward ->
    (average over processes) -> clip -> step] x steps -> evaluate -> outputs, metrics.json,
    curve.png

Processes (``torchrun``) are handled in ``fastsiren.fit.distributed``, the run folder's reports
in ``fastsiren.fit.report``.

The run folder (``out``) holds everything needed to understand and redo a run, under stable names:

    settings.json   the resolved settings (device-dependent defaults filled in)
    log.jsonl       one JSON line per logged step: step, loss, the task's scalars, seconds
    checkpoint.pt   model, optimizer, step and RNG state (``fastsiren.checkpoint``)
    metrics.json    final metrics, settings, data, wall time, points/s, backend, device, versions
    curve.png       loss (and the task's progress metric) against the step
    ...             the task's own outputs

Exact resume: the checkpoint holds the weights, Adam's moments, the step, the sampling generator
and torch's RNG state, so a run stopped at step k and resumed reaches the weights of an
uninterrupted run with the same seed. Ctrl-C stops at the next step boundary, writes a checkpoint
and raises ``FitInterrupted`` (a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ..errors import InputError
from ..tasks import FitContext, FitSettings, Task, get_task
from ..tasks.base import settings_from_kwargs
from . import distributed
from .report import Log, backend_name, device_name, plot_curve, versions, write_json

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
    context = distributed.make_context(settings_obj.device)
    try:
        run = _Run.start(task_cls, settings_obj.resolved(context.device), context, out_dir)
        if checkpoint is not None:
            run.restore(checkpoint)
        run.train(progress)
        return run.finish()
    finally:
        distributed.stop(context)


# -- resuming -------------------------------------------------------------------------------------
def _resume_settings(task_cls, out_dir: Path, overrides: dict) -> tuple[dict, FitSettings]:
    """The checkpoint to resume from and its settings with the allowed ``overrides``."""
    rank, world_size, _ = distributed.process_place()
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


def _rank_checkpoint(out_dir: Path, rank: int) -> Path:
    return out_dir / (CHECKPOINT_NAME if rank == 0 else f"checkpoint-rank{rank}.pt")


def _rank_name(name: str, rank: int) -> str:
    """A per-process file name: ``log.jsonl`` for rank 0, ``log-rank1.jsonl`` ... for others."""
    if rank == 0:
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}-rank{rank}{dot}{suffix}"


def _prepare_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None


# -- the loop -------------------------------------------------------------------------------------
@dataclass
class _Run:
    """One fit in progress: what it trains and how far it got."""

    task: Task
    settings: FitSettings
    context: FitContext
    out_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    wall_start: float
    step: int = 0
    train_seconds: float = 0.0
    points: int = 0
    log: Log | None = None

    @property
    def primary(self) -> bool:
        return self.context.rank == 0

    @property
    def writes_files(self) -> bool:
        """Replicated processes hold one model: rank 0 writes; sharded ones each their own."""
        return self.primary or self.task.shards_items

    @classmethod
    def start(cls, task_cls: type[Task], settings: FitSettings, context: FitContext,
              out_dir: Path) -> _Run:
        """Seed, read the data (bad input fails before any write), build the model and Adam."""
        wall_start = time.perf_counter()
        settings.validate()
        torch.manual_seed(settings.seed)
        task = task_cls.create(settings, context)
        distributed.check_batch_items(task, context)
        _prepare_out_dir(out_dir)
        model = task.build_model().to(context.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        generator = torch.Generator(device=context.device).manual_seed(settings.seed
                                                                       + context.rank)
        return cls(task, settings, context, out_dir, model, optimizer, generator, wall_start)

    def restore(self, checkpoint: dict) -> None:
        """Continue from ``checkpoint``: weights, Adam's moments, step, RNG states."""
        if checkpoint["model_kwargs"] != self.task.model_kwargs():
            raise InputError(
                f"--resume {self.out_dir}: the data no longer matches the checkpoint (model "
                f"{checkpoint['model_kwargs']} saved, {self.task.model_kwargs()} now); did the "
                "input change?")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.generator.set_state(checkpoint["rng"]["generator"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if self.context.device.type == "cuda" and "cuda" in checkpoint["rng"]:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], self.context.device)
        self.step, self.train_seconds = checkpoint["step"], checkpoint["train_seconds"]
        self.points = checkpoint["points"]

    def save(self) -> None:
        """The checkpoint of this process (see ``writes_files``)."""
        if not self.writes_files:
            return
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.context.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.context.device)
        task, context = self.task, self.context
        save_checkpoint(_rank_checkpoint(self.out_dir, context.rank), {
            "format": CHECKPOINT_FORMAT, "task": task.name, "step": self.step,
            "settings": self.settings.to_dict(), "model_class": task.model_class,
            "model_kwargs": task.model_kwargs(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rng,
            "train_seconds": self.train_seconds, "points": self.points,
            "sharded": task.shards_items, "rank": context.rank,
            "world_size": context.world_size,
        })

    def train(self, progress: bool) -> None:
        """Steps until ``settings.steps``: checkpoints on schedule, the log at logged steps,
        Ctrl-C at a step boundary."""
        from tqdm.auto import tqdm

        settings = self.settings
        if self.primary:
            write_json(self.out_dir / "settings.json",
                       {"task": self.task.name, **settings.to_dict()})
        self.log = Log(self.out_dir / _rank_name("log.jsonl", self.context.rank),
                       keep_below=self.step)
        bar = tqdm(total=settings.steps, initial=self.step, desc=f"fit {self.task.name}",
                   disable=not (progress and self.primary), dynamic_ncols=True)
        with bar, _StopOnSigint() as stop:
            while self.step < settings.steps:
                tick = time.perf_counter()
                batch, loss, logged = self.take_step()
                if self.step % settings.log_every == 0 or self.step == settings.steps - 1:
                    self.write_log(loss, logged, bar)
                # (loss.item() at each logged step, the last included, waits for the GPU: the
                # per-step ticks add up to the real time without a synchronisation every step.)
                self.train_seconds += time.perf_counter() - tick
                self.points += batch["coords"].shape[:-1].numel()
                self.step += 1
                bar.update(1)
                if self.step % settings.checkpoint_every == 0 or self.step == settings.steps:
                    self.save()
                if stop.requested:
                    self.save()
                    raise FitInterrupted(
                        f"interrupted at step {self.step}/{settings.steps}; checkpoint written "
                        f"to {_rank_checkpoint(self.out_dir, self.context.rank)}; continue "
                        f"with --resume {self.out_dir}")

    def take_step(self) -> tuple[dict, torch.Tensor, dict]:
        """sample -> jet -> loss -> backward -> (average over processes) -> clip -> Adam."""
        task, model = self.task, self.model
        batch = distributed.share_of_batch(task.sample(self.step, self.generator), task,
                                           self.context)
        loss, logged = task.loss(task.jet(model, batch), batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if distributed.replicated(task, self.context):
            distributed.average_gradients(model, self.context.world_size)
        if self.settings.clip_grad is not None:
            if hasattr(model, "clip_grad_norm_"):
                model.clip_grad_norm_(self.settings.clip_grad)
            else:
                nn.utils.clip_grad_norm_(model.parameters(), self.settings.clip_grad)
        self.optimizer.step()
        return batch, loss, logged

    def write_log(self, loss: torch.Tensor, logged: dict, bar) -> None:
        """One log line (the mean over processes that share a model) and the progress bar."""
        values = {"loss": loss.detach(), **logged}
        if distributed.replicated(self.task, self.context):
            values = distributed.mean_over_processes(values, self.context.world_size)
        values = {k: float(v) for k, v in values.items()}
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(
                f"loss became {values['loss']} at step {self.step}; lower --lr or set "
                "--clip-grad")
        self.log.write({"step": self.step, **values, "seconds": self.train_seconds})
        shown = {"loss": f"{values['loss']:.3g}"}
        metric = self.task.progress_metric
        if metric in values:
            shown[metric] = f"{values[metric]:.4g}"
        bar.set_postfix(shown, refresh=False)

    def finish(self) -> FitResult:
        """Evaluate, write the task's outputs, gather every process's results into
        metrics.json and curve.png (rank 0)."""
        task, model, out_dir = self.task, self.model, self.out_dir
        model.eval()
        with torch.no_grad():
            metrics = task.evaluate(model)
            outputs = task.write_outputs(model, out_dir) if self.writes_files else []
        shards = distributed.gather(
            {"metrics": metrics, "train_seconds": self.train_seconds, "points": self.points,
             "signals": task.n_signals,
             "outputs": [str(Path(p).relative_to(out_dir)) for p in outputs]},
            self.context)
        summary = self.summary(metrics, shards)
        if self.primary:
            write_json(out_dir / "metrics.json", summary)
            plot_curve(out_dir / "log.jsonl", out_dir / "curve.png", task.progress_metric)
        return FitResult(out_dir, summary, model, task)

    def summary(self, metrics: dict, shards: list[dict]) -> dict:
        """metrics.json: the task's metrics (merged over shards on rank 0) and the run's
        facts."""
        # Processes run side by side: the fit took as long as the slowest one.
        train_seconds = max(s["train_seconds"] for s in shards)

        def per_second(key: str) -> float | None:
            total = sum(s[key] for s in shards)
            return total / train_seconds if train_seconds > 0 else None

        first, last = self.log.first, self.log.last
        return {
            "task": self.task.name,
            "metrics": self.task.summarize([s["metrics"] for s in shards], self.out_dir)
            if self.primary else metrics,
            "steps": self.step,
            "first_logged_loss": first.get("loss") if first else None,
            "final_logged_loss": last.get("loss") if last else None,
            "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - self.wall_start,
            "points_per_second": per_second("points"),
            "signals_per_second": per_second("signals"),
            "backend": backend_name(self.model, self.context.device),
            "device": device_name(self.context.device),
            "world_size": self.context.world_size,
            "data": self.task.describe(),
            "settings": self.settings.to_dict(),
            "outputs": sorted(p for s in shards for p in s["outputs"]),
            "versions": versions(),
        }


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
