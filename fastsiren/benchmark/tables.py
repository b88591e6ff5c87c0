"""The tables of a run: the console tables and targets (fitted to the terminal's width), the
legend of their short words, and the per-device Markdown report."""

from __future__ import annotations

import shutil
import textwrap

from .cases import WORKLOADS
from .gemm import BOUNDS
from .machine import machine_line
from .providers import PROVIDERS, REFERENCE

# Narrower terminals still get this many columns (a table cannot fold below one case column).
MIN_WIDTH = 60
CELL_GAP = 2  # spaces between two columns of the console table


def terminal_width() -> int:
    """The terminal's columns ($COLUMNS first; 100 when the output is not a terminal)."""
    return max(MIN_WIDTH, shutil.get_terminal_size(fallback=(100, 24)).columns)


def wrap(text: str, width: int, indent: str = "  ") -> str:
    """``text`` folded to ``width`` columns, continuation lines indented."""
    return textwrap.fill(text, width, subsequent_indent=indent, break_on_hyphens=False)


def ratio_cell(r: dict | None) -> str:
    """A console cell: the speedup ("?" if flagged), the reference's own time, or a status."""
    if r is None:
        return "—"
    if r["status"] == "ok":
        if r["provider"] == REFERENCE and r.get("median_ms") is not None:
            return f"{r['median_ms']:.3g} ms"  # the time every ratio of its column divides
        if r.get("speedup") is None:
            return "ok"
        return f"{r['speedup']:.2f}x" + ("?" if r.get("flags") else "")
    return STATUS_WORDS.get(r["status"], r["status"])


# The short words of the tables, explained once under each of them (``legend``).
STATUS_WORDS = {"wrong": "WRONG", "unsupported": "unsup.", "skipped": "skip", "oom": "OOM",
                "error": "ERROR"}


def legend(markdown: bool = False, width: int | None = None) -> str:
    """What the tables' short words mean (the console's folded to ``width`` columns)."""
    items = [
        ("Nx", "speedup over eager autograd (its median time / this one's)"),
        *([] if markdown else [("N ms", "eager autograd's own median time (the autograd row)")]),
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
    key_width = max(len(k) for k, _ in items)
    indent = " " * (key_width + 4)
    return "legend:\n" + "\n".join(wrap(f"  {k:<{key_width}}  {v}", width or terminal_width(),
                                         indent) for k, v in items)


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


def case_label(d: int, width: int, batch: int, n: int) -> str:
    return f"d={d} W={width}" + (f" B={batch}" if batch > 1 else "") + f" N={n}"


def console_table(results: list[dict], width: int | None = None) -> str:
    """The tables `fastsiren bench` prints, one per workload: a row per provider, a column per
    case, each cell the speedup over eager autograd. Columns that do not fit in ``width`` (the
    terminal's by default) continue in a block below, under the same row names."""
    width = width or terminal_width()
    names = providers_in(results)
    name_width = max(len(n) for n in names)
    lines = []
    for (workload, precision), cases in results_by_table(results).items():
        lines += ["", wrap(f"{WORKLOADS[workload].title} [{precision}]: speedup over eager "
                           "autograd", width)]
        columns = [(case_label(*case), [ratio_cell(row.get(n)) for n in names])
                   for case, row in cases.items()]
        blocks: list[list[tuple[str, list[str]]]] = [[]]
        used = name_width
        for column in columns:
            column_width = CELL_GAP + max(len(column[0]), *map(len, column[1]))
            if blocks[-1] and used + column_width > width:
                blocks.append([])
                used = name_width
            blocks[-1].append(column)
            used += column_width
        for number, block in enumerate(blocks):
            if number:
                lines.append("")  # the next cases, under the same row names
            widths = [max(len(header), *map(len, cells)) for header, cells in block]
            gap = " " * CELL_GAP
            header = f"{'provider':<{name_width}}" + "".join(
                f"{gap}{h:>{w}}" for (h, _), w in zip(block, widths))
            lines += [header, "-" * len(header)]
            for i, name in enumerate(names):
                lines.append(f"{name:<{name_width}}" + "".join(
                    f"{gap}{cells[i]:>{w}}" for (_, cells), w in zip(block, widths)))
    return "\n".join(lines)


def console_targets(targets: list[dict], detail: bool, width: int | None = None) -> str:
    """The targets this device is held to: one summary line, or with ``detail`` each measured
    target folded to ``width`` and the ones this run could not judge counted in one line."""
    width = width or terminal_width()
    measured = [t for t in targets if t["status"] != "not measured"]
    counts: dict[str, int] = {}
    for t in measured:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    unjudged = len(targets) - len(measured)
    parts = [f"{n} {status}" for status, n in counts.items()]
    if unjudged:
        parts.append(f"{unjudged} not measured by this case list")
    summary = "targets: " + (", ".join(parts) if parts else "none for this device")
    if not detail:
        hint = "; --targets lists them" if targets else ""
        return wrap(summary + hint, width)
    lines = [wrap(summary, width)]
    status_width = max((len(t["status"]) for t in measured), default=0)
    indent = " " * (status_width + 4)
    for t in measured:
        lines.append(wrap(f"  {t['status']:>{status_width}}  {t['target']} ({t['detail']})",
                          width, indent))
    if unjudged:
        lines.append(wrap(f"  not measured ({unjudged}): their workloads or providers are not "
                          "in this run (the full preset of the device measures them)", width,
                          "    "))
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
        for case, row in cases.items():
            cells = " | ".join(markdown_cell(row.get(p)) for p in names)
            out.append(f"| {case_label(*case)} | {cells} |")
    compiled = [r for r in results if r.get("compile_s") is not None]
    if compiled:
        out += ["", "## Compile time (first call, apart from the steady state above)", "",
                "| workload | case | precision | provider | seconds |", "|---|---|---|---|---|"]
        for r in compiled:
            out.append(f"| {r['workload']} | d={r['d']} W={r['width']} N={r['n']} | "
                       f"{r['precision']} | {provider_label(r['provider'])} | "
                       f"{r['compile_s']:.1f} |")
    return "\n".join(out) + "\n"
