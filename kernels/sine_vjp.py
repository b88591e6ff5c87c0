r"""The hidden sine layer's VJP: the elementwise kernel, then two GEMMs.

With s = sin u, c = cos u and the output cotangents (z̄', J̄'_i, L̄')::

    ū   = c z̄' - s sum_i J̄'_i g_i - L̄' (s g_L + c sum_i g_i^2)
    ḡ_i = c J̄'_i - 2 s L̄' g_i        ḡ_L = c L̄'
    W̄ = omega Ḡ^T S      b̄ = omega sum_n ū      S̄ = Ḡ (omega W)

``_sine_layer_bwd_kernel``: the elementwise VJP, one pass over (grad_out, G, s) -> Ḡ; then
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
from fastsiren.kernels._jit_helpers import second_order_term, slab_offsets
from fastsiren.kernels._launch import (
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
    size_bucket,
    slab_counts,
)
from fastsiren.kernels.matmul import matmul

from fastsiren.jet import JetLayout

__all__ = ["sine_layer_bwd"]


_SINE_BWD_CONFIGS = configs(
    [
        config({"BLOCK_N": 32, "BLOCK_M": 64}, 4),
        config({"BLOCK_N": 64, "BLOCK_M": 64}, 4),
        config({"BLOCK_N": 32, "BLOCK_M": 128}, 4),
        config({"BLOCK_N": 64, "BLOCK_M": 128}, 8),
    ],
    config({"BLOCK_N": 64, "BLOCK_M": 128}),
)


@triton.autotune(configs=_SINE_BWD_CONFIGS, key=["M", "n_bucket"])
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
            return (triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(M, meta["BLOCK_M"]), B)

        _sine_layer_bwd_kernel[grid](
            grad_out, G, s, g_bar,
            N, M, size_bucket(N),
            g_bar.stride(0), g_bar.stride(1), g_bar.stride(2),
            s.stride(0), s.stride(1),
            **slab_counts(layout),
            HESS_DIAG=layout.hessian_diag, ACC_DTYPE=acc_dtype(stack.dtype),
        )
    rows_bar = g_bar.view(B, R * N, M)
    # W̄ = omega Ḡ^T S over all stacked rows: one reduction, split into fp32 partials.
    gw = matmul(rows_bar.transpose(1, 2), stack.view(B, R * N, K), alpha=omega, split=True)
    # b̄ = omega sum_n ū: a torch reduction (fp32 accumulation inside torch.sum).
    gb = g_bar[:, 0].sum(1, dtype=acc_torch_dtype(stack.dtype)).mul_(omega).to(stack.dtype) \
        if has_bias else None
    gs = matmul(rows_bar, w, alpha=omega).view(B, R, N, K) if need_input_grad else None
    return gs, gw, gb
