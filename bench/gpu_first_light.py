"""First light on a GPU: validate, benchmark and record the Triton kernels in one command.

    python bench/gpu_first_light.py --out DIR [--dry-run] [--budget SECONDS]

Made for a bare GPU machine with its own torch and triton (Python 3.12, torch 2.11, triton 3.6
at last look; no trimesh, pymcubes or pytest-benchmark), for about 15 minutes of device time in
all: one run of this script (under 9 minutes on an H100) and one rerun. It installs the package
without touching torch or triton (``pip install --no-deps -e .``), prints the device and the
versions, then runs the steps below, each in its own process with its own time limit (so one
hang cannot eat the rest) and never past the overall budget. Every step writes into DIR as it
goes, and DIR/summary.json is rewritten after each step: a run stopped at any point leaves what
it had. ``bench/record_gpu_results.py DIR`` turns the folder into the repository's records.

Steps and their estimates on an H100 (compilation dominates: Triton compiles each kernel
specialisation once, 0.5-2 s each on the host CPU, and autotuning compiles every kept config):

  1. check         ``fastsiren check --json``: the self-check of every family in each precision
                   mode (8 rows x 4 modes, ~30 specialisations per mode) and a 10 s jet
                   timing: ~90 s.
  2. tier-gpu      the GPU tier (``-m gpu``: real shapes, every precision, int64 offsets past
                   2^31 elements: about 0.5 TFLOP and 30 GB of traffic in all, a few seconds of
                   GPU time; the rest is compiling) with TRITON_PRINT_AUTOTUNING=1: ~100 s.
     every-config  every kept config of each kernel (``FASTSIREN_ALL_CONFIGS=1``): ~40
                   compilations per register class and order, tiny shapes: ~60 s.
     tier-b        the interpreter tier compiled on CUDA (``-m interpret``: float64 exactness,
                   tiny shapes, one compilation per specialisation): ~90 s.
  3. registers     the configs autotuning picked for the order-2 training step of
                   3 -> 256 x 3 -> 1 at N = 2^20 and the inference jet at width 128, with their
                   registers and spills (mostly compiled already): ~30 s.
  4. bench         ``fastsiren bench --preset gpu`` on the headline rows (orders 0-2 jets and
                   training steps, d = 3, widths 64 and 256, N = 2^20), TF32 off and on: a
                   Laplacian step there is ~4 TFLOP per call for eager autograd (~0.1 s), each
                   provider warmed and timed a few times, torch.compile compiling ~10 s per row:
                   ~120 s.

Estimates without the optional steps: 15 + 90 + 100 + 60 + 90 + 30 + 120 = 505 s.
  5. roofline      if time is left: ``triton.testing.do_bench`` of the sine layer's forward and
                   VJP against ``torch.mm`` of the same shapes (N = 2^20, 256 x 256, d = 3):
                   ~20 s;
     fit-image     a 512 x 512 image fit at the paper's settings (3 x 256, omega 30, Adam 1e-4,
                   500 steps: ~2 TFLOP per step on 2^18 points, ~30 s) with its wall time and
                   PSNR: ~60 s.

``--dry-run`` runs every step on the CPU at tiny sizes under Triton's interpreter (the GPU
tests skip), writing the same files: the test suite runs it so that the script cannot fail on
a typo when the GPU comes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUDGET = 540.0  # 9 minutes
DRY_RUN_BUDGET = 1800.0

HEADLINE_WORKLOADS = "value,jet1,jet2,step_value,step_grad,step_lap"
TIER_FILES = ["tests/test_triton_sine_jet.py", "tests/test_triton_network.py",
              "tests/test_triton_offsets.py", "tests/test_triton_sincos.py",
              "tests/test_nested_autograd.py", "tests/test_selfcheck.py"]


@dataclass
class Step:
    name: str
    estimate: float  # seconds on an H100 (see the module docstring)
    limit: float  # this step's own time limit
    command: list[str]
    env: dict = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # files the step writes, relative to DIR
    stdout_to: str | None = None  # a file (relative to DIR) for the command's stdout
    optional: bool = False  # "if time is left": skipped when its estimate does not fit


def _pytest(name, estimate, limit, out, marker, files, extra=(), env=None):
    return Step(name, estimate, limit,
                [sys.executable, "-m", "pytest", "-v", "-rA", "-p", "no:cacheprovider",
                 "-m", marker, "--junitxml", str(out / f"{name}.xml"), *extra, *files],
                env={"TRITON_PRINT_AUTOTUNING": "1", **(env or {})}, outputs=[f"{name}.xml"])


def plan(out: Path, dry_run: bool) -> list[Step]:
    """The steps, in order (the dry run's tiny versions with ``dry_run``)."""
    py = sys.executable
    me = str(Path(__file__).resolve())
    fastsiren = [py, "-m", "fastsiren"]
    steps = []
    if not dry_run:
        steps.append(Step("install", 15, 120,
                          [py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e",
                           str(ROOT)]))
    steps.append(Step("check", 90, 180,
                      fastsiren + ["check", "--json"]
                      + (["--interpret", "--seconds", "0.5"] if dry_run else ["--seconds", "10"]),
                      outputs=["check.json"], stdout_to="check.json"))
    if dry_run:  # the tiers' wiring: GPU tests skip on the CPU, one interpreter test runs
        steps.append(_pytest("tier-gpu", 120, 200, out, "gpu", TIER_FILES))
        steps.append(_pytest("every-config", 90, 150, out, "gpu", ["tests/test_triton_configs.py"],
                             env={"FASTSIREN_ALL_CONFIGS": "1"}))
        steps.append(_pytest("tier-b", 120, 200, out, "interpret",
                             ["tests/test_triton_sine_jet.py"],
                             extra=["-k", "test_first_layer_ops and B1-N37 and order0"]))
    else:
        steps.append(_pytest("tier-gpu", 100, 180, out, "gpu", TIER_FILES))
        steps.append(_pytest("every-config", 60, 120, out, "gpu", ["tests/test_triton_configs.py"],
                             env={"FASTSIREN_ALL_CONFIGS": "1"}))
        steps.append(_pytest("tier-b", 90, 150, out, "interpret", TIER_FILES))
    steps.append(Step("registers", 30, 90,
                      [py, me, "--registers", str(out / "registers.json")]
                      + (["--dry-run"] if dry_run else []), outputs=["registers.json"]))
    # The dry run leaves out the torch.compile providers (a minute of compiling on 2 cores).
    bench_rows = (["--preset", "smoke", "--device", "cpu", "--workloads", "jet2",
                   "--providers", "autograd,naive,fastsiren-torch"]
                  if dry_run else
                  ["--preset", "gpu", "--workloads", HEADLINE_WORKLOADS, "--d", "3",
                   "--widths", "64,256", "--n", str(1 << 20), "--precisions", "fp32,tf32"])
    steps.append(Step("bench", 120, 200, fastsiren + ["bench", *bench_rows, "--out",
                                                      str(out / "bench")],
                      outputs=["bench"]))
    steps.append(Step("roofline", 20, 60,
                      [py, me, "--roofline", str(out / "roofline.json")]
                      + (["--dry-run"] if dry_run else []),
                      outputs=["roofline.json"], optional=True))
    fit = (["--steps", "3", "--width", "16", "--depth", "1", "--max-size", "16", "--device",
            "cpu"] if dry_run else
           ["--steps", "500", "--width", "256", "--depth", "3", "--max-size", "512",
            "--lr", "1e-4", "--device", "cuda"])
    steps.append(Step("fit-image", 60, 120,
                      fastsiren + ["fit", "image", "--out", str(out / "fit-image"), "--quiet",
                                   "--overwrite", *fit],
                      outputs=["fit-image/metrics.json"], optional=True))
    return steps


@dataclass
class Outcome:
    name: str
    status: str  # ok, failed (exit status), timeout, skipped (no time left)
    seconds: float = 0.0
    returncode: int | None = None
    estimate: float = 0.0
    log: str = ""
    outputs: list[str] = field(default_factory=list)


def run_step(step: Step, out: Path, limit: float, dry_run: bool) -> Outcome:
    log = out / f"{step.name}.log"
    env = {**os.environ, **step.env}
    if dry_run:
        env["TRITON_INTERPRET"] = "1"
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    t0 = time.perf_counter()
    print(f"== {step.name} (estimate {step.estimate:.0f} s, limit {limit:.0f} s)", flush=True)
    with open(log, "w") as log_file:
        stdout = open(out / step.stdout_to, "w") if step.stdout_to else log_file
        try:
            proc = subprocess.run(step.command, cwd=ROOT, env=env, stdout=stdout,
                                  stderr=log_file, timeout=limit)
            status, rc = ("ok" if proc.returncode == 0 else "failed"), proc.returncode
        except subprocess.TimeoutExpired:
            status, rc = "timeout", None
        finally:
            if stdout is not log_file:
                stdout.close()
    seconds = time.perf_counter() - t0
    print(f"   {status} in {seconds:.0f} s" + (f" (exit {rc})" if rc not in (0, None) else ""),
          flush=True)
    return Outcome(step.name, status, round(seconds, 1), rc, step.estimate, log.name,
                   [o for o in step.outputs if (out / o).exists()])


def link_tree(site: Path) -> Path:
    """The installed layout without pip: site/fastsiren holds links to every entry of
    fastsiren/, plus kernels/ and reference/ as fastsiren.kernels and fastsiren.reference."""
    package = site / "fastsiren"
    package.mkdir(parents=True, exist_ok=True)
    for entry in (ROOT / "fastsiren").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name in ("kernels", "reference"):
        (package / name).symlink_to(ROOT / name)
    return site


def machine_line() -> dict:
    """Device and versions, printed first (torch only: nothing compiles here)."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "host": platform.node()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1))
    else:
        info["device"] = "cpu"
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["driver"] = smi.stdout.strip() or None
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True)
    info["commit"] = git.stdout.strip() or None
    return info


def first_light(out: Path, dry_run: bool, budget: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = {"dry_run": dry_run, "budget_s": budget, "steps": []}

    def save():
        summary["elapsed_s"] = round(time.perf_counter() - start, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))

    steps = plan(out, dry_run)
    if steps[0].name == "install":  # before anything imports fastsiren
        install = steps.pop(0)
        outcome = run_step(install, out, install.limit, dry_run)
        if outcome.status != "ok":
            # No usable build backend offline: the same package from a tree of links.
            site = link_tree(out / "site")
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
            outcome.status = f"{outcome.status}; using {site} on PYTHONPATH"
            print(f"   pip failed: importing fastsiren from {site} instead", flush=True)
        summary["steps"].append(asdict(outcome))
    summary["machine"] = machine_line()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in summary["machine"].items()), flush=True)
    save()
    for step in steps:
        left = budget - (time.perf_counter() - start)
        if left < (step.estimate if step.optional else 10):
            summary["steps"].append(asdict(Outcome(step.name, "skipped", estimate=step.estimate)))
            print(f"== {step.name}: skipped, {left:.0f} s of the budget left", flush=True)
        else:
            summary["steps"].append(asdict(run_step(step, out, min(step.limit, left), dry_run)))
        save()
    statuses = {s["name"]: s["status"] for s in summary["steps"]}
    print("summary: " + ", ".join(f"{k} {v}" for k, v in statuses.items()), flush=True)
    return 0 if all(v in ("ok", "skipped") for v in statuses.values()) else 1


# ----------------------------------------------------------------------------- steps run here


def _device_and_sizes(dry_run: bool):
    import torch

    if dry_run:
        return torch.device("cpu"), 64, 16
    return torch.device("cuda"), 1 << 20, 256


def registers(path: Path, dry_run: bool) -> int:
    """The config autotuning picked for each kernel of an order-2 training step of
    3 -> W x 3 -> 1 and of the inference jet at width <= 128, with the compiled kernel's
    registers and spills (where Triton reports them: compiled, not interpreted)."""
    import torch
    from fastsiren.kernels import _launch, input_precision
    from fastsiren.kernels.sine_jet import autotuners

    import fastsiren as fs

    device, n, width = _device_and_sizes(dry_run)
    picked = []
    tuners = autotuners()

    def recording(name, tuner, label):
        real = tuner.run

        def run(*args, **kwargs):
            compiled = real(*args, **kwargs)
            cfg = tuner.best_config
            picked.append({"workload": label, "kernel": name, "config": _launch.config_tag(cfg),
                           "registers": getattr(compiled, "n_regs", None),
                           "spills": getattr(compiled, "n_spills", None),
                           "shared": getattr(getattr(compiled, "metadata", None), "shared",
                                             None)})
            return compiled
        return run

    modes = [("fp32-tf32x3", torch.float32, "tf32x3"), ("fp32-tf32", torch.float32, "tf32"),
             ("bf16", torch.bfloat16, "ieee")]
    if dry_run:
        modes = modes[:1]
    for label, dtype, mode in modes:
        for workload, w, train in (("lap-d3 train", width, True),
                                   ("lap-d3 infer w128", min(width, 128), False)):
            for name, tuner in tuners.items():
                tuner.run = recording(name, tuner, f"{label} {workload}")
            try:
                model = fs.Siren(3, w, 3, 1, backend="triton").to(device=device, dtype=dtype)
                x = torch.rand(n, 3, device=device, dtype=dtype) * 2 - 1
                with input_precision(mode), torch.set_grad_enabled(train):
                    jet = model.jet(x, order=2)
                    if train:
                        (jet.lap.square().mean() + jet.value.square().mean()).backward()
            finally:
                for tuner in tuners.values():
                    del tuner.run
    unique = {(p["workload"], p["kernel"], p["config"]): p for p in picked}
    path.write_text(json.dumps({"n": n, "width": width, "picked": list(unique.values())},
                               indent=1))
    for p in unique.values():
        print(f"{p['workload']:28s} {p['kernel']:28s} {p['config']:18s} "
              f"regs={p['registers']} spills={p['spills']}")
    return 0


def roofline(path: Path, dry_run: bool) -> int:
    """The hidden sine layer's forward and VJP (order 2, d = 3: 5 slabs) against torch.mm of the
    same GEMM shapes, in TFLOP/s and GB/s of the traffic the kernels' notes estimate (15360 B
    per point for the training forward, 16384 for the VJP's elementwise pass, fp32 at W = 256:
    kernels/README.md)."""
    import torch
    from fastsiren.kernels import sine_jet as ops

    from fastsiren.jet import JetLayout

    device, n, width = _device_and_sizes(dry_run)
    layout = JetLayout(2, 3)
    R = layout.rows
    stack = torch.rand(1, R, n, width, device=device) * 2 - 1
    w = (torch.rand(1, width, width, device=device) * 2 - 1) * (6 / width) ** 0.5 / 30
    b = torch.rand(1, width, device=device)
    out, G = ops.sine_layer_fwd(stack, w, b, 30.0, layout)
    grad = torch.rand_like(out)
    a2, b2 = stack.view(R * n, width), w[0].t().contiguous()

    if dry_run:
        def bench(fn):
            fn()
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
    else:
        from triton.testing import do_bench

        def bench(fn):
            return do_bench(fn, warmup=25, rep=100, return_mode="median")

    flop = 2 * R * n * width * width  # one GEMM over every slab
    rows = {
        "sine_layer_fwd": (bench(lambda: ops.sine_layer_fwd(stack, w, b, 30.0, layout)), flop,
                           15360 * n * width / 256),
        "sine_layer_bwd": (bench(lambda: ops.sine_layer_bwd(grad, stack, w, 30.0, layout,
                                                            out[:, 0], G)), 2 * flop,
                           16384 * n * width / 256),
        "torch.mm (same shape)": (bench(lambda: torch.mm(a2, b2)), flop,
                                  4 * (R * n * width * 2 + width * width)),
    }
    result = {"n": n, "width": width, "layout": "order 2, d = 3", "rows": {
        k: {"ms": ms, "tflops": f / ms / 1e9, "gbps": by / ms / 1e6} for k, (ms, f, by)
        in rows.items()}}
    path.write_text(json.dumps(result, indent=1))
    for k, r in result["rows"].items():
        print(f"{k:24s} {r['ms']:8.3f} ms {r['tflops']:7.1f} TFLOP/s {r['gbps']:7.0f} GB/s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--dry-run", action="store_true",
                        help="every step on the CPU, tiny, under Triton's interpreter")
    parser.add_argument("--budget", type=float,
                        help=f"seconds for all steps together (default {DEFAULT_BUDGET:.0f}; "
                        f"the dry run: {DRY_RUN_BUDGET:.0f}, for a loaded CPU)")
    parser.add_argument("--registers", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--roofline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.registers:
        return registers(args.registers, args.dry_run)
    if args.roofline:
        return roofline(args.roofline, args.dry_run)
    if args.out is None:
        parser.error("--out DIR is required")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty: give a new folder")
    budget = args.budget or (DRY_RUN_BUDGET if args.dry_run else DEFAULT_BUDGET)
    return first_light(args.out, args.dry_run, budget)


if __name__ == "__main__":
    sys.exit(main())
