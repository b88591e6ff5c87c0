"""Tasks: data plus a loss on jets, fitted by the one loop of ``fastsiren.fit``.

``TASKS`` maps each CLI name to ``"module:Class"`` (imported only when used, so the CLI's
``--help`` does not import every task's dependencies). A new task adds one line here; its class
follows ``fastsiren.tasks.base.Task``.
"""

from __future__ import annotations

from ..errors import InputError
from .base import FitContext, FitSettings, Task, load_class, setting

__all__ = ["TASKS", "FitContext", "FitSettings", "Task", "get_task", "setting"]

TASKS: dict[str, str] = {
    "image": "fastsiren.tasks.image:ImageTask",
    "audio": "fastsiren.tasks.audio:AudioTask",
    "video": "fastsiren.tasks.video:VideoTask",
    "poisson": "fastsiren.tasks.poisson:PoissonTask",
    "sdf": "fastsiren.tasks.sdf:SdfTask",
    "occupancy": "fastsiren.tasks.occupancy:OccupancyTask",
    "helmholtz": "fastsiren.tasks.helmholtz:HelmholtzTask",
    "wave": "fastsiren.tasks.wave:WaveTask",
    "hypernet": "fastsiren.tasks.hypernet:HypernetTask",
    "init": "fastsiren.tasks.meta_init:InitTask",
}


def get_task(name: str) -> type[Task]:
    """The task class registered under ``name``."""
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return load_class(TASKS[name])
