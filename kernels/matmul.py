r"""Batched strided GEMM: the final linear layer and every backward GEMM.

``_matmul_kernel``: C = alpha A B (+ bias on the first ``bias_rows`` rows, i.e. the value slab
of a stacked jet), optionally split over the reduction. A Triton GEMM rather than torch.matmul
so that every matmul follows the same ``input_precision`` knob (the equivalence tests need exact
fp32 everywhere; torch's matmul would follow ``allow_tf32`` instead) and so bf16 storage
accumulates in fp32 throughout.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fastsiren.kernels._launch import (
    COMPILE_OPTIONS,
    SPLIT_ALIGN,
    acc_dtype,
    acc_torch_dtype,
    config,
    configs,
    dot_precision,
    n_splits,
    new_empty,
    prune_by_class,
    size_bucket,
)
from fastsiren.kernels.precision import current_input_precision

__all__ = ["matmul"]


# GPU candidate tiles and the register classes (see ``_launch.REGISTER_CLASSES``) each may run
# in: the sm90 compile tier shows which compile without spills (triton 3.9, sm_90a: 128x32x64
# spills 104-440 B in tf32; every 128-row tile spills 16-420 B in ieee, 64x64x32 with 3 stages
# 8 B; fp64 spills 20 B at 32x64x32).
_MATMUL_TABLE = [
    (config({"BLOCK_P": 128, "BLOCK_T": 128, "BLOCK_Q": 32}, 8, 3), frozenset({"tf32", "half"})),
    (config({"BLOCK_P": 64, "BLOCK_T": 128, "BLOCK_Q": 32}, 4, 3), frozenset({"tf32", "half"})),
    (config({"BLOCK_P": 64, "BLOCK_T": 64, "BLOCK_Q": 32}, 4, 2), frozenset({"ieee", "tf32x3"})),
    (config({"BLOCK_P": 64, "BLOCK_T": 64, "BLOCK_Q": 64}, 4, 3), frozenset({"ieee"})),
    (config({"BLOCK_P": 32, "BLOCK_T": 64, "BLOCK_Q": 16}, 4, 2), frozenset({"fp64"})),
]
_MATMUL_CONFIGS = configs(
    [cfg for cfg, _ in _MATMUL_TABLE],
    config({"BLOCK_P": 128, "BLOCK_T": 128, "BLOCK_Q": 64}),
)


@triton.autotune(configs=_MATMUL_CONFIGS,
                 key=["T", "p_bucket", "q_bucket", "HAS_BIAS", "INPUT_PRECISION"],
                 prune_configs_by={"early_config_prune": prune_by_class(
                     _MATMUL_TABLE, ("T", "stride_ap", "stride_aq", "stride_bq", "stride_cp"))})
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
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION,
                     out_dtype=ACC_DTYPE)
    acc = acc * alpha
    if HAS_BIAS:
        bias = tl.load(bias_ptr + pid_b * stride_biasb + offs_t, mask=mask_t, other=0.0)
        acc += tl.where((offs_p < bias_rows)[:, None], bias.to(ACC_DTYPE)[None, :], 0.0)
    tl.store(c_ptr + offs_p[:, None] * stride_cp + offs_t[None, :],
             acc.to(c_ptr.dtype.element_ty), mask=mask_p[:, None] & mask_t[None, :])


def matmul(
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
        n_split = n_splits(Q, B * triton.cdiv(P, 64) * triton.cdiv(T, 64), a.device)
    else:
        n_split = 1
    q_per_split = triton.cdiv(triton.cdiv(max(Q, 1), n_split), SPLIT_ALIGN) * SPLIT_ALIGN
    n_split = triton.cdiv(max(Q, 1), q_per_split)
    if n_split == 1:
        c = new_empty(1, B, P, T, like=a, dtype=dtype)
    else:
        c = new_empty(n_split, B, P, T, like=a, dtype=acc_torch_dtype(a.dtype))
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
        ACC_DTYPE=acc_dtype(a.dtype),
        INPUT_PRECISION=dot_precision(a.dtype, current_input_precision()),
        **COMPILE_OPTIONS,
    )
    return c[0] if n_split == 1 else c.sum(0).to(dtype)
