"""Optional dependencies: the one place that knows which extra provides which module.

A command or task that needs an extra calls ``require(extra)`` before any work starts (before
data is read or a step is taken), so that a missing package is one line naming what to install
rather than a ``ModuleNotFoundError`` minutes into a fit::

    require("mesh", "fit sdf")
    # MissingDependency: fit sdf needs mcubes (the 'mesh' extra), not installed here:
    # pip install 'fastsiren[mesh]'

``MissingDependency`` is an ``InputError`` (the command line prints it as ``error:`` and exits 2)
and an ``ImportError`` (code that guards an import keeps working).
"""

from __future__ import annotations

import importlib

from .errors import InputError

__all__ = ["EXTRAS", "MissingDependency", "missing", "require"]

# extra -> {module imported: distribution that installs it}. pyproject.toml's
# [project.optional-dependencies] lists the same distributions (tests/test_deps.py checks).
EXTRAS: dict[str, dict[str, str]] = {
    # marching cubes, mesh files and metrics, and trimesh's inside test (rtree's R-tree)
    "mesh": {"trimesh": "trimesh", "mcubes": "pymcubes", "rtree": "rtree"},
    "video": {"imageio_ffmpeg": "imageio-ffmpeg"},  # MP4 through imageio's FFMPEG plugin
    "triton": {"triton": "triton"},
}


class MissingDependency(InputError, ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that do not import here (empty when all do).

    Importing, rather than only finding, the module also catches an install that is present but
    broken (a compiled extension built for another Python, a shared library that is missing).
    """
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    absent = []
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except (ImportError, OSError):
            absent.append(module)
    return absent


def require(extra: str, needed_by: str = "this") -> None:
    """Raise ``MissingDependency`` unless every module of ``extra`` imports.

    ``needed_by`` names what needs it in the message ("fit sdf", "fastsiren mesh").
    """
    absent = missing(extra)
    if absent:
        raise MissingDependency(
            f"{needed_by} needs {', '.join(absent)} (the '{extra}' extra), not installed here: "
            f"pip install 'fastsiren[{extra}]'")
