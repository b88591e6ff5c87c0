"""Small ``@triton.jit`` helpers shared by the kernels: sincos and the jet epilogues.

No explicit libdevice calls (``tl.extra``): the interpreter cannot run them.
"""

from __future__ import annotations

import triton
import triton.language as tl

# pi/2 as the sum of three fp32 values, the first two of at most 12 significant bits (so k times
# them is exact in fp32 for k < 2^12 even where an FMA is not fused), the third the fp32
# rounding of the rest; and 2/pi: the range reduction of ``sincos``.
_PIO2_1 = tl.constexpr(1.5703125)
_PIO2_2 = tl.constexpr(0.0004837512969970703)
_PIO2_3 = tl.constexpr(7.549790126404332e-08)
_TWO_OVER_PI = tl.constexpr(0.6366197723675814)
# Minimax polynomials of sin r / r - 1 and cos r - 1 + r^2 / 2 on |r| <= pi/4, in z = r^2 (the
# Cephes sinf / cosf coefficients).
_SIN_1 = tl.constexpr(-1.6666654611e-1)
_SIN_2 = tl.constexpr(8.3321608736e-3)
_SIN_3 = tl.constexpr(-1.9515295891e-4)
_COS_1 = tl.constexpr(4.166664568298827e-2)
_COS_2 = tl.constexpr(-1.388731625493765e-3)
_COS_3 = tl.constexpr(2.443315711809948e-5)


@triton.jit
def sincos(u):
    """sin u and cos u from one range reduction, shared by every slab's epilogue.

    fp32: u = k pi/2 + r with k = round(u 2/pi) and |r| <= pi/4, r by three FMAs with the split
    of pi/2 above (fused, as compiled on the GPU: each exact to one rounding of r, so r keeps
    its accuracy while k < 2^24; unfused, k c_1 and k c_2 stay exact to |u| of about 1e4);
    then sin r and cos r by the two polynomials, and the quadrant k mod 4 picks and signs them:
    sin u = (s, c, -s, -c)[k mod 4], cos u = (c, -s, -c, s)[k mod 4]. Max absolute error
    9.3e-8 for |u| < 1e5 and 1.1e-7 for |u| < 1e6 with fused FMAs (9.2e-8 for |u| < 1e4
    without), about 1.5 ulp near 1 (correctly rounded: 3e-8, half an ulp; libdevice's sinf /
    cosf promise 2 ulp); tested in tests/test_triton_sincos.py. Unlike libdevice it has no slow
    path for huge arguments, so no call frame on the stack, and one reduction serves both.
    SIREN pre-activations are omega (W h + b), a few hundred at most.

    fp64 (the exactness tier): ``tl.sin`` / ``tl.cos``."""
    if u.dtype == tl.float64:
        return tl.sin(u), tl.cos(u)
    k = tl.floor(u * _TWO_OVER_PI + 0.5)
    r = tl.fma(-k, _PIO2_1, u)
    r = tl.fma(-k, _PIO2_2, r)
    r = tl.fma(-k, _PIO2_3, r)
    z = r * r
    sin_r = tl.fma(((_SIN_3 * z + _SIN_2) * z + _SIN_1) * z, r, r)
    cos_r = tl.fma(((_COS_3 * z + _COS_2) * z + _COS_1) * z, z, 1.0 - 0.5 * z)
    quadrant = k.to(tl.int32) & 3
    odd = (quadrant & 1) != 0
    s = tl.where(odd, cos_r, sin_r)
    c = tl.where(odd, sin_r, cos_r)
    s = tl.where((quadrant & 2) != 0, -s, s)
    c = tl.where(((quadrant + 1) & 2) != 0, -c, c)
    return s, c


@triton.jit
def sine(u):
    """sin u alone (order-0 inference): ``sincos`` with the cosine left unused."""
    s, _ = sincos(u)
    return s


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
