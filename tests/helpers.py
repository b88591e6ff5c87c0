"""Comparison helpers shared by the test tiers."""

from __future__ import annotations

import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max abs error over the expected's max abs: scale-free, and zero-safe for empty or zero
    references (an all-zero reference must then be matched to within 1e-300 absolutely)."""
    actual, expected = actual.detach(), expected.detach()
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if expected.numel() == 0:
        return 0.0
    scale = expected.abs().max().clamp_min(1e-300)
    return ((actual - expected).abs().max() / scale).item()


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, name: str):
    err = rel_err(actual, expected)
    assert err <= tol, f"{name}: relative error {err:.3e} exceeds {tol:.1e}"
