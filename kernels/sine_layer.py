r"""Hidden sine layers on a stacked jet: the fused forward kernel (GEMM + sine-jet epilogue).

Math (omega folded into the GEMM): G = S (omega W)^T with omega b on the value slab, so
u = G_0, g_i = G_i (i = 1..d), g_L = G_L.  With s = sin u, c = cos u::

    z' = s     J'_i = c g_i     L' = c g_L - s sum_i g_i^2     (per axis: c g_Li - s g_i^2)

``_sine_layer_fwd_kernel``: one program owns BLOCK_N points x BLOCK_M output features of one
network and ALL R slabs. Each K step loads the weight tile once and feeds it to up to three
``tl.dot``s: the value rows [BLOCK_N, BK], the d gradient slabs stacked as rows
[D_PAD * BLOCK_N, BK] and the second-order slabs [L_PAD * BLOCK_N, BK] (D_PAD, L_PAD: powers of
two >= d and >= the number of second-order slabs; padded slabs are masked to zero). Splitting
value / gradient / second-order rows keeps padding small (d = 3, order 2: 6 row blocks for 5
slabs, where padding all R slabs together would need 8) and lets the epilogue pair slabs as
whole [D_PAD, BLOCK_N, BLOCK_M] tensors. The epilogue, on the accumulators in registers: omega
and omega b, one sin and one cos, then J' = c g, L' = c g_L - s sum g^2 (or the per-axis form);
writes out and G (cos u in slab 0). ``PREACT_ONLY`` writes G with u in slab 0 instead
(``sine_layer_preact``, for recompute).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fastsiren.kernels._jit_helpers import (
    row_major_tile,
    second_order_term,
    sincos,
    sine,
    slab_offsets,
    wide,
)
from fastsiren.kernels._launch import (
    COMPILE_OPTIONS,
    acc_dtype,
    check_stack,
    check_weights,
    config,
    config_tag,
    configs,
    dot_precision,
    new_empty,
    register_class,
    row_major_programs,
    size_bucket,
    slab_counts,
    unaligned,
)
from fastsiren.kernels.precision import current_input_precision

from fastsiren.jet import JetLayout

__all__ = ["sine_layer_fwd", "sine_layer_preact"]


# GPU candidate tiles (untimed here: to be pruned with measurements on a GPU). The fused forward
# holds (1 + D_PAD + L_PAD) accumulators of BLOCK_N x BLOCK_M, so its tiles stay small.
# The smallest tile, kept only when no other fits the register budget (fp64 with the Hessian
# diagonal at d = 3: 9 slabs spilled 8 B at 16x32).
_SINE_FWD_FALLBACK = config({"BLOCK_N": 16, "BLOCK_M": 16, "BLOCK_K": 32}, 4, 2)
_SINE_FWD_CONFIGS = configs(
    [
        _SINE_FWD_FALLBACK,
        config({"BLOCK_N": 16, "BLOCK_M": 32, "BLOCK_K": 32}, 4, 2),
        config({"BLOCK_N": 16, "BLOCK_M": 64, "BLOCK_K": 32}, 4, 2),
        config({"BLOCK_N": 32, "BLOCK_M": 64, "BLOCK_K": 32}, 4, 2),
        config({"BLOCK_N": 32, "BLOCK_M": 128, "BLOCK_K": 32}, 8, 2),
        config({"BLOCK_N": 64, "BLOCK_M": 64, "BLOCK_K": 32}, 4, 2),
        config({"BLOCK_N": 64, "BLOCK_M": 128, "BLOCK_K": 32}, 8, 2),
    ],
    config({"BLOCK_N": 64, "BLOCK_M": 128, "BLOCK_K": 32}),
)


# Accumulator values per thread, (1 + D_PAD + L_PAD) BLOCK_N BLOCK_M / (32 num_warps), that the
# fused forward may hold per register class before a config is dropped untimed. From the sm90
# compile tier (sm_90a, d = 3), the lower of triton 3.9 and 3.6 (the GPU machines'): tf32 holds
# 144 with 3.9 but spills 20-32 B at 96 with 3.6; bf16 holds 96 with both; tf32x3 holds 48 and
# spills 80-592 B at 96; ieee spills 8 B at 48 with 3.6; fp64 spills 12 B at 48.
MAX_ACC_PER_THREAD = {"tf32": 72, "half": 96, "tf32x3": 48, "ieee": 36, "fp64": 24}


def _prune_sine_fwd(candidates, named_args, **constexprs):
    """Drop configs whose accumulator tiles would not fit in registers for this launch's register
    class; keep the smallest (the fallback tile) if none fits."""
    slabs = 1 + constexprs.get("D_PAD", 1) + constexprs.get("L_PAD", 1)
    budget = MAX_ACC_PER_THREAD[register_class(named_args, constexprs)]
    if unaligned(named_args, ("M", "K")):  # addressing takes registers: half the budget
        budget /= 2

    def per_thread(cfg):
        return slabs * cfg.kwargs["BLOCK_N"] * cfg.kwargs["BLOCK_M"] / (32 * cfg.num_warps)

    fitting = [c for c in candidates
               if per_thread(c) <= budget and config_tag(c) != config_tag(_SINE_FWD_FALLBACK)]
    return fitting or [min(candidates, key=per_thread)]


@triton.autotune(configs=_SINE_FWD_CONFIGS,
                 key=["M", "K", "n_bucket", "D", "N_LAP", "HESS_DIAG", "HAS_BIAS", "PREACT_ONLY",
                      "FOR_BACKWARD", "INPUT_PRECISION"],
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
    FOR_BACKWARD: tl.constexpr,  # a backward will run: write G (else only u at order 0)
    ACC_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n, pid_m = row_major_tile(M, BLOCK_M)
    pid_b = tl.program_id(1).to(tl.int64)
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
    rows_g = wide(1 + rg // BLOCK_N) * stride_sr + ng * stride_sn
    mask_g = (rg // BLOCK_N < D) & (ng < N)
    rl = tl.arange(0, L_PAD * BLOCK_N)
    nl = pid_n * BLOCK_N + rl % BLOCK_N
    rows_l = wide(1 + D + rl // BLOCK_N) * stride_sr + nl * stride_sn
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
        acc_u = tl.dot(a, wt, acc_u, input_precision=INPUT_PRECISION,
                       out_dtype=ACC_DTYPE)
        if D > 0:
            a = tl.load(s_ptr + rows_g[:, None] + kk[None, :],
                        mask=mask_g[:, None] & mask_k[None, :], other=0.0)
            acc_g = tl.dot(a, wt, acc_g, input_precision=INPUT_PRECISION,
                           out_dtype=ACC_DTYPE)
        if N_LAP > 0:
            a = tl.load(s_ptr + rows_l[:, None] + kk[None, :],
                        mask=mask_l[:, None] & mask_k[None, :], other=0.0)
            acc_l = tl.dot(a, wt, acc_l, input_precision=INPUT_PRECISION,
                           out_dtype=ACC_DTYPE)

    u = acc_u * omega
    if HAS_BIAS:
        bias = tl.load(b_ptr + pid_b * stride_bb + offs_m, mask=mask_m, other=0.0)
        u += omega * bias.to(ACC_DTYPE)[None, :]
    offs_0 = offs_n[:, None] * stride_on + offs_m[None, :]
    mask_0 = mask_n[:, None] & mask_m[None, :]
    if PREACT_ONLY:
        tl.store(g_ptr + offs_0, u.to(g_ptr.dtype.element_ty), mask=mask_0)
    elif FOR_BACKWARD or D > 0:
        s, c = sincos(u)
        tl.store(out_ptr + offs_0, s.to(out_ptr.dtype.element_ty), mask=mask_0)
        if FOR_BACKWARD:
            tl.store(g_ptr + offs_0, c.to(g_ptr.dtype.element_ty), mask=mask_0)
    else:  # order-0 inference: nothing reads cos u, G keeps u
        tl.store(out_ptr + offs_0, sine(u).to(out_ptr.dtype.element_ty), mask=mask_0)
        tl.store(g_ptr + offs_0, u.to(g_ptr.dtype.element_ty), mask=mask_0)
    if D > 0:
        g3 = tl.reshape(acc_g * omega, (D_PAD, BLOCK_N, BLOCK_M))
        offs3, mask3 = slab_offsets(1, D, offs_n, N, offs_m, M, stride_or, stride_on, D_PAD)
        if FOR_BACKWARD or PREACT_ONLY:
            tl.store(g_ptr + offs3, g3.to(g_ptr.dtype.element_ty), mask=mask3)
        if not PREACT_ONLY:
            tl.store(out_ptr + offs3, (c[None, :, :] * g3).to(out_ptr.dtype.element_ty),
                     mask=mask3)
        if N_LAP > 0:
            gl3 = tl.reshape(acc_l * omega, (L_PAD, BLOCK_N, BLOCK_M))
            offs3, mask3 = slab_offsets(1 + D, N_LAP, offs_n, N, offs_m, M, stride_or,
                                        stride_on, L_PAD)
            if FOR_BACKWARD or PREACT_ONLY:
                tl.store(g_ptr + offs3, gl3.to(g_ptr.dtype.element_ty), mask=mask3)
            if not PREACT_ONLY:
                lap = c[None, :, :] * gl3 - s[None, :, :] * second_order_term(g3, HESS_DIAG)
                tl.store(out_ptr + offs3, lap.to(out_ptr.dtype.element_ty), mask=mask3)


def _sine_layer_launch(stack, w, b, omega, layout, preact_only, for_backward=True):
    stack = check_stack(stack, layout, "input stack")
    w, b = check_weights(w, b, stack, "sine layer")
    B, R, N, K = stack.shape
    M = w.shape[1]
    if w.shape[2] != K:
        raise ValueError(f"sine layer weight takes {w.shape[2]} inputs, the stack has {K}")
    # Without a backward (for_backward=False) nothing reads G past order 0: it is not even
    # allocated.
    keep_g = preact_only or for_backward or layout.order == 0
    out = None if preact_only else new_empty(B, R, N, M, like=stack)
    G = new_empty(B, R, N, M, like=stack) if keep_g else None
    out = G if out is None else out
    if N == 0 or M == 0:
        return out, G

    def grid(meta):
        return (row_major_programs(N, meta["BLOCK_N"], M, meta["BLOCK_M"]), B)

    _sine_layer_fwd_kernel[grid](
        stack, w, b if b is not None else w, out, G if keep_g else out,
        N, M, K, size_bucket(N), float(omega),
        stack.stride(0), stack.stride(1), stack.stride(2),
        w.stride(0), w.stride(1),
        b.stride(0) if b is not None else 0,
        out.stride(0), out.stride(1), out.stride(2),
        **slab_counts(layout),
        HESS_DIAG=layout.hessian_diag, HAS_BIAS=b is not None, PREACT_ONLY=preact_only,
        FOR_BACKWARD=for_backward, ACC_DTYPE=acc_dtype(stack.dtype),
        INPUT_PRECISION=dot_precision(stack.dtype, current_input_precision()),
        **COMPILE_OPTIONS,
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
    for_backward: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sine layer on a stacked jet. Returns (out, G) with cos u written over u in G's slab 0.

    ``for_backward=False`` says no backward will run: at order 0 G holds u (the cosine is skipped),
    above it G is neither computed nor allocated and the second value is None."""
    return _sine_layer_launch(stack, w, b, omega, layout, preact_only=False,
                              for_backward=for_backward)
