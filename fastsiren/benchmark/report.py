"""Machine line, targets and reports: console table, Markdown, plot, README section."""

from __future__ import annotations

import datetime
import itertools
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .cases import DEPTH, WORKLOADS
from .gemm import BOUNDS
from .providers import PROVIDERS, REFERENCE
from .run import spread_pct

# /2 added per row "algorithm" (the bound it is held to) and "flags" (why its numbers are not
# to be trusted), and the "gemm-adjoint" bound; /1 files read as rows without them.
SCHEMA = "fastsiren-bench/2"
READABLE_SCHEMAS = ("fastsiren-bench/1", SCHEMA)


def machine_info(device: torch.device) -> dict:
    """Device, torch, triton and commit: the line every result carries."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        detail = f"{props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        name = _cpu_name()
        detail = f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    return {
        "device_type": device.type,
        "device": name,
        "device_detail": detail,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(machine: dict) -> str:
    return (
        f"{machine['device']} ({machine['device_detail']}) · torch {machine['torch']} · "
        f"triton {machine['triton'] or 'n/a'} · commit {machine['commit']} · {machine['date']}"
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root,
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def device_slug(machine: dict) -> str:
    name = re.sub(r"\(r\)|\(tm\)|cpu @.*|processor", "", machine["device"].lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return f"{machine['device_type']}-{name}"[:60].rstrip("-")


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


def _ratio_cell(r: dict | None, spread: bool = False) -> str:
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


def _groups(results: list[dict]):
    """Results by (workload, precision), then by case, in first-seen order."""
    tables: dict[tuple[str, str], dict[tuple, dict[str, dict]]] = {}
    for r in results:
        case = (r["d"], r["width"], r["batch"], r["n"])
        tables.setdefault((r["workload"], r["precision"]), {}).setdefault(case, {})[
            r["provider"]] = r
    return tables


def _providers_in(results: list[dict]) -> list[str]:
    order = [*PROVIDERS, *BOUNDS]
    names = {r["provider"] for r in results}
    return [p for p in order if p in names] + sorted(names - set(order))


def _label(name: str) -> str:
    if name in BOUNDS:
        return f"bare GEMM bound ({BOUNDS[name]})"
    return PROVIDERS[name].label if name in PROVIDERS else name


def console_table(results: list[dict]) -> str:
    """The ratio table `fastsiren bench` prints: speedup over eager autograd per provider."""
    names = _providers_in(results)
    short = {n: n.replace("fastsiren-", "fs-") for n in names}
    lines = []
    for (workload, precision), cases in _groups(results).items():
        lines.append(f"\n{WORKLOADS[workload].title} [{precision}]  (speedup over eager autograd)")
        header = f"{'case':<24}" + "".join(f"{short[n]:>18}" for n in names)
        lines += [header, "-" * len(header)]
        for (d, width, batch, n), row in cases.items():
            label = f"d={d} W={width}" + (f" B={batch}" if batch > 1 else "") + f" N={n}"
            ms = row.get(REFERENCE, {}).get("median_ms")
            label += f" ({ms:.3g}ms)" if ms else ""
            lines.append(f"{label:<24}" + "".join(f"{_ratio_cell(row.get(n), True):>18}"
                                                  for n in names))
    return "\n".join(lines)


def _on_gpu(r: dict) -> bool:
    return r.get("_device_type") == "cuda"


def _md_cell(r: dict | None) -> str:
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
    names = _providers_in(results)
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
    for (workload, precision), cases in _groups(results).items():
        prec = " · TF32 on" if precision == "tf32" else (
            " · TF32 off" if machine["device_type"] == "cuda" else "")
        out += ["", f"## {WORKLOADS[workload].title}{prec}", ""]
        out.append("| case | " + " | ".join(_label(n) for n in names) + " |")
        out.append("|---" * (len(names) + 1) + "|")
        for (d, width, batch, n), row in cases.items():
            label = f"d={d} W={width}" + (f" B={batch}" if batch > 1 else "") + f" N={n}"
            out.append(f"| {label} | " + " | ".join(_md_cell(row.get(p)) for p in names) + " |")
    compiled = [r for r in results if r.get("compile_s") is not None]
    if compiled:
        out += ["", "## Compile time (first call, apart from the steady state above)", "",
                "| workload | case | precision | provider | seconds |", "|---|---|---|---|---|"]
        for r in compiled:
            out.append(f"| {r['workload']} | d={r['d']} W={r['width']} N={r['n']} | "
                       f"{r['precision']} | {_label(r['provider'])} | {r['compile_s']:.1f} |")
    return "\n".join(out) + "\n"


def write_plot(doc: dict, path: str | Path) -> bool:
    """Time vs N per provider, log-log, one panel per (workload, d, W, precision)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'fastsiren[bench]'); no plot written",
              file=sys.stderr)
        return False
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
    names = _providers_in(doc["results"])
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
                          label=_label(name), linestyle="--" if name in BOUNDS else "-")
        b = f" B={batch}" if batch > 1 else ""
        ax.set_title(f"{workload} d={d} W={width}{b} [{precision}]", fontsize=9)
        ax.set_xlabel("N (points per network)")
        ax.set_ylabel("median time (ms)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    legend: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle(f"fastsiren benchmark: {doc['machine']['device']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) > 4), 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"
HEADLINE_BEGIN, HEADLINE_END = "<!-- headline:begin -->", "<!-- headline:end -->"
README_WORKLOADS = ("jet2", "step_lap")


def readme_section(docs: Sequence[tuple[str, dict]]) -> str:
    """The README's performance table from result files: per device, the headline workloads
    at the largest N of each width, speedup over eager autograd per provider, and targets."""
    out = []
    for source, doc in docs:
        results, machine = doc["results"], doc["machine"]
        names = [n for n in _providers_in(results) if n not in BOUNDS]
        out += [f"**{machine['device']}** ({source}): {machine_line(machine)}  ",
                f"`{doc['command']}`" if doc.get("command") else "", "",
                "| workload | case | " + " | ".join(_label(n) for n in names) + " |",
                "|---" * (len(names) + 2) + "|"]
        for (workload, precision), cases in _groups(results).items():
            if workload not in README_WORKLOADS:
                continue
            largest: dict[tuple, tuple] = {}
            for case in cases:
                d, width, batch, n = case
                if (d, width, batch) not in largest or n > largest[(d, width, batch)][3]:
                    largest[(d, width, batch)] = case
            for case in largest.values():
                row = cases[case]
                d, width, batch, n = case
                title = WORKLOADS[workload].title + (" (TF32)" if precision == "tf32" else "")
                out.append(f"| {title} | d={d} W={width} N={n} | "
                           + " | ".join(_ratio_cell(row.get(p)) for p in names) + " |")
        out.append("")
        for t in doc.get("targets", []):
            out.append(f"- **{t['status']}**: {t['target']} ({t['detail']})")
        out.append("")
    out.append("Speedup over eager autograd (the official `diff_operators` way), median after "
               "warm-up, outputs verified against it first; **?** marks a row whose numbers the "
               "run contradicts or cannot resolve (its spread is wider than the difference, or "
               "it beat its own bare-GEMM bound), **unsup.** a workload the provider cannot do "
               "by construction, **skip** a provider that cannot run on that machine, "
               "**MISSED** a target that does not hold in every case. Generated by "
               "`python bench/make_readme_table.py` from `bench/results/*.json`; full tables "
               "and plots beside them.")
    return "\n".join(out).strip() + "\n"


def readme_headline(docs: Sequence[tuple[str, dict]]) -> str:
    """One sentence for the README's opening paragraph: the Laplacian training step at the
    largest measured N (widest network on ties), fastsiren's fastest backend against eager
    autograd, with its peak-memory ratio and the machine."""
    best = None
    for _, doc in docs:
        rows = [r for r in doc["results"] if r["workload"] == "step_lap" and r["batch"] == 1]
        for provider in ("fastsiren-triton", "fastsiren-torch"):
            ours = [r for r in rows if r["provider"] == provider and r["status"] == "ok"]
            if ours:
                row = max(ours, key=lambda r: (r["n"], r["width"]))
                ref = next(r for r in rows if r["provider"] == REFERENCE and
                           (r["d"], r["width"], r["n"], r["precision"]) ==
                           (row["d"], row["width"], row["n"], row["precision"]))
                candidate = (provider == "fastsiren-triton", row, ref, doc["machine"])
                best = candidate if best is None or candidate[0] > best[0] else best
                break
    if best is None:
        return "(no Laplacian training step in bench/results yet)"
    _, row, ref, machine = best
    memory = ""
    if row.get("peak_mib") and ref.get("peak_mib"):
        memory = f" in {row['peak_mib'] / ref['peak_mib']:.2f}x of its peak memory"
    backend = "Triton" if row["provider"] == "fastsiren-triton" else "torch"
    where = machine["device"] + (f" ({machine['device_detail']})"
                                 if machine.get("device_detail") else "")
    return (f"On {where}, a training step with a Laplacian loss "
            f"({row['d']}->{row['width']}x{DEPTH}->1 SIREN, {row['n']} points, fp32) runs "
            f"**{row['speedup']:.1f}x** faster than nested autograd{memory} "
            f"(fastsiren's {backend} backend; generated from bench/results).")


def replace_readme_section(
    readme: str, section: str, begin_marker: str = README_BEGIN, end_marker: str = README_END
) -> str:
    """README text with only what lies between two markers replaced: a section ending in a
    newline is a block on lines of its own, anything else an inline sentence."""
    begin, end = readme.find(begin_marker), readme.find(end_marker)
    if begin < 0 or end < begin:
        raise ValueError(f"README has no {begin_marker} ... {end_marker} block")
    body = "\n" + section if section.endswith("\n") else section
    return readme[: begin + len(begin_marker)] + body + readme[end:]

