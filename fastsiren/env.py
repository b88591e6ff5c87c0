"""Every environment variable fastsiren reads, each parsed in one place: no other module reads
the environment.

Engine:

- ``FASTSIREN_BACKEND``: the backend ``auto`` stands for during a whole run
  (``fastsiren.dispatch.resolve``).
- ``FASTSIREN_CHUNK_BYTES``: bytes per stacked activation chunk on the CPU
  (``fastsiren.sine_jet.points_per_chunk``).
- ``FASTSIREN_COMPILE``: the run-wide default of ``compile_chunks`` (``fastsiren.siren_jet``,
  ``Siren``, ``BatchedSiren``): "1" compiles the torch backend's chunk functions with
  ``torch.compile`` (``fastsiren.jet_function``, ``fastsiren.fused_epilogues``); off when unset.
  An explicit ``compile_chunks`` argument wins over it.
- ``FASTSIREN_FUSED_NETWORK``: "0" keeps inference on the Triton backend layer by layer instead
  of the whole-network kernel (``fastsiren.kernels.network``); on by default.

Triton kernels:

- ``TRITON_INTERPRET``: Triton runs kernels in its interpreter on CPU tensors (tests); Triton
  itself reads it when a kernel is decorated (``fastsiren.kernels._launch``).
- ``FASTSIREN_INPUT_PRECISION``: the fp32 matmul mode of the kernels, "ieee", "tf32x3" or
  "tf32" (``fastsiren.kernels.precision``, which checks the name).
- ``FASTSIREN_POISON``: "1" fills every fresh kernel output with NaN, so a tile a kernel forgot
  to write fails a comparison (tests set it).
- ``FASTSIREN_ALL_CONFIGS``: "1" has the GPU test tier run every kept autotune config of each
  kernel once against the torch backend (``tests/test_triton_configs.py``), not only the one
  autotuning picks.

Processes (set by ``torchrun``; ``torchrun_ranks``):

- ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``: this process's rank, the number of processes, and
  its rank on this machine (its GPU).

Benchmarks:

- ``TORCHINDUCTOR_CACHE_DIR``: torch.compile's on-disk cache (``inductor_cache_dir``).

Values are read when used, not at import (except where Triton fixes them at import), so a
malformed one fails the call that needs it with a one-line ``InputError`` naming the variable,
and ``import fastsiren`` always works.
"""

from __future__ import annotations

import os

from fastsiren.errors import InputError

BACKEND = "FASTSIREN_BACKEND"
CHUNK_BYTES = "FASTSIREN_CHUNK_BYTES"
COMPILE = "FASTSIREN_COMPILE"
FUSED_NETWORK = "FASTSIREN_FUSED_NETWORK"
TRITON_INTERPRET = "TRITON_INTERPRET"
INPUT_PRECISION = "FASTSIREN_INPUT_PRECISION"
POISON = "FASTSIREN_POISON"
ALL_CONFIGS = "FASTSIREN_ALL_CONFIGS"
RANK, WORLD_SIZE, LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"
INDUCTOR_CACHE_DIR = "TORCHINDUCTOR_CACHE_DIR"


def _flag(name: str) -> bool:
    """A variable that is on when set to anything but "" or "0"."""
    return os.environ.get(name, "0").strip() not in ("", "0")


def interpreting() -> bool:
    """Whether Triton interprets kernels on the CPU (``TRITON_INTERPRET`` set and not "0").

    Triton reads the variable when a kernel is decorated, so the kernels' own view is fixed at
    their import; this reports the current environment."""
    return _flag(TRITON_INTERPRET)


def backend_override() -> str | None:
    """``FASTSIREN_BACKEND`` if set and not empty (checked against the backend names by
    ``fastsiren.dispatch.resolve``)."""
    return os.environ.get(BACKEND) or None


def compile_jets() -> bool:
    """``FASTSIREN_COMPILE``, the run-wide default of ``compile_chunks``: "1" compiles the torch
    backend's chunk functions, "0" or unset keeps them eager."""
    raw = os.environ.get(COMPILE, "").strip()
    if raw not in ("", "0", "1"):
        raise InputError(f"${COMPILE} must be 0 or 1, got {raw!r}")
    return raw == "1"


def fused_network() -> bool:
    """``FASTSIREN_FUSED_NETWORK``: "0" turns the whole-network inference kernel off, "1" or
    unset leaves it on where the network fits it."""
    raw = os.environ.get(FUSED_NETWORK, "").strip()
    if raw not in ("", "0", "1"):
        raise InputError(f"${FUSED_NETWORK} must be 0 or 1, got {raw!r}")
    return raw != "0"


def chunk_bytes(default: int) -> int:
    """``FASTSIREN_CHUNK_BYTES`` as a positive integer, or ``default`` when unset."""
    raw = os.environ.get(CHUNK_BYTES, "")
    if not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(
            f"${CHUNK_BYTES} must be a positive whole number of bytes (e.g. 4194304), got {raw!r}"
        )
    return value


def input_precision() -> str | None:
    """``FASTSIREN_INPUT_PRECISION`` if set and not empty (checked against the modes by
    ``fastsiren.kernels.precision``)."""
    return os.environ.get(INPUT_PRECISION, "").strip() or None


def poison() -> bool:
    """``FASTSIREN_POISON``: whether fresh kernel outputs are filled with NaN."""
    return _flag(POISON)


def all_configs() -> bool:
    """``FASTSIREN_ALL_CONFIGS``: whether the GPU tier checks every kept config of each kernel."""
    return _flag(ALL_CONFIGS)


def _whole_number(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise InputError(f"${name} must be a whole number >= {minimum}, got {raw!r}")
    return value


def torchrun_ranks() -> tuple[int, int, int]:
    """(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) as torchrun sets them; (0, 1, 0) without it."""
    return (_whole_number(RANK, 0, 0), _whole_number(WORLD_SIZE, 1, 1),
            _whole_number(LOCAL_RANK, 0, 0))


def inductor_cache_dir() -> str | None:
    """``TORCHINDUCTOR_CACHE_DIR`` if set and not empty."""
    return os.environ.get(INDUCTOR_CACHE_DIR) or None
