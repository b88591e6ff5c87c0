"""The speed targets each device is held to, and whether a run met them."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    device_type: str
    provider: str
    workload: str
    metric: str  # "speedup", "gemm_fraction" or "vs:<provider>"
    threshold: float
    text: str


# The CPU workloads on which the torch backend is held level with the compiled peer.
_LEVEL_WORKLOADS = [("jet1", "order-1 jet forward"), ("jet2", "order-2 jet forward"),
                    ("step_value", "value training step"), ("step_grad", "eikonal step"),
                    ("step_lap", "Laplacian step")]

TARGETS = [
    Target("cpu", "fastsiren-torch", "jet2", "speedup", 3.0,
           "fastsiren torch ≥ 3x over eager autograd, order-2 jet forward"),
    Target("cpu", "fastsiren-torch", "step_lap", "speedup", 3.0,
           "fastsiren torch ≥ 3x over eager autograd, Laplacian training step"),
    *[Target("cpu", provider, workload, "vs:compile-naive", 1.0,
             f"{label} at least level with torch.compile (naive jets), {title}")
      for provider, label in [("fastsiren-torch", "fastsiren torch"),
                              ("fastsiren-torch-compiled", "fastsiren torch with compiled chunks")]
      for workload, title in _LEVEL_WORKLOADS],
    Target("cpu", "fastsiren-torch", "jet2", "gemm_fraction", 1 / 2,
           "fastsiren torch within 2x of its bare-GEMM bound, order-2 jet forward"),
    Target("cuda", "fastsiren-triton", "jet2", "speedup", 10.0,
           "fastsiren triton ≥ 10x over eager autograd, order-2 jet forward"),
    Target("cuda", "fastsiren-triton", "step_lap", "speedup", 6.0,
           "fastsiren triton ≥ 6x over eager autograd, Laplacian training step"),
    Target("cuda", "fastsiren-triton", "jet2", "vs:compile-naive", 2.0,
           "fastsiren triton ≥ 2x over torch.compile (naive jets), order-2 jet forward"),
    Target("cuda", "fastsiren-triton", "step_lap", "vs:compile-naive", 2.0,
           "fastsiren triton ≥ 2x over torch.compile (naive jets), Laplacian training step"),
    Target("cuda", "fastsiren-triton", "jet2", "gemm_fraction", 1 / 1.5,
           "fastsiren triton within 1.5x of the bare-GEMM bound, order-2 jet forward"),
]


def evaluate_targets(results: list[dict], device_type: str) -> list[dict]:
    """Each target over every case that measured it: met only where it holds in all of them."""
    out = []
    precisions = sorted({r["precision"] for r in results})
    for target, precision in itertools.product(TARGETS, precisions):
        if target.device_type != device_type:
            continue
        rows = [r for r in results if r["provider"] == target.provider
                and r["workload"] == target.workload and r["precision"] == precision]
        if target.metric.startswith("vs:"):  # only where the peer was run at all
            rows = [r for r in rows if _peer(r, target.metric[3:], results) is not None]
        values, failures = [], []
        for r in rows:
            value = _target_value(r, target, results)
            key = f"d={r['d']} W={r['width']} N={r['n']}"
            if value is None:
                failures.append(f"{key}: {r['status']}")
                continue
            values.append((value, key))
            if value < target.threshold:
                failures.append(f"{key}: {_fmt_target(value, target)}")
        text = target.text + (" (TF32)" if precision == "tf32" else "")
        if not rows:
            out.append({"target": text, "status": "not measured", "detail": ""})
            continue
        met = not failures
        lo = min(values) if values else None
        detail = (f"{len(rows) - len(failures)}/{len(rows)} cases"
                  + (f", worst {_fmt_target(lo[0], target)} at {lo[1]}" if lo else ""))
        if failures and not met:
            detail += "; missed at " + ", ".join(failures[:4]) + (" …" if len(failures) > 4 else "")
        out.append({"target": text, "status": "met" if met else "MISSED", "detail": detail,
                    "worst": lo[0] if lo else None})
    return out


def _target_value(r: dict, target: Target, results: list[dict]) -> float | None:
    if r["status"] != "ok":
        return None
    if target.metric.startswith("vs:"):
        peer = _peer(r, target.metric[3:], results)
        if peer is None or peer.get("median_ms") is None:
            return math.inf  # the peer cannot do this case (unsupported, out of memory)
        return peer["median_ms"] / r["median_ms"]
    return r.get(target.metric)


def _peer(r: dict, provider: str, results: list[dict]) -> dict | None:
    """The row of another provider on the same case and precision, if it was run."""
    return next((p for p in results if p["provider"] == provider and all(
        p[k] == r[k] for k in ("workload", "precision", "d", "width", "n", "batch"))), None)


def _fmt_target(value: float, target: Target) -> str:
    if target.metric == "gemm_fraction":
        return f"{1 / value:.2f}x the bound" if value else "n/a"
    return f"{value:.2f}x"
