"""The tf32 / tf32x3 emulation of ``bench/measure_input_precision.py`` (which puts numbers on the
kernels' fp32 matmul modes without a GPU) does what it claims, bit for bit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "bench" / "measure_input_precision.py"
_spec = importlib.util.spec_from_file_location("measure_input_precision", _PATH)
emulation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(emulation)

ULP_TF32 = 2.0**-10  # at 1.0


def test_tf32_round_is_nearest_ties_away():
    x = torch.tensor([1.0, 1 + ULP_TF32 / 2, 1 + ULP_TF32 * 1.5, -(1 + ULP_TF32 / 2),
                      1 + ULP_TF32 / 2 - 2.0**-23, 2.0 - ULP_TF32 / 4, float("inf"), float("nan")])
    want = torch.tensor([1.0, 1 + ULP_TF32, 1 + 2 * ULP_TF32, -(1 + ULP_TF32), 1.0, 2.0,
                         float("inf"), float("nan")])
    got = emulation.tf32_round(x)
    assert torch.equal(got[:-1], want[:-1]) and got[-1].isnan()


def test_tf32_truncate_drops_the_low_bits():
    x = torch.tensor([1 + ULP_TF32 * 0.99, -(1 + ULP_TF32 * 1.99), 3.0])
    want = torch.tensor([1.0, -(1 + ULP_TF32), 3.0])
    assert torch.equal(emulation.tf32_truncate(x), want)


def test_emulated_matmuls_exact_on_tf32_values():
    """Small integers are tf32 values and their sums exact: every mode gives the exact product."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-8, 9, (17, 64), generator=gen).float()
    b = torch.randint(-8, 9, (64, 19), generator=gen).float()
    for mode in ("tf32", "tf32x3"):
        assert torch.equal(emulation.emulated_matmul(a, b, mode), a @ b), mode


@pytest.mark.parametrize("rounding", ["rn", "rz"])
def test_tf32x3_is_near_fp32_and_tf32_is_not(rounding):
    """On random data tf32x3 lands within a few fp32 roundings of the exact product; plain tf32
    is two to three orders of magnitude worse (10 mantissa bits)."""
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(32, 256, generator=gen), torch.randn(256, 24, generator=gen)
    exact = a.double() @ b.double()
    fp32 = ((a @ b).double() - exact).abs().max()
    x3 = (emulation.emulated_matmul(a, b, "tf32x3", rounding).double() - exact).abs().max()
    one = (emulation.emulated_matmul(a, b, "tf32", rounding).double() - exact).abs().max()
    assert x3 <= 4 * fp32, (x3, fp32)
    assert one >= 100 * fp32, (one, fp32)
