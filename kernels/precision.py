"""Matmul input precision of the Triton kernels: the one knob behind every ``tl.dot``.

fp32 operands can enter the tensor cores three ways (Triton's ``input_precision``):

  "ieee"    exact fp32 products on the CUDA cores (no tensor cores): slow
  "tf32x3"  three TF32 products per fp32 product on the tensor cores: fp32-accurate, the
            default for fp32
  "tf32"    one TF32 product (10-bit mantissa): fastest, about 1e-3 relative error per GEMM

Resolution, first match wins:

1. under ``TRITON_INTERPRET=1``: always "ieee" (the interpreter computes in numpy, exactly);
2. an explicit override: ``set_input_precision(mode)`` or ``with input_precision(mode): ...``;
3. the environment variable ``FASTSIREN_INPUT_PRECISION``;
4. PyTorch's own switch: "tf32" where torch lets fp32 matmuls use TF32
   (``torch.backends.cuda.matmul.fp32_precision``, then the global
   ``torch.backends.fp32_precision``, else the legacy ``allow_tf32`` flag; the new API is read
   first: once it has been used, torch >= 2.9 raises on reading the legacy flag), otherwise
   "tf32x3", which keeps fp32 accuracy to a few roundings: emulated bit by bit on SIREN jets
   and training steps (``bench/measure_input_precision.py``), its error is 0.8-1.3x that of
   fp32 "ieee" matmuls with a round-to-nearest accumulator, 2-5x (hidden-layer weight
   gradients, long reductions: up to 16x, 2.4e-5 of their scale) with a truncating one, where
   "tf32" is ~3000x. kernels/README.md has the table.
   "ieee" runs only when asked for (2 or 3).

The override is process-wide, not thread- or context-local, on purpose: autograd runs CUDA
backward passes on its own worker thread, which would not see a thread-local or ``contextvars``
setting made around ``loss.backward()``. bf16/fp16 operands ignore the knob (they always use
the tensor cores with fp32 accumulation); fp64 operands always use "ieee".

This module imports no Triton, so ``fastsiren.kernels`` imports on machines without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fastsiren import env

__all__ = ["INPUT_PRECISIONS", "current_input_precision", "input_precision", "set_input_precision"]

INPUT_PRECISIONS = ("ieee", "tf32x3", "tf32")
FP32_ACCURATE = "tf32x3"  # the mode for fp32 when torch does not allow TF32

_override: str | None = None


def _check(mode: str, where: str) -> str:
    if mode not in INPUT_PRECISIONS:
        raise ValueError(f"{where}: unknown input precision {mode!r}, expected one of "
                         f"{INPUT_PRECISIONS}")
    return mode


def set_input_precision(mode: str | None) -> None:
    """Use ``mode`` for every fp32 ``tl.dot`` from now on; None returns to the default."""
    global _override
    _override = None if mode is None else _check(mode, "set_input_precision")


@contextmanager
def input_precision(mode: str | None) -> Iterator[None]:
    """Temporarily set the input precision (process-wide; see the module docstring)."""
    global _override
    previous = _override
    set_input_precision(mode)
    try:
        yield
    finally:
        _override = previous


def current_input_precision() -> str:
    """The mode the next kernel launch will use (see the resolution order above)."""
    if env.interpreting():
        return "ieee"
    if _override is not None:
        return _override
    from_env = env.input_precision()
    if from_env:
        return _check(from_env, f"${env.INPUT_PRECISION}")
    return _torch_matmul_precision()


def _torch_matmul_precision() -> str:
    """"tf32" where PyTorch's cuBLAS fp32 matmul setting allows TF32, else "tf32x3" (see the
    module docstring)."""
    for setting in (torch.backends.cuda.matmul, torch.backends):
        mode = getattr(setting, "fp32_precision", "none")
        if mode in ("tf32", "ieee"):
            return "tf32" if mode == "tf32" else FP32_ACCURATE
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else FP32_ACCURATE
