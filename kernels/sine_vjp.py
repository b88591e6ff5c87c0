r"""The hidden sine layer's VJP: the elementwise kernel, then two GEMMs.

With s = sin u, c = cos u and the output cotangents (z̄', J̄'_i, L̄')::

    ū   = c z̄' - s sum_i J̄'_i g_i - L̄' (s g_L + c sum_i g_i^2)
    ḡ_i = c J̄'_i - 2 s L̄' g_i        ḡ_L = c L̄'
    W̄ = omega Ḡ^T S      b̄ = omega sum_n ū      S̄ = Ḡ (omega W)

``_sine_layer_bwd_kernel``: the elementwise VJP, one pass over (grad_out, G, s) -> Ḡ on 2-D
[BLOCK_N, BLOCK_M] tiles, the d gradient slabs in a ``tl.static_range`` loop that accumulates
sum_i J̄'_i g_i and sum_i g_i^2 as it goes (few live tiles: no spills); then
S̄ = Ḡ (omega W) and W̄ = omega Ḡ^T S are two launches of the batched ``matmul`` over the
stacked rows [R N] (W̄ split over the rows into fp32 partial buffers summed by torch:
deterministic, no atomics). b̄ is a torch sum of Ḡ's slab 0. Fusing the VJP into the S̄ GEMM's
prologue would save one write and one read of Ḡ, but Ḡ must be materialised for W̄ anyway;
measure first.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fastsiren.kernels._jit_helpers import row_major_tile, wide
from fastsiren.kernels._launch import (
    ANY_CLASS,
    COMPILE_OPTIONS,
    NOT_FP64,
    acc_dtype,
    acc_torch_dtype,
    check_shape,
    check_stack,
    check_tensor,
    check_value,
    check_weights,
    config,
    configs,
    new_empty,
    prune_by_class,
    row_major_programs,
    size_bucket,
)
from fastsiren.kernels.matmul import matmul

from fastsiren.jet import JetLayout

__all__ = ["sine_layer_bwd"]


# 2-D tiles: the gradient and second-order slabs stream through a tl.static_range loop, so only
# a few [BLOCK_N, BLOCK_M] tiles are live at once (the first version held every slab as one
# [D_PAD, BLOCK_N, BLOCK_M] tensor and spilled 5.5 KB per thread in all but its smallest tile).
# fp64 (two registers per value) spills 5.5 KB at 32x64; 16x64 holds it in 218 registers.
# fp16 spills 4 B at 16x64 and 32x32 with triton 3.6 (not 3.9). At width 100 (not a multiple
# of 16: only the smallest tile is kept) bf16 and fp16 spilled 148 B at 32x64, so the half
# types have 16x32 as well.
_SINE_BWD_TABLE = [
    (config({"BLOCK_N": 16, "BLOCK_M": 32}, 4), frozenset({"half"})),
    (config({"BLOCK_N": 16, "BLOCK_M": 64}, 4), ANY_CLASS - {"half"}),
    (config({"BLOCK_N": 32, "BLOCK_M": 32}, 4), NOT_FP64 - {"half"}),
    (config({"BLOCK_N": 32, "BLOCK_M": 64}, 4), NOT_FP64),
]
_SINE_BWD_CONFIGS = configs([cfg for cfg, _ in _SINE_BWD_TABLE],
                            config({"BLOCK_N": 32, "BLOCK_M": 64}))


@triton.autotune(configs=_SINE_BWD_CONFIGS, key=["M", "n_bucket", "D", "N_LAP", "HESS_DIAG"],
                 prune_configs_by={"early_config_prune": prune_by_class(_SINE_BWD_TABLE, ("M",))})
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
    D: tl.constexpr,  # gradient slabs (d, or 0 at order 0)
    N_LAP: tl.constexpr,  # second-order slabs (0, 1, or d with HESS_DIAG)
    HESS_DIAG: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    pid_n, pid_m = row_major_tile(M, BLOCK_M)
    pid_b = tl.program_id(1).to(tl.int64)
    go_ptr += pid_b * stride_b
    g_ptr += pid_b * stride_b
    gbar_ptr += pid_b * stride_b
    stride_r = wide(stride_r)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask = (offs_n < N)[:, None] & (offs_m < M)[None, :]
    offs = offs_n[:, None] * stride_n + offs_m[None, :]  # slab r of the jet: + r * stride_r

    c = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    gu = c * tl.load(go_ptr + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    if D > 0:
        s = tl.load(s_ptr + pid_b * stride_sb + offs_n[:, None] * stride_sn + offs_m[None, :],
                    mask=mask, other=0.0).to(ACC_DTYPE)
        if N_LAP > 0:
            if not HESS_DIAG:  # one Laplacian slab shared by every axis
                offs_l = offs + (1 + D) * stride_r
                ol = tl.load(go_ptr + offs_l, mask=mask, other=0.0).to(ACC_DTYPE)
                gl = tl.load(g_ptr + offs_l, mask=mask, other=0.0).to(ACC_DTYPE)
                tl.store(gbar_ptr + offs_l, (c * ol).to(gbar_ptr.dtype.element_ty), mask=mask)
                sumsq = tl.zeros((BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
        for i in tl.static_range(D):
            offs_i = offs + (1 + i) * stride_r
            g = tl.load(g_ptr + offs_i, mask=mask, other=0.0).to(ACC_DTYPE)
            oj = tl.load(go_ptr + offs_i, mask=mask, other=0.0).to(ACC_DTYPE)
            gu -= s * oj * g
            gj_bar = c * oj
            if N_LAP > 0:
                if HESS_DIAG:  # per axis: ū -= L̄'_i (s g_Li + c g_i^2), ḡ_Li = c L̄'_i
                    offs_l = offs + (1 + D + i) * stride_r
                    ol = tl.load(go_ptr + offs_l, mask=mask, other=0.0).to(ACC_DTYPE)
                    gl = tl.load(g_ptr + offs_l, mask=mask, other=0.0).to(ACC_DTYPE)
                    gu -= ol * (s * gl + c * g * g)
                    tl.store(gbar_ptr + offs_l, (c * ol).to(gbar_ptr.dtype.element_ty),
                             mask=mask)
                else:
                    sumsq += g * g
                gj_bar -= 2.0 * g * (s * ol)
            tl.store(gbar_ptr + offs_i, gj_bar.to(gbar_ptr.dtype.element_ty), mask=mask)
        if N_LAP > 0:
            if not HESS_DIAG:  # ū -= L̄' (s g_L + c sum_i g_i^2)
                gu -= ol * (s * gl + c * sumsq)
    tl.store(gbar_ptr + offs, gu.to(gbar_ptr.dtype.element_ty), mask=mask)


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
    stack = check_stack(stack, layout, "input stack")
    w, _ = check_weights(w, None, stack, "sine layer")
    B, R, N, K = stack.shape
    M = w.shape[1]
    grad_out = check_tensor(grad_out, "grad_out", 4, stack)
    check_shape(grad_out, "grad_out", (B, R, N, M))
    G = check_tensor(G, "G", 4, stack)
    check_shape(G, "G", (B, R, N, M))
    s = check_value(s, "sin u", (B, N, M), stack) if layout.order >= 1 else G[:, 0]

    g_bar = new_empty(B, R, N, M, like=stack)
    if N > 0 and M > 0:
        def grid(meta):
            return (row_major_programs(N, meta["BLOCK_N"], M, meta["BLOCK_M"]), B)

        _sine_layer_bwd_kernel[grid](
            grad_out, G, s, g_bar,
            N, M, size_bucket(N),
            g_bar.stride(0), g_bar.stride(1), g_bar.stride(2),
            s.stride(0), s.stride(1),
            D=layout.n_grad, N_LAP=layout.n_lap,
            HESS_DIAG=layout.hessian_diag, ACC_DTYPE=acc_dtype(stack.dtype),
            **COMPILE_OPTIONS,
        )
    rows_bar = g_bar.view(B, R * N, M)
    # W̄ = omega Ḡ^T S over all stacked rows: one reduction, split into fp32 partials.
    gw = matmul(rows_bar.transpose(1, 2), stack.view(B, R * N, K), alpha=omega, split=True)
    # b̄ = omega sum_n ū: a torch reduction (fp32 accumulation inside torch.sum).
    gb = g_bar[:, 0].sum(1, dtype=acc_torch_dtype(stack.dtype)).mul_(omega).to(stack.dtype) \
        if has_bias else None
    gs = matmul(rows_bar, w, alpha=omega).view(B, R, N, K) if need_input_grad else None
    return gs, gw, gb
