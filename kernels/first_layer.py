r"""The first sine layer, on the coordinates themselves: forward and VJP kernels.

S = (x, I, 0), so the pre-activation jet is closed-form: u = omega (x W^T + b), g_i =
omega W[:, i] (one vector per input feature, the same for every point) and g_L = 0. With
s = sin u, c = cos u the output jet is z' = s, J'_i = c g_i, L' = -s sum_i g_i^2 (per axis:
-s g_i^2), and the VJP reduces to ū = c z̄' - s sum_i J̄'_i g_i - c L̄' sum_i g_i^2.

``_first_layer_fwd_kernel``: u by unrolled FMAs over the K <= FMA_MAX_K input features (a
  tl.dot would be mostly padding), by a tl.dot K loop otherwise (``USE_DOT``, e.g. a drop-in
  ``SineLayer`` with many inputs); then the closed-form jets from the weight columns.
``_first_layer_bwd_kernel``: ū per point, and per-chunk partial sums over points of
  ū x_i + ḡ_i (W̄'s columns; only d of them) and ū (b̄), reduced by torch over chunks. x̄ =
  ū (omega W) is a ``matmul`` launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fastsiren.kernels._jit_helpers import row_major_tile, sincos, sine, wide
from fastsiren.kernels._launch import (
    COMPILE_OPTIONS,
    FMA_MAX_K,
    NOT_FP64,
    SPLIT_ALIGN,
    acc_dtype,
    acc_torch_dtype,
    check_shape,
    check_tensor,
    check_value,
    check_weights,
    config,
    configs,
    dot_precision,
    n_splits,
    new_empty,
    pow2,
    prune_by_class,
    row_major_programs,
    size_bucket,
)
from fastsiren.kernels.matmul import matmul
from fastsiren.kernels.precision import current_input_precision

from fastsiren.jet import JetLayout

__all__ = ["first_layer_bwd", "first_layer_fwd", "first_layer_preact"]


# fp64 calls libdevice's sin and cos, whose ABI saves registers: larger tiles spill 1-22 KB.
# ieee at 64x128 w8 spilled 4-16 B (order-0 inference; 32 inputs) in the full sm90 matrix.
_FIRST_FWD_TABLE = [
    (config({"BLOCK_N": 32, "BLOCK_M": 64, "BLOCK_K": 32}, 4), NOT_FP64),
    (config({"BLOCK_N": 64, "BLOCK_M": 128, "BLOCK_K": 32}, 8), NOT_FP64 - {"ieee"}),
    (config({"BLOCK_N": 16, "BLOCK_M": 64, "BLOCK_K": 32}, 4), frozenset({"fp64"})),
]
_FIRST_FWD_CONFIGS = configs([cfg for cfg, _ in _FIRST_FWD_TABLE],
                             config({"BLOCK_N": 64, "BLOCK_M": 128, "BLOCK_K": 32}))
# fp64 spills 5.7 KB at 64x128 with 8 warps. 64x128 w8 sits at the 255-register ceiling in fp32
# (Laplacian, d = 3) and spills 688-708 B in fp32, bf16 and fp16 at width 100 (N = 4097, sizes
# not multiples of 16); fp64 spills 16 B there at 32x64, so it takes 16x64 (sm_90a, triton 3.9).
_FIRST_BWD_TABLE = [
    (config({"BLOCK_N": 32, "BLOCK_M": 64}, 4), NOT_FP64),
    (config({"BLOCK_N": 16, "BLOCK_M": 64}, 4), frozenset({"fp64"})),
]
_FIRST_BWD_CONFIGS = configs([cfg for cfg, _ in _FIRST_BWD_TABLE],
                             config({"BLOCK_N": 64, "BLOCK_M": 128}))


@triton.autotune(configs=_FIRST_FWD_CONFIGS,
                 key=["M", "K", "n_bucket", "ORDER", "HESS_DIAG", "HAS_BIAS", "PREACT_ONLY",
                      "FOR_BACKWARD", "INPUT_PRECISION"],
                 prune_configs_by={"early_config_prune": prune_by_class(_FIRST_FWD_TABLE, ("M",))})
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
    FOR_BACKWARD: tl.constexpr,  # a backward will run: write cos u (else u at order 0, or nothing)
    USE_DOT: tl.constexpr,  # K > FMA_MAX_K: tl.dot over K tiles instead of FMAs
    ACC_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n, pid_m = row_major_tile(M, BLOCK_M)
    pid_b = tl.program_id(1).to(tl.int64)
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
            acc = tl.dot(a, wt, acc, input_precision=INPUT_PRECISION,
                         out_dtype=ACC_DTYPE)
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
    elif not FOR_BACKWARD and ORDER == 0:  # order-0 inference: nothing reads cos u, return u
        tl.store(cos_ptr + offs_c, u.to(cos_ptr.dtype.element_ty), mask=mask_0)
        tl.store(out_ptr + offs_o, sine(u).to(out_ptr.dtype.element_ty), mask=mask_0)
    else:
        s, c = sincos(u)
        if FOR_BACKWARD:  # a backward will run and reads cos u
            tl.store(cos_ptr + offs_c, c.to(cos_ptr.dtype.element_ty), mask=mask_0)
        tl.store(out_ptr + offs_o, s.to(out_ptr.dtype.element_ty), mask=mask_0)
        if ORDER >= 1:
            # J = I, L = 0: g_i = omega W[:, i] for every point, so the jets are closed forms.
            sumsq = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
            for i in range(0, K):
                g = omega * tl.load(w_ptr + offs_m * stride_wm + i, mask=mask_m,
                                    other=0.0).to(ACC_DTYPE)
                tl.store(out_ptr + wide(1 + i) * stride_or + offs_o,
                         (c * g[None, :]).to(out_ptr.dtype.element_ty), mask=mask_0)
                if ORDER == 2:
                    if HESS_DIAG:
                        tl.store(out_ptr + wide(1 + K + i) * stride_or + offs_o,
                                 (-s * (g * g)[None, :]).to(out_ptr.dtype.element_ty),
                                 mask=mask_0)
                    else:
                        sumsq += g * g
            if ORDER == 2:
                if not HESS_DIAG:
                    tl.store(out_ptr + wide(1 + K) * stride_or + offs_o,
                             (-s * sumsq[None, :]).to(out_ptr.dtype.element_ty), mask=mask_0)


@triton.autotune(configs=_FIRST_BWD_CONFIGS,
                 key=["M", "K", "n_bucket", "ORDER", "HESS_DIAG", "REDUCE_X", "STORE_UBAR"],
                 prune_configs_by={"early_config_prune": prune_by_class(_FIRST_BWD_TABLE, ("M",))})
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
                oj = tl.load(go_ptr + wide(1 + i) * stride_gr + offs_go, mask=mask_0,
                             other=0.0).to(ACC_DTYPE)
                gu -= s * oj * g[None, :]
                if ORDER == 2:
                    if HESS_DIAG:
                        ol = tl.load(go_ptr + wide(1 + K + i) * stride_gr + offs_go, mask=mask_0,
                                     other=0.0).to(ACC_DTYPE)
                        gu -= c * ol * (g * g)[None, :]
            if ORDER == 2:
                if not HESS_DIAG:
                    ol = tl.load(go_ptr + wide(1 + K) * stride_gr + offs_go, mask=mask_0,
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
                    oj = tl.load(go_ptr + wide(1 + i) * stride_gr + offs_go, mask=mask_0,
                                 other=0.0).to(ACC_DTYPE)
                    q = c * oj
                    if ORDER == 2:
                        g = omega * tl.load(w_ptr + offs_m * stride_wm + i, mask=mask_m,
                                            other=0.0).to(ACC_DTYPE)
                        if HESS_DIAG:
                            ol = tl.load(go_ptr + wide(1 + K + i) * stride_gr + offs_go,
                                         mask=mask_0, other=0.0).to(ACC_DTYPE)
                        else:
                            ol = tl.load(go_ptr + wide(1 + K) * stride_gr + offs_go, mask=mask_0,
                                         other=0.0).to(ACC_DTYPE)
                        q -= 2.0 * s * ol * g[None, :]
                    col += tl.sum(q, axis=0)
                part += tl.where(rows[:, None] == i, col[None, :], 0.0)

    tl.store(part_ptr + pid_b * stride_pb + pid_c * stride_pc + rows[:, None] * M
             + offs_m[None, :], part, mask=(rows <= K)[:, None] & mask_m[None, :])


def _first_layer_launch(x, w, b, omega, layout, preact_only, for_backward=True):
    x = check_tensor(x, "coordinates x", 3)
    w, b = check_weights(w, b, x, "first layer")
    B, N, K = x.shape
    M = w.shape[1]
    if w.shape[2] != K:
        raise ValueError(f"first layer weight takes {w.shape[2]} inputs, x has {K} features")
    if not preact_only and layout.d != K:
        raise ValueError(f"jet layout is over d = {layout.d} coordinates, x has {K}")
    rows = 1 if preact_only else layout.rows
    out = new_empty(B, rows, N, M, like=x)
    # Without a backward (for_backward=False) nothing reads cos u past order 0: not even allocated.
    for_backward = for_backward or preact_only
    cos = new_empty(B, N, M, like=x) if for_backward or layout.order == 0 else None
    if N == 0 or M == 0:
        return out, cos

    use_dot = K > FMA_MAX_K

    def grid(meta):
        return (row_major_programs(N, meta["BLOCK_N"], M, meta["BLOCK_M"]), B)

    _first_layer_fwd_kernel[grid](
        x, w, b if b is not None else w, out, cos if cos is not None else out,
        N, M, K, size_bucket(N), float(omega),
        x.stride(0), x.stride(1),
        w.stride(0), w.stride(1),
        b.stride(0) if b is not None else 0,
        out.stride(0), out.stride(1), out.stride(2),
        *((cos.stride(0), cos.stride(1)) if cos is not None else (0, 0)),
        ORDER=layout.order, HESS_DIAG=layout.hessian_diag, HAS_BIAS=b is not None,
        PREACT_ONLY=preact_only, FOR_BACKWARD=for_backward,
        USE_DOT=use_dot,
        ACC_DTYPE=acc_dtype(x.dtype),
        # Only the tl.dot path reads the precision: the FMA path compiles once for every mode.
        INPUT_PRECISION=dot_precision(x.dtype, current_input_precision()) if use_dot else "ieee",
        **COMPILE_OPTIONS,
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
    for_backward: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sine layer on the coordinates themselves. Returns (out [B, R, N, M], cos u [B, N, M]).

    ``for_backward=False`` says no backward will run: at order 0 the second value is u itself (the
    cosine is skipped), above it cos u is not stored and the second value is None.
    """
    return _first_layer_launch(x, w, b, omega, layout, preact_only=False, for_backward=for_backward)


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
    x = check_tensor(x, "coordinates x", 3)
    w, _ = check_weights(w, None, x, "first layer")
    B, N, K = x.shape
    M = w.shape[1]
    grad_out = check_tensor(grad_out, "grad_out", 4, x)
    check_shape(grad_out, "grad_out", (B, layout.rows, N, M))
    c = check_value(c, "cos u", (B, N, M), x)
    s = check_value(s, "sin u", (B, N, M), x) if layout.order >= 1 else c
    reduce_x = K <= FMA_MAX_K
    store_ubar = need_x_grad or not reduce_x
    acc_torch = acc_torch_dtype(x.dtype)

    # Each program reduces a chunk of points (a multiple of every BLOCK_N) into one partial row
    # block; enough chunks to fill the device, summed by torch afterwards.
    n_chunks = n_splits(N, B * triton.cdiv(M, 64), x.device)
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
        STORE_UBAR=store_ubar, P_PAD=pow2(K + 1), ACC_DTYPE=acc_dtype(x.dtype),
        **COMPILE_OPTIONS,
    )
    sums = part.sum(1)  # [B, K + 1, M]
    gw = sums[:, :K].transpose(1, 2).mul(omega)  # d loss / d W = omega d loss / d (omega W)
    if not reduce_x:
        gw = gw + matmul(ubar.transpose(1, 2), x, alpha=omega, split=True, out_dtype=acc_torch)
    gw = gw.to(x.dtype).contiguous()
    gb = sums[:, K].mul(omega).to(x.dtype) if has_bias else None
    gx = matmul(ubar, w, alpha=omega) if need_x_grad else None
    return gx, gw, gb
