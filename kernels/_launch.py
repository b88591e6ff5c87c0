"""Launch helpers shared by the kernel modules: interpreter flag, allocation, tuning configs."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Triton decides at decoration time whether a kernel is compiled or interpreted, so the flag is
# read once, when the kernel modules are imported, not per call.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# FASTSIREN_POISON=1 fills every fresh kernel output with NaN, so a tile a kernel forgot to
# write fails a comparison loudly instead of passing with stale memory (tests set it).
POISON_ENV = "FASTSIREN_POISON"

# Storage dtypes the kernels accept. fp64 is for exactness checks (the interpreter runs it; on
# GPU tl.dot in fp64 is slow but correct); half types are loaded as such, computed in fp32.
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# First layers with at most this many input features accumulate u with unrolled FMAs: a tl.dot
# needs a K tile of at least 16, so below that most of the tensor-core work would be padding.
FMA_MAX_K = 16


def poison_enabled() -> bool:
    return os.environ.get(POISON_ENV, "0") not in ("", "0")


def new_empty(*shape: int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.empty`` for a kernel output, NaN-filled when poisoning is on."""
    t = torch.empty(shape, dtype=dtype or like.dtype, device=like.device)
    if poison_enabled():
        t.fill_(float("nan"))
    return t


def acc_dtype(dtype: torch.dtype):
    """The accumulator / epilogue dtype for a storage dtype: fp64 stays fp64, the rest fp32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(dtype: torch.dtype, mode: str) -> str:
    """``tl.dot``'s input_precision: the knob for fp32, "ieee" for fp64 (no TF32 there)."""
    return mode if dtype == torch.float32 else "ieee"


def pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1): tl.arange extents must be powers of two."""
    return triton.next_power_of_2(max(int(n), 1))


def size_bucket(n: int) -> int:
    """log2 bucket of a size, for autotune keys (never key on the raw point count: every new N
    would re-run the tuning)."""
    return max(int(n), 1).bit_length()


def configs(gpu: list[triton.Config], interpret: triton.Config) -> list[triton.Config]:
    """The autotune list: the GPU configs, or the single interpreter config (multi-config
    autotuning needs a GPU to time on)."""
    return [interpret] if INTERPRET else gpu


def check_tensor(t: torch.Tensor, name: str, dims: int, like: torch.Tensor | None = None):
    """Validate rank, dtype and device; return ``t`` made contiguous."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name} must have {dims} dims, got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} has dtype {t.dtype}; the Triton kernels support {SUPPORTED_DTYPES}"
        )
    if like is not None:
        if t.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, expected {like.dtype}")
        if t.device != like.device:
            raise RuntimeError(f"{name} is on {t.device}, expected {like.device}")
    if t.device.type != "cuda" and not INTERPRET:
        raise RuntimeError(
            f"{name} is on {t.device}: the Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 "
            "set before importing fastsiren to run them on the CPU"
        )
    return t.contiguous()


def row_strided(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when its last dim is unit-stride (kernels take the other strides), else a
    contiguous copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def check_shape(t: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
