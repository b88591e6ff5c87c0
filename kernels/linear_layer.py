r"""The final linear layer on a stacked jet (no activation: every slab maps linearly).

Over the stacked rows S [B, R N, K] (the bias only on the value slab, the first N rows)::

    out = S W^T (+ b)      S̄ = out̄ W      W̄ = out̄^T S      b̄ = sum over value rows of out̄

A SIREN usually ends in 1 to 4 outputs. A GEMM would pad those M columns to a whole tensor-core
tile (32 or more) and, in backward, run W̄ as a GEMM with M padded rows and S̄ as one with a
K-step of M: mostly padding. With M <= FEW_OUTPUTS the layer is a reduction instead:

``_linear_few_fwd_kernel``: one program per BLOCK_R stacked rows reads its rows of S once and
  reduces them against the M_PAD weight rows ([BLOCK_R, M_PAD, BLOCK_K] products summed over K).
``_linear_few_bwd_kernel``: one pass over S and out̄ per chunk of rows and block of K columns:
  S̄ = out̄ W as an outer product (written once) and W̄'s per-chunk partial sums out̄^T S,
  reduced by torch over chunks (deterministic, no atomics).

Wider outputs (a drop-in linear layer with many features) use the batched ``matmul``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fastsiren.kernels._launch import (
    ANY_CLASS,
    COMPILE_OPTIONS,
    SPLIT_ALIGN,
    acc_dtype,
    acc_torch_dtype,
    check_shape,
    check_tensor,
    check_weights,
    config,
    configs,
    n_splits,
    new_empty,
    pow2,
    prune_by_class,
    size_bucket,
)
from fastsiren.kernels.matmul import matmul

__all__ = ["linear_layer_bwd", "linear_layer_fwd"]

# Up to this many outputs the layer is a reduction (see the module docstring), beyond it a GEMM.
FEW_OUTPUTS = 8

# fp16's backward spills 4 B at 64x32 (bf16 does not); 128x32 compiles clean in every class.
_FEW_TABLE = [
    (config({"BLOCK_R": 64, "BLOCK_K": 32}, 4), ANY_CLASS - {"half"}),
    (config({"BLOCK_R": 128, "BLOCK_K": 32}, 4), ANY_CLASS),
]
_FEW_CONFIGS = configs([cfg for cfg, _ in _FEW_TABLE], config({"BLOCK_R": 64, "BLOCK_K": 32}))
_PRUNE_FEW = {"early_config_prune": prune_by_class(_FEW_TABLE, ("K",))}


@triton.autotune(configs=_FEW_CONFIGS, key=["K", "M_PAD", "HAS_BIAS", "r_bucket"],
                 prune_configs_by=_PRUNE_FEW)
@triton.jit(do_not_specialize=["rows", "bias_rows"])
def _linear_few_fwd_kernel(
    # pointers
    s_ptr,  # [B, rows, K] stacked input rows
    w_ptr,  # [B, M, K] weights
    b_ptr,  # [B, M] bias (unused without HAS_BIAS)
    out_ptr,  # [B, rows, M] stacked output rows
    # sizes
    rows,
    M,
    K,
    bias_rows,  # the value slab's rows (N): the bias goes on rows < bias_rows
    r_bucket,  # log2 bucket of rows: the autotune key
    # strides (last dims unit-stride)
    stride_sb,
    stride_sr,
    stride_wb,
    stride_wm,
    stride_bb,
    stride_ob,
    stride_or,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    M_PAD: tl.constexpr,  # pow2 >= M
    ACC_DTYPE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_r = tl.program_id(0).to(tl.int64)
    pid_b = tl.program_id(1).to(tl.int64)
    s_ptr += pid_b * stride_sb
    w_ptr += pid_b * stride_wb
    out_ptr += pid_b * stride_ob

    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_m = tl.arange(0, M_PAD)
    offs_k = tl.arange(0, BLOCK_K)
    mask_r = offs_r < rows
    mask_m = offs_m < M
    acc = tl.zeros((BLOCK_R, M_PAD), dtype=ACC_DTYPE)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < K
        a = tl.load(s_ptr + offs_r[:, None] * stride_sr + kk[None, :],
                    mask=mask_r[:, None] & mask_k[None, :], other=0.0).to(ACC_DTYPE)
        wt = tl.load(w_ptr + offs_m[:, None] * stride_wm + kk[None, :],
                     mask=mask_m[:, None] & mask_k[None, :], other=0.0).to(ACC_DTYPE)
        acc += tl.sum(a[:, None, :] * wt[None, :, :], axis=2)
    if HAS_BIAS:
        bias = tl.load(b_ptr + pid_b * stride_bb + offs_m, mask=mask_m, other=0.0)
        acc += tl.where((offs_r < bias_rows)[:, None], bias.to(ACC_DTYPE)[None, :], 0.0)
    tl.store(out_ptr + offs_r[:, None] * stride_or + offs_m[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=mask_r[:, None] & mask_m[None, :])


@triton.autotune(configs=_FEW_CONFIGS, key=["K", "M_PAD", "STORE_SBAR", "r_bucket"],
                 prune_configs_by=_PRUNE_FEW)
@triton.jit(do_not_specialize=["rows", "chunk_rows"])
def _linear_few_bwd_kernel(
    # pointers
    go_ptr,  # [B, rows, M] cotangent of the output rows
    s_ptr,  # [B, rows, K] stacked input rows
    w_ptr,  # [B, M, K] weights
    sbar_ptr,  # [B, rows, K] S̄, output (written with STORE_SBAR)
    part_ptr,  # [B, C, M, K] per-chunk partial sums of W̄, output (accumulator dtype)
    # sizes
    rows,
    M,
    K,
    chunk_rows,  # rows per program, a multiple of BLOCK_R
    r_bucket,  # log2 bucket of rows: the autotune key
    # strides (last dims unit-stride; S and S̄ share theirs)
    stride_gb,
    stride_gr,
    stride_sb,
    stride_sr,
    stride_wb,
    stride_wm,
    stride_pb,
    stride_pc,
    # meta-parameters
    STORE_SBAR: tl.constexpr,
    M_PAD: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_c = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    go_ptr += pid_b * stride_gb
    s_ptr += pid_b * stride_sb
    sbar_ptr += pid_b * stride_sb

    offs_m = tl.arange(0, M_PAD)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_k = offs_k < K
    wt = tl.load(w_ptr + pid_b * stride_wb + offs_m[:, None] * stride_wm + offs_k[None, :],
                 mask=mask_m[:, None] & mask_k[None, :], other=0.0).to(ACC_DTYPE)
    part = tl.zeros((M_PAD, BLOCK_K), dtype=ACC_DTYPE)
    for r0 in range(0, chunk_rows, BLOCK_R):
        offs_r = pid_c * chunk_rows + r0 + tl.arange(0, BLOCK_R)
        mask_r = offs_r < rows
        go = tl.load(go_ptr + offs_r[:, None] * stride_gr + offs_m[None, :],
                     mask=mask_r[:, None] & mask_m[None, :], other=0.0).to(ACC_DTYPE)
        offs_s = offs_r[:, None] * stride_sr + offs_k[None, :]
        mask_s = mask_r[:, None] & mask_k[None, :]
        s = tl.load(s_ptr + offs_s, mask=mask_s, other=0.0).to(ACC_DTYPE)
        part += tl.sum(go[:, :, None] * s[:, None, :], axis=0)
        if STORE_SBAR:
            sbar = tl.sum(go[:, :, None] * wt[None, :, :], axis=1)
            tl.store(sbar_ptr + offs_s, sbar.to(sbar_ptr.dtype.element_ty), mask=mask_s)
    tl.store(part_ptr + pid_b * stride_pb + pid_c * stride_pc + offs_m[:, None] * K
             + offs_k[None, :], part, mask=mask_m[:, None] & mask_k[None, :])


def linear_layer_fwd(stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Linear map of every slab; the bias only shifts the value slab (the first N rows)."""
    stack = check_tensor(stack, "input stack", 4)
    w, b = check_weights(w, b, stack, "linear layer")
    B, R, N, K = stack.shape
    M = w.shape[1]
    if w.shape[2] != K:
        raise ValueError(f"linear layer weight takes {w.shape[2]} inputs, the stack has {K}")
    if M > FEW_OUTPUTS:
        out = matmul(stack.view(B, R * N, K), w.transpose(1, 2), bias=b, bias_rows=N)
        return out.view(B, R, N, M)
    out = new_empty(B, R, N, M, like=stack)
    rows = R * N
    if rows == 0 or M == 0:
        return out

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_R"]), B)

    _linear_few_fwd_kernel[grid](
        stack, w, b if b is not None else w, out,
        rows, M, K, N, size_bucket(rows),
        stack.stride(0), stack.stride(2),
        w.stride(0), w.stride(1),
        b.stride(0) if b is not None else 0,
        out.stride(0), out.stride(2),
        HAS_BIAS=b is not None, M_PAD=pow2(M), ACC_DTYPE=acc_dtype(stack.dtype),
        **COMPILE_OPTIONS,
    )
    return out


def linear_layer_bwd(
    grad_out: torch.Tensor,
    stack: torch.Tensor,
    w: torch.Tensor,
    need_input_grad: bool = True,
    has_bias: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """VJP of ``linear_layer_fwd``: (S̄ or None, W̄, b̄ or None)."""
    stack = check_tensor(stack, "input stack", 4)
    w, _ = check_weights(w, None, stack, "linear layer")
    B, R, N, K = stack.shape
    M = w.shape[1]
    grad_out = check_tensor(grad_out, "grad_out", 4, stack)
    check_shape(grad_out, "grad_out", (B, R, N, M))
    acc_torch = acc_torch_dtype(stack.dtype)
    gb = grad_out[:, 0].sum(1, dtype=acc_torch).to(stack.dtype) if has_bias else None
    rows = R * N
    rows_bar = grad_out.view(B, rows, M)
    if M > FEW_OUTPUTS:
        gw = matmul(rows_bar.transpose(1, 2), stack.view(B, rows, K), split=True)
        gs = matmul(rows_bar, w).view(B, R, N, K) if need_input_grad else None
        return gs, gw, gb

    # Each program reduces a chunk of rows (a multiple of every BLOCK_R) for one block of K.
    n_chunks = n_splits(rows, B * triton.cdiv(K, 32), stack.device)
    chunk_rows = triton.cdiv(triton.cdiv(max(rows, 1), n_chunks), SPLIT_ALIGN) * SPLIT_ALIGN
    n_chunks = triton.cdiv(max(rows, 1), chunk_rows)
    gs = new_empty(B, R, N, K, like=stack) if need_input_grad else None
    part = new_empty(B, n_chunks, M, K, like=stack, dtype=acc_torch)
    if rows == 0 or M == 0 or K == 0:
        part.zero_()
        if gs is not None:
            gs.zero_()
    else:
        def grid(meta):
            return (n_chunks, triton.cdiv(K, meta["BLOCK_K"]), B)

        _linear_few_bwd_kernel[grid](
            rows_bar, stack, w, gs if gs is not None else stack, part,
            rows, M, K, chunk_rows, size_bucket(rows),
            rows_bar.stride(0), rows_bar.stride(1),
            stack.stride(0), stack.stride(2),
            w.stride(0), w.stride(1),
            part.stride(0), part.stride(1),
            STORE_SBAR=gs is not None, M_PAD=pow2(M), ACC_DTYPE=acc_dtype(stack.dtype),
            **COMPILE_OPTIONS,
        )
    gw = part.sum(1).to(stack.dtype)
    return gs, gw, gb
