"""The environment variables the engine reads, each parsed in one place.

- ``FASTSIREN_BACKEND``: the backend ``auto`` stands for during a whole run
  (``fastsiren.dispatch``).
- ``FASTSIREN_CHUNK_BYTES``: bytes per stacked activation chunk on the CPU
  (``fastsiren.sine_jet.points_per_chunk``).
- ``FASTSIREN_COMPILE``: "1" compiles the torch backend's chunk functions with ``torch.compile``
  over traceable epilogues (``fastsiren.jet_function``, ``fastsiren.fused_epilogues``); off by
  default.
- ``FASTSIREN_FUSED_NETWORK``: "0" keeps inference on the Triton backend layer by layer instead
  of the whole-network kernel (``fastsiren.kernels.network``); on by default.
- ``TRITON_INTERPRET``: Triton runs kernels in its interpreter on CPU tensors (tests).

Values are read when used, not at import, so a malformed one fails the call that needs it with a
one-line ``InputError`` naming the variable, and ``import fastsiren`` always works.
"""

from __future__ import annotations

import os

from fastsiren.errors import InputError

BACKEND = "FASTSIREN_BACKEND"
CHUNK_BYTES = "FASTSIREN_CHUNK_BYTES"
COMPILE = "FASTSIREN_COMPILE"
FUSED_NETWORK = "FASTSIREN_FUSED_NETWORK"
TRITON_INTERPRET = "TRITON_INTERPRET"


def interpreting() -> bool:
    """Whether Triton interprets kernels on the CPU (``TRITON_INTERPRET`` set and not "0").

    Triton reads the variable when a kernel is decorated, so the kernels' own view is fixed at
    their import; this reports the current environment."""
    return os.environ.get(TRITON_INTERPRET, "0") not in ("", "0")


def backend_override() -> str | None:
    """``FASTSIREN_BACKEND`` if set and not empty (checked against the backend names by
    ``fastsiren.dispatch.resolve``)."""
    return os.environ.get(BACKEND) or None


def compile_jets() -> bool:
    """``FASTSIREN_COMPILE``: "1" compiles the torch backend's chunk functions, "0" or unset
    keeps them eager."""
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
