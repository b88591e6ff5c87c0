"""`fastsiren bench`: arguments, case selection, the run and its files.

Building the parser (``add_arguments``) imports only the case lists; the providers, the
profiler and matplotlib load when a run starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from ..checkpoint import atomic_write, check_output_file
from ..errors import InputError
from .cases import DEPTH, OMEGA, OUT_FEATURES, PRESETS, WORKLOADS, Case, cases_for_preset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the quick preset: a meaningful subset in under a minute on 2 cores")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="case list (default: quick with --quick, else cpu or gpu by device)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--providers", help="comma list of providers and bounds (default: all; "
                        "see fastsiren.benchmark.providers and .gemm)")
    parser.add_argument("--workloads", help=f"comma list of {','.join(WORKLOADS)}")
    parser.add_argument("--d", help="override in_features, comma list")
    parser.add_argument("--widths", help="override widths, comma list")
    parser.add_argument("--n", help="override point counts, comma list (e.g. 4096,16384)")
    parser.add_argument("--batch", type=int, help="networks in the batched workloads")
    parser.add_argument("--precisions", help="fp32,tf32 on CUDA (default both); fp32 on CPU")
    parser.add_argument("--min-time", type=float, help="seconds of timed calls (CPU)")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory measurement")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the Markdown report")
    parser.add_argument("--plot", metavar="FILE", help="write the log-log plot (PNG)")
    parser.add_argument("--out", metavar="DIR",
                        help="write DIR/<device>.json, .md and .png (e.g. bench/results)")
    parser.add_argument("--targets", action="store_true",
                        help="list each speed target the device is held to and whether this "
                        "run met it (default: one summary line)")
    parser.add_argument("-v", "--verbose", action="store_true", help="per-provider progress")


def _csv(text: str | None, cast=str) -> list | None:
    return None if text is None else [cast(t) for t in text.split(",") if t.strip()]


def resolve_cases(args) -> tuple[str, list[Case]]:
    preset = args.preset or ("quick" if args.quick else None)
    if preset is None:
        preset = "gpu" if _device(args).type == "cuda" else "cpu"
    cases = cases_for_preset(preset)
    workloads = _csv(args.workloads)
    if workloads:
        unknown = set(workloads) - set(WORKLOADS)
        if unknown:
            raise InputError(f"unknown workloads {sorted(unknown)}; choose from {list(WORKLOADS)}")
        cases = [c for c in cases if c.workload in workloads]
    overrides = {"d": _csv(args.d, int), "width": _csv(args.widths, int), "n": _csv(args.n, int)}
    if any(overrides.values()) or args.batch:
        seen: dict[Case, None] = {}
        for c in cases:
            for d, w, n in itertools.product(overrides["d"] or [c.d], overrides["width"]
                                             or [c.width], overrides["n"] or [c.n]):
                batch = (args.batch or c.batch) if c.spec.batched else 1
                if c.spec.accepts(d):
                    seen.setdefault(Case(c.workload, d, w, n, batch))
        cases = list(seen)
    return preset, cases


def _device(args) -> torch.device:
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    return torch.device(args.device)


def main(args: argparse.Namespace) -> int:
    device = _device(args)
    preset, cases = resolve_cases(args)
    config = PRESETS[preset]
    from .gemm import BOUNDS
    from .machine import device_slug, machine_info, machine_line
    from .measure import Settings, environ
    from .plot import write_plot
    from .providers import PROVIDERS, REFERENCE
    from .run import SCHEMA, Runner
    from .tables import markdown_report
    from .targets import evaluate_targets

    known = [*PROVIDERS, *BOUNDS]
    names = _csv(args.providers) or known
    unknown = set(names) - set(known)
    if unknown:
        raise InputError(f"unknown providers {sorted(unknown)}; choose from {known}")
    if REFERENCE in names:  # the reference first: every ratio divides its time
        names = [REFERENCE] + [n for n in names if n != REFERENCE]
    precisions = tuple(_csv(args.precisions) or (("fp32", "tf32") if device.type == "cuda"
                                                 else ("fp32",)))
    if device.type != "cuda" and precisions != ("fp32",):
        raise InputError("TF32 rows are a CUDA matter: use --precisions fp32 on CPU")
    settings = Settings(
        device=device, precisions=precisions,
        min_time=config["min_time"] if args.min_time is None else args.min_time,
        min_reps=config["min_reps"], warmup=config["warmup"], memory=not args.no_memory,
    )
    machine = machine_info(device)
    paths = {"json": args.json, "markdown": args.markdown, "plot": args.plot}
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out}: is a file; expected a folder")
        out.mkdir(parents=True, exist_ok=True)
        slug = device_slug(machine)
        paths = {"json": paths["json"] or out / f"{slug}.json",
                 "markdown": paths["markdown"] or out / f"{slug}.md",
                 "plot": paths["plot"] or out / f"{slug}.png"}
    for option, path in paths.items():  # before minutes of measurements, not after
        if path:
            _check_output_file(f"--{option}", Path(path))
    print(f"machine: {machine_line(machine)}", file=sys.stderr)
    print(f"preset {preset}: {len(cases)} cases x {len(names)} providers x "
          f"{len(precisions)} precisions", file=sys.stderr)

    def log(msg: str) -> None:
        if args.verbose or not msg.startswith(" "):
            print(msg, file=sys.stderr, flush=True)

    # Compile times as this run sees them, not served by an earlier run's on-disk kernels.
    with contextlib.ExitStack() as stack:
        if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
            import tempfile

            cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="fastsiren-bench-"))
            stack.enter_context(environ("TORCHINDUCTOR_CACHE_DIR", cache))
        start = time.perf_counter()
        def save_so_far(results) -> None:
            if paths["json"]:
                _write_text(paths["json"], json.dumps(jsonable({
                    "schema": SCHEMA, "machine": machine, "partial": True,
                    "results": [dataclasses.asdict(r) for r in results]}), indent=1) + "\n")

        try:
            results = Runner(settings, log=log).run(cases, names, on_results=save_so_far)
        finally:
            from .memory import shutdown

            shutdown()  # the CPU memory worker, if one was started
    rows = [dataclasses.asdict(r) for r in results]
    doc = {
        "schema": SCHEMA,
        "machine": machine,
        "command": "fastsiren bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"]
        else f"fastsiren bench --preset {preset}",
        "settings": {
            "preset": preset, "depth": DEPTH, "out_features": OUT_FEATURES, "omega_0": OMEGA,
            "dtype": "float32", "precisions": list(precisions), "min_time_s": settings.min_time,
            "min_reps": settings.min_reps, "rtol": settings.rtol,
            "timer": "triton.testing.do_bench" if device.type == "cuda"
            else "wall clock, a case's providers interleaved",
            "memory": ("CUDA allocator peak" if device.type == "cuda"
                       else "torch profiler memory timeline, in a child process")
            if settings.memory else None,
        },
        "elapsed_s": round(time.perf_counter() - start, 1),
        "results": rows,
        "targets": evaluate_targets(rows, device.type),
    }
    print(console_output(doc, args.targets))

    if paths["json"]:
        _write_text(paths["json"], json.dumps(jsonable(doc), indent=1) + "\n")
        print(f"wrote {paths['json']}")
    if paths["markdown"]:
        _write_text(paths["markdown"], markdown_report(doc))
        print(f"wrote {paths['markdown']}")
    if paths["plot"] and write_plot(doc, paths["plot"]):
        print(f"wrote {paths['plot']}")
    return 0


def console_output(doc: dict, targets: bool = False, width: int | None = None) -> str:
    """What `fastsiren bench` prints at the end, fitted to ``width`` columns (the terminal's by
    default): the machine, the tables, their legend, rows that failed, then the targets (each
    one with ``targets``, else one summary line)."""
    from .machine import machine_line
    from .tables import console_table, console_targets, legend, terminal_width, wrap

    width = width or terminal_width()
    rows = doc["results"]
    lines = [wrap(f"machine: {machine_line(doc['machine'])}", width),
             console_table(rows, width), "", legend(width=width)]
    for r in rows:
        if r["status"] in ("wrong", "error"):
            lines.append(wrap(f"{r['status'].upper()}: {r['provider']} on {r['workload']} "
                              f"d={r['d']} W={r['width']} N={r['n']}: {r['note']}", width))
    lines += ["", console_targets(doc["targets"], targets, width),
              f"({doc['elapsed_s']:.0f} s)"]
    return "\n".join(lines)


def _check_output_file(option: str, path: Path) -> None:
    """An InputError naming ``option`` when ``path`` cannot be written."""
    check_output_file(path, f"{option} {path}")


def _write_text(path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def jsonable(value):
    """Strict JSON: non-finite floats (an infinite error, a ratio with no peer) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value

