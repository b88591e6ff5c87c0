"""The one fit loop: every task's training runs here.

    settings -> seed -> task (data) -> model -> Adam -> [sample -> jet -> loss -> backward ->
    (average over processes) -> clip -> step] x steps -> evaluate -> outputs, metrics.json,
    curve.png

Processes (``torchrun``) are handled in ``fastsiren.fit.distributed``, the run folder's reports
in ``fastsiren.fit.report``, its ownership (lock, manifest, the swap of ``--overwrite``) in
``fastsiren.fit.run_folder``.

The run folder (``out``) holds everything needed to understand and redo a run, under stable names:

    manifest.json   the files the run wrote and its inputs' sizes and hashes
    settings.json   the resolved settings (device-dependent defaults filled in)
    log.jsonl       one JSON line per logged step: step, loss, the task's scalars, seconds
    checkpoint.pt   model, optimizer, step and RNG state (``fastsiren.checkpoint``)
    metrics.json    final metrics, settings, data, wall time, points/s, backend, device, versions
    curve.png       loss (and the task's progress metric) against the step
    ...             the task's own outputs

Exact resume: the checkpoint holds the weights, Adam's moments, the step, the sampling generator
and torch's RNG state, so a run stopped at step k and resumed reaches the weights of an
uninterrupted run with the same seed. Ctrl-C, SIGTERM (what ``timeout``, ``kill``, ``docker
stop`` and schedulers send) and SIGHUP stop at the next step boundary, write a checkpoint and
raise ``FitInterrupted`` (a ``KeyboardInterrupt``); a second signal stops at once. Besides every
``checkpoint_every`` steps, a checkpoint is written every ``checkpoint_minutes`` minutes, so a
run killed outright loses minutes, not hours.

Every file goes in through a temporary file and a rename (``fastsiren.checkpoint.atomic_write``;
the task's outputs are written to a hidden folder and renamed into place), so a reader or a
crash never meets half a file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ..errors import InputError
from ..jet_ops import unavailable
from ..tasks import FitContext, FitSettings, Task, get_task
from ..tasks.base import settings_from_kwargs
from . import distributed
from .report import ExpectedTime, Log, backend_name, device_name, plot_curve, versions, write_json
from .run_folder import RunFolder, changed_inputs, fingerprint_inputs

__all__ = ["FitInterrupted", "FitResult", "fit"]

# Options that may change when a run is resumed: how far it goes and how it reports, never what
# it computes.
RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every", "checkpoint_minutes")
# The signals that ask a fit to save and stop (SIGHUP only where it exists).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
OUTPUTS_STAGING = ".fastsiren-outputs"


class FitInterrupted(KeyboardInterrupt):
    """A stop signal during a fit: a checkpoint was written; ``--resume`` continues from it.
    ``signum`` is the signal (the command line exits with 128 + signum)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


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
        out: the run folder (default ``runs/<task>``); created if missing, otherwise it must be
            empty: a new run never replaces files it did not write. One fit at a time owns it
            (``fastsiren.fit.run_folder``); a second one is refused with the owner's pid.
        resume: continue the run in ``out`` from its checkpoint (its saved settings are used;
            only ``RESUMABLE_CHANGES`` may be changed; a warning says when the input's size or
            contents changed since the run began).
        overwrite: start afresh in an ``out`` that already holds a run (otherwise refused, so
            that a rerun never replaces a finished or stopped run by accident). Only that run's
            own files are replaced, once the new run has written its first checkpoint: a new
            run that fails earlier leaves the old one as it was.
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
    settings_obj = None
    if not resume:  # every setting checked before the folder is touched
        settings_obj = settings_from_kwargs(task_cls.settings_class, settings)
        settings_obj.validate()
    rank, world_size, _ = distributed.process_place()
    # Rank 0 owns the folder; if it cannot claim it, it fails and torchrun stops the others.
    folder = RunFolder.claim(out_dir, resume=resume, overwrite=overwrite,
                             stage=world_size == 1) if rank == 0 else None
    context = None
    run = None
    try:
        checkpoint = None
        if resume:
            checkpoint, settings_obj = _resume_settings(task_cls, out_dir, settings)
            settings_obj.validate()
        context = distributed.make_context(settings_obj.device)
        distributed.barrier(context)  # the others write only once rank 0 owns the folder
        write_dir = folder.write_dir if folder is not None else out_dir
        run = _Run.start(task_cls, settings_obj.resolved(context.device), context, out_dir,
                         write_dir, folder)
        if checkpoint is not None:
            run.restore(checkpoint)
        run.train(progress)
        result = run.finish()
    except BaseException:
        if folder is not None:
            # a checkpoint written keeps the run (resumable); otherwise it leaves no trace
            folder.release(failed=not _has_checkpoint(run))
        raise
    finally:
        if context is not None:
            distributed.stop(context)
    if folder is not None:
        folder.release()
    return result


def _check_backend(backend: str, device: torch.device) -> None:
    """An InputError, before any work, when the backend cannot run on the device."""
    reason = unavailable(backend, device) if backend == "triton" else None
    if reason is not None:
        raise InputError(f"--backend triton: {reason}")


def _has_checkpoint(run: _Run | None) -> bool:
    return run is not None and run.saved_step is not None


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
    if changes.get("steps") is not None and changes["steps"] < checkpoint["step"]:
        raise InputError(
            f"--resume {out_dir}: the run already reached step {checkpoint['step']}, past "
            f"--steps {changes['steps']}; give --steps above {checkpoint['step']} to continue it")
    return checkpoint, dataclasses.replace(saved, **changes)


def _say_above_bar(line: str) -> None:
    """A line on stderr above the progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


def _rank_checkpoint(out_dir: Path, rank: int) -> Path:
    return out_dir / (CHECKPOINT_NAME if rank == 0 else f"checkpoint-rank{rank}.pt")


def _rank_name(name: str, rank: int) -> str:
    """A per-process file name: ``log.jsonl`` for rank 0, ``log-rank1.jsonl`` ... for others."""
    if rank == 0:
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}-rank{rank}{dot}{suffix}"


# -- the loop -------------------------------------------------------------------------------------
@dataclass
class _Run:
    """One fit in progress: what it trains and how far it got."""

    task: Task
    settings: FitSettings
    context: FitContext
    out_dir: Path  # the run folder
    write_dir: Path  # where it writes now: out_dir, or its staging folder until the swap
    folder: RunFolder | None  # rank 0's claim on out_dir
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    wall_start: float
    step: int = 0
    train_seconds: float = 0.0
    wall_before: float = 0.0  # wall seconds of the run's earlier sessions (resumed runs)
    points: int = 0
    log: Log | None = None
    saved_step: int | None = None
    saved_at: float = 0.0
    inputs: list | None = None

    @property
    def primary(self) -> bool:
        return self.context.rank == 0

    @property
    def writes_files(self) -> bool:
        """Replicated processes hold one model: rank 0 writes; sharded ones each their own."""
        return self.primary or self.task.shards_items

    def file(self, name: str) -> Path:
        """Where this process writes the run's file ``name`` now (recorded in the manifest)."""
        if self.folder is not None:
            self.folder.record([name])
        return self.write_dir / name

    @classmethod
    def start(cls, task_cls: type[Task], settings: FitSettings, context: FitContext,
              out_dir: Path, write_dir: Path, folder: RunFolder | None) -> _Run:
        """Seed, read the data and check what can be checked (bad input fails before the first
        step), build the model and Adam."""
        wall_start = time.perf_counter()
        settings.validate()
        _check_backend(settings.backend, context.device)
        torch.manual_seed(settings.seed)
        task = task_cls.create(settings, context)
        distributed.check_batch_items(task, context)
        model = task.build_model().to(context.device)
        optimizer = task.build_optimizer(model)
        generator = torch.Generator(device=context.device).manual_seed(settings.seed
                                                                       + context.rank)
        run = cls(task, settings, context, out_dir, write_dir, folder, model, optimizer,
                  generator, wall_start)
        run.inputs = fingerprint_inputs(settings.input) if run.primary else []
        if folder is not None:
            folder.inputs = run.inputs
        return run

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
        self.wall_before = checkpoint.get("wall_seconds", checkpoint["train_seconds"])
        self.saved_step = self.step
        changed = changed_inputs(checkpoint.get("inputs", self.inputs), self.inputs)
        if changed and self.primary:
            shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
            warnings.warn(f"--resume {self.out_dir}: the input changed since the run began "
                          f"({shown}: size or contents); continuing on what is there now",
                          stacklevel=2)

    def save(self) -> None:
        """The checkpoint of this process (see ``writes_files``)."""
        if not self.writes_files:
            return
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.context.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.context.device)
        task, context = self.task, self.context
        save_checkpoint(self.file(_rank_name(CHECKPOINT_NAME, context.rank)), {
            "format": CHECKPOINT_FORMAT, "task": task.name, "step": self.step,
            "settings": self.settings.to_dict(), "model_class": task.model_class,
            "model_kwargs": task.model_kwargs(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rng,
            "train_seconds": self.train_seconds, "points": self.points,
            "wall_seconds": self.wall_seconds(), "inputs": self.inputs,
            "sharded": task.shards_items, "rank": context.rank,
            "world_size": context.world_size,
        })
        self.saved_step, self.saved_at = self.step, time.monotonic()
        if self.folder is not None and self.folder.previous is not None:
            self.folder.swap_in()  # the new run holds a checkpoint: it replaces the old one
            self.write_dir = self.out_dir
            if self.log is not None:
                self.log.path = self.out_dir / self.log.path.name

    def wall_seconds(self) -> float:
        """Wall time of the whole run: earlier sessions of a resumed run and this one."""
        return self.wall_before + time.perf_counter() - self.wall_start

    def checkpoint_due(self) -> bool:
        settings = self.settings
        minutes = getattr(settings, "checkpoint_minutes", None)
        return (self.step % settings.checkpoint_every == 0 or self.step == settings.steps
                or minutes is not None
                and time.monotonic() - self.saved_at >= 60 * minutes)

    def train(self, progress: bool) -> None:
        """Steps until ``settings.steps``: checkpoints on schedule, the log at logged steps,
        Ctrl-C at a step boundary."""
        from tqdm.auto import tqdm

        settings = self.settings
        if self.folder is not None and self.context.world_size > 1:
            self.folder.record(_rank_name(name, rank) for rank in range(1, self.context.world_size)
                               for name in ("log.jsonl", "checkpoint.pt"))
        if self.primary:
            write_json(self.file("settings.json"), {"task": self.task.name, **settings.to_dict()})
        self.log = Log(self.file(_rank_name("log.jsonl", self.context.rank)),
                       keep_below=self.step)
        self.saved_at = time.monotonic()
        bar = tqdm(total=settings.steps, initial=self.step, desc=f"fit {self.task.name}",
                   disable=not (progress and self.primary), dynamic_ncols=True)
        expected = ExpectedTime(self.task.name, settings.steps - self.step,
                                None if bar.disable else _say_above_bar)
        with bar, _StopOnSignals(self) as stop:
            while self.step < settings.steps:
                tick = time.perf_counter()
                batch, loss, logged = self.take_step()
                if self.step % settings.log_every == 0 or self.step == settings.steps - 1:
                    self.write_log(loss, logged, bar)
                # (loss.item() at each logged step, the last included, waits for the GPU: the
                # per-step ticks add up to the real time without a synchronisation every step.)
                self.train_seconds += time.perf_counter() - tick
                expected.step_done(time.perf_counter() - tick)
                self.points += batch["coords"].shape[:-1].numel()
                self.step += 1
                bar.update(1)
                if stop.requested is None and self.checkpoint_due():
                    self.save()
                if stop.requested is not None:
                    self.save()
                    raise FitInterrupted(
                        f"interrupted by {signal.Signals(stop.requested).name} at step "
                        f"{self.step}/{settings.steps}; checkpoint written to "
                        f"{_rank_checkpoint(self.out_dir, self.context.rank)}; continue with "
                        f"--resume {self.out_dir}", stop.requested)

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
        # The task writes into a hidden folder; its files are renamed into place afterwards.
        staging = out_dir / _rank_name(OUTPUTS_STAGING, self.context.rank)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            with torch.no_grad():
                metrics = task.evaluate(model)
                if self.writes_files:
                    task.write_outputs(model, staging)
            shards = distributed.gather(
                {"metrics": metrics, "train_seconds": self.train_seconds,
                 "points": self.points, "signals": task.n_signals,
                 "outputs": _files_under(staging)}, self.context)
            summary = self.summary(metrics, shards, staging)
            if self.primary:
                plot_curve(self.write_dir / "log.jsonl", staging / "curve.png",
                           task.progress_metric)
            self.place(staging)
            if self.primary:  # last: a run with metrics.json has all its outputs
                write_json(self.file("metrics.json"), summary)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return FitResult(out_dir, summary, model, task)

    def place(self, staging: Path) -> None:
        """Rename the files written in ``staging`` into the run folder (recorded first)."""
        names = _files_under(staging)
        if self.folder is not None:
            self.folder.record(names)
        for name in names:
            (self.out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, self.out_dir / name)

    def summary(self, metrics: dict, shards: list[dict], staging: Path) -> dict:
        """metrics.json: the task's metrics (merged over shards on rank 0; a summary file it
        writes goes to ``staging``) and the run's facts."""
        # Processes run side by side: the fit took as long as the slowest one.
        train_seconds = max(s["train_seconds"] for s in shards)

        def per_second(key: str) -> float | None:
            total = sum(s[key] for s in shards)
            return total / train_seconds if train_seconds > 0 else None

        first, last = self.log.first, self.log.last
        return {
            "task": self.task.name,
            "metrics": self.task.summarize([s["metrics"] for s in shards], staging)
            if self.primary else metrics,
            "steps": self.step,
            "first_logged_loss": first.get("loss") if first else None,
            "final_logged_loss": last.get("loss") if last else None,
            "train_seconds": train_seconds,
            "wall_seconds": self.wall_seconds(),
            "points_per_second": per_second("points"),
            "signals_per_second": per_second("signals"),
            "backend": backend_name(self.model, self.context.device),
            "device": device_name(self.context.device),
            "world_size": self.context.world_size,
            "data": self.task.describe(),
            "settings": self.settings.to_dict(),
            "outputs": sorted({p for s in shards for p in s["outputs"]}
                              | set(_files_under(staging))),
            "inputs": self.inputs,
            "versions": versions(),
        }


def _files_under(folder: Path) -> list[str]:
    """The files below ``folder`` as sorted relative paths."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class _StopOnSignals:
    """Turns the first stop signal (``STOP_SIGNALS``) into a request to save and stop at the next
    step boundary; a second one stops at once, keeping the last checkpoint. Only in the main
    thread, where Python delivers signals."""

    def __init__(self, run: _Run):
        self.run = run

    def __enter__(self):
        self.requested: int | None = None
        self.previous: dict = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is None:
            self.requested = signum
            return
        run = self.run
        kept = (f"the checkpoint of step {run.saved_step} is kept" if run.saved_step is not None
                else "no checkpoint was written")
        raise FitInterrupted(f"second {signal.Signals(signum).name} at step {run.step}: stopped "
                             f"at once; {kept}", signum)

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        return False
