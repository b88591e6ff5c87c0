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
    checkpoint.pt   model, optimizer, step and RNG state (``fastsiren.checkpoint``); a run in
                    groups: every group's weights (groups/ holds each group's checkpoint)
    metrics.json    final metrics, settings, data, wall time, points/s, backend, device, versions
    curve.png       loss (and the task's progress metric) against the step
    ...             the task's own outputs

Groups: a task may fit its signals in groups, one after another (``Task.groups``; a dataset of
images larger than ``--networks-per-batch``); every other task is one group. Each group gets its
own model, Adam and checkpoint (``groups/group-00003.pt``, the same contents as ``checkpoint.pt``),
and only the current group's data, model and Adam state are held. A group's checkpoint is
rewritten when it ends with its results (metrics, network names, output files); at the end of
the run ``checkpoint.pt`` holds every group's weights stacked into one model (with the names),
which ``fs.load_model(run, index=i)`` reads. Resume takes each finished group's results from its
checkpoint (its data is not read again) and continues the interrupted group from its checkpoint
(or its start, when none was written); groups start from the same seeds whenever they run.

Early stop: after the loss the task may say which networks of a batched model have reached
their target (``Task.stopped_networks``); the step leaves their rows of every parameter and of
Adam's moments as they were, and the group ends when all have stopped.

Exact resume: the checkpoint holds the weights, Adam's moments, the step, the sampling generator
and torch's RNG state (and the task's state: which networks stopped), so a run stopped at step k
and resumed reaches the weights of an uninterrupted run with the same seed. Ctrl-C, SIGTERM
(what ``timeout``, ``kill``, ``docker stop`` and schedulers send) and SIGHUP stop at the next
step boundary, write a checkpoint and raise ``FitInterrupted`` (a ``KeyboardInterrupt``); a
second signal stops at once. Besides every
``checkpoint_every`` steps, a checkpoint is written every ``checkpoint_minutes`` minutes, so a
run killed outright loses minutes, not hours.

Every file goes in through a temporary file and a rename (``fastsiren.checkpoint.atomic_write``;
the task's outputs are written to a hidden folder and renamed into place), so a reader or a
crash never meets half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ..errors import InputError
from ..jet_ops import unavailable
from ..registry import model_from_checkpoint
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
GROUPS_FOLDER = "groups"  # a run in groups: one checkpoint per group


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
            run.resume_from(checkpoint)
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
    return run is not None and run.checkpointed


# -- resuming -------------------------------------------------------------------------------------
def _resume_settings(task_cls, out_dir: Path, overrides: dict) -> tuple[dict, FitSettings]:
    """The checkpoint to resume from and its settings with the allowed ``overrides``."""
    rank, world_size, _ = distributed.process_place()
    checkpoint = load_checkpoint(_newest_checkpoint(out_dir, rank))
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


def _group_checkpoint_name(group: int, rank: int) -> str:
    return _rank_name(f"{GROUPS_FOLDER}/group-{group:05d}.pt", rank)


def _newest_checkpoint(out_dir: Path, rank: int) -> Path:
    """The checkpoint that holds the settings of process ``rank``'s run: its own checkpoint,
    else (a run in groups stopped before its end) its latest group's, else rank 0's (replicated
    processes share it); the folder itself when there is none (load_checkpoint says so)."""
    for owner in dict.fromkeys((rank, 0)):
        own = _rank_checkpoint(out_dir, owner)
        if own.is_file():
            return own
        groups = [out_dir / _group_checkpoint_name(g, owner) for g in range(_groups_in(out_dir))]
        written = [path for path in groups if path.is_file()]
        if written:
            return written[-1]
    return out_dir


def _groups_in(out_dir: Path) -> int:
    """One past the highest group number with a checkpoint in ``out_dir`` (any process)."""
    numbers = [int(path.name.split("-")[1].split(".")[0])
               for path in (out_dir / GROUPS_FOLDER).glob("group-*.pt")]
    return max(numbers, default=-1) + 1


def _rank_name(name: str, rank: int) -> str:
    """A per-process file name: ``log.jsonl`` for rank 0, ``log-rank1.jsonl`` ... for others."""
    if rank == 0:
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}-rank{rank}{dot}{suffix}"


# -- the loop -------------------------------------------------------------------------------------
@dataclass
class _Run:
    """One fit in progress: what it trains and how far it got. ``model``, ``optimizer``,
    ``generator``, ``step`` and the ``group_*`` counters belong to the current group."""

    task: Task
    settings: FitSettings
    context: FitContext
    out_dir: Path  # the run folder
    write_dir: Path  # where it writes now: out_dir, or its staging folder until the swap
    folder: RunFolder | None  # rank 0's claim on out_dir
    wall_start: float
    n_groups: int = 1
    resuming: bool = False
    model: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    generator: torch.Generator | None = None
    group: int = 0
    step: int = 0
    train_seconds: float = 0.0  # the whole run's (every group's)
    points: int = 0
    group_seconds: float = 0.0  # the current group's
    group_points: int = 0
    all_stopped: bool = False  # every network of the group reached its target
    wall_before: float = 0.0  # wall seconds of the run's earlier sessions (resumed runs)
    log: Log | None = None
    saved_step: int | None = None  # the current group's last checkpoint
    checkpointed: bool = False  # a checkpoint of this run exists (it is resumable)
    saved_at: float = 0.0
    inputs: list | None = None
    results: list[dict] = field(default_factory=list)  # per finished group, in order

    @property
    def primary(self) -> bool:
        return self.context.rank == 0

    @property
    def grouped(self) -> bool:
        """Whether the run is fitted in several groups (checkpoints under groups/)."""
        return self.n_groups > 1

    @property
    def writes_files(self) -> bool:
        """Replicated processes hold one model: rank 0 writes; sharded ones each their own."""
        return self.primary or self.task.shards_items

    @property
    def checkpoint_name(self) -> str:
        """The current group's checkpoint in the run folder."""
        if self.grouped:
            return _group_checkpoint_name(self.group, self.context.rank)
        return _rank_name(CHECKPOINT_NAME, self.context.rank)

    def file(self, name: str) -> Path:
        """Where this process writes the run's file ``name`` now (recorded in the manifest)."""
        if self.folder is not None:
            self.folder.record([name])
        return self.write_dir / name

    @classmethod
    def start(cls, task_cls: type[Task], settings: FitSettings, context: FitContext,
              out_dir: Path, write_dir: Path, folder: RunFolder | None) -> _Run:
        """Seed, read the data and check what can be checked (bad input fails before the first
        step); each group's model and Adam are built when the group starts."""
        wall_start = time.perf_counter()
        settings.validate()
        _check_backend(settings.backend, context.device)
        torch.manual_seed(settings.seed)
        task = task_cls.create(settings, context)
        distributed.check_batch_items(task, context)
        run = cls(task, settings, context, out_dir, write_dir, folder, wall_start,
                  n_groups=task.groups())
        run.inputs = fingerprint_inputs(settings.input) if run.primary else []
        if folder is not None:
            folder.inputs = run.inputs
        return run

    def resume_from(self, checkpoint: dict) -> None:
        """Continue the run whose newest checkpoint is ``checkpoint``: each group is restored
        from its own checkpoint when it starts; here the run's wall time so far and a warning
        when the input changed."""
        self.resuming = True
        self.wall_before = checkpoint.get("wall_seconds", checkpoint["train_seconds"])
        changed = changed_inputs(checkpoint.get("inputs", self.inputs), self.inputs)
        if changed and self.primary:
            shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
            warnings.warn(f"--resume {self.out_dir}: the input changed since the run began "
                          f"({shown}: size or contents); continuing on what is there now",
                          stacklevel=3)

    # -- a group --------------------------------------------------------------------------------
    def saved_group(self) -> dict | None:
        """The current group's checkpoint when resuming and one was written (replicated
        processes read rank 0's)."""
        if not self.resuming:
            return None
        own = self.out_dir / self.checkpoint_name
        if not own.is_file() and not self.grouped and not self.task.shards_items:
            own = self.out_dir / CHECKPOINT_NAME
        return load_checkpoint(own) if own.is_file() else None

    def enter_group(self, index: int) -> bool:
        """Make group ``index`` current: its data read, a model and Adam built, and its
        checkpoint restored when the run resumes and one was written. False, with nothing read,
        for a group that a resumed run in groups had finished (its results come from its
        checkpoint), and for a group none of whose signals could be read (nothing to fit)."""
        self.group = index
        saved = self.saved_group()
        if saved is not None and self.grouped and "result" in saved and (
                saved["all_stopped"] or saved["step"] >= self.settings.steps):
            self.count_saved_time(saved)
            self.results.append(saved["result"])
            self.step, self.checkpointed = saved["step"], True
            return False
        task, settings, device = self.task, self.settings, self.context.device
        self.model = self.optimizer = None  # the previous group's go before this one's come
        task.start_group(index)
        if task.n_signals == 0:  # none of the group's signals could be read: nothing to fit
            self.results.append({"metrics": task.evaluate(None), "names": [], "outputs": [],
                                 "signals": 0})
            return False
        self.model = task.build_model().to(device)
        self.optimizer = task.build_optimizer(self.model)
        self.generator = torch.Generator(device=device).manual_seed(settings.seed
                                                                    + self.context.rank)
        self.step, self.group_seconds, self.group_points = 0, 0.0, 0
        self.saved_step, self.all_stopped = None, False
        if saved is not None:
            self.restore(saved)
        return True

    def restore(self, checkpoint: dict) -> None:
        """Continue the current group from ``checkpoint``: weights, Adam's moments, step, RNG
        states, the task's state."""
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
        self.task.restore_state(checkpoint.get("task_state", {}))
        self.step = self.saved_step = checkpoint["step"]
        self.checkpointed = True
        self.count_saved_time(checkpoint)

    def count_saved_time(self, checkpoint: dict) -> None:
        """Add a restored group's seconds and points (a checkpoint holds its group's own) to the
        run's, and keep the newest wall time seen."""
        self.group_seconds, self.group_points = checkpoint["train_seconds"], checkpoint["points"]
        self.train_seconds += self.group_seconds
        self.points += self.group_points
        self.wall_before = max(self.wall_before,
                               checkpoint.get("wall_seconds", checkpoint["train_seconds"]))

    def save(self, result: dict | None = None) -> None:
        """The current group's checkpoint for this process (see ``writes_files``); ``result``:
        the group ended, with these results."""
        if not self.writes_files:
            return
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.context.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.context.device)
        task, context = self.task, self.context
        state = {
            "format": CHECKPOINT_FORMAT, "task": task.name, "step": self.step,
            "settings": self.settings.to_dict(), "model_class": task.model_class,
            "model_kwargs": task.model_kwargs(), "model": self.model.state_dict(),
            "names": task.network_names(), "optimizer": self.optimizer.state_dict(),
            "rng": rng, "task_state": task.state(), "train_seconds": self.group_seconds,
            "points": self.group_points, "wall_seconds": self.wall_seconds(),
            "inputs": self.inputs, "sharded": task.shards_items, "rank": context.rank,
            "world_size": context.world_size,
        }
        if self.grouped:
            state.update(group=self.group, groups=self.n_groups)
        if result is not None:
            state.update(result=result, all_stopped=self.all_stopped)
        path = self.file(self.checkpoint_name)
        path.parent.mkdir(exist_ok=True)
        save_checkpoint(path, state)
        self.saved_step, self.saved_at, self.checkpointed = self.step, time.monotonic(), True
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

    # -- training -------------------------------------------------------------------------------
    def train(self, progress: bool) -> None:
        """Every group, one after another: its steps until ``settings.steps`` (or until all its
        networks stopped), checkpoints on schedule, the log at logged steps, Ctrl-C at a step
        boundary; then its evaluation and outputs."""
        from tqdm.auto import tqdm

        settings, context = self.settings, self.context
        if self.folder is not None and context.world_size > 1:
            self.folder.record(_rank_name(name, rank) for rank in range(1, context.world_size)
                               for name in ("log.jsonl", "checkpoint.pt"))
        if context.world_size > 1:  # rank 0 records every process's group checkpoints
            counts = distributed.gather(self.n_groups, context)
            if self.folder is not None:
                self.folder.record(_group_checkpoint_name(group, rank)
                                   for rank, count in enumerate(counts) if count > 1
                                   for group in range(count))
        if self.primary:
            write_json(self.file("settings.json"), {"task": self.task.name, **settings.to_dict()})
        self.log = Log(self.file(_rank_name("log.jsonl", context.rank)))
        self.saved_at = time.monotonic()
        total = settings.steps * self.n_groups
        bar = tqdm(total=total, desc=f"fit {self.task.name}",
                   disable=not (progress and self.primary), dynamic_ncols=True)
        expected = ExpectedTime(self.task.name, total, None if bar.disable else _say_above_bar,
                                groups=self.n_groups)
        with bar, _StopOnSignals(self) as stop:
            for index in range(self.n_groups):
                if self.grouped:
                    bar.set_description(f"fit {self.task.name} group {index + 1}/{self.n_groups}",
                                        refresh=False)
                training = self.enter_group(index)
                done = self.step if training else settings.steps
                bar.update(done)
                expected.skip(done)
                if training:
                    self.log.keep_before(self.group, self.step)
                    self.train_group(bar, expected, stop)
                    self.end_group()
                if stop.requested is not None:
                    raise self.interrupted(stop.requested)

    def train_group(self, bar, expected: ExpectedTime, stop: _StopOnSignals) -> None:
        """The current group's steps."""
        settings = self.settings
        while self.step < settings.steps:
            tick = time.perf_counter()
            taken = self.take_step()
            if taken is None:  # every network reached its target: the group is done
                self.all_stopped = True
                bar.update(settings.steps - self.step)
                expected.skip(settings.steps - self.step)
                return
            batch, loss, logged = taken
            if self.step % settings.log_every == 0 or self.step == settings.steps - 1:
                self.write_log(loss, logged, bar)
            # (loss.item() at each logged step, the last included, waits for the GPU: the
            # per-step ticks add up to the real time without a synchronisation every step.)
            seconds = time.perf_counter() - tick
            self.train_seconds += seconds
            self.group_seconds += seconds
            expected.step_done(seconds)
            points = batch["coords"].shape[:-1].numel()
            self.points += points
            self.group_points += points
            self.step += 1
            bar.update(1)
            if stop.requested is None and self.checkpoint_due():
                self.save()
            if stop.requested is not None:
                self.save()
                raise self.interrupted(stop.requested)

    def interrupted(self, signum: int) -> FitInterrupted:
        where = f"step {self.step}/{self.settings.steps}"
        if self.grouped:
            where += f" of group {self.group + 1}/{self.n_groups}"
        return FitInterrupted(
            f"interrupted by {signal.Signals(signum).name} at {where}; checkpoint written to "
            f"{self.out_dir / self.checkpoint_name}; continue with --resume {self.out_dir}",
            signum)

    def take_step(self) -> tuple[dict, torch.Tensor, dict] | None:
        """sample -> jet -> loss -> backward -> (average over processes) -> clip -> Adam, the
        networks that stopped left as they were; None when all of them have stopped."""
        task, model = self.task, self.model
        batch = distributed.share_of_batch(task.sample(self.step, self.generator), task,
                                           self.context)
        loss, logged = task.loss(task.jet(model, batch), batch)
        stopped = task.stopped_networks(self.step)
        if stopped is not None and bool(stopped.all()):
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if distributed.replicated(task, self.context):
            distributed.average_gradients(model, self.context.world_size)
        if self.settings.clip_grad is not None:
            if hasattr(model, "clip_grad_norm_"):
                model.clip_grad_norm_(self.settings.clip_grad)
            else:
                nn.utils.clip_grad_norm_(model.parameters(), self.settings.clip_grad)
        with _rows_kept(model, self.optimizer, stopped):
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
        where = {"group": self.group} if self.grouped else {}
        self.log.write({**where, "step": self.step, **values, "seconds": self.train_seconds})
        shown = {"loss": f"{values['loss']:.3g}"}
        metric = self.task.progress_metric
        if metric in values:
            shown[metric] = f"{values[metric]:.4g}"
        bar.set_postfix(shown, refresh=False)

    def end_group(self) -> None:
        """Evaluate the group's networks and write their outputs into the run folder. In a run
        in groups, the group's checkpoint is then rewritten with these results, and its model
        and Adam state are let go."""
        task, model = self.task, self.model
        if self.saved_step != self.step:  # stopped early, between two scheduled checkpoints
            self.save()
        model.eval()
        staging = self.staging()
        try:
            with torch.no_grad():
                metrics = task.evaluate(model)
                if self.writes_files:
                    task.write_outputs(model, staging)
            outputs = self.place(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result = {"metrics": metrics, "names": task.network_names(), "outputs": outputs,
                  "signals": task.n_signals}
        self.results.append(result)
        if self.grouped:
            self.save(result)
            self.model = self.optimizer = None

    # -- the end ------------------------------------------------------------------------------
    def staging(self) -> Path:
        """A fresh hidden folder for files that are renamed into place once written."""
        staging = self.out_dir / _rank_name(OUTPUTS_STAGING, self.context.rank)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        return staging

    def finish(self) -> FitResult:
        """A run in groups: its weights file; then every process's results gathered into
        metrics.json and curve.png (rank 0)."""
        task, out_dir = self.task, self.out_dir
        model = self.write_weights() if self.grouped else self.model
        staging = self.staging()
        try:
            shards = distributed.gather(
                {"metrics": [r["metrics"] for r in self.results],
                 "names": [name for r in self.results for name in r["names"] or ()],
                 "train_seconds": self.train_seconds, "points": self.points,
                 "signals": sum(r["signals"] for r in self.results),
                 "outputs": [name for r in self.results for name in r["outputs"]]},
                self.context)
            summary = self.summary(shards, staging, model)
            if self.primary:
                plot_curve(self.write_dir / "log.jsonl", staging / "curve.png",
                           task.progress_metric)
            self.place(staging)
            if self.primary:  # last: a run with metrics.json has all its outputs
                write_json(self.file("metrics.json"), summary)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return FitResult(out_dir, summary, model, task)

    def write_weights(self) -> nn.Module:
        """The weights file of a run in groups (``checkpoint.pt``; ``-rankR`` under torchrun):
        every group's networks stacked in order into one model of the task's class, with their
        names (Adam's state stays in each group's checkpoint). Returns that model. Holds every
        group's weights at once, never their Adam state or data."""
        counts = [r["signals"] for r in self.results]
        if not any(counts):
            raise InputError(f"{self.task.name}: none of the signals could be read, nothing "
                             "was fitted")
        stacked: dict[str, torch.Tensor] = {}
        for index, count in enumerate(counts):
            if count == 0:  # an empty group has no checkpoint
                continue
            state = load_checkpoint(self.write_dir / _group_checkpoint_name(
                index, self.context.rank))
            start = sum(counts[:index])
            for key, value in state["model"].items():
                if key not in stacked:
                    stacked[key] = value.new_empty((sum(counts), *value.shape[1:]))
                stacked[key][start:start + count] = value
            model_class, model_kwargs = state["model_class"], state["model_kwargs"]
        weights = {
            "format": CHECKPOINT_FORMAT, "task": self.task.name, "step": self.settings.steps,
            "settings": self.settings.to_dict(), "model_class": model_class,
            "model_kwargs": {**model_kwargs, "n_networks": sum(counts)}, "model": stacked,
            "names": [name for r in self.results for name in r["names"] or ()],
            "groups": self.n_groups, "train_seconds": self.train_seconds,
            "points": self.points, "wall_seconds": self.wall_seconds(), "inputs": self.inputs,
            "sharded": self.task.shards_items, "rank": self.context.rank,
            "world_size": self.context.world_size,
        }
        save_checkpoint(self.file(_rank_name(CHECKPOINT_NAME, self.context.rank)), weights)
        return model_from_checkpoint(weights, map_location=self.context.device,
                                     backend=self.settings.backend,
                                     compile_chunks=self.settings.compile_chunks)

    def place(self, staging: Path) -> list[str]:
        """Rename the files written in ``staging`` into the run folder (recorded first)."""
        names = _files_under(staging)
        if self.folder is not None:
            self.folder.record(names)
        for name in names:
            (self.out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, self.out_dir / name)
        return names

    def summary(self, shards: list[dict], staging: Path, model: nn.Module) -> dict:
        """metrics.json: the task's metrics (merged over groups and shards on rank 0; a summary
        file it writes goes to ``staging``) and the run's facts."""
        # Processes run side by side: the fit took as long as the slowest one.
        train_seconds = max(s["train_seconds"] for s in shards)

        def per_second(key: str) -> float | None:
            total = sum(s[key] for s in shards)
            return total / train_seconds if train_seconds > 0 else None

        own = shards[self.context.rank]["metrics"]
        merged = [metrics for s in shards for metrics in s["metrics"]]
        names = shards[self.context.rank]["names"]
        first, last = self.log.first, self.log.last
        return {
            "task": self.task.name,
            "metrics": self.task.summarize(merged, staging) if self.primary
            else own[0] if len(own) == 1 else own,
            "steps": self.step if not self.grouped else self.settings.steps,
            "first_logged_loss": first.get("loss") if first else None,
            "final_logged_loss": last.get("loss") if last else None,
            "train_seconds": train_seconds,
            "wall_seconds": self.wall_seconds(),
            "points_per_second": per_second("points"),
            "signals_per_second": per_second("signals"),
            "backend": backend_name(model, self.context.device),
            "device": device_name(self.context.device),
            "world_size": self.context.world_size,
            "data": {**self.task.describe(), **({"names": names} if names else {})},
            "settings": self.settings.to_dict(),
            "outputs": sorted({p for s in shards for p in s["outputs"]}
                              | set(_files_under(staging))),
            "inputs": self.inputs,
            "versions": versions(),
        }


@contextlib.contextmanager
def _rows_kept(model: nn.Module, optimizer: torch.optim.Optimizer,
               stopped: torch.Tensor | None):
    """Leaves the stopped networks' rows (dim 0 of every parameter of a batched model) and their
    rows of the optimizer's state as they were before the step inside. Adam moves a parameter
    whose gradient is zero (its moments carry the earlier steps), so the rows are put back after
    the step; a moment the step created (the first step) starts at zero for them."""
    if stopped is None or not bool(stopped.any()):
        yield
        return
    rows = stopped.nonzero().squeeze(1)

    def row_tensors(p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = optimizer.state.get(p, {})
        return {"param": p, **{k: v for k, v in state.items() if torch.is_tensor(v)
                               and v.dim() > 0 and v.shape[0] == p.shape[0]}}

    kept = {p: {k: t.detach()[rows].clone() for k, t in row_tensors(p).items()}
            for p in model.parameters()}
    yield
    with torch.no_grad():
        for p, before in kept.items():
            for key, tensor in row_tensors(p).items():
                old = before.get(key)
                tensor.index_copy_(0, rows, old if old is not None
                                   else tensor.new_zeros((len(rows), *tensor.shape[1:])))


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
                else "the finished groups' checkpoints are kept" if run.checkpointed
                else "no checkpoint was written")
        raise FitInterrupted(f"second {signal.Signals(signum).name} at step {run.step}: stopped "
                             f"at once; {kept}", signum)

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        return False
