"""The tables of a run: the console ratio table, the legend of their short words, and the
per-device Markdown report."""

from __future__ import annotations

from .cases import WORKLOADS
from .gemm import BOUNDS
from .machine import machine_line
from .providers import PROVIDERS, REFERENCE
from .run import spread_pct


def ratio_cell(r: dict | None, spread: bool = False) -> str:
    """A ratio cell: speedup (with the row's spread, "?" if flagged) or a status word."""
    if r is None:
        return "—"
    if r["status"] == "ok":
        if r.get("speedup") is None:
            return "ok"
        text = f"{r['speedup']:.2f}x"
        pct = spread_pct(r) if spread else None
        if pct is not None:
            text += f" ±{pct:.0f}%"
        return text + ("?" if r.get("flags") else "")
    return STATUS_WORDS.get(r["status"], r["status"])


# The short words of the tables, explained once under each of them (``legend``).
STATUS_WORDS = {"wrong": "WRONG", "unsupported": "unsup.", "skipped": "skip", "oom": "OOM",
                "error": "ERROR"}


def legend(markdown: bool = False) -> str:
    """What the tables' short words mean."""
    items = [
        ("Nx", "speedup over eager autograd (its median time / this one's)"),
        ("±P%", "spread: half the interquartile range of this row's times, % of its median"),
        ("?", "not to be trusted: faster than its own bare-GEMM bound, a bound slower than "
              "autograd, or a spread wider than the difference from autograd"),
        ("gemm", "the bare-GEMM lower bound of forward-mode jets: their plain matmuls alone, "
                 "timed on preallocated buffers"),
        ("gemm-adjoint", "the same for the order-1 adjoint (reverse) sweep, which needs fewer "
                         "matmuls; each row is held to the bound of its own algorithm"),
        ("unsup.", "the provider cannot do this workload by construction (the note says why)"),
        ("skip", "the provider cannot run on this machine (no CUDA, a package that does not "
                 "import)"),
        ("WRONG", "outputs disagree with eager autograd beyond the tolerance: not timed"),
        ("MISSED", "a target that does not hold in every case measured"),
    ]
    if markdown:
        return "\n".join(f"- **{k}**: {v}" for k, v in items)
    width = max(len(k) for k, _ in items)
    return "legend:\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in items)


def results_by_table(results: list[dict]) -> dict[tuple[str, str], dict[tuple, dict[str, dict]]]:
    """Results by (workload, precision), then by case, in first-seen order."""
    tables: dict[tuple[str, str], dict[tuple, dict[str, dict]]] = {}
    for r in results:
        case = (r["d"], r["width"], r["batch"], r["n"])
        tables.setdefault((r["workload"], r["precision"]), {}).setdefault(case, {})[
            r["provider"]] = r
    return tables


def providers_in(results: list[dict]) -> list[str]:
    """The providers that have rows, in the order of ``PROVIDERS`` and then the bounds."""
    order = [*PROVIDERS, *BOUNDS]
    names = {r["provider"] for r in results}
    return [p for p in order if p in names] + sorted(names - set(order))


def provider_label(name: str) -> str:
    """A provider's name as the tables' column headers show it."""
    if name in BOUNDS:
        return f"bare GEMM bound ({BOUNDS[name]})"
    return PROVIDERS[name].label if name in PROVIDERS else name


def console_table(results: list[dict]) -> str:
    """The ratio table `fastsiren bench` prints: speedup over eager autograd per provider."""
    names = providers_in(results)
    short = {n: n.replace("fastsiren-", "fs-") for n in names}
    lines = []
    for (workload, precision), cases in results_by_table(results).items():
        lines.append(f"\n{WORKLOADS[workload].title} [{precision}]  (speedup over eager autograd)")
        header = f"{'case':<24}" + "".join(f"{short[n]:>18}" for n in names)
        lines += [header, "-" * len(header)]
        for (d, width, batch, n), row in cases.items():
            label = f"d={d} W={width}" + (f" B={batch}" if batch > 1 else "") + f" N={n}"
            ms = row.get(REFERENCE, {}).get("median_ms")
            label += f" ({ms:.3g}ms)" if ms else ""
            lines.append(f"{label:<24}" + "".join(f"{ratio_cell(row.get(n), True):>18}"
                                                  for n in names))
    return "\n".join(lines)


def _on_gpu(r: dict) -> bool:
    return r.get("_device_type") == "cuda"


def markdown_cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if r["status"] != "ok":
        word = {"wrong": "**WRONG**", "unsupported": "unsupported", "skipped": "skipped",
                "oom": "out of memory", "error": "**error**"}.get(r["status"], r["status"])
        note = r.get("note", "").replace("|", "\\|")
        return f"{word}<br><sub>{note}</sub>" if note else word
    spread = (r["p75_ms"] - r["p25_ms"]) / 2
    parts = [f"**{r['speedup']:.2f}x**" if r.get("speedup") is not None else "",
             f"{r['median_ms']:.3g} ± {spread:.2g} ms"]
    if r.get("peak_mib") is not None:
        parts.append(f"{r['peak_mib']:.3g} MiB")
    parts.append(f"{r['points_per_s']:.3g} pts/s")
    if r.get("gemm_tflops") is not None and r.get("median_ms", 0) > 0 and _on_gpu(r):
        parts.append(f"GEMM {r['gemm_tflops']:.3g} TFLOP/s")
    if r.get("gemm_fraction") is not None and r["provider"] not in BOUNDS:
        bound = "adjoint bound" if r.get("algorithm") == "adjoint" else "bound"
        parts.append(f"{100 * r['gemm_fraction']:.0f}% of {bound}")
    if r.get("flags"):
        parts.append("⚠ " + "; ".join(r["flags"]))
    return "<br>".join(p for p in parts if p)


def markdown_report(doc: dict) -> str:
    """The per-device Markdown: machine line, targets, one table per workload, compile times."""
    machine = doc["machine"]
    results = [dict(r, _device_type=machine["device_type"]) for r in doc["results"]]
    names = providers_in(results)
    out = [
        f"# fastsiren benchmark: {machine['device']}",
        "",
        f"Machine: {machine_line(machine)}  ",
        f"Command: `{doc['command']}`",
        "",
        "Each cell: **speedup over eager autograd**, median time ± half the interquartile range "
        "after warm-up, peak memory above the inputs during one call, points per second "
        "(B N / median time), and the bare-GEMM bound of the row's own algorithm (forward-mode "
        "jet or order-1 adjoint sweep) as a fraction of this time (on GPU also the bound's GEMM "
        "FLOPs over this time); ⚠ marks a row whose numbers the run contradicts or cannot "
        "resolve. Every row was checked against eager autograd at these "
        f"sizes before it was timed (relative RMS error ≤ {doc['settings']['rtol']['fp32']:.0e} "
        "at fp32). Training step = jet + loss + backward to every weight and bias. "
        f"Timer: {doc['settings'].get('timer', 'wall clock')}.",
        "",
        legend(markdown=True),
        "",
        "## Targets",
        "",
    ]
    for t in doc["targets"] or [{"target": "no targets for this device", "status": "",
                                 "detail": ""}]:
        out.append(f"- **{t['status']}**: {t['target']} ({t['detail']})")
    for (workload, precision), cases in results_by_table(results).items():
        prec = " · TF32 on" if precision == "tf32" else (
            " · TF32 off" if machine["device_type"] == "cuda" else "")
        out += ["", f"## {WORKLOADS[workload].title}{prec}", ""]
        out.append("| case | " + " | ".join(provider_label(n) for n in names) + " |")
        out.append("|---" * (len(names) + 1) + "|")
        for (d, width, batch, n), row in cases.items():
            label = f"d={d} W={width}" + (f" B={batch}" if batch > 1 else "") + f" N={n}"
            cells = " | ".join(markdown_cell(row.get(p)) for p in names)
            out.append(f"| {label} | {cells} |")
    compiled = [r for r in results if r.get("compile_s") is not None]
    if compiled:
        out += ["", "## Compile time (first call, apart from the steady state above)", "",
                "| workload | case | precision | provider | seconds |", "|---|---|---|---|---|"]
        for r in compiled:
            out.append(f"| {r['workload']} | d={r['d']} W={r['width']} N={r['n']} | "
                       f"{r['precision']} | {provider_label(r['provider'])} | "
                       f"{r['compile_s']:.1f} |")
    return "\n".join(out) + "\n"
