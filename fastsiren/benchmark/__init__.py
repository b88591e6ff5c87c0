"""The benchmark suite: every provider of SIREN jets side by side, in one process.

    fastsiren bench --quick                        # a meaningful subset, < 1 min on a 2-core CPU
    fastsiren bench --preset cpu --out bench/results   # the checked-in CPU set: JSON + MD + PNG
    fastsiren bench --preset gpu --out bench/results   # on CUDA: TF32 off and on, N up to 2^20
    pytest bench/ --benchmark-only                 # the same machinery through pytest-benchmark
    python bench/make_readme_table.py              # README table from bench/results/*.json

Providers (same inputs, same weight tensors, same process; see ``providers``):
    autograd          eager nested autograd, the official ``diff_operators`` way (the reference)
    torch.func        vmap over jacrev / jacfwd(jacrev) of the per-point reference forward
    compile-autograd  torch.compile of the reference's derivative computation
    naive             the jet recurrences in plain torch ops (``reference.naive_jet``), eager
    compile-naive     torch.compile of those naive jets: the strongest peer
    fastsiren-torch   ``fastsiren.siren_jet(backend="torch")``
    fastsiren-triton  ``fastsiren.siren_jet(backend="triton")``, CUDA only
    collapsed-taylor  collapsed Taylor mode (``jet-for-pytorch``, Python >= 3.12), where it imports
    gemm              the bare-GEMM lower bound of forward-mode jets: their plain matmuls alone
    gemm-adjoint      the same for the order-1 adjoint (reverse) sweep, which needs fewer matmuls

Workloads: value forward; jet forward at order 1, 2 and the Hessian diagonal; training steps
(jet at the workload's order + loss + backward to every weight and bias; no optimizer update, so
the step is identical for every provider) with a value, a gradient (eikonal) and a Laplacian
loss; and the batched-weights case (B SIRENs at once). Every provider's outputs are compared with
the reference's at the benchmark's own sizes before it is timed: a wrong provider is reported
as wrong and not timed.

Measures: median time with its interquartile range after warm-up (``triton.testing.do_bench``
on CUDA, a wall clock on CPU), points per second, speedup over eager autograd, peak memory (CUDA
allocator statistics; on CPU torch's own allocations through the profiler's memory events, in a
child process), compile time apart from the steady state, and the fraction of the bare-GEMM bound
of the provider's own algorithm.

Modules, in the order the data flows:
    cases      workloads, cases and presets (plain data)
    problem    the inputs, weights and targets of a case; the workloads' outputs and losses
    providers  the ways of computing a workload's jet
    gemm       the bare-GEMM bound per algorithm and the FLOP formulas
    measure    timing, verification; peak memory (CPU: in a child process, ``memory``)
    run        the runner: prepare (build, first call, verify), time, measure memory; the
               result rows and their file schema
    machine    the machine line every result carries
    targets    the speed targets per device and whether a run met them
    tables     the console table, the legend of its short words, the Markdown report
    plot       time against N per provider
    readme     the README's generated table and headline sentence
    cli        ``fastsiren bench``: arguments, the run, its files
    throughput images per second to a target PSNR when fitting many images: the loop,
               the torch.func vmap peer and the batched path, step by step
               (``python -m fastsiren.benchmark.throughput``)

Names are re-exported here lazily, so that ``fastsiren --help`` (which imports ``cli`` to build
its parser) loads none of the providers, the profiler or matplotlib.
"""

from __future__ import annotations

import importlib

# Public name -> submodule that defines it.
_EXPORTS = {
    "DEPTH": "cases", "OMEGA": "cases", "OUT_FEATURES": "cases", "PRESETS": "cases",
    "WORKLOADS": "cases", "Case": "cases", "Sweep": "cases", "Workload": "cases",
    "cases_for_preset": "cases",
    "Problem": "problem", "jet_dict": "problem", "workload_loss": "problem",
    "PROVIDERS": "providers", "REFERENCE": "providers", "Provider": "providers",
    "Unavailable": "providers", "Unsupported": "providers",
    "BOUND": "gemm", "ADJOINT_BOUND": "gemm", "BOUNDS": "gemm", "gemm_shapes": "gemm",
    "gemm_flops": "gemm", "gemm_bound_fn": "gemm",
    "RTOL": "measure", "Settings": "measure", "Timing": "measure",
    "compare": "measure", "rel_rms": "measure",
    "Prepared": "run", "Result": "run", "Runner": "run", "SCHEMA": "run",
    "READABLE_SCHEMAS": "run",
    "machine_info": "machine", "machine_line": "machine",
    "TARGETS": "targets", "evaluate_targets": "targets",
    "console_table": "tables", "legend": "tables", "markdown_report": "tables",
    "write_plot": "plot",
    "README_BEGIN": "readme", "README_END": "readme", "HEADLINE_BEGIN": "readme",
    "HEADLINE_END": "readme", "readme_headline": "readme", "readme_section": "readme",
    "replace_readme_section": "readme",
    "add_arguments": "cli", "main": "cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

