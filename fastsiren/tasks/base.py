"""What a task declares; the fit loop (``fastsiren.fit``) does everything else.

A task is data plus a loss on jets. It says:

- ``name``: the CLI word (``fastsiren fit NAME``) and the registry key;
- ``settings_class``: a dataclass subclassing ``FitSettings``, one field per option, each made
  with ``setting(...)`` (default, help, range, per-device defaults). The CLI is generated from it,
  so ``--help`` and the Python API cannot drift apart;
- ``order`` (0 value, 1 gradient, 2 Laplacian) and ``hessian_diag``: the jet the loss needs;
- ``in_features`` / ``out_features`` (set in ``__init__`` once the data is read), from which
  ``build_model`` makes a ``fs.Siren`` with the settings' width, depth and frequencies;
- ``sample(step, generator) -> batch``: a dict of tensors for one step (``batch["coords"]`` is
  what ``jet`` evaluates the model at; all points or a random fraction drawn with ``generator``);
- ``loss(jet, batch) -> (loss, logged)``: a scalar tensor and a dict of detached scalar tensors
  to log (the loop converts them to floats only when it logs, so a GPU is not synchronised every
  step); ``progress_metric`` names the one the progress bar shows beside the loss;
- ``evaluate(model) -> metrics``: final metrics (floats), written into ``metrics.json``;
- ``write_outputs(model, out_dir) -> paths``: the task's files in the run folder.

Optional hooks: ``create(settings, context)`` (return a variant, e.g. the image task's
many-images form), ``describe()`` (facts about the data for metrics.json), ``summarize(...)``
(merge the metrics of torchrun shards, on rank 0), ``model_class`` / ``model_kwargs`` (what
``load_model`` rebuilds), ``jet`` (how the model is evaluated on a batch). The positional INPUT
of the CLI is ``settings.input`` (a tuple of paths; empty: the task's built-in sample).

Groups and early stop (the many-images form uses them; every other task keeps the defaults: one
group, no early stop): ``groups()`` says how many groups of signals the process fits one after
another, each with its own model and optimizer, so that a dataset of any size is fitted in
bounded memory; ``start_group(k)`` makes group k the task's data; ``network_names()`` names the
networks of a batched model for the run's weights file; ``stopped_networks(step)`` says which
networks have reached their target and stop updating; ``state()`` / ``restore_state()`` carry
what the task must remember through a checkpoint (which networks stopped, and when).

The loop owns the rest: seeding, device and backend, the optimizer (``build_optimizer``: Adam at
``settings.lr`` unless the task says otherwise), gradient clipping, progress, the JSON-lines
log, checkpoints and resume, Ctrl-C, ``metrics.json`` and the curve.
A task never names a backend and never differentiates with autograd: it gets the jet it asked
for. Batched tasks (many signals, hypernetworks) return a model whose ``jet`` takes a leading batch
dimension (``BatchedSiren`` in ``fastsiren.modules``, or override ``jet``/``build_model``);
the loop does not care.

Processes are the loop's business; a task never knows how many run it. Under ``torchrun`` the
loop averages the gradients of every process (one model) and the values each step logs, except
for a task with ``shards_items = True`` (independent signals, e.g. a folder of images): it is built
on its share of the items (``context.shard(items)``) and each process fits its own models. A task
whose batches are global batches of independent items along dimension 0 says how many in
``batch_items``; the loop then hands each process every world_size-th of them.

A minimal task, complete (register it by adding one line to ``fastsiren/tasks/__init__.py``)::

    @dataclass
    class ToneSettings(FitSettings):
        # a sine tone sampled at 512 points
        cycles: float = setting(5.0, "periods of the tone over [-1, 1]", positive=True)
        steps: int | None = setting(None, "optimizer steps", positive=True, cpu=200, cuda=1000)

    class ToneTask(Task):
        name = "tone"
        settings_class = ToneSettings
        order = 0
        progress_metric = "mse"
        example = "fastsiren fit tone --cycles 8 --out runs/tone"

        def __init__(self, settings, context):
            super().__init__(settings, context)
            self.in_features = self.out_features = 1
            t = torch.linspace(-1, 1, 512, device=context.device)[:, None]
            self.batch = {"coords": t, "target": torch.sin(math.pi * settings.cycles * t)}

        def sample(self, step, generator):
            return self.batch

        def loss(self, jet, batch):
            mse = (jet.value - batch["target"]).square().mean()
            return mse, {"mse": mse.detach()}

        def evaluate(self, model):
            with torch.no_grad():
                return {"mse": self.loss(self.jet(model, self.batch), self.batch)[0].item()}

        def write_outputs(self, model, out_dir):
            return []
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InputError
from ..jet import Jet
from ..registry import build_model

__all__ = ["FitContext", "FitSettings", "Task", "device_defaults", "load_class", "setting"]


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    cpu: Any = None,
    cuda: Any = None,
    positive: bool = False,
    low: float | None = None,
    high: float | None = None,
    choices: tuple | None = None,
    metavar: str | None = None,
    parse: typing.Callable[[str], Any] | None = None,
    cli: bool = True,
) -> Any:
    """A settings field with its help and its checks.

    Args:
        default: the value when none is given; ``None`` with ``cpu``/``cuda`` set means "depends
            on the device" (filled in by ``FitSettings.resolved``).
        help: one line for ``--help`` and the docs.
        cpu, cuda: device-dependent defaults (CPU: a run of at most two minutes on two cores
            with a result worth looking at; CUDA: the paper's settings).
        positive: the value must be > 0. low, high: inclusive bounds.
        choices: allowed values. metavar: the CLI placeholder. parse: str -> value for the CLI
            when the type alone does not say how (e.g. "256x256"). cli: expose as an option.
    """
    metadata = {
        "help": help, "cpu": cpu, "cuda": cuda, "positive": positive, "low": low, "high": high,
        "choices": choices, "metavar": metavar, "parse": parse, "cli": cli,
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple (immutable) for a sequence default")
    return field(default=default, metadata=metadata)


def device_defaults(f: dataclasses.Field) -> dict[str, Any] | None:
    """{"cpu": ..., "cuda": ...} for a field whose default depends on the device, else None."""
    if f.metadata.get("cpu") is None and f.metadata.get("cuda") is None:
        return None
    return {"cpu": f.metadata.get("cpu"), "cuda": f.metadata.get("cuda")}


@dataclass
class FitSettings:
    """Options shared by every task. Subclasses add their own fields and may redefine these to
    change a default (a dataclass field redefined in a subclass keeps its position)."""

    input: tuple[str, ...] = setting(
        (), "input file(s) or folder; none: the task's built-in sample", cli=False
    )
    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=300, cuda=10000)
    lr: float = setting(1e-4, "Adam learning rate", positive=True)
    width: int | None = setting(None, "hidden features per layer", positive=True, cpu=128,
                                cuda=256)
    depth: int = setting(3, "hidden layers (between the first and the output layer)", low=0)
    omega0: float = setting(30.0, "omega_0 of the hidden sine layers", positive=True)
    first_omega0: float = setting(30.0, "omega_0 of the first sine layer", positive=True)
    clip_grad: float | None = setting(
        None, "clip the gradient norm to this value (default: no clipping)", positive=True
    )
    seed: int = setting(0, "seed of the initialisation and of the sampling", low=0)
    device: str = setting("auto", "where to fit; auto: cuda when available",
                          choices=("auto", "cpu", "cuda"))
    backend: str = setting("auto", "engine backend; auto: triton on CUDA, torch on CPU",
                           choices=("auto", "torch", "triton", "reference"))
    compile_chunks: bool = setting(False, "torch backend: compile each chunk of points with "
                                   "torch.compile (a minute once, then faster steps on CPU)")
    log_every: int = setting(10, "steps between log lines (and progress-bar updates)",
                             positive=True)
    checkpoint_every: int = setting(1000, "steps between checkpoints (one is always written "
                                    "at the end and on Ctrl-C or SIGTERM)", positive=True)
    checkpoint_minutes: float = setting(10.0, "minutes between checkpoints, whatever the steps "
                                        "(a run killed outright loses at most this)",
                                        positive=True)

    def __post_init__(self):
        if isinstance(self.input, (str, Path)):
            self.input = (str(self.input),)
        elif self.input is None:
            self.input = ()
        else:
            self.input = tuple(str(p) for p in self.input)

    def resolved(self, device: torch.device) -> FitSettings:
        """A copy with the device-dependent defaults filled in for ``device`` and the device
        named explicitly."""
        changes: dict[str, Any] = {"device": device.type}
        for f in dataclasses.fields(self):
            per_device = device_defaults(f)
            if per_device is not None and getattr(self, f.name) is None:
                changes[f.name] = per_device["cuda" if device.type == "cuda" else "cpu"]
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise InputError naming the first field out of its range. Subclasses that add
        cross-field rules call ``super().validate()`` first."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            option = "--" + f.name.replace("_", "-")
            _check_type(option, value, hints[f.name])
            if value is None or isinstance(value, (tuple, str, bool)) and not meta.get("choices"):
                continue
            if meta.get("choices") and value not in meta["choices"]:
                raise InputError(f"{option}: expected one of {meta['choices']}, got {value!r}")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if not math.isfinite(value):
                raise InputError(f"{option}: expected a finite number, got {value!r}")
            if meta.get("positive") and value <= 0:
                raise InputError(f"{option}: expected a value > 0, got {value!r}")
            if meta.get("low") is not None and value < meta["low"]:
                raise InputError(f"{option}: expected a value >= {meta['low']}, got {value!r}")
            if meta.get("high") is not None and value > meta["high"]:
                raise InputError(f"{option}: expected a value <= {meta['high']}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class FitContext:
    """Where a task runs, made by the fit loop: its device, and the process's place among the
    processes of a torchrun (``rank`` of ``world_size``). A task reads ``device`` and, if it
    shards its items, calls ``shard``; the process count is the loop's business."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    def shard(self, items: typing.Sequence) -> list:
        """This process's share of ``items`` (every world_size-th, starting at rank); an
        InputError when there is none."""
        share = list(items[self.rank :: self.world_size])
        if not share:
            raise InputError(f"process {self.rank} of {self.world_size} got none of the "
                             f"{len(items)} items: run fewer processes than there are items")
        return share


def load_class(spec: str) -> type:
    """The class named by a ``"module:Class"`` registry entry, imported when asked for."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class Task:
    """Base class of every task; see the module docstring for the contract."""

    name: ClassVar[str]
    settings_class: ClassVar[type[FitSettings]] = FitSettings
    order: ClassVar[int] = 0
    hessian_diag: ClassVar[bool] = False
    progress_metric: ClassVar[str | None] = None
    example: ClassVar[str] = ""
    shards_items: ClassVar[bool] = False
    batch_items: int | None = None  # items along dim 0 of every batch, split across processes
    model_class: ClassVar[str] = "Siren"  # or "BatchedSiren" (model_kwargs then has n_networks)

    in_features: int
    out_features: int

    def __init__(self, settings: FitSettings, context: FitContext):
        self.settings = settings
        self.context = context
        self.device = context.device

    def single_input(self, what: str, hint: str = "") -> Path | None:
        """The one input file of a task that fits one (None: the built-in sample), or a one-line
        error naming ``what`` it expected ("WAV file", "mesh", ...)."""
        inputs = self.settings.input
        if len(inputs) > 1:
            raise InputError(f"{self.name} fits one {what}, got {len(inputs)} inputs{hint}")
        return Path(inputs[0]) if inputs else None

    @classmethod
    def create(cls, settings: FitSettings, context: FitContext) -> Task:
        """The task object the loop fits; a task may return a variant (the image task returns
        its many-images form for a folder)."""
        return cls(settings, context)

    # -- the model ---------------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the ``fs.Siren`` this task fits (stored in checkpoints, so
        ``fastsiren.load_model`` rebuilds it in one call)."""
        s = self.settings
        return {
            "in_features": self.in_features, "hidden_features": s.width,
            "hidden_layers": s.depth, "out_features": self.out_features,
            "outermost_linear": True, "first_omega_0": s.first_omega0,
            "hidden_omega_0": s.omega0,
        }

    def build_model(self) -> nn.Module:
        """An untrained ``model_class`` from ``model_kwargs`` on the settings' backend."""
        return build_model(self.model_class, self.model_kwargs(), backend=self.settings.backend,
                           compile_chunks=self.settings.compile_chunks)

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer of the fit: Adam at ``settings.lr`` (a task that learns or uses
        step sizes of its own returns another)."""
        return torch.optim.Adam(model.parameters(), lr=self.settings.lr)

    def jet(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Jet:
        """The jet the loss needs at ``batch["coords"]``."""
        return model.jet(batch["coords"], order=self.order, hessian_diag=self.hessian_diag)

    # -- what every task implements ----------------------------------------------------------
    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, jet: Jet, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        raise NotImplementedError

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        raise NotImplementedError

    # -- groups and early stop (optional) ----------------------------------------------------
    def groups(self) -> int:
        """How many groups of signals this process fits one after another, each with its own
        model and optimizer (only the current group's data, networks and optimizer state are
        held): 1 for every task but a dataset larger than one batch of networks."""
        return 1

    def start_group(self, index: int) -> None:
        """Hold group ``index``'s data: ``build_model``, ``model_kwargs``, ``sample``,
        ``evaluate`` and ``write_outputs`` are that group's until the next call. A task of one
        group holds its data from ``__init__``."""

    def network_names(self) -> list[str] | None:
        """Names of the current group's networks in order (network i of a batched model fits
        names[i]), kept in the run's weights file; None: the model fits one signal."""
        return None

    def stopped_networks(self, step: int) -> torch.Tensor | None:
        """Called right after ``loss`` at each step: which networks have stopped updating (bool
        [B]; those that reach their target in this step's loss included), or None when the task
        does not stop early. The loop keeps their parameters and optimizer state as they are and
        ends the group once all of them have stopped."""
        return None

    def state(self) -> dict[str, Any]:
        """What the task must carry through a checkpoint besides the model (tensors, numbers)."""
        return {}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Take back what ``state`` returned (resuming from a checkpoint)."""

    # -- optional ----------------------------------------------------------------------------
    @property
    def n_signals(self) -> int:
        """Signals fitted by this process (for signals/s in metrics.json); batched tasks: B."""
        return int(self.model_kwargs().get("n_networks", 1))

    def summarize(self, shard_metrics: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
        """The metrics for metrics.json from every process's ``evaluate`` (one entry without
        torchrun), called on rank 0 only; a sharded task merges its shards here and may write a
        summary file. Replicated processes hold one model: their metrics agree."""
        if len(shard_metrics) == 1 or not self.shards_items:
            return shard_metrics[0]
        return {"shards": shard_metrics}

    def describe(self) -> dict[str, Any]:
        """Facts about the data for metrics.json (shape, source, coordinate convention)."""
        return {}


def _check_type(option: str, value: Any, hint: Any) -> None:
    """An InputError when a number or flag of the Python API has the wrong type (``steps="3"``);
    other annotations are left to their fields' own parsing."""
    # Only a union (``int | None``) lists alternatives; the arguments of ``tuple[int, int]``
    # are its items' types, not the value's.
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    allowed = [a for a in (typing.get_args(hint) if union else (hint,)) if a is not type(None)]
    if value is None or not allowed or not all(a in (int, float, bool) for a in allowed):
        return
    kind = allowed[0]
    ok = (isinstance(value, bool) if kind is bool
          else isinstance(value, numbers.Real if kind is float else numbers.Integral)
          and not isinstance(value, bool))
    if not ok:
        expected = {int: "an integer", float: "a number", bool: "True or False"}[kind]
        raise InputError(f"{option}: expected {expected}, got {value!r} "
                         f"({type(value).__name__})")


def settings_from_kwargs(cls: type[FitSettings], kwargs: dict[str, Any]) -> FitSettings:
    """``cls(**kwargs)`` with an InputError naming unknown options."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise InputError(
            f"unknown setting(s) {unknown} for {cls.__name__}; expected some of {sorted(names)}"
        )
    return cls(**kwargs)
