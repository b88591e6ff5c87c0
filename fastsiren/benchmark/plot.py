"""The plot of a run: time against N per provider."""

from __future__ import annotations

import math
from pathlib import Path

from ..tasks.common import pyplot
from .gemm import BOUNDS
from .tables import provider_label, providers_in


def write_plot(doc: dict, path: str | Path) -> bool:
    """Time vs N per provider, log-log, one panel per (workload, d, W, precision)."""
    plt = pyplot()
    panels: dict[tuple, dict[str, list]] = {}
    for r in doc["results"]:
        if r["status"] != "ok":
            continue
        key = (r["workload"], r["d"], r["width"], r["batch"], r["precision"])
        panels.setdefault(key, {}).setdefault(r["provider"], []).append((r["n"], r["median_ms"]))
    # Panels with an N sweep first; single-N panels only when there is nothing else.
    swept = {k: v for k, v in panels.items() if max(len(s) for s in v.values()) > 1}
    panels = swept or panels
    if not panels:
        return False
    names = providers_in(doc["results"])
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, (key, series) in zip(axes.flat, panels.items()):
        workload, d, width, batch, precision = key
        for name in names:
            if name in series:
                pts = sorted(series[name])
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colors[name],
                          label=provider_label(name), linestyle="--" if name in BOUNDS else "-")
        b = f" B={batch}" if batch > 1 else ""
        ax.set_title(f"{workload} d={d} W={width}{b} [{precision}]", fontsize=9)
        ax.set_xlabel("N (points per network)")
        ax.set_ylabel("median time (ms)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    entries: dict[str, object] = {}  # one legend entry per provider across the panels
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    handles, labels = list(entries.values()), list(entries)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle(f"fastsiren benchmark: {doc['machine']['device']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) > 4), 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
