r"""SIREN jet layers as fused Triton kernels: the ``triton`` backend's ops module.

Same functions, signatures, shapes and semantics as ``fastsiren.sine_jet`` (the torch backend,
which is the executable specification); ``fastsiren.jet_function.SirenJetFunction`` chains either.
This module only gathers the ops; each kernel family lives in its own module:

  ``first_layer``   the first sine layer on the coordinates (closed-form jets), forward + VJP
  ``sine_layer``    hidden sine layers: one fused GEMM + sine-jet epilogue over all slabs
  ``sine_vjp``      the hidden layers' elementwise VJP, then its two GEMMs
  ``matmul``        batched strided GEMM (final linear layer, every backward GEMM)
  ``linear_layer``  the final linear layer's forward and VJP
  ``_jit_helpers``  @triton.jit helpers shared by the kernels (sincos, jet epilogues, offsets)
  ``_launch``       launch helpers (interpreter flag, configs, splits, input checks)

Shapes (B independent networks, always B >= 1; a program_id axis runs over B):
  S   [B, R, N, K]  stacked input jet (slab 0 value, 1..d gradient, then Laplacian or d
                    per-axis second derivatives; see ``fastsiren.jet``)
  x   [B, N, d]     coordinates;   w [B, M, K] (nn.Linear layout);   b [B, M] or None
  out [B, R, N, M]  stacked output jet;   G [B, R, N, M] the scaled pre-activation jet

Math (omega folded into the GEMM): G = S (omega W)^T with omega b on the value slab, so
u = G_0, g_i = G_i (i = 1..d), g_L = G_L.  With s = sin u, c = cos u::

    z' = s     J'_i = c g_i     L' = c g_L - s sum_i g_i^2     (per axis: c g_Li - s g_i^2)

    ū   = c z̄' - s sum_i J̄'_i g_i - L̄' (s g_L + c sum_i g_i^2)
    ḡ_i = c J̄'_i - 2 s L̄' g_i        ḡ_L = c L̄'
    W̄ = omega Ḡ^T S      b̄ = omega sum_n ū      S̄ = Ḡ (omega W)

First layer: S = (x, I, 0), so g_i = omega W[:, i] is one vector per feature and g_L = 0.

Precision: fp32 storage with ``tl.dot(input_precision=...)`` from ``fastsiren.kernels.precision``
("tf32x3", fp32-accurate on the tensor cores, unless torch allows TF32 ("tf32") or an explicit
override says "ieee"; always "ieee" under the interpreter). bf16 / fp16 storage: tensor-core
products with fp32 accumulation; bias, omega, sin, cos and the epilogue in fp32; cast once at
the store. fp64 storage is computed in fp64 (exactness tests under the interpreter). Note that
Triton passes omega as an fp32 scalar, so in fp64 an omega that is not exactly representable in
fp32 is rounded (the usual 30.0 and 1.0 are exact).

Error against float64 (max abs error over the float64 output's max), the matmul modes emulated
bit by bit on the CPU (``bench/measure_input_precision.py``: tf32 operands truncated by the MMA,
tf32x3's split rounded to nearest, exact products, each K = 8 step rounded into the fp32
accumulator; N = 8192, omega 30, 3 -> 256 x 3 -> 1 at order 2; the hidden-layer GEMMs emulated,
the first and last layers' FMAs fp32 as on the GPU):

  =========  =========  =========  =========  =========================
  mode       value      gradient   Laplacian  parameter gradients
  =========  =========  =========  =========  =========================
  ieee       8.8e-7     1.3e-6     1.5e-6     1.3e-6 - 2.1e-6
  tf32x3     7.9e-7     1.3e-6     1.4e-6     1.3e-6 - 1.8e-6
  tf32       1.5e-3     3.3e-3     4.3e-3     4.2e-3 - 6.3e-3
  =========  =========  =========  =========  =========================

(the accumulator rounded to nearest; rounded toward zero, tf32x3's errors are 2-5x ieee's and
up to 16x for the hidden layers' weight gradients: bench/results/precision/, which also has the
order-1 case. On a GPU: pending, with bf16; kernels/README.md lists what
the first GPU run checks first, the compile figures per kernel and what is left of the traffic
work.)
"""

from __future__ import annotations

import torch
from fastsiren.kernels import first_layer, linear_layer, matmul, network, sine_layer, sine_vjp
from fastsiren.kernels.first_layer import first_layer_bwd, first_layer_fwd, first_layer_preact
from fastsiren.kernels.linear_layer import linear_layer_bwd, linear_layer_fwd
from fastsiren.kernels.sine_layer import sine_layer_fwd, sine_layer_preact
from fastsiren.kernels.sine_vjp import sine_layer_bwd
from triton.runtime.autotuner import Autotuner

__all__ = [
    "KERNEL_MODULES", "autotuners", "first_layer_bwd", "first_layer_fwd", "first_layer_preact",
    "linear_layer_bwd", "linear_layer_fwd", "points_per_chunk", "sine_layer_bwd",
    "sine_layer_fwd", "sine_layer_preact", "sine_layer_saved",
]

# Every module that launches a kernel: the offline compile check, the self-check and the tests'
# launch counters and config sweeps walk these.
KERNEL_MODULES = (first_layer, sine_layer, sine_vjp, matmul, linear_layer, network)


def autotuners() -> dict[str, Autotuner]:
    """Every kernel of the backend by name (``_sine_layer_fwd_kernel``, ...): its autotuner."""
    return {v.base_fn.__name__: v for module in KERNEL_MODULES for v in vars(module).values()
            if isinstance(v, Autotuner)}


def sine_layer_saved(
    stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, omega: float
) -> torch.Tensor:
    """G with cos u in slab 0, as ``sine_layer_fwd`` keeps it for ``sine_layer_bwd``."""
    G = sine_layer_preact(stack, w, b, omega)
    G[:, 0].cos_()
    return G


def points_per_chunk(n_points: int, rows: int, width: int, like: torch.Tensor) -> int:
    """All points in one launch per layer: the kernels tile the points themselves."""
    return max(n_points, 1)
