"""Tier b: pointer offsets past 2^31 elements stay exact (int64) in the kernels' offset helpers.

A stacked jet [R, N, M] passes 2^31 elements at (R - 1) N M >= 2^31 (order 2, d = 3, width 256:
from N of about 2^21), long before any one dimension does, and Triton's int32 arithmetic wraps
silently. A tensor that large does not fit this tier (the interpreter runs on the host), so the
helpers every kernel builds its slab and row offsets with are checked directly: each probe
computes offsets whose exact values exceed 2^31, in the slab and in the point dimension, and
stores them as int64. The interpreter wraps int32 products as the GPU does, so the same
expressions without ``wide`` fail here. Tier c's ``test_gpu_int64_offsets`` runs a whole layer
past 2^31 elements.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from fastsiren.kernels._jit_helpers import slab_offsets, wide  # noqa: E402

pytestmark = pytest.mark.interpret

# The probes' outputs live where the kernels run: on CUDA when compiled (a kernel cannot write a
# CPU tensor), on the CPU under the interpreter.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@triton.jit
def _slab_offsets_probe(out_ptr, slab0, n_slabs, n0, N, M, stride_r, stride_n,
                        PAD: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr):
    offs_n = n0 + tl.arange(0, BN)  # int32, as an index from a 32-bit program id would be
    offs_m = tl.arange(0, BM)
    offs, mask = slab_offsets(slab0, n_slabs, offs_n, N, offs_m, M, stride_r, stride_n, PAD)
    idx = tl.arange(0, PAD)[:, None, None] * BN * BM + tl.arange(0, BN)[None, :, None] * BM \
        + offs_m[None, None, :]
    tl.store(out_ptr + idx, tl.where(mask, offs, -1))


@triton.jit
def _wide_probe(out_ptr, stride_r, WIDE: tl.constexpr, PAD: tl.constexpr):
    slab = 1 + tl.arange(0, PAD)
    if WIDE:
        offs = wide(slab) * stride_r
    else:
        offs = slab * stride_r
    tl.store(out_ptr + tl.arange(0, PAD), offs.to(tl.int64))


def test_slab_offsets_past_int32():
    """Laplacian slabs of an order-2, d = 3 jet at N = 2^21 + 8 points, width 1024: the slab
    offset reaches 4 N M > 2^33, the point offset N M > 2^31."""
    N, M, BN, BM, PAD = (1 << 21) + 8, 1024, 4, 2, 4
    n0 = N - BN
    out = torch.zeros(PAD, BN, BM, dtype=torch.int64, device=DEVICE)
    _slab_offsets_probe[(1,)](out, 1, 3, n0, N, M, N * M, M, PAD=PAD, BN=BN, BM=BM)
    out = out.cpu()
    r = torch.arange(PAD).view(-1, 1, 1)
    n = (n0 + torch.arange(BN)).view(1, -1, 1)
    m = torch.arange(BM).view(1, 1, -1)
    want = torch.where(r < 3, (1 + r) * (N * M) + n * M + m, torch.full_like(r, -1))
    assert want.max() > 2**33
    assert torch.equal(out, want), f"offsets {out.flatten()[-3:]}, want {want.flatten()[-3:]}"


def test_int32_products_wrap_without_wide():
    """The probe can fail: the same product in int32 wraps under the interpreter."""
    stride = 1 << 30
    exact = torch.tensor([(1 + i) * stride for i in range(4)], dtype=torch.int64)
    got = {}
    for use_wide in (True, False):
        out = torch.zeros(4, dtype=torch.int64, device=DEVICE)
        _wide_probe[(1,)](out, stride, WIDE=use_wide, PAD=4)
        got[use_wide] = out.cpu()
    assert torch.equal(got[True], exact)
    assert not torch.equal(got[False], exact), "int32 products did not wrap: the test is blind"
