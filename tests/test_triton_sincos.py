"""Tier b: the kernels' ``sincos`` (one Cody-Waite range reduction, two minimax polynomials)
against float64 sine and cosine.

Correctly rounded fp32 values are within 3e-8 of the truth near |sin u| = 1 (half an ulp);
the reduction and the polynomials add about one ulp: measured 9.3e-8 for |u| < 1e5 and
1.1e-7 for |u| < 1e6 (libdevice promises 2 ulp, 1.2e-7). The bounds below leave a 1.5x
margin (an interpreter or a compiler that rounds an FMA's product separately costs a fraction of
an ulp). fp64 arguments take ``tl.sin`` / ``tl.cos`` and must match to rounding.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from fastsiren.kernels._jit_helpers import sincos, sine  # noqa: E402

pytestmark = pytest.mark.interpret

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@triton.jit
def _sincos_probe(u_ptr, sin_ptr, cos_ptr, sine_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    u = tl.load(u_ptr + offs, mask=mask, other=0.0)
    s, c = sincos(u)
    tl.store(sin_ptr + offs, s, mask=mask)
    tl.store(cos_ptr + offs, c, mask=mask)
    tl.store(sine_ptr + offs, sine(u), mask=mask)


def _run(u: torch.Tensor):
    u = u.to(DEVICE)
    out = [torch.empty_like(u) for _ in range(3)]
    block = 1024
    _sincos_probe[(triton.cdiv(u.numel(), block),)](u, *out, u.numel(), BLOCK=block)
    return [t.cpu() for t in out]


def _hard_cases() -> torch.Tensor:
    """Arguments next to multiples of pi/4 and pi/2 (where the quadrant switches and the reduced
    argument cancels most), zeros and small values."""
    k = torch.arange(-4000, 4001, dtype=torch.float64)  # |u| up to about 3140
    near = torch.cat([k * torch.pi / 4 + e for e in (0.0, 1e-7, -1e-7, 1e-4, -1e-4)])
    return torch.cat([near, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-3, 3.0])]).float()


@triton.jit
def _fma_probe(out_ptr):
    # 1 + 2^-23 times itself: 1 + 2^-22 + 2^-46 exactly; minus (1 + 2^-22) leaves 2^-46 only if
    # the product is not rounded before the addition.
    a = tl.full((16,), 1.0 + 2.0**-23, tl.float32)
    tl.store(out_ptr + tl.arange(0, 16), tl.fma(a, a, -(1.0 + 2.0**-22)))


def _fma_fused() -> bool:
    out = torch.empty(16, device=DEVICE)
    _fma_probe[(1,)](out)
    return bool(out[0] != 0)


def _check(u: torch.Tensor, bound: float, tol: float) -> None:
    s, c, s_only = _run(u)
    truth = u.double()
    err_s = (s.double() - truth.sin()).abs().max().item()
    err_c = (c.double() - truth.cos()).abs().max().item()
    assert err_s <= tol and err_c <= tol, f"|u| < {bound:g}: sin {err_s:.2e}, cos {err_c:.2e}"
    assert torch.equal(s_only, s), "sine() differs from sincos()[0]"


def _uniform(gen, bound: float) -> torch.Tensor:
    return ((torch.rand(1 << 16, generator=gen, dtype=torch.float64) * 2 - 1) * bound).float()


@pytest.mark.parametrize("bound", [1.0, 100.0, 1e4])
def test_sincos_fp32(gen, bound):
    """SIREN's range and far beyond, with or without a fused FMA (the reduction's first two
    constants have 12 significant bits)."""
    u = _uniform(gen, bound)
    _check(torch.cat([u, _hard_cases()]) if bound == 1e4 else u, bound, 1.4e-7)


@pytest.mark.parametrize("bound,tol", [(1e5, 1.4e-7), (1e6, 1.7e-7)])
def test_sincos_fp32_huge_arguments(gen, bound, tol):
    """Up to 1e6 the reduction relies on tl.fma being fused, as compiled code and triton >= 3.7's
    interpreter have it (3.6's interpreter rounds the product first: there the error reaches
    1e-6 at |u| = 1e5)."""
    if not _fma_fused():
        pytest.skip("this Triton interpreter rounds tl.fma's product before the addition")
    _check(_uniform(gen, bound), bound, tol)


def test_sincos_fp64_is_libm(gen):
    u = (torch.rand(4096, generator=gen, dtype=torch.float64) * 2 - 1) * 1e3
    s, c, _ = _run(u)
    assert (s - u.sin()).abs().max() <= 1e-15 and (c - u.cos()).abs().max() <= 1e-15
