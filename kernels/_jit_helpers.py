"""Small ``@triton.jit`` helpers shared by the kernels: sincos and the jet epilogues.

Only ``tl.sin``/``tl.cos`` (no libdevice calls): the interpreter cannot run libdevice.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def sincos(u):
    """sin u and cos u, computed once per element and shared by every slab's epilogue."""
    return tl.sin(u), tl.cos(u)


@triton.jit
def second_order_term(g3, HESS_DIAG: tl.constexpr):
    """The curvature factor of the second-order slabs from the gradient slabs g3 [D, BN, BM]:
    g_i^2 per axis (Hessian diagonal, [D, BN, BM]) or sum_i g_i^2 (Laplacian, [1, BN, BM])."""
    sq = g3 * g3
    if HESS_DIAG:
        return sq
    else:
        return tl.expand_dims(tl.sum(sq, axis=0), 0)


@triton.jit
def wide(x):
    """x as int64, before it multiplies: a slab index times the slab stride (R N M elements)
    passes 2^31 long before any single tensor dimension does, and int32 products wrap."""
    return tl.cast(x, tl.int64)


@triton.jit
def slab_offsets(slab0, n_slabs, offs_n, N, offs_m, M, stride_r, stride_n, PAD: tl.constexpr):
    """Offsets and mask of a 3D tile [PAD, BN, BM] covering slabs slab0 .. slab0 + n_slabs - 1
    of a stacked [R, N, M] tensor (slab stride stride_r, row stride stride_n, unit columns)."""
    r = tl.arange(0, PAD)
    offs = (wide(slab0 + r) * stride_r)[:, None, None] \
        + (wide(offs_n) * stride_n)[None, :, None] + offs_m[None, None, :]
    mask = (r < n_slabs)[:, None, None] & (offs_n < N)[None, :, None] \
        & (offs_m < M)[None, None, :]
    return offs, mask


@triton.jit
def row_major_tile(M, BLOCK_M: tl.constexpr):
    """(pid_n, pid_m) of a 1-D grid over [N / BLOCK_N, M / BLOCK_M] tiles, column tiles
    innermost: the programs that read the same BLOCK_N input rows run side by side, so those
    rows come from DRAM once (then L2) instead of once per column tile. (A 1-D grid also lifts
    the 65535 limit of grid axes 1 and 2, which 2^20 points in 16-row tiles exceed.)"""
    pid = tl.program_id(0).to(tl.int64)
    n_m = tl.cdiv(M, BLOCK_M)
    return pid // n_m, pid % n_m
