"""Comparison helpers shared by the test tiers."""

from __future__ import annotations

import torch
from fastsiren.reference.siren import sine_init_bound


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


def make_params(gen, batch, d, width, out, hidden_layers, omega, dtype, device="cpu"):
    """SIREN-initialised (weights, biases, omegas) as the modules draw them, optionally batched
    (leading dim ``batch``); leaf tensors that require grad."""
    sizes = [d] + [width] * (hidden_layers + 1) + [out]
    lead = () if batch is None else (batch,)
    weights, biases = [], []
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = sine_init_bound(fan_in, omega, is_first=l == 0)
        w = (torch.rand(*lead, fan_out, fan_in, generator=gen, dtype=dtype) * 2 - 1) * bound
        b = (torch.rand(*lead, fan_out, generator=gen, dtype=dtype) * 2 - 1) / fan_in**0.5
        weights.append(w.to(device).requires_grad_())
        biases.append(b.to(device).requires_grad_())
    return weights, biases, [omega] * len(weights)


def cotangents(fields, seed: int) -> list[torch.Tensor]:
    """Random cotangents for ``fields`` (in order), drawn in float64 and cast to each field's
    dtype and device: runs at different precisions get the same numbers to their rounding.
    (``randn`` in float32 and float64 gives different streams from one seed, so cotangents drawn
    in the field's own dtype would make every gradient comparison across dtypes meaningless.)"""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype)
            for t in fields]


def excess_errors(ours: dict, theirs: dict, factor: float, floor: float) -> dict:
    """The entries where our error is not within ``factor`` x the other side's plus ``floor``
    (flash-attention's rule), as {name: (ours, theirs)}. NaN on either side counts as over:
    ``not (a <= b)`` where ``a > b`` would let NaN pass."""
    return {k: (ours[k], theirs[k]) for k in ours
            if not (ours[k] <= factor * theirs[k] + floor)}


def assert_labelled(path, *titles: str, colorbars: int = 0) -> dict:
    """The picture at ``path`` explains itself: it has a figure title, every panel a title (or
    an empty one below a titled column), each of ``titles`` appears in a panel's title (as a
    substring), and at least ``colorbars`` colour bars carry a label. Returns the labels, the
    figure title's wrapped lines joined by single spaces."""
    from fastsiren.tasks.common import picture_labels

    labels = picture_labels(path)
    labels["title"] = " ".join(labels["title"].split())  # wrapped lines read as one
    assert labels["title"], f"{path}: no figure title"
    panels = [a for a in labels["axes"] if not a["colorbar"]]
    assert panels and panels[0]["title"], f"{path}: untitled panels {panels}"
    shown = " | ".join(a["title"] for a in panels)
    for title in titles:
        assert title in shown, f"{path}: no panel titled {title!r} in {shown!r}"
    bars = [a for a in labels["axes"] if a["colorbar"] and a["ylabel"]]
    assert len(bars) >= colorbars, f"{path}: {len(bars)} labelled colour bars, {colorbars} expected"
    return labels
