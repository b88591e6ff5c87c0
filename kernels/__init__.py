"""Triton kernels for fastsiren (installed as ``fastsiren.kernels``).

``fastsiren.kernels.sine_jet`` holds the fused jet kernels (imported lazily by
``fastsiren.jet_ops``, since it needs Triton); this package itself only exposes the matmul
precision knob, which imports without Triton.
"""

from .precision import (
    INPUT_PRECISIONS,
    current_input_precision,
    input_precision,
    set_input_precision,
)

__all__ = ["INPUT_PRECISIONS", "current_input_precision", "input_precision", "set_input_precision"]
