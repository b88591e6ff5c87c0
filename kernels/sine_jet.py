r"""SIREN jet layers as fused Triton kernels: the ``triton`` backend's ops module.

Same functions, signatures, shapes and semantics as ``fastsiren.sine_jet`` (the torch backend,
which is the executable specification); ``fastsiren.function.SirenJetFunction`` chains either.

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

Kernels
-------
``_sine_layer_fwd_kernel`` (hidden sine layers): one program owns BLOCK_N points x BLOCK_M
  output features of one network and ALL R slabs. Each K step loads the weight tile once and
  feeds it to up to three ``tl.dot``s: the value rows [BLOCK_N, BK], the d gradient slabs
  stacked as rows [D_PAD * BLOCK_N, BK] and the second-order slabs [L_PAD * BLOCK_N, BK]
  (D_PAD, L_PAD: powers of two >= d and >= the number of second-order slabs; padded slabs are
  masked to zero). Splitting value / gradient / second-order rows keeps padding small (d = 3,
  order 2: 6 row blocks for 5 slabs, where padding all R slabs together would need 8) and lets
  the epilogue pair slabs as whole [D_PAD, BLOCK_N, BLOCK_M] tensors. The epilogue, on the
  accumulators in registers: omega and omega b, one sin and one cos, then
  J' = c g, L' = c g_L - s sum g^2 (or the per-axis form); writes out and G (cos u in slab 0).
  ``PREACT_ONLY`` writes G with u in slab 0 instead (``sine_layer_preact``, for recompute).
``_first_layer_fwd_kernel``: u by unrolled FMAs over the K <= FMA_MAX_K input features (a
  tl.dot would be mostly padding), by a tl.dot K loop otherwise (``USE_DOT``, e.g. a drop-in
  ``SineLayer`` with many inputs); then the closed-form jets from the weight columns.
``_sine_layer_bwd_kernel``: the elementwise VJP, one pass over (grad_out, G, s) -> Ḡ; then
  S̄ = Ḡ (omega W) and W̄ = omega Ḡ^T S are two launches of ``_matmul_kernel`` over the stacked
  rows [R N] (W̄ split over the rows into fp32 partial buffers summed by torch: deterministic,
  no atomics). b̄ is a torch sum of Ḡ's slab 0. Fusing the VJP into the S̄ GEMM's prologue would
  save one write and one read of Ḡ, but Ḡ must be materialised for W̄ anyway; measure first.
``_first_layer_bwd_kernel``: ū per point, and per-chunk partial sums over points of
  ū x_i + ḡ_i (W̄'s columns; only d of them) and ū (b̄), reduced by torch over chunks. x̄ =
  ū (omega W) is a ``_matmul_kernel`` launch.
``_matmul_kernel``: batched strided C = alpha A B (+ bias on the first ``bias_rows`` rows,
  i.e. the value slab of a stacked jet), optionally split over the reduction. It is the final
  linear layer (a plain GEMM over the stacked rows with the bias on slab 0) and every backward
  GEMM. A Triton GEMM rather than torch.matmul so that every matmul follows the same
  ``input_precision`` knob (the equivalence tests need exact fp32 everywhere; torch's matmul
  would follow ``allow_tf32`` instead) and so bf16 storage accumulates in fp32 throughout.

Precision: fp32 storage with ``tl.dot(input_precision=...)`` from ``fastsiren.kernels.precision``
("ieee" unless ``torch.backends.cuda.matmul.allow_tf32`` or an explicit override says "tf32" or
"tf32x3"; always "ieee" under the interpreter). bf16 / fp16 storage: tensor-core products with
fp32 accumulation; bias, omega, sin, cos and the epilogue in fp32; cast once at the store. fp64
storage is computed in fp64 (exactness tests under the interpreter). Note that Triton passes
omega as an fp32 scalar, so in fp64 an omega that is not exactly representable in fp32 is
rounded (the usual 30.0 and 1.0 are exact).

Measured error against the fp64 torch backend (relative max error, 2->256x3->1, omega 30,
N = 2^20, order 2):

  =========  =========  =========  =========
  mode       value      gradient   Laplacian
  =========  =========  =========  =========
  ieee       pending    pending    pending
  tf32x3     pending    pending    pending
  tf32       pending    pending    pending
  bf16       pending    pending    pending
  =========  =========  =========  =========

(GPU measurements are pending: these kernels were developed under the interpreter.)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..jet import JetLayout
from . import _launch
from ._jit_helpers import second_order_term, sincos, slab_offsets
from ._launch import new_empty, pow2, size_bucket
from .precision import current_input_precision

__all__ = [
    "first_layer_bwd", "first_layer_fwd", "first_layer_preact", "linear_layer_bwd",
    "linear_layer_fwd", "points_per_chunk", "sine_layer_bwd", "sine_layer_fwd",
    "sine_layer_preact",
]

# Reductions over points (W̄, first-layer W̄ and b̄) are split into partial sums so that enough
# programs run at once: at least this many rows per split keeps each program's loop long enough
# to amortise its partial tile (small under the interpreter so the tests exercise splitting).
MIN_ROWS_PER_SPLIT = 64 if _launch.INTERPRET else 4096
# Split sizes are multiples of this, so every config's BLOCK_Q / BLOCK_N tiles a split exactly.
SPLIT_ALIGN = 128


def _cfg(kw: dict, warps: int = 4, stages: int = 2) -> triton.Config:
    return triton.Config(kw, num_warps=warps, num_stages=stages)


# GPU candidate tiles (untimed here: to be pruned with measurements on a GPU). The fused forward
# holds (1 + D_PAD + L_PAD) accumulators of BLOCK_N x BLOCK_M, so its tiles stay small.
_SINE_FWD_CONFIGS = _launch.configs(
    [
        _cfg({"BLOCK_N": 16, "BLOCK_M": 64, "BLOCK_K": 32}, 4, 2),
        _cfg({"BLOCK_N": 16, "BLOCK_M": 128, "BLOCK_K": 32}, 8, 2),
        _cfg({"BLOCK_N": 32, "BLOCK_M": 64, "BLOCK_K": 32}, 4, 2),
        _cfg({"BLOCK_N": 64, "BLOCK_M": 64, "BLOCK_K": 32}, 4, 2),
        _cfg({"BLOCK_N": 32, "BLOCK_M": 128, "BLOCK_K": 32}, 8, 2),
        _cfg({"BLOCK_N": 64, "BLOCK_M": 128, "BLOCK_K": 32}, 8, 2),
        _cfg({"BLOCK_N": 64, "BLOCK_M": 64, "BLOCK_K": 64}, 4, 3),
    ],
    _cfg({"BLOCK_N": 64, "BLOCK_M": 128, "BLOCK_K": 32}),
)
_FIRST_FWD_CONFIGS = _launch.configs(
    [
        _cfg({"BLOCK_N": 64, "BLOCK_M": 64, "BLOCK_K": 32}, 4),
        _cfg({"BLOCK_N": 128, "BLOCK_M": 64, "BLOCK_K": 32}, 4),
        _cfg({"BLOCK_N": 64, "BLOCK_M": 128, "BLOCK_K": 32}, 8),
    ],
    _cfg({"BLOCK_N": 64, "BLOCK_M": 128, "BLOCK_K": 32}),
)
_ELEMENTWISE_CONFIGS = _launch.configs(
    [
        _cfg({"BLOCK_N": 32, "BLOCK_M": 64}, 4),
        _cfg({"BLOCK_N": 64, "BLOCK_M": 64}, 4),
        _cfg({"BLOCK_N": 32, "BLOCK_M": 128}, 4),
        _cfg({"BLOCK_N": 64, "BLOCK_M": 128}, 8),
    ],
    _cfg({"BLOCK_N": 64, "BLOCK_M": 128}),
)
_MATMUL_CONFIGS = _launch.configs(
    [
        _cfg({"BLOCK_P": 128, "BLOCK_T": 128, "BLOCK_Q": 32}, 8, 3),
        _cfg({"BLOCK_P": 128, "BLOCK_T": 64, "BLOCK_Q": 32}, 4, 3),
        _cfg({"BLOCK_P": 64, "BLOCK_T": 128, "BLOCK_Q": 32}, 4, 3),
        _cfg({"BLOCK_P": 64, "BLOCK_T": 64, "BLOCK_Q": 64}, 4, 3),
        _cfg({"BLOCK_P": 128, "BLOCK_T": 32, "BLOCK_Q": 64}, 4, 3),
    ],
    _cfg({"BLOCK_P": 128, "BLOCK_T": 128, "BLOCK_Q": 64}),
)


# Accumulator registers per thread the fused forward may use before a config is dropped
# untimed: beyond ~128 fp32 values per thread the accumulators spill to local memory.
MAX_ACC_PER_THREAD = 128


def _prune_sine_fwd(configs, named_args, **kwargs):
    """Drop configs whose (1 + D_PAD + L_PAD) accumulator tiles would not fit in registers;
    keep the smallest if none fits."""
    slabs = 1 + kwargs.get("D_PAD", 1) + kwargs.get("L_PAD", 1)

    def per_thread(cfg):
        return slabs * cfg.kwargs["BLOCK_N"] * cfg.kwargs["BLOCK_M"] / (32 * cfg.num_warps)

    fitting = [c for c in configs if per_thread(c) <= MAX_ACC_PER_THREAD]
    return fitting or [min(configs, key=per_thread)]


# ----------------------------------------------------------------------------- forward kernels


@triton.autotune(configs=_SINE_FWD_CONFIGS, key=["M", "K", "n_bucket"],
                 prune_configs_by={"early_config_prune": _prune_sine_fwd})
@triton.jit(do_not_specialize=["N"])
def _sine_layer_fwd_kernel(
    # pointers
    s_ptr,  # [B, R, N, K] stacked input jet
    w_ptr,  # [B, M, K] weights
    b_ptr,  # [B, M] bias (unused without HAS_BIAS)
    out_ptr,  # [B, R, N, M] stacked output jet (unused with PREACT_ONLY)
    g_ptr,  # [B, R, N, M] G: cos u (u with PREACT_ONLY) in slab 0, then omega Jh_i, omega Lh
    # sizes
    N,
    M,
    K,
    n_bucket,  # log2 bucket of N: the autotune key
    omega,
    # strides (last dims are unit-stride; out and G share theirs)
    stride_sb,
    stride_sr,
    stride_sn,
    stride_wb,
    stride_wm,
    stride_bb,
    stride_ob,
    stride_or,
    stride_on,
    # meta-parameters
    D: tl.constexpr,  # gradient slabs (d, or 0 at order 0)
    N_LAP: tl.constexpr,  # second-order slabs (0, 1, or d with HESS_DIAG)
    D_PAD: tl.constexpr,  # pow2 >= max(D, 1)
    L_PAD: tl.constexpr,  # pow2 >= max(N_LAP, 1)
    HESS_DIAG: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PREACT_ONLY: tl.constexpr,
    KEEP_COS: tl.constexpr,  # False only at order 0: skip the cosine, leave u in G / cos_ptr
    ACC_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    s_ptr += pid_b * stride_sb
    w_ptr += pid_b * stride_wb
    out_ptr += pid_b * stride_ob
    g_ptr += pid_b * stride_ob

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    mask_n = offs_n < N
    mask_m = offs_m < M

    # Row r of a stacked operand tile is slab (first + r // BLOCK_N), point r % BLOCK_N.
    rg = tl.arange(0, D_PAD * BLOCK_N)
    ng = pid_n * BLOCK_N + rg % BLOCK_N
    rows_g = (1 + rg // BLOCK_N) * stride_sr + ng * stride_sn
    mask_g = (rg // BLOCK_N < D) & (ng < N)
    rl = tl.arange(0, L_PAD * BLOCK_N)
    nl = pid_n * BLOCK_N + rl % BLOCK_N
    rows_l = (1 + D + rl // BLOCK_N) * stride_sr + nl * stride_sn
    mask_l = (rl // BLOCK_N < N_LAP) & (nl < N)

    acc_u = tl.zeros((BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
    acc_g = tl.zeros((D_PAD * BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
    acc_l = tl.zeros((L_PAD * BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < K
        # One weight tile [BLOCK_K, BLOCK_M] shared by every slab's product.
        wt = tl.load(w_ptr + offs_m[None, :] * stride_wm + kk[:, None],
                     mask=mask_k[:, None] & mask_m[None, :], other=0.0)
        a = tl.load(s_ptr + offs_n[:, None] * stride_sn + kk[None, :],
                    mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        acc_u = tl.dot(a, wt, acc_u, input_precision=INPUT_PRECISION)
        if D > 0:
            a = tl.load(s_ptr + rows_g[:, None] + kk[None, :],
                        mask=mask_g[:, None] & mask_k[None, :], other=0.0)
            acc_g = tl.dot(a, wt, acc_g, input_precision=INPUT_PRECISION)
        if N_LAP > 0:
            a = tl.load(s_ptr + rows_l[:, None] + kk[None, :],
                        mask=mask_l[:, None] & mask_k[None, :], other=0.0)
            acc_l = tl.dot(a, wt, acc_l, input_precision=INPUT_PRECISION)

    u = acc_u * omega
    if HAS_BIAS:
        bias = tl.load(b_ptr + pid_b * stride_bb + offs_m, mask=mask_m, other=0.0)
        u += omega * bias.to(ACC_DTYPE)[None, :]
    offs_0 = offs_n[:, None] * stride_on + offs_m[None, :]
    mask_0 = mask_n[:, None] & mask_m[None, :]
    if PREACT_ONLY:
        tl.store(g_ptr + offs_0, u.to(g_ptr.dtype.element_ty), mask=mask_0)
    elif KEEP_COS:
        s, c = sincos(u)
        tl.store(out_ptr + offs_0, s.to(out_ptr.dtype.element_ty), mask=mask_0)
        tl.store(g_ptr + offs_0, c.to(g_ptr.dtype.element_ty), mask=mask_0)
    else:  # order-0 inference: nothing reads cos u, G keeps u
        tl.store(out_ptr + offs_0, tl.sin(u).to(out_ptr.dtype.element_ty), mask=mask_0)
        tl.store(g_ptr + offs_0, u.to(g_ptr.dtype.element_ty), mask=mask_0)
    if D > 0:
        g3 = tl.reshape(acc_g * omega, (D_PAD, BLOCK_N, BLOCK_M))
        offs3, mask3 = slab_offsets(1, D, offs_n, N, offs_m, M, stride_or, stride_on, D_PAD)
        tl.store(g_ptr + offs3, g3.to(g_ptr.dtype.element_ty), mask=mask3)
        if not PREACT_ONLY:
            tl.store(out_ptr + offs3, (c[None, :, :] * g3).to(out_ptr.dtype.element_ty),
                     mask=mask3)
        if N_LAP > 0:
            gl3 = tl.reshape(acc_l * omega, (L_PAD, BLOCK_N, BLOCK_M))
            offs3, mask3 = slab_offsets(1 + D, N_LAP, offs_n, N, offs_m, M, stride_or,
                                        stride_on, L_PAD)
            tl.store(g_ptr + offs3, gl3.to(g_ptr.dtype.element_ty), mask=mask3)
            if not PREACT_ONLY:
                lap = c[None, :, :] * gl3 - s[None, :, :] * second_order_term(g3, HESS_DIAG)
                tl.store(out_ptr + offs3, lap.to(out_ptr.dtype.element_ty), mask=mask3)


@triton.autotune(configs=_FIRST_FWD_CONFIGS, key=["M", "K", "n_bucket"])
@triton.jit(do_not_specialize=["N"])
def _first_layer_fwd_kernel(
    # pointers
    x_ptr,  # [B, N, K] coordinates
    w_ptr,  # [B, M, K] weights
    b_ptr,  # [B, M] bias (unused without HAS_BIAS)
    out_ptr,  # [B, R, N, M] stacked output jet (unused with PREACT_ONLY)
    cos_ptr,  # [B, N, M] cos u, or u itself with PREACT_ONLY
    # sizes
    N,
    M,
    K,
    n_bucket,  # log2 bucket of N: the autotune key
    omega,
    # strides (last dims are unit-stride)
    stride_xb,
    stride_xn,
    stride_wb,
    stride_wm,
    stride_bb,
    stride_ob,
    stride_or,
    stride_on,
    stride_cb,
    stride_cn,
    # meta-parameters
    ORDER: tl.constexpr,
    HESS_DIAG: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PREACT_ONLY: tl.constexpr,
    KEEP_COS: tl.constexpr,  # False only at order 0: skip the cosine, write u to cos_ptr
    USE_DOT: tl.constexpr,  # K > FMA_MAX_K: tl.dot over K tiles instead of FMAs
    ACC_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    x_ptr += pid_b * stride_xb
    w_ptr += pid_b * stride_wb
    out_ptr += pid_b * stride_ob
    cos_ptr += pid_b * stride_cb

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_n = offs_n < N
    mask_m = offs_m < M

    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
    if USE_DOT:
        offs_k = tl.arange(0, BLOCK_K)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + offs_k
            mask_k = kk < K
            a = tl.load(x_ptr + offs_n[:, None] * stride_xn + kk[None, :],
                        mask=mask_n[:, None] & mask_k[None, :], other=0.0)
            wt = tl.load(w_ptr + offs_m[None, :] * stride_wm + kk[:, None],
                         mask=mask_k[:, None] & mask_m[None, :], other=0.0)
            acc = tl.dot(a, wt, acc, input_precision=INPUT_PRECISION)
    else:
        for k in range(0, K):
            xk = tl.load(x_ptr + offs_n * stride_xn + k, mask=mask_n, other=0.0)
            wk = tl.load(w_ptr + offs_m * stride_wm + k, mask=mask_m, other=0.0)
            acc += xk.to(ACC_DTYPE)[:, None] * wk.to(ACC_DTYPE)[None, :]
    u = acc * omega
    if HAS_BIAS:
        bias = tl.load(b_ptr + pid_b * stride_bb + offs_m, mask=mask_m, other=0.0)
        u += omega * bias.to(ACC_DTYPE)[None, :]

    mask_0 = mask_n[:, None] & mask_m[None, :]
    offs_c = offs_n[:, None] * stride_cn + offs_m[None, :]
    offs_o = offs_n[:, None] * stride_on + offs_m[None, :]
    if PREACT_ONLY:
        tl.store(cos_ptr + offs_c, u.to(cos_ptr.dtype.element_ty), mask=mask_0)
    elif not KEEP_COS:  # order-0 inference: nothing reads cos u, return u
        tl.store(cos_ptr + offs_c, u.to(cos_ptr.dtype.element_ty), mask=mask_0)
        tl.store(out_ptr + offs_o, tl.sin(u).to(out_ptr.dtype.element_ty), mask=mask_0)
    else:
        s, c = sincos(u)
        tl.store(cos_ptr + offs_c, c.to(cos_ptr.dtype.element_ty), mask=mask_0)
        tl.store(out_ptr + offs_o, s.to(out_ptr.dtype.element_ty), mask=mask_0)
        if ORDER >= 1:
            # J = I, L = 0: g_i = omega W[:, i] for every point, so the jets are closed forms.
            sumsq = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
            for i in range(0, K):
                g = omega * tl.load(w_ptr + offs_m * stride_wm + i, mask=mask_m,
                                    other=0.0).to(ACC_DTYPE)
                tl.store(out_ptr + (1 + i) * stride_or + offs_o,
                         (c * g[None, :]).to(out_ptr.dtype.element_ty), mask=mask_0)
                if ORDER == 2:
                    if HESS_DIAG:
                        tl.store(out_ptr + (1 + K + i) * stride_or + offs_o,
                                 (-s * (g * g)[None, :]).to(out_ptr.dtype.element_ty),
                                 mask=mask_0)
                    else:
                        sumsq += g * g
            if ORDER == 2:
                if not HESS_DIAG:
                    tl.store(out_ptr + (1 + K) * stride_or + offs_o,
                             (-s * sumsq[None, :]).to(out_ptr.dtype.element_ty), mask=mask_0)


# ----------------------------------------------------------------------------- backward kernels


@triton.autotune(configs=_ELEMENTWISE_CONFIGS, key=["M", "n_bucket"])
@triton.jit(do_not_specialize=["N"])
def _sine_layer_bwd_kernel(
    # pointers
    go_ptr,  # [B, R, N, M] cotangent of the output jet
    g_ptr,  # [B, R, N, M] G with cos u in slab 0
    s_ptr,  # [B, N, M] sin u (a strided view: the next layer's value slab)
    gbar_ptr,  # [B, R, N, M] Ḡ = (ū, ḡ_i, ḡ_L), output
    # sizes
    N,
    M,
    n_bucket,  # log2 bucket of N: the autotune key
    # strides (last dims unit-stride; grad_out, G and Ḡ share theirs)
    stride_b,
    stride_r,
    stride_n,
    stride_sb,
    stride_sn,
    # meta-parameters
    D: tl.constexpr,
    N_LAP: tl.constexpr,
    D_PAD: tl.constexpr,
    L_PAD: tl.constexpr,
    HESS_DIAG: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    pid_n = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    go_ptr += pid_b * stride_b
    g_ptr += pid_b * stride_b
    gbar_ptr += pid_b * stride_b

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_0 = (offs_n < N)[:, None] & (offs_m < M)[None, :]
    offs_0 = offs_n[:, None] * stride_n + offs_m[None, :]

    c = tl.load(g_ptr + offs_0, mask=mask_0, other=0.0).to(ACC_DTYPE)
    gu = c * tl.load(go_ptr + offs_0, mask=mask_0, other=0.0).to(ACC_DTYPE)
    if D > 0:
        s = tl.load(s_ptr + pid_b * stride_sb + offs_n[:, None] * stride_sn + offs_m[None, :],
                    mask=mask_0, other=0.0).to(ACC_DTYPE)
        offs3, mask3 = slab_offsets(1, D, offs_n, N, offs_m, M, stride_r, stride_n, D_PAD)
        g3 = tl.load(g_ptr + offs3, mask=mask3, other=0.0).to(ACC_DTYPE)
        oj3 = tl.load(go_ptr + offs3, mask=mask3, other=0.0).to(ACC_DTYPE)
        gu -= s * tl.sum(oj3 * g3, axis=0)
        gj_bar = c[None, :, :] * oj3
        if N_LAP > 0:
            offsl, maskl = slab_offsets(1 + D, N_LAP, offs_n, N, offs_m, M, stride_r, stride_n,
                                        L_PAD)
            gl3 = tl.load(g_ptr + offsl, mask=maskl, other=0.0).to(ACC_DTYPE)
            ol3 = tl.load(go_ptr + offsl, mask=maskl, other=0.0).to(ACC_DTYPE)
            # curvature: s g_L + c sum_i g_i^2 (or per axis s g_Li + c g_i^2)
            curv = s[None, :, :] * gl3 + c[None, :, :] * second_order_term(g3, HESS_DIAG)
            gu -= tl.sum(ol3 * curv, axis=0)
            gj_bar -= 2.0 * g3 * (s[None, :, :] * ol3)
            tl.store(gbar_ptr + offsl, (c[None, :, :] * ol3).to(gbar_ptr.dtype.element_ty),
                     mask=maskl)
        tl.store(gbar_ptr + offs3, gj_bar.to(gbar_ptr.dtype.element_ty), mask=mask3)
    tl.store(gbar_ptr + offs_0, gu.to(gbar_ptr.dtype.element_ty), mask=mask_0)


@triton.autotune(configs=_ELEMENTWISE_CONFIGS, key=["M", "K", "n_bucket"])
@triton.jit(do_not_specialize=["N", "chunk_points"])
def _first_layer_bwd_kernel(
    # pointers
    go_ptr,  # [B, R, N, M] cotangent of the output jet
    x_ptr,  # [B, N, K] coordinates (read with REDUCE_X)
    w_ptr,  # [B, M, K] weights
    s_ptr,  # [B, N, M] sin u, strided (read at ORDER >= 1)
    c_ptr,  # [B, N, M] cos u, strided
    ubar_ptr,  # [B, N, M] ū, output (written with STORE_UBAR)
    part_ptr,  # [B, C, K + 1, M] per-chunk sums over points, output (accumulator dtype):
    #            row i < K: d loss / d (omega W)[:, i] (without ū x_i unless REDUCE_X); row K: ū
    # sizes
    N,
    M,
    K,
    n_bucket,  # log2 bucket of N: the autotune key
    chunk_points,  # points per program, a multiple of BLOCK_N
    omega,
    # strides (last dims unit-stride)
    stride_gb,
    stride_gr,
    stride_gn,
    stride_xb,
    stride_xn,
    stride_wb,
    stride_wm,
    stride_sb,
    stride_sn,
    stride_cb,
    stride_cn,
    stride_ub,
    stride_un,
    stride_pb,
    stride_pc,
    # meta-parameters
    ORDER: tl.constexpr,
    HESS_DIAG: tl.constexpr,
    REDUCE_X: tl.constexpr,  # also reduce ū x_i here (small K); else the caller runs a GEMM
    STORE_UBAR: tl.constexpr,
    P_PAD: tl.constexpr,  # pow2 >= K + 1
    ACC_DTYPE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    pid_c = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    go_ptr += pid_b * stride_gb
    x_ptr += pid_b * stride_xb
    w_ptr += pid_b * stride_wb
    s_ptr += pid_b * stride_sb
    c_ptr += pid_b * stride_cb
    ubar_ptr += pid_b * stride_ub

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    rows = tl.arange(0, P_PAD)
    part = tl.zeros((P_PAD, BLOCK_M), dtype=ACC_DTYPE)
    # omega^2 sum_i W[:, i]^2: the Laplacian's curvature, the same for every point
    sumsq = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    if ORDER == 2:
        if not HESS_DIAG:
            for i in range(0, K):
                g = omega * tl.load(w_ptr + offs_m * stride_wm + i, mask=mask_m,
                                    other=0.0).to(ACC_DTYPE)
                sumsq += g * g

    for n0 in range(0, chunk_points, BLOCK_N):
        offs_n = pid_c * chunk_points + n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        mask_0 = mask_n[:, None] & mask_m[None, :]
        offs_go = offs_n[:, None] * stride_gn + offs_m[None, :]
        c = tl.load(c_ptr + offs_n[:, None] * stride_cn + offs_m[None, :], mask=mask_0,
                    other=0.0).to(ACC_DTYPE)
        gu = c * tl.load(go_ptr + offs_go, mask=mask_0, other=0.0).to(ACC_DTYPE)
        s = tl.zeros((BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
        if ORDER >= 1:
            s = tl.load(s_ptr + offs_n[:, None] * stride_sn + offs_m[None, :], mask=mask_0,
                        other=0.0).to(ACC_DTYPE)
            for i in range(0, K):
                g = omega * tl.load(w_ptr + offs_m * stride_wm + i, mask=mask_m,
                                    other=0.0).to(ACC_DTYPE)
                oj = tl.load(go_ptr + (1 + i) * stride_gr + offs_go, mask=mask_0,
                             other=0.0).to(ACC_DTYPE)
                gu -= s * oj * g[None, :]
                if ORDER == 2:
                    if HESS_DIAG:
                        ol = tl.load(go_ptr + (1 + K + i) * stride_gr + offs_go, mask=mask_0,
                                     other=0.0).to(ACC_DTYPE)
                        gu -= c * ol * (g * g)[None, :]
            if ORDER == 2:
                if not HESS_DIAG:
                    ol = tl.load(go_ptr + (1 + K) * stride_gr + offs_go, mask=mask_0,
                                 other=0.0).to(ACC_DTYPE)
                    gu -= c * ol * sumsq[None, :]
        if STORE_UBAR:
            tl.store(ubar_ptr + offs_n[:, None] * stride_un + offs_m[None, :],
                     gu.to(ubar_ptr.dtype.element_ty), mask=mask_0)
        part += tl.where(rows[:, None] == K, tl.sum(gu, axis=0)[None, :], 0.0)
        if REDUCE_X or ORDER >= 1:
            for i in range(0, K):
                col = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
                if REDUCE_X:
                    xi = tl.load(x_ptr + offs_n * stride_xn + i, mask=mask_n,
                                 other=0.0).to(ACC_DTYPE)
                    col += tl.sum(gu * xi[:, None], axis=0)
                if ORDER >= 1:
                    # ḡ_i = c J̄'_i - 2 s L̄' g_i, summed over points
                    oj = tl.load(go_ptr + (1 + i) * stride_gr + offs_go, mask=mask_0,
                                 other=0.0).to(ACC_DTYPE)
                    q = c * oj
                    if ORDER == 2:
                        g = omega * tl.load(w_ptr + offs_m * stride_wm + i, mask=mask_m,
                                            other=0.0).to(ACC_DTYPE)
                        if HESS_DIAG:
                            ol = tl.load(go_ptr + (1 + K + i) * stride_gr + offs_go,
                                         mask=mask_0, other=0.0).to(ACC_DTYPE)
                        else:
                            ol = tl.load(go_ptr + (1 + K) * stride_gr + offs_go, mask=mask_0,
                                         other=0.0).to(ACC_DTYPE)
                        q -= 2.0 * s * ol * g[None, :]
                    col += tl.sum(q, axis=0)
                part += tl.where(rows[:, None] == i, col[None, :], 0.0)

    tl.store(part_ptr + pid_b * stride_pb + pid_c * stride_pc + rows[:, None] * M
             + offs_m[None, :], part, mask=(rows <= K)[:, None] & mask_m[None, :])


@triton.autotune(configs=_MATMUL_CONFIGS, key=["T", "p_bucket", "q_bucket"])
@triton.jit(do_not_specialize=["P", "Q", "q_per_split", "bias_rows"])
def _matmul_kernel(
    # pointers
    a_ptr,  # [B, P, Q], any strides
    b_ptr,  # [B, Q, T], any strides
    bias_ptr,  # [B, T] added to rows < bias_rows (unused without HAS_BIAS)
    c_ptr,  # [SPLIT, B, P, T] result (unit column stride); partial sums when split
    # sizes
    P,
    T,
    Q,
    q_per_split,  # reduction rows per split, a multiple of every BLOCK_Q
    bias_rows,
    p_bucket,  # log2 buckets of P and Q: the autotune key
    q_bucket,
    alpha,
    # strides
    stride_ab,
    stride_ap,
    stride_aq,
    stride_bb,
    stride_bq,
    stride_bt,
    stride_biasb,
    stride_cs,
    stride_cb,
    stride_cp,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    n_t = tl.cdiv(T, BLOCK_T)
    pid_p = pid // n_t  # column tiles innermost: neighbouring programs share A's rows
    pid_t = pid % n_t
    a_ptr += pid_b * stride_ab
    b_ptr += pid_b * stride_bb
    c_ptr += pid_s * stride_cs + pid_b * stride_cb

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_q = tl.arange(0, BLOCK_Q)
    mask_p = offs_p < P
    mask_t = offs_t < T
    q_lo = pid_s * q_per_split
    q_hi = tl.minimum(q_lo + q_per_split, Q)

    acc = tl.zeros((BLOCK_P, BLOCK_T), dtype=ACC_DTYPE)
    for q0 in range(q_lo, q_hi, BLOCK_Q):
        qq = q0 + offs_q
        mask_q = qq < q_hi
        a = tl.load(a_ptr + offs_p[:, None] * stride_ap + qq[None, :] * stride_aq,
                    mask=mask_p[:, None] & mask_q[None, :], other=0.0)
        b = tl.load(b_ptr + qq[:, None] * stride_bq + offs_t[None, :] * stride_bt,
                    mask=mask_q[:, None] & mask_t[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    acc = acc * alpha
    if HAS_BIAS:
        bias = tl.load(bias_ptr + pid_b * stride_biasb + offs_t, mask=mask_t, other=0.0)
        acc += tl.where((offs_p < bias_rows)[:, None], bias.to(ACC_DTYPE)[None, :], 0.0)
    tl.store(c_ptr + offs_p[:, None] * stride_cp + offs_t[None, :],
             acc.to(c_ptr.dtype.element_ty), mask=mask_p[:, None] & mask_t[None, :])


# ----------------------------------------------------------------------------- launchers


def points_per_chunk(n_points: int, rows: int, width: int, like: torch.Tensor) -> int:
    """All points in one launch per layer: the kernels tile the points themselves."""
    return max(n_points, 1)


def _target_programs(device: torch.device) -> int:
    """How many programs keep the device busy, for splitting reductions over points."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _n_splits(rows: int, tiles: int, device: torch.device) -> int:
    """Splits of a reduction over ``rows`` points for ``tiles`` output tiles."""
    want = triton.cdiv(_target_programs(device), max(tiles, 1))
    return max(1, min(want, rows // MIN_ROWS_PER_SPLIT))


def _matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float = 1.0,
    bias: torch.Tensor | None = None,
    bias_rows: int = 0,
    split: bool = False,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """alpha * a @ b (+ bias on the first ``bias_rows`` rows) for [B, P, Q] @ [B, Q, T] views of
    any strides. ``split`` splits the reduction (for Q much larger than P x T, as in weight
    gradients) into partial sums in the accumulator dtype, then sums them."""
    B, P, Q = a.shape
    T = b.shape[2]
    dtype = out_dtype or a.dtype
    if split:
        # Tile estimate for the split count only (the autotuner picks the real tiles).
        n_split = _n_splits(Q, B * triton.cdiv(P, 64) * triton.cdiv(T, 64), a.device)
    else:
        n_split = 1
    q_per_split = triton.cdiv(triton.cdiv(max(Q, 1), n_split), SPLIT_ALIGN) * SPLIT_ALIGN
    n_split = triton.cdiv(max(Q, 1), q_per_split)
    if n_split == 1:
        c = new_empty(1, B, P, T, like=a, dtype=dtype)
    else:
        acc_torch = torch.float64 if a.dtype == torch.float64 else torch.float32
        c = new_empty(n_split, B, P, T, like=a, dtype=acc_torch)
    if P == 0 or T == 0:
        return c.zero_().sum(0).to(dtype)

    def grid(meta):
        return (triton.cdiv(P, meta["BLOCK_P"]) * triton.cdiv(T, meta["BLOCK_T"]), n_split, B)

    _matmul_kernel[grid](
        a, b, bias if bias is not None else a, c,
        P, T, Q, q_per_split, bias_rows, size_bucket(P), size_bucket(Q), alpha,
        a.stride(0), a.stride(1), a.stride(2),
        b.stride(0), b.stride(1), b.stride(2),
        bias.stride(0) if bias is not None else 0,
        c.stride(0), c.stride(1), c.stride(2),
        HAS_BIAS=bias is not None,
        ACC_DTYPE=_launch.acc_dtype(a.dtype),
        INPUT_PRECISION=_launch.dot_precision(a.dtype, current_input_precision()),
    )
    return c[0] if n_split == 1 else c.sum(0).to(dtype)


def _check_weights(w, b, like, name):
    w = _launch.check_tensor(w, f"{name} weight", 3, like)
    if w.shape[0] != like.shape[0]:
        raise ValueError(f"{name} weight has batch {w.shape[0]}, the input has {like.shape[0]}")
    if b is not None:
        b = _launch.check_tensor(b, f"{name} bias", 2, like)
        _launch.check_shape(b, f"{name} bias", tuple(w.shape[:2]))
    return w, b


def _check_stack(stack, layout, name):
    stack = _launch.check_tensor(stack, name, 4)
    if stack.shape[1] != layout.rows:
        raise ValueError(f"{name} has {stack.shape[1]} slabs; the jet layout {layout} needs "
                         f"{layout.rows}")
    return stack


def _check_value(t, name, shape, like):
    """A [B, N, M] tensor that may be a strided view (s: the next layer's value slab)."""
    if t is None:
        raise ValueError(f"{name} is required at this jet order")
    _launch.check_tensor(t, name, 3, like)
    _launch.check_shape(t, name, shape)
    return _launch.row_strided(t)


def _slab_counts(layout: JetLayout) -> dict:
    return dict(D=layout.n_grad, N_LAP=layout.n_lap, D_PAD=pow2(layout.n_grad),
                L_PAD=pow2(layout.n_lap))


def _first_layer_launch(x, w, b, omega, layout, preact_only, keep_cos=True):
    x = _launch.check_tensor(x, "coordinates x", 3)
    w, b = _check_weights(w, b, x, "first layer")
    B, N, K = x.shape
    M = w.shape[1]
    if w.shape[2] != K:
        raise ValueError(f"first layer weight takes {w.shape[2]} inputs, x has {K} features")
    if not preact_only and layout.d != K:
        raise ValueError(f"jet layout is over d = {layout.d} coordinates, x has {K}")
    rows = 1 if preact_only else layout.rows
    out = new_empty(B, rows, N, M, like=x)
    cos = new_empty(B, N, M, like=x)
    if N == 0 or M == 0:
        return out, cos

    def grid(meta):
        return (triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(M, meta["BLOCK_M"]), B)

    _first_layer_fwd_kernel[grid](
        x, w, b if b is not None else w, out, cos,
        N, M, K, size_bucket(N), float(omega),
        x.stride(0), x.stride(1),
        w.stride(0), w.stride(1),
        b.stride(0) if b is not None else 0,
        out.stride(0), out.stride(1), out.stride(2),
        cos.stride(0), cos.stride(1),
        ORDER=layout.order, HESS_DIAG=layout.hessian_diag, HAS_BIAS=b is not None,
        PREACT_ONLY=preact_only, KEEP_COS=keep_cos or layout.order > 0,
        USE_DOT=K > _launch.FMA_MAX_K,
        ACC_DTYPE=_launch.acc_dtype(x.dtype),
        INPUT_PRECISION=_launch.dot_precision(x.dtype, current_input_precision()),
    )
    return out, cos


def first_layer_preact(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, omega: float
) -> torch.Tensor:
    """u = omega (x W^T + b): [B, N, M]."""
    return _first_layer_launch(x, w, b, omega, JetLayout(0, x.shape[-1]), preact_only=True)[1]


def first_layer_fwd(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    omega: float,
    layout: JetLayout,
    keep_cos: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sine layer on the coordinates themselves. Returns (out [B, R, N, M], cos u [B, N, M]).

    With ``keep_cos=False`` at order 0 (inference: nothing needs cos u) the second return value
    is u itself and the cosine is skipped.
    """
    return _first_layer_launch(x, w, b, omega, layout, preact_only=False, keep_cos=keep_cos)


def first_layer_bwd(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    omega: float,
    layout: JetLayout,
    s: torch.Tensor | None,
    c: torch.Tensor,
    need_x_grad: bool,
    has_bias: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """VJP of ``first_layer_fwd``: (x̄ or None, W̄, b̄ or None). s is needed for order >= 1."""
    x = _launch.check_tensor(x, "coordinates x", 3)
    w, _ = _check_weights(w, None, x, "first layer")
    B, N, K = x.shape
    M = w.shape[1]
    grad_out = _launch.check_tensor(grad_out, "grad_out", 4, x)
    _launch.check_shape(grad_out, "grad_out", (B, layout.rows, N, M))
    c = _check_value(c, "cos u", (B, N, M), x)
    s = _check_value(s, "sin u", (B, N, M), x) if layout.order >= 1 else c
    reduce_x = K <= _launch.FMA_MAX_K
    store_ubar = need_x_grad or not reduce_x
    acc_torch = torch.float64 if x.dtype == torch.float64 else torch.float32

    # Each program reduces a chunk of points (a multiple of every BLOCK_N) into one partial row
    # block; enough chunks to fill the device, summed by torch afterwards.
    n_chunks = _n_splits(N, B * triton.cdiv(M, 64), x.device)
    chunk_points = triton.cdiv(triton.cdiv(max(N, 1), n_chunks), SPLIT_ALIGN) * SPLIT_ALIGN
    n_chunks = triton.cdiv(max(N, 1), chunk_points)
    ubar = new_empty(B, N, M, like=x) if store_ubar else x
    part = new_empty(B, n_chunks, K + 1, M, like=x, dtype=acc_torch)

    def grid(meta):
        return (n_chunks, triton.cdiv(M, meta["BLOCK_M"]), B)

    _first_layer_bwd_kernel[grid](
        grad_out, x, w, s, c, ubar, part,
        N, M, K, size_bucket(N), chunk_points, float(omega),
        grad_out.stride(0), grad_out.stride(1), grad_out.stride(2),
        x.stride(0), x.stride(1),
        w.stride(0), w.stride(1),
        s.stride(0), s.stride(1),
        c.stride(0), c.stride(1),
        ubar.stride(0) if store_ubar else 0, ubar.stride(1) if store_ubar else 0,
        part.stride(0), part.stride(1),
        ORDER=layout.order, HESS_DIAG=layout.hessian_diag, REDUCE_X=reduce_x,
        STORE_UBAR=store_ubar, P_PAD=pow2(K + 1), ACC_DTYPE=_launch.acc_dtype(x.dtype),
    )
    sums = part.sum(1)  # [B, K + 1, M]
    gw = sums[:, :K].transpose(1, 2).mul(omega)  # d loss / d W = omega d loss / d (omega W)
    if not reduce_x:
        gw = gw + _matmul(ubar.transpose(1, 2), x, alpha=omega, split=True, out_dtype=acc_torch)
    gw = gw.to(x.dtype).contiguous()
    gb = sums[:, K].mul(omega).to(x.dtype) if has_bias else None
    gx = _matmul(ubar, w, alpha=omega) if need_x_grad else None
    return gx, gw, gb


def _sine_layer_launch(stack, w, b, omega, layout, preact_only, keep_cos=True):
    stack = _check_stack(stack, layout, "input stack")
    w, b = _check_weights(w, b, stack, "sine layer")
    B, R, N, K = stack.shape
    M = w.shape[1]
    if w.shape[2] != K:
        raise ValueError(f"sine layer weight takes {w.shape[2]} inputs, the stack has {K}")
    G = new_empty(B, R, N, M, like=stack)
    out = G if preact_only else new_empty(B, R, N, M, like=stack)
    if N == 0 or M == 0:
        return out, G

    def grid(meta):
        return (triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(M, meta["BLOCK_M"]), B)

    _sine_layer_fwd_kernel[grid](
        stack, w, b if b is not None else w, out, G,
        N, M, K, size_bucket(N), float(omega),
        stack.stride(0), stack.stride(1), stack.stride(2),
        w.stride(0), w.stride(1),
        b.stride(0) if b is not None else 0,
        G.stride(0), G.stride(1), G.stride(2),
        **_slab_counts(layout),
        HESS_DIAG=layout.hessian_diag, HAS_BIAS=b is not None, PREACT_ONLY=preact_only,
        KEEP_COS=keep_cos or layout.order > 0, ACC_DTYPE=_launch.acc_dtype(stack.dtype),
        INPUT_PRECISION=_launch.dot_precision(stack.dtype, current_input_precision()),
    )
    return out, G


def _layout_of(stack: torch.Tensor) -> JetLayout:
    """A layout with the stack's slab count for the GEMM-only path (preact): every slab past the
    value is a plain linear slab there, so any split of them gives the same G."""
    rows = stack.shape[1]
    return JetLayout(1, rows - 1) if rows > 1 else JetLayout(0, 1)


def sine_layer_preact(
    stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, omega: float
) -> torch.Tensor:
    """G = stack (omega W)^T with omega b on the value slab: [B, R, N, M]."""
    if stack.dim() != 4:
        raise ValueError(f"input stack must have 4 dims, got shape {tuple(stack.shape)}")
    return _sine_layer_launch(stack, w, b, omega, _layout_of(stack), preact_only=True)[1]


def sine_layer_fwd(
    stack: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    omega: float,
    layout: JetLayout,
    keep_cos: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sine layer on a stacked jet. Returns (out, G) with cos u written over u in G's slab 0
    (left as u when ``keep_cos=False`` at order 0, where nothing else needs the cosine)."""
    return _sine_layer_launch(stack, w, b, omega, layout, preact_only=False, keep_cos=keep_cos)


def sine_layer_bwd(
    grad_out: torch.Tensor,
    stack: torch.Tensor,
    w: torch.Tensor,
    omega: float,
    layout: JetLayout,
    s: torch.Tensor,
    G: torch.Tensor,
    need_input_grad: bool = True,
    has_bias: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """VJP of ``sine_layer_fwd``: (S̄ or None, W̄, b̄ or None). G holds cos u in slab 0."""
    stack = _check_stack(stack, layout, "input stack")
    w, _ = _check_weights(w, None, stack, "sine layer")
    B, R, N, K = stack.shape
    M = w.shape[1]
    grad_out = _launch.check_tensor(grad_out, "grad_out", 4, stack)
    _launch.check_shape(grad_out, "grad_out", (B, R, N, M))
    G = _launch.check_tensor(G, "G", 4, stack)
    _launch.check_shape(G, "G", (B, R, N, M))
    s = _check_value(s, "sin u", (B, N, M), stack) if layout.order >= 1 else G[:, 0]

    g_bar = new_empty(B, R, N, M, like=stack)
    if N > 0 and M > 0:
        def grid(meta):
            return (triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(M, meta["BLOCK_M"]), B)

        _sine_layer_bwd_kernel[grid](
            grad_out, G, s, g_bar,
            N, M, size_bucket(N),
            g_bar.stride(0), g_bar.stride(1), g_bar.stride(2),
            s.stride(0), s.stride(1),
            **_slab_counts(layout),
            HESS_DIAG=layout.hessian_diag, ACC_DTYPE=_launch.acc_dtype(stack.dtype),
        )
    rows_bar = g_bar.view(B, R * N, M)
    # W̄ = omega Ḡ^T S over all stacked rows: one reduction, split into fp32 partials.
    gw = _matmul(rows_bar.transpose(1, 2), stack.view(B, R * N, K), alpha=omega, split=True)
    # b̄ = omega sum_n ū: a torch reduction (fp32 accumulation inside torch.sum).
    gb = g_bar[:, 0].sum(1, dtype=_acc_torch(stack.dtype)).mul_(omega).to(stack.dtype) \
        if has_bias else None
    gs = _matmul(rows_bar, w, alpha=omega).view(B, R, N, K) if need_input_grad else None
    return gs, gw, gb


def _acc_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def linear_layer_fwd(stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Linear map of every slab; the bias only shifts the value slab (the first N rows)."""
    stack = _launch.check_tensor(stack, "input stack", 4)
    w, b = _check_weights(w, b, stack, "linear layer")
    B, R, N, K = stack.shape
    if w.shape[2] != K:
        raise ValueError(f"linear layer weight takes {w.shape[2]} inputs, the stack has {K}")
    out = _matmul(stack.view(B, R * N, K), w.transpose(1, 2), bias=b, bias_rows=N)
    return out.view(B, R, N, w.shape[1])


def linear_layer_bwd(
    grad_out: torch.Tensor,
    stack: torch.Tensor,
    w: torch.Tensor,
    need_input_grad: bool = True,
    has_bias: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """VJP of ``linear_layer_fwd``: (S̄ or None, W̄, b̄ or None)."""
    stack = _launch.check_tensor(stack, "input stack", 4)
    w, _ = _check_weights(w, None, stack, "linear layer")
    B, R, N, K = stack.shape
    M = w.shape[1]
    grad_out = _launch.check_tensor(grad_out, "grad_out", 4, stack)
    _launch.check_shape(grad_out, "grad_out", (B, R, N, M))
    rows_bar = grad_out.view(B, R * N, M)
    gw = _matmul(rows_bar.transpose(1, 2), stack.view(B, R * N, K), split=True)
    gb = grad_out[:, 0].sum(1, dtype=_acc_torch(stack.dtype)).to(stack.dtype) \
        if has_bias else None
    gs = _matmul(rows_bar, w).view(B, R, N, K) if need_input_grad else None
    return gs, gw, gb
