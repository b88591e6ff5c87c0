"""`fastsiren check`: what runs on this machine, and whether the Triton kernels are right here.

    fastsiren check [--json] [--interpret] [--seconds S]

Prints the device, the versions (fastsiren, Python, torch, Triton, CUDA, driver), which
backends can run, the self-check of each kernel family (``fastsiren.selfcheck.measure``: the
largest error against the torch backend in float64, per precision mode: fp32 in "ieee",
"tf32x3" and "tf32", and bf16 on CUDA; "ieee" under Triton's interpreter), and a short
timing of one order-2 jet against eager autograd. The first thing to run on a new machine, and
what to paste into a bug report. Exits 1 when a self-check fails.

Without CUDA the kernels run only in Triton's interpreter (slow, tiny sizes): ``--interpret``
sets ``TRITON_INTERPRET=1`` before the kernels are imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time

# Networks of the self-check rows: (layer [M, K] shapes), d = 3, a linear last layer.
WIDTH_CUDA, WIDTH_INTERPRETED = 64, 16
# The timed jet: d -> width x 3 -> 1 at order 2 (the Laplacian), points per device type.
TIMED_WIDTH = 256
TIMED_POINTS = {"cuda": 1 << 16, "cpu": 1 << 8}


def register(sub) -> None:
    parser = sub.add_parser("check", help="device, versions, backends, and a self-check of the "
                            "Triton kernels against the torch backend (paste into bug reports)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--interpret", action="store_true",
                        help="without CUDA: run the kernels in Triton's interpreter (slow; sets "
                        "TRITON_INTERPRET=1 before they are imported)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="time budget of the jet timing (default 10)")
    parser.set_defaults(func=_check)


def _driver_version() -> str | None:
    """The NVIDIA driver's version from nvidia-smi (torch does not report it), or None."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _versions(torch) -> dict:
    from .. import __version__

    try:
        import triton

        triton_version = triton.__version__
    except Exception as exc:  # noqa: BLE001 - a broken install is a report line too
        triton_version = None if isinstance(exc, ImportError) else f"broken ({exc})"
    return {"fastsiren": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda,
            "driver": _driver_version() if torch.cuda.is_available() else None}


def _device(torch) -> dict:
    if torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
        props = torch.cuda.get_device_properties(dev)
        return {"type": "cuda", "name": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count}
    return {"type": "cpu", "name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}


def _self_check_rows(torch, device) -> tuple[list[dict], str | None]:
    """Every family at each order and precision mode, or why none could run."""
    from .. import env, selfcheck
    from ..jet import JetLayout
    from ..jet_ops import unavailable

    reason = unavailable("triton", device)
    if reason is not None:
        return [], reason
    from ..kernels import input_precision
    from ..kernels import network as network_kernel

    width = WIDTH_CUDA if device.type == "cuda" else WIDTH_INTERPRETED
    shapes = [(width, 3), (width, width), (width, width), (1, width)]
    omegas = (30.0,) * len(shapes)
    if device.type == "cuda":
        # fp64 (the exactness tier) is left out: its compilations would double the command's
        # time, and the tests check it to rounding.
        modes = [("ieee", torch.float32), ("tf32x3", torch.float32), ("tf32", torch.float32),
                 ("ieee", torch.bfloat16)]
    else:
        modes = [("ieee", torch.float32)]
    cases = [("forward", JetLayout(0, 3)), ("forward", JetLayout(1, 3)),
             ("forward", JetLayout(2, 3)), ("forward", JetLayout(2, 3, hessian_diag=True)),
             ("VJP", JetLayout(2, 3)), ("VJP", JetLayout(2, 3, hessian_diag=True)),
             ("whole network", JetLayout(0, 3)), ("whole network", JetLayout(2, 3))]
    rows = []
    for mode, dtype in modes:
        with input_precision(mode):
            for family, layout in cases:
                row = {"family": family, "order": layout.order,
                       "hessian_diag": layout.hessian_diag}
                if family == "whole network":
                    probe = [torch.empty(1, *s, dtype=dtype, device="meta") for s in shapes]
                    x = torch.empty(1, selfcheck.CHECK_POINTS, 3, dtype=dtype, device="meta")
                    declined = network_kernel.unsupported(x, probe, omegas, layout, True)
                    if declined is not None and env.fused_network():
                        rows.append({**row, "precision": selfcheck.precision_class(dtype),
                                     "skipped": f"runs layer by layer here ({declined})"})
                        continue
                m = selfcheck.measure(family, device, dtype, layout, shapes, omegas, True)
                rows.append({**row, "precision": m.precision, "kernel": m.kernel,
                             "error": m.error, "limit": m.limit, "passed": m.passed,
                             "seconds": round(m.seconds, 3), "failure": m.failure})
    return rows, None


def _timing(torch, device, seconds: float) -> dict:
    """Median times of one order-2 jet forward (3 -> 256 x 3 -> 1): ``auto`` against eager
    autograd (the reference's nested autograd, the official scripts' way), alternated."""
    import fastsiren as fs

    n = TIMED_POINTS["cuda" if device.type == "cuda" else "cpu"]
    model = fs.Siren(3, TIMED_WIDTH, 3, 1, outermost_linear=True).to(device)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 3, generator=gen) * 2 - 1).to(device)

    def run(backend):
        model.to(backend=backend)
        start = time.perf_counter()
        jet = model.jet(x, order=2)
        jet.lap.sum().item()  # waits for the device
        return time.perf_counter() - start

    times = {"auto": [], "reference": []}
    for backend in times:  # warm-up: compilation and autotuning stay out of the numbers
        run(backend)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or not times["auto"]:
        for backend in times:
            times[backend].append(run(backend))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    from ..dispatch import resolve

    return {"jet": f"order 2, 3 -> {TIMED_WIDTH} x 3 -> 1, N = {n}", "device": str(device),
            "backend": resolve("auto", device), "repeats": len(times["auto"]),
            "fastsiren_ms": med["auto"] * 1e3, "autograd_ms": med["reference"] * 1e3,
            "speedup": med["reference"] / med["auto"]}


def collect(seconds: float = 10.0) -> dict:
    """Everything ``fastsiren check`` reports, as one dictionary."""
    import torch

    from .. import env
    from ..jet_ops import BACKENDS, unavailable

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {"device": _device(torch), "versions": _versions(torch),
              "interpreter": env.interpreting()}
    report["backends"] = {name: unavailable(name, device) or "available"
                          for name in BACKENDS if name != "auto"}
    rows, skipped = _self_check_rows(torch, device)
    report["self_check"] = {"rows": rows, "skipped": skipped,
                            "passed": all(r.get("passed", True) for r in rows)}
    report["timing"] = _timing(torch, device, seconds) if seconds > 0 else None
    return report


def format_text(report: dict) -> str:
    dev, ver = report["device"], report["versions"]
    lines = ["device:   " + ", ".join(f"{k} {v}" for k, v in dev.items()),
             "versions: " + ", ".join(f"{k} {v or 'none'}" for k, v in ver.items()),
             "backends: " + "; ".join(f"{k}: {v}" for k, v in report["backends"].items())]
    check = report["self_check"]
    if check["skipped"]:
        lines.append(f"self-check: skipped ({check['skipped']})")
    else:
        lines.append("self-check (largest error against the torch backend in float64):")
        for r in check["rows"]:
            what = f"  {r['precision']:12s} {r['family']:13s} order {r['order']}" + (
                " Hessian diagonal" if r["hessian_diag"] else "")
            if "skipped" in r:
                lines.append(f"{what}: {r['skipped']}")
            elif r["failure"]:
                lines.append(f"{what}: FAILED {r['kernel']}: {r['failure']}")
            else:
                verdict = "ok" if r["passed"] else "FAILED"
                lines.append(f"{what}: {verdict} {r['error']:.1e} (limit {r['limit']:.0e}, "
                             f"{r['kernel']}, {r['seconds']:.1f} s)")
    t = report["timing"]
    if t:
        lines.append(f"timing:   {t['jet']} on {t['device']}: fastsiren ({t['backend']}) "
                     f"{t['fastsiren_ms']:.2f} ms, eager autograd {t['autograd_ms']:.2f} ms: "
                     f"{t['speedup']:.1f}x ({t['repeats']} runs each, medians)")
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    from ..errors import InputError

    if args.seconds < 0:
        raise InputError(f"--seconds must be >= 0, got {args.seconds}")
    if args.interpret:
        # Triton fixes interpret-or-compile when the kernels are imported: set it first.
        os.environ["TRITON_INTERPRET"] = "1"
    report = collect(args.seconds)
    print(json.dumps(report, indent=1) if args.json else format_text(report))
    return 0 if report["self_check"]["passed"] else 1
