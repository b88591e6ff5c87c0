"""Backend selection.

- ``torch``: the jet math of ``fastsiren.sine_jet`` in torch ops with the hand VJP; runs anywhere.
- ``triton``: the same Function over the fused kernels of ``fastsiren.kernels``; CUDA tensors, or
  CPU tensors under ``TRITON_INTERPRET=1`` (for tests).
- ``reference``: nested autograd on the plain SIREN (for tests and benchmarks).
- ``auto``: triton for CUDA tensors when Triton imports, else torch.

The environment variable ``FASTSIREN_BACKEND`` replaces ``auto`` for a whole run; an explicit
backend argument other than ``auto`` wins over it.
"""

from __future__ import annotations

import functools
import os
import warnings
from types import ModuleType

import torch

BACKENDS = ("auto", "torch", "triton", "reference")
ENV_VAR = "FASTSIREN_BACKEND"


def _check_name(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where}: unknown backend {name!r}, expected one of {BACKENDS}")
    return name


@functools.cache
def _triton_ops() -> ModuleType | Exception:
    try:
        from .kernels import sine_jet
    except Exception as exc:  # ImportError, or a broken Triton install failing at import
        return exc
    return sine_jet


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve(name: str | None, device: torch.device) -> str:
    """The concrete backend ("torch", "triton" or "reference") for tensors on ``device``."""
    name = _check_name(name or "auto", "backend argument")
    if name == "auto":
        name = _check_name(os.environ.get(ENV_VAR, "auto") or "auto", f"${ENV_VAR}")
    if name != "auto":
        if name == "triton":
            _require_triton(device)
        return name
    if device.type == "cuda":
        ops = _triton_ops()
        if isinstance(ops, Exception):
            _warn_fallback(ops)
            return "torch"
        return "triton"
    return "torch"


@functools.cache
def _warn_fallback(exc: Exception) -> None:
    warnings.warn(
        f"fastsiren: Triton is unavailable ({exc}); using the torch backend", stacklevel=3
    )


def _require_triton(device: torch.device) -> None:
    ops = _triton_ops()
    if isinstance(ops, Exception):
        raise RuntimeError(
            f"backend 'triton' is not available: importing the Triton kernels failed ({ops}). "
            "Install triton (pip install 'fastsiren[triton]') or use backend='torch'."
        ) from ops
    if device.type != "cuda" and not _interpreting():
        raise RuntimeError(
            f"backend 'triton' needs CUDA tensors, got tensors on {device}; set "
            "TRITON_INTERPRET=1 before importing fastsiren to run the kernels on the CPU (slow), "
            "or use backend='torch'."
        )


def jet_ops(name: str) -> ModuleType:
    """The per-layer ops module of a concrete backend ("torch" or "triton")."""
    if name == "torch":
        from . import sine_jet

        return sine_jet
    if name == "triton":
        ops = _triton_ops()
        if isinstance(ops, Exception):
            raise RuntimeError(f"backend 'triton' is not available: {ops}") from ops
        return ops
    raise ValueError(f"backend {name!r} has no jet ops")
