"""The benchmark suite: every provider of SIREN jets side by side, in one process.

    fastsiren bench --quick                        # a meaningful subset, < 1 min on a 2-core CPU
    fastsiren bench --preset cpu --out bench/results   # the checked-in CPU set: JSON + MD + PNG
    fastsiren bench --preset gpu --out bench/results   # on CUDA: TF32 off and on, N up to 2^20
    pytest bench/ --benchmark-only                 # the same machinery through pytest-benchmark
    python bench/make_readme_table.py              # README table from bench/results/*.json

Providers (same inputs, same weight tensors, same process):
    autograd          eager nested autograd, the official ``diff_operators`` way (the reference)
    torch.func        vmap over jacrev / jacfwd(jacrev) of the per-point reference forward
    compile-autograd  torch.compile of the reference's derivative computation
    naive             the jet recurrences in plain torch ops (``reference.naive_jet``), eager
    compile-naive     torch.compile of those naive jets: the strongest peer
    fastsiren-torch   ``fastsiren.siren_jet(backend="torch")``
    fastsiren-triton  ``fastsiren.siren_jet(backend="triton")``, CUDA only
    gemm              the bare-GEMM lower bound: the plain matmuls of the same shapes

Workloads: value forward; jet forward at order 1, 2 and the Hessian diagonal; training steps
(jet at the workload's order + loss + backward to every weight and bias; no optimizer update, so
the step is identical for every provider) with a value, a gradient (eikonal) and a Laplacian
loss; and the batched-weights case (B SIRENs at once). Every provider's outputs are compared with
the reference's at the benchmark's own sizes before it is timed: a wrong provider is reported
as wrong and not timed.

Measures: median time with its interquartile range after warm-up (``triton.testing.do_bench``
on CUDA, a wall clock on CPU), points per second, speedup over eager autograd, peak memory (CUDA
allocator statistics; on CPU torch's own allocations through the profiler's memory events),
compile time apart from the steady state, and the fraction of the bare-GEMM bound.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import inspect
import itertools
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import reference
from .functional import siren_jet

__all__ = [
    "PRESETS",
    "PROVIDERS",
    "WORKLOADS",
    "Case",
    "Provider",
    "Runner",
    "Settings",
    "add_arguments",
    "cases_for_preset",
    "main",
    "markdown_report",
    "readme_section",
    "write_plot",
]

SCHEMA = "fastsiren-bench/1"
DEPTH = 3  # hidden layers, as the SIREN paper's image and SDF fits
OUT_FEATURES = 1
OMEGA = 30.0
DEFAULT_BATCH = 8  # networks in the batched-weights workloads

# Verification tolerance: relative RMS error against eager autograd at fp32 (TF32 off). Both
# sides round in fp32; measured disagreement is ~2e-6 at width 256, so 1e-4 leaves margin and
# still flags a 1 % error. TF32 rounds inputs to 10 mantissa bits and the Laplacian carries
# omega^2 of it, so TF32 rows get a looser bound.
RTOL = {"fp32": 1e-4, "tf32": 3e-2}


# ---------------------------------------------------------------------------------------------
# Workloads and cases


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    order: int
    hessian_diag: bool = False
    loss: str | None = None  # None: forward only; "value", "grad" or "lap": a training step
    batched: bool = False

    @property
    def train(self) -> bool:
        return self.loss is not None

    def rows(self, d: int) -> int:
        """Slabs of the jet (value, d gradients, Laplacian or d second derivatives): the
        number of row blocks every hidden-layer matmul multiplies."""
        if self.order == 0:
            return 1
        if self.order == 1:
            return 1 + d
        return 1 + d + (d if self.hessian_diag else 1)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("value", "value forward", 0),
        Workload("jet1", "jet forward, order 1 (value, gradient)", 1),
        Workload("jet2", "jet forward, order 2 (value, gradient, Laplacian)", 2),
        Workload("hessdiag", "jet forward, Hessian diagonal", 2, hessian_diag=True),
        Workload("step_value", "training step, value loss", 0, loss="value"),
        Workload("step_grad", "training step, gradient (eikonal) loss", 1, loss="grad"),
        Workload("step_lap", "training step, Laplacian loss", 2, loss="lap"),
        Workload("batched_jet2", "batched weights: jet forward, order 2", 2, batched=True),
        Workload(
            "batched_step_lap", "batched weights: training step, Laplacian loss", 2,
            loss="lap", batched=True,
        ),
    ]
}


@dataclass(frozen=True)
class Case:
    """One measured configuration: workload and shapes (N points per network, B networks)."""

    workload: str
    d: int
    width: int
    n: int
    batch: int = 1

    @property
    def spec(self) -> Workload:
        return WORKLOADS[self.workload]

    @property
    def points(self) -> int:
        return self.batch * self.n

    def label(self) -> str:
        b = f" B={self.batch}" if self.spec.batched else ""
        return f"d={self.d} W={self.width}{b} N={self.n}"


@dataclass(frozen=True)
class Sweep:
    workloads: tuple[str, ...]
    ds: tuple[int, ...]
    widths: tuple[int, ...]
    ns: tuple[int, ...]
    batch: int = DEFAULT_BATCH

    def cases(self) -> list[Case]:
        return [
            Case(w, d, width, n, self.batch if WORKLOADS[w].batched else 1)
            for w, d, width, n in itertools.product(self.workloads, self.ds, self.widths, self.ns)
        ]


ALL = tuple(WORKLOADS)
UNBATCHED = tuple(w for w in WORKLOADS if not WORKLOADS[w].batched)
BATCHED = tuple(w for w in WORKLOADS if WORKLOADS[w].batched)

# Presets: the case lists, how long to time each measurement, which precisions.
PRESETS: dict[str, dict] = {
    # For tests and the pytest smoke run: tiny shapes, every workload.
    "smoke": dict(
        sweeps=[Sweep(ALL, (2,), (16,), (64,), batch=2)], min_time=0.0, min_reps=2, warmup=1
    ),
    # `fastsiren bench --quick`: the headline workloads at one size, < 1 min on 2 CPU cores.
    "quick": dict(
        sweeps=[Sweep(("value", "jet2", "step_lap"), (2,), (128,), (4096,))],
        min_time=0.1, min_reps=3, warmup=1,
    ),
    # The checked-in CPU set (7-10 min on 2 cores, compile times included): an N sweep of the
    # headline workloads at widths 64 and 256, every workload at d = 2 and 3, the batched case.
    # A W = 256, N = 4096 Laplacian step case costs ~25 s here (7 providers, 4-5 calls each).
    "cpu": dict(
        sweeps=[
            Sweep(("jet2", "step_lap"), (2,), (64,), (4096, 8192, 16384)),
            Sweep(("jet2", "step_lap"), (2,), (256,), (2048, 4096, 8192)),
            Sweep(UNBATCHED, (2, 3), (256,), (2048,)),
            Sweep(BATCHED, (2,), (64, 256), (512,), batch=8),
        ],
        min_time=0.4, min_reps=3, warmup=0,
    ),
    # A GPU: N up to 2^20 (capped by memory: out-of-memory cases are reported as such).
    "gpu": dict(
        sweeps=[
            Sweep(("jet2", "step_lap"), (2,), (64, 128, 256), tuple(4**k for k in range(6, 11))),
            Sweep(UNBATCHED, (1, 2, 3), (64, 256), (2**16, 2**20)),
            Sweep(BATCHED, (2,), (64, 256), (2**14,), batch=32),
        ],
        min_time=0.0, min_reps=0, warmup=1,
    ),
    # The whole grid of the issue: in_features 1-3, widths 64-256, N 2^12..2^20 (hours on CPU).
    "full": dict(
        sweeps=[
            Sweep(UNBATCHED, (1, 2, 3), (64, 128, 256), tuple(2**k for k in range(12, 21, 2))),
            Sweep(BATCHED, (1, 2, 3), (64, 128, 256), (2**12, 2**14, 2**16), batch=16),
        ],
        min_time=0.3, min_reps=3, warmup=1,
    ),
}


def cases_for_preset(name: str) -> list[Case]:
    """The preset's cases, without duplicates, in sweep order."""
    seen: dict[Case, None] = {}
    for sweep in PRESETS[name]["sweeps"]:
        for case in sweep.cases():
            seen.setdefault(case)
    return list(seen)


# ---------------------------------------------------------------------------------------------
# The problem: one set of inputs, weights and targets per case, shared by every provider


class Problem:
    """Coordinates, weights (the same tensors for every provider) and loss targets of a case.

    Unbatched cases build a ``reference.Siren`` and use its parameters directly, so the module
    path (eager autograd, torch.compile of the reference) and the functional paths see the very
    same tensors. Batched cases stack B reference SIRENs' weights into [B, out, in].
    """

    def __init__(self, case: Case, device: torch.device, dtype=torch.float32, seed: int = 0):
        self.case, self.spec = case, case.spec
        d, width = case.d, case.width
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets = [
                reference.Siren(d, width, DEPTH, OUT_FEATURES, outermost_linear=True,
                                first_omega_0=OMEGA, hidden_omega_0=OMEGA)
                for _ in range(case.batch if self.spec.batched else 1)
            ]
            gen = torch.Generator().manual_seed(seed + 1)
            lead = (case.batch, case.n) if self.spec.batched else (case.n,)
            x = torch.rand(*lead, d, generator=gen) * 2 - 1
            target = torch.randn(*lead, OUT_FEATURES, generator=gen)
        self.omegas = tuple(nets[0].parameters_by_layer()[2])
        train = self.spec.train
        if self.spec.batched:
            self.model = None
            per_net = [net.parameters_by_layer() for net in nets]
            n_layers = len(self.omegas)
            self.weights = [
                torch.stack([p[0][l].detach() for p in per_net]).to(device, dtype)
                .requires_grad_(train) for l in range(n_layers)
            ]
            self.biases = [
                torch.stack([p[1][l].detach() for p in per_net]).to(device, dtype)
                .requires_grad_(train) for l in range(n_layers)
            ]
        else:
            self.model = nets[0].to(device, dtype)
            self.model.requires_grad_(train)
            self.weights, self.biases, _ = self.model.parameters_by_layer()
        self.x = x.to(device, dtype)
        # Laplacians of a width-W SIREN are O(omega^2); scale the target so the loss is not
        # dominated by it (the timing does not care, the gradient check's conditioning does).
        self.target = target.to(device, dtype) * (OMEGA**2 if self.spec.loss == "lap" else 1.0)

    @property
    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]


def jet_dict(jet, spec: Workload) -> dict[str, torch.Tensor]:
    """The outputs a workload compares: value, grad [.., N, out, d], lap, hess_diag."""
    out = {"value": jet.value}
    if spec.order >= 1:
        out["grad"] = jet.grad
    if spec.order == 2:
        out["lap"] = jet.lap
        if spec.hessian_diag:
            out["hess_diag"] = jet.hess_diag
    return out


def workload_loss(spec: Workload, outs: dict[str, torch.Tensor], target: torch.Tensor):
    """The training losses: value regression, eikonal |grad| = 1, Laplacian regression."""
    if spec.loss == "value":
        return ((outs["value"] - target) ** 2).mean()
    if spec.loss == "grad":
        return ((outs["grad"].norm(dim=-1) - 1) ** 2).mean()
    if spec.loss == "lap":
        return ((outs["lap"] - target) ** 2).mean()
    raise ValueError(f"workload has no loss: {spec.loss!r}")


# ---------------------------------------------------------------------------------------------
# Providers

JetFn = Callable[[torch.Tensor, list], dict]


class Unsupported(Exception):
    """A provider cannot run this workload (by construction, not by a bug)."""


@dataclass
class Provider:
    """A way of computing a workload's jet.

    ``make(problem)`` returns ``jet(x, params) -> dict`` (see ``jet_dict``) or raises
    ``Unsupported``. ``compiled`` providers are wrapped in ``torch.compile`` (jet and loss
    together for training steps); their first call is timed apart as the compile time.
    """

    name: str
    label: str
    make: Callable[[Problem], JetFn]
    compiled: bool = False
    needs_cuda: bool = False
    kernel_precision: bool = False  # takes the TF32 / ieee setting as an argument
    # The official code makes the coordinates a grad-requiring leaf once, in its data loader,
    # and differentiates the model's output with respect to them.
    coords_require_grad: bool = False


def _autograd_jet_fn(prob: Problem) -> JetFn:
    spec, omegas = prob.spec, prob.omegas
    n_layers = len(omegas)

    def jet(x, params):
        if prob.model is not None:
            fn = prob.model  # the module, as the official code differentiates it
        else:
            def fn(c):
                return reference.siren_forward(c, params[:n_layers], params[n_layers:], omegas)
        if spec.order == 0:
            return {"value": fn(x)}
        return jet_dict(reference.autograd_jet(fn, x, spec.order, spec.hessian_diag), spec)

    return jet


def _torch_func_fn(prob: Problem) -> JetFn:
    from torch.func import jacfwd, jacrev, vmap

    spec, omegas = prob.spec, prob.omegas
    n_layers = len(omegas)

    def point(xp, weights, biases):  # one coordinate [d] -> ([out], [out])
        y = reference.siren_forward(xp, weights, biases, omegas)
        return y, y

    def point_jac(xp, weights, biases):
        jac, y = jacrev(point, has_aux=True)(xp, weights, biases)
        return jac, (jac, y)

    def point_jet(xp, weights, biases):
        if spec.order == 0:
            return (point(xp, weights, biases)[0],)
        if spec.order == 1:
            jac, y = jacrev(point, has_aux=True)(xp, weights, biases)
            return y, jac
        hess, (jac, y) = jacfwd(point_jac, has_aux=True)(xp, weights, biases)
        return y, jac, hess.diagonal(dim1=-2, dim2=-1)  # [out, d]

    over_points = vmap(point_jet, in_dims=(0, None, None))
    batched = vmap(over_points, in_dims=(0, 0, 0)) if spec.batched else over_points

    def jet(x, params):
        outs = batched(x, params[:n_layers], params[n_layers:])
        result = {"value": outs[0]}
        if spec.order >= 1:
            result["grad"] = outs[1]
        if spec.order == 2:
            result["lap"] = outs[2].sum(-1)
            if spec.hessian_diag:
                result["hess_diag"] = outs[2]
        return result

    return jet


def _naive_fn(prob: Problem) -> JetFn:
    spec, omegas = prob.spec, prob.omegas
    n_layers = len(omegas)
    if spec.hessian_diag:
        raise Unsupported("naive_jet has no Hessian-diagonal mode")

    def one(x, weights, biases):
        j = reference.naive_jet(x, weights, biases, omegas, True, spec.order)
        return tuple(t for t in (j.value, j.grad, j.lap) if t is not None)

    fn = torch.func.vmap(one, in_dims=(0, 0, 0)) if spec.batched else one

    def jet(x, params):
        outs = fn(x, params[:n_layers], params[n_layers:])
        return dict(zip(("value", "grad", "lap"), outs))

    return jet


def _fastsiren_fn(backend: str) -> Callable[[Problem], JetFn]:
    def make(prob: Problem) -> JetFn:
        spec, omegas = prob.spec, prob.omegas
        n_layers = len(omegas)
        kwargs = _precision_kwargs(prob) if backend == "triton" else {}

        def jet(x, params):
            j = siren_jet(
                x, params[:n_layers], params[n_layers:], omegas, spec.order,
                outermost_linear=True, backend=backend, hessian_diag=spec.hessian_diag, **kwargs,
            )
            return jet_dict(j, spec)

        return jet

    return make


def _precision_kwargs(prob: Problem) -> dict:
    """The kernels' matmul precision ("ieee" with TF32 off, "tf32" with it on), when
    ``siren_jet`` takes it; otherwise the backend's default (noted in the results)."""
    precision = getattr(prob, "precision", "fp32")
    params = inspect.signature(siren_jet).parameters
    for name in ("precision", "input_precision"):
        if name in params:
            return {name: "tf32" if precision == "tf32" else "ieee"}
    return {}


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in [
        Provider("autograd", "eager autograd (reference)", _autograd_jet_fn,
                 coords_require_grad=True),
        Provider("torch.func", "torch.func (vmap jacrev/jacfwd)", _torch_func_fn),
        Provider("compile-autograd", "torch.compile(reference)", _autograd_jet_fn, compiled=True,
                 coords_require_grad=True),
        Provider("naive", "naive jets (eager)", _naive_fn),
        Provider("compile-naive", "torch.compile(naive jets)", _naive_fn, compiled=True),
        Provider("fastsiren-torch", "fastsiren torch", _fastsiren_fn("torch")),
        Provider(
            "fastsiren-triton", "fastsiren triton", _fastsiren_fn("triton"),
            needs_cuda=True, kernel_precision=True,
        ),
    ]
}
REFERENCE = "autograd"
BOUND = "gemm"  # not a provider: the bare-GEMM lower bound, measured beside them


# ---------------------------------------------------------------------------------------------
# The bare-GEMM bound and the throughput formulas


def gemm_shapes(case: Case) -> list[tuple[int, int, int, int]]:
    """(batch, m, k, n) of the plain matmuls a jet of this case cannot avoid.

    Forward: the first layer's value matmul [N, d] x [d, W] (its jets need no matmul: the input
    jet is the identity), then per later layer one matmul of all R slabs [R*N, K] x [K, M],
    R = 1 + d + 1 at order 2: the (d + 2) matmuls of the design, stacked. A training step adds
    per later layer the input gradient [R*N, M] x [M, K] and the weight gradient
    [K, R*N] x [R*N, M], and the first layer's weight gradient [W, N] x [N, d].
    """
    spec, d, w, n = case.spec, case.d, case.width, case.n
    b = case.batch if spec.batched else 1
    rn = spec.rows(d) * n
    dims = [w] * (DEPTH + 1) + [OUT_FEATURES]  # layer l maps dims[l] -> dims[l + 1], l >= 1
    shapes = [(b, n, d, w)]
    for k, m in zip(dims[:-1], dims[1:]):
        shapes.append((b, rn, k, m))
        if spec.train:
            shapes.append((b, rn, m, k))
            shapes.append((b, k, rn, m))
    if spec.train:
        shapes.append((b, w, n, d))
    return shapes


def gemm_flops(case: Case) -> int:
    """2 m k n per matmul (a multiply and an add per term), summed: the FLOPs of the bound."""
    return sum(2 * b * m * k * n for b, m, k, n in gemm_shapes(case))


def _gemm_bound_fn(case: Case, device, dtype) -> Callable[[], None]:
    """The bound's matmuls on preallocated operands and outputs (no allocation in the loop)."""
    gen = torch.Generator().manual_seed(0)
    ops = []
    for b, m, k, n in gemm_shapes(case):
        a = torch.randn(b, m, k, generator=gen).to(device, dtype)
        bb = torch.randn(b, k, n, generator=gen).to(device, dtype)
        if b == 1:
            a, bb = a[0], bb[0]
        ops.append((a, bb, torch.empty(*a.shape[:-1], n, device=device, dtype=dtype)))

    def run():
        for a, bb, c in ops:
            torch.matmul(a, bb, out=c)

    return run


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Settings:
    device: torch.device
    precisions: tuple[str, ...] = ("fp32",)
    min_time: float = 0.3  # seconds of timed calls per measurement (CPU wall clock)
    min_reps: int = 3
    max_reps: int = 100
    # Warm-up calls after the first (verified, possibly compiling) call and the one whose
    # memory is measured, which warm up as well.
    warmup: int = 1
    memory: bool = True
    rtol: dict = field(default_factory=lambda: dict(RTOL))
    seed: int = 0


@dataclass
class Timing:
    median_ms: float
    p25_ms: float
    p75_ms: float
    reps: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], settings: Settings) -> Timing:
    """Median and quartiles of fn's run time, after warm-up."""
    device = settings.device
    for _ in range(settings.warmup):
        fn()
    if device.type == "cuda":
        try:
            from triton.testing import do_bench
        except ImportError:
            do_bench = None
        if do_bench is not None:
            med, p25, p75 = do_bench(fn, warmup=25, rep=200, quantiles=[0.5, 0.25, 0.75])
            return Timing(med, p25, p75, -1)  # do_bench picks its own repetition count
        times = []
        for _ in range(max(settings.min_reps, 20)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        times = []
        budget_end = time.perf_counter() + settings.min_time
        while len(times) < settings.max_reps and (
            len(times) < settings.min_reps or time.perf_counter() < budget_end
        ):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return Timing(statistics.median(times), q[0], q[2], len(times))


# Set once the CPU memory timeline has been used in this process. Long runs that used it aborted
# at interpreter shutdown, after every result was written ("none_dealloc: deallocating None" while
# collecting the profiler's leftovers; torch 2.13, Python 3.11), so the command line ends such a
# run without the final collection (see ``fastsiren.cli.bench.end_process``).
CPU_MEMORY_PROFILED = False


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> tuple[int, object]:
    """Peak bytes torch allocated during one call of fn, above what was allocated before, and
    fn's result.

    CUDA: the caching allocator's statistics. CPU: the profiler's memory timeline, which records
    every tensor allocation and free with its time (inductor-generated kernels included: their
    buffers come from the same allocator); the running sum's maximum is the peak. Per-op memory
    counts would not do: an op that allocates and frees inside itself (a whole autograd.Function,
    a compiled graph) shows only its net allocation.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, result
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with _quiet_stderr(), profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
        with_stack=True,
    ) as prof:
        result = fn()
    running = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            running += size
        elif action == Action.DESTROY:
            running -= size
        peak = max(peak, running)
    global CPU_MEMORY_PROFILED
    CPU_MEMORY_PROFILED = True
    return peak, result


@contextlib.contextmanager
def _cold_compile(active: bool):
    """Compile time as a first run sees it: without inductor's and AOTAutograd's on-disk
    caches, which would otherwise serve a graph compiled by an earlier case or run."""
    settings = []
    if active:
        from torch._functorch import config as functorch_config
        from torch._inductor import config as inductor_config

        for module, name in ((inductor_config, "fx_graph_cache"),
                             (functorch_config, "enable_autograd_cache")):
            if hasattr(module, name):
                settings.append((module, name, getattr(module, name)))
                setattr(module, name, False)
    try:
        yield
    finally:
        for module, name, value in settings:
            setattr(module, name, value)


@contextlib.contextmanager
def _quiet_compile_logs(active: bool):
    """torch.compile logs a failing trace at ERROR level before raising; the exception itself
    becomes the row's note, so the log is only noise here."""
    import logging

    loggers = [logging.getLogger(n) for n in ("torch._dynamo", "torch._subclasses.fake_tensor",
                                              "torch._inductor")] if active else []
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler backend's start/stop lines, which it writes to fd 2 directly."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def matmul_precision(precision: str, device: torch.device):
    """TF32 off ("fp32": full-precision matmuls for everyone) or on ("tf32"), restored after."""
    if device.type != "cuda":
        yield
        return
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||: scale-free, so one tolerance serves value,
    gradient and the omega^2-sized Laplacian alike."""
    a, e = actual.detach().double(), expected.detach().double()
    if a.shape != e.shape:
        return math.inf
    scale = e.norm()
    if scale == 0:
        return float((a - e).norm())
    return float((a - e).norm() / scale)


def compare(outputs: dict, truth: dict) -> dict[str, float]:
    """Relative RMS error per output (and per parameter gradient, 'dW0' ... 'db4')."""
    errors = {}
    for name, expected in truth.items():
        if name == "grads":
            n_layers = len(expected) // 2
            for i, (a, e) in enumerate(zip(outputs["grads"], expected)):
                key = f"dW{i}" if i < n_layers else f"db{i - n_layers}"
                errors[key] = rel_rms(a, e)
        else:
            errors[name] = rel_rms(outputs[name], expected)
    return errors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class Result:
    workload: str
    provider: str
    precision: str
    d: int
    width: int
    n: int
    batch: int
    status: str  # ok | wrong | unsupported | skipped | error | oom
    note: str = ""
    median_ms: float | None = None
    p25_ms: float | None = None
    p75_ms: float | None = None
    reps: int | None = None
    points_per_s: float | None = None
    gemm_tflops: float | None = None
    speedup: float | None = None  # eager autograd time / this time
    gemm_fraction: float | None = None  # bare-GEMM bound time / this time
    peak_mib: float | None = None
    compile_s: float | None = None
    max_rel_err: float | None = None
    errors: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """A provider ready to time: ``fn`` runs the workload once (outputs verified)."""

    status: str
    fn: Callable[[], object] | None = None
    note: str = ""
    compile_s: float | None = None
    errors: dict = field(default_factory=dict)
    peak_bytes: int | None = None  # measured on the first call (eager providers)


class Runner:
    """Runs cases: prepares each provider (builds, first call, verification), then times it."""

    def __init__(self, settings: Settings, providers: dict[str, Provider] | None = None,
                 log: Callable[[str], None] | None = None):
        self.settings = settings
        self.providers = dict(PROVIDERS if providers is None else providers)
        self.log = log or (lambda msg: None)
        self._truth: dict[Case, dict] = {}
        self._problems: dict[tuple[Case, str], Problem] = {}
        # A compile failure of the reference is structural; retrying it per size costs seconds
        # of tracing each, so later cases of the same workload reuse the verdict.
        self._compile_verdicts: dict[tuple[str, str], str] = {}

    # -- building blocks --------------------------------------------------------------------

    def problem(self, case: Case, precision: str = "fp32") -> Problem:
        key = (case, precision)
        if key not in self._problems:
            self._problems.clear()  # one case's tensors at a time
            prob = Problem(case, self.settings.device, seed=self.settings.seed)
            prob.precision = precision
            self._problems[key] = prob
        return self._problems[key]

    def make_fn(self, provider: Provider, prob: Problem) -> Callable[[], dict]:
        """The zero-argument callable that runs the workload and returns what is verified."""
        jet = provider.make(prob)
        spec = prob.spec
        x, params, target = prob.x, prob.params, prob.target
        if provider.coords_require_grad:
            x = x.detach().requires_grad_(True)
        if spec.train:
            def loss_fn(x, params):
                return workload_loss(spec, jet(x, params), target)

            run_loss = _compile(loss_fn) if provider.compiled else loss_fn

            def step():
                loss = run_loss(x, params)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                # A parameter the loss does not depend on (the final bias under a Laplacian
                # loss) has a zero gradient; autograd says None.
                grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
                return {"loss": loss.detach(), "grads": grads}

            return step
        run_jet = _compile(jet) if provider.compiled else jet
        return lambda: run_jet(x, params)

    def truth(self, case: Case) -> dict:
        """Eager autograd's outputs at fp32 (TF32 off), detached: what every row is checked
        against."""
        if case not in self._truth:
            prob = self.problem(case, "fp32")
            with matmul_precision("fp32", self.settings.device):
                outs = self.make_fn(self.providers.get(REFERENCE, PROVIDERS[REFERENCE]), prob)()
            if len(self._truth) >= 8:  # a few cases' outputs, for interleaved callers (pytest)
                self._truth.pop(next(iter(self._truth)))
            self._truth[case] = _detach(outs)
        return self._truth[case]

    def prepare(self, case: Case, name: str, precision: str = "fp32",
                measure_memory: bool = False) -> Prepared:
        """Build the provider's callable for the case, run it once and verify it."""
        provider = self.providers[name]
        device = self.settings.device
        if provider.needs_cuda and device.type != "cuda":
            return Prepared("skipped", note="needs CUDA")
        if provider.needs_cuda and name == "fastsiren-triton":
            from . import backend as _backend

            ops = _backend._triton_ops()
            if isinstance(ops, Exception):
                return Prepared("skipped", note=f"Triton unavailable: {_first_line(ops)}")
        verdict = self._compile_verdicts.get((name, case.workload))
        if verdict is not None:
            return Prepared("unsupported", note=verdict)
        truth = self.truth(case)
        prob = self.problem(case, precision)
        note = ""
        if provider.kernel_precision and not _precision_kwargs(prob):
            note = "kernel precision not selectable: backend default"
        try:
            if provider.compiled:
                torch._dynamo.reset()  # a fresh compile per case: static shapes, no cache limit
            fn = self.make_fn(provider, prob)
            _sync(device)
            start = time.perf_counter()
            peak = None
            if provider.compiled or not (self.settings.memory and measure_memory):
                with _quiet_compile_logs(provider.compiled), _cold_compile(provider.compiled):
                    outs = fn()
            else:  # an eager first call is a steady one: measure its memory, save a call
                peak, outs = peak_memory_bytes(fn, device)
            _sync(device)
            first_s = time.perf_counter() - start
        except Unsupported as exc:
            return Prepared("unsupported", note=str(exc))
        except torch.cuda.OutOfMemoryError as exc:
            _free(device)
            return Prepared("oom", note=_first_line(exc))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row, never a crash
            self.log(textwrap.indent(traceback.format_exc(limit=3), "    "))
            if provider.compiled:
                eager_failure = self._eager_failure(provider, prob)
                if eager_failure is not None:  # not compile's fault: the code itself fails
                    return Prepared("error", note=eager_failure)
                verdict = f"torch.compile failed: {_first_line(exc)}"
                if name == "compile-autograd":
                    self._compile_verdicts[(name, case.workload)] = verdict
                return Prepared("unsupported", note=verdict)
            return Prepared("error", note=_first_line(exc))
        errors = compare(outs, truth)
        del outs
        worst = max(errors.values(), default=0.0)
        if not worst <= self.settings.rtol[precision]:
            bad = max(errors, key=errors.get)
            return Prepared(
                "wrong", note=f"{bad} off by {worst:.2e} relative RMS "
                f"(tolerance {self.settings.rtol[precision]:.0e})", errors=errors,
            )
        return Prepared(
            "ok", fn=fn, note=note, compile_s=first_s if provider.compiled else None,
            errors=errors, peak_bytes=peak,
        )

    def _eager_failure(self, provider: Provider, prob: Problem) -> str | None:
        eager = dataclasses.replace(provider, compiled=False)
        try:
            self.make_fn(eager, prob)()
        except Exception as exc:  # noqa: BLE001
            return f"fails without torch.compile too: {_first_line(exc)}"
        return None

    # -- the sweep --------------------------------------------------------------------------

    def run_case(self, case: Case, names: Sequence[str], precision: str) -> list[Result]:
        """Every provider and the bound on one case at one matmul precision."""
        settings, device = self.settings, self.settings.device
        results = []
        with matmul_precision(precision, device):
            for name in names:
                base = dict(workload=case.workload, provider=name, precision=precision,
                            d=case.d, width=case.width, n=case.n, batch=case.batch)
                if name == BOUND:
                    prepared = Prepared("ok", fn=_gemm_bound_fn(case, device, torch.float32),
                                        note="lower bound: the plain matmuls alone")
                else:
                    prepared = self.prepare(case, name, precision, measure_memory=True)
                result = Result(**base, status=prepared.status, note=prepared.note,
                                compile_s=prepared.compile_s, errors=prepared.errors)
                if prepared.errors:
                    result.max_rel_err = max(prepared.errors.values())
                if prepared.status == "ok":
                    try:
                        if prepared.peak_bytes is not None:
                            result.peak_mib = prepared.peak_bytes / 2**20
                        elif settings.memory:
                            peak, _ = peak_memory_bytes(prepared.fn, device)
                            result.peak_mib = peak / 2**20
                        else:
                            prepared.fn()  # stands in for the measured call as warm-up
                        timing = time_fn(prepared.fn, settings)
                    except torch.cuda.OutOfMemoryError as exc:
                        _free(device)
                        result.status, result.note = "oom", _first_line(exc)
                    else:
                        seconds = timing.median_ms / 1e3
                        result.median_ms, result.p25_ms, result.p75_ms = (
                            timing.median_ms, timing.p25_ms, timing.p75_ms)
                        result.reps = timing.reps
                        # Throughput: points (all B networks' N points) per second, and the
                        # bound's GEMM FLOPs over this time: effective GEMM TFLOP/s.
                        result.points_per_s = case.points / seconds
                        result.gemm_tflops = gemm_flops(case) / seconds / 1e12
                prepared = None
                results.append(result)
                self.log(f"  {precision} {name:<17} {_cell_console(result)}")
        _fill_ratios(results)
        return results

    def run(self, cases: Iterable[Case], names: Sequence[str]) -> list[Result]:
        results: list[Result] = []
        cases = list(cases)
        start = time.perf_counter()
        for i, case in enumerate(cases):
            self.log(f"[{i + 1}/{len(cases)} {time.perf_counter() - start:.0f}s] "
                     f"{case.workload} {case.label()}")
            for precision in self.settings.precisions:
                results.extend(self.run_case(case, names, precision))
        self._problems.clear()
        self._truth.clear()
        return results


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _compile(fn):
    # Static shapes: every case is compiled for its own shapes (the cache is reset per case).
    return torch.compile(fn, dynamic=False)


def _detach(outs: dict) -> dict:
    return {
        k: [g.detach() for g in v] if isinstance(v, list) else v.detach() for k, v in outs.items()
    }


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _fill_ratios(results: list[Result]) -> None:
    """Speedup over eager autograd and fraction of the bare-GEMM bound, within one case."""
    by_name = {r.provider: r for r in results}
    ref, bound = by_name.get(REFERENCE), by_name.get(BOUND)
    for r in results:
        if r.median_ms is None:
            continue
        if ref is not None and ref.median_ms is not None:
            r.speedup = ref.median_ms / r.median_ms
        if bound is not None and bound.median_ms is not None:
            r.gemm_fraction = bound.median_ms / r.median_ms


# ---------------------------------------------------------------------------------------------
# Machine line, targets, reports


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


TARGETS = [
    Target("cpu", "fastsiren-torch", "jet2", "speedup", 3.0,
           "fastsiren torch ≥ 3x over eager autograd, order-2 jet forward"),
    Target("cpu", "fastsiren-torch", "step_lap", "speedup", 3.0,
           "fastsiren torch ≥ 3x over eager autograd, Laplacian training step"),
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
        peer = next((p for p in results if p["provider"] == target.metric[3:]
                     and all(p[k] == r[k] for k in ("workload", "precision", "d", "width", "n",
                                                    "batch"))), None)
        if peer is None or peer.get("median_ms") is None:
            return math.inf  # the peer does not run this case at all
        return peer["median_ms"] / r["median_ms"]
    return r.get(target.metric)


def _fmt_target(value: float, target: Target) -> str:
    if target.metric == "gemm_fraction":
        return f"{1 / value:.2f}x the bound" if value else "n/a"
    return f"{value:.2f}x"


def _cell_console(r: Result | dict) -> str:
    r = dataclasses.asdict(r) if isinstance(r, Result) else r
    if r["status"] == "ok":
        text = f"{r['median_ms']:.3g} ms"
        if r.get("speedup") is not None:
            text += f" ({r['speedup']:.2f}x)"
        return text
    return f"{r['status']}: {r['note']}" if r.get("note") else r["status"]


def _ratio_cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if r["status"] == "ok":
        return f"{r['speedup']:.2f}x" if r.get("speedup") is not None else "ok"
    return {"wrong": "WRONG", "unsupported": "unsup.", "skipped": "skip", "oom": "OOM"}.get(
        r["status"], r["status"])


def _groups(results: list[dict]):
    """Results by (workload, precision), then by case, in first-seen order."""
    tables: dict[tuple[str, str], dict[tuple, dict[str, dict]]] = {}
    for r in results:
        case = (r["d"], r["width"], r["batch"], r["n"])
        tables.setdefault((r["workload"], r["precision"]), {}).setdefault(case, {})[
            r["provider"]] = r
    return tables


def _providers_in(results: list[dict]) -> list[str]:
    order = [*PROVIDERS, BOUND]
    names = {r["provider"] for r in results}
    return [p for p in order if p in names] + sorted(names - set(order))


def _label(name: str) -> str:
    if name == BOUND:
        return "bare GEMM bound"
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
            lines.append(f"{label:<24}" + "".join(f"{_ratio_cell(row.get(n)):>18}"
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
    if r.get("gemm_fraction") is not None and r["provider"] != BOUND:
        parts.append(f"{100 * r['gemm_fraction']:.0f}% of bound")
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
        "(B N / median time), and the bare-GEMM bound "
        "time as a fraction of this time (on GPU also the bound's GEMM FLOPs over this time). "
        "Every row was checked against eager autograd at these "
        f"sizes before it was timed (relative RMS error ≤ {doc['settings']['rtol']['fp32']:.0e} "
        "at fp32). Training step = jet + loss + backward to every weight and bias.",
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
                          label=_label(name), linestyle="--" if name == BOUND else "-")
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
        names = [n for n in _providers_in(results) if n != BOUND]
        out += [f"**{machine['device']}** ({source}): {machine_line(machine)}", "",
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
               "warm-up, outputs verified against it first. Generated by "
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


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the quick preset: a meaningful subset in under a minute on 2 cores")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="case list (default: quick with --quick, else cpu or gpu by device)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--providers", help=f"comma list of {','.join([*PROVIDERS, BOUND])}")
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
            raise SystemExit(f"unknown workloads {sorted(unknown)}; choose from {list(WORKLOADS)}")
        cases = [c for c in cases if c.workload in workloads]
    overrides = {"d": _csv(args.d, int), "width": _csv(args.widths, int), "n": _csv(args.n, int)}
    if any(overrides.values()) or args.batch:
        seen: dict[Case, None] = {}
        for c in cases:
            for d, w, n in itertools.product(overrides["d"] or [c.d], overrides["width"]
                                             or [c.width], overrides["n"] or [c.n]):
                batch = (args.batch or c.batch) if c.spec.batched else 1
                seen.setdefault(Case(c.workload, d, w, n, batch))
        cases = list(seen)
    return preset, cases


def _device(args) -> torch.device:
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(args.device)


def main(args: argparse.Namespace) -> int:
    device = _device(args)
    preset, cases = resolve_cases(args)
    config = PRESETS[preset]
    names = _csv(args.providers) or [*PROVIDERS, BOUND]
    unknown = set(names) - set(PROVIDERS) - {BOUND}
    if unknown:
        raise SystemExit(f"unknown providers {sorted(unknown)}; choose from "
                         f"{[*PROVIDERS, BOUND]}")
    if REFERENCE in names:  # the reference first: every ratio divides its time
        names = [REFERENCE] + [n for n in names if n != REFERENCE]
    precisions = tuple(_csv(args.precisions) or (("fp32", "tf32") if device.type == "cuda"
                                                 else ("fp32",)))
    if device.type != "cuda" and precisions != ("fp32",):
        raise SystemExit("TF32 rows are a CUDA matter: use --precisions fp32 on CPU")
    settings = Settings(
        device=device, precisions=precisions,
        min_time=config["min_time"] if args.min_time is None else args.min_time,
        min_reps=config["min_reps"], warmup=config["warmup"], memory=not args.no_memory,
    )
    machine = machine_info(device)
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
            stack.enter_context(_env("TORCHINDUCTOR_CACHE_DIR", cache))
        start = time.perf_counter()
        results = Runner(settings, log=log).run(cases, names)
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
            "timer": "triton.testing.do_bench" if device.type == "cuda" else "wall clock",
            "memory": ("CUDA allocator peak" if device.type == "cuda"
                       else "torch profiler memory events") if settings.memory else None,
        },
        "elapsed_s": round(time.perf_counter() - start, 1),
        "results": rows,
        "targets": evaluate_targets(rows, device.type),
    }
    print(f"machine: {machine_line(machine)}")
    print(console_table(rows))
    print()
    for t in doc["targets"]:
        print(f"{t['status']:>12}  {t['target']} ({t['detail']})")
    wrong = [r for r in rows if r["status"] in ("wrong", "error")]
    for r in wrong:
        print(f"{r['status'].upper()}: {r['provider']} on {r['workload']} "
              f"d={r['d']} W={r['width']} N={r['n']}: {r['note']}")
    print(f"({doc['elapsed_s']:.0f} s)")

    paths = {"json": args.json, "markdown": args.markdown, "plot": args.plot}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        slug = device_slug(machine)
        paths = {"json": paths["json"] or out / f"{slug}.json",
                 "markdown": paths["markdown"] or out / f"{slug}.md",
                 "plot": paths["plot"] or out / f"{slug}.png"}
    if paths["json"]:
        Path(paths["json"]).write_text(json.dumps(jsonable(doc), indent=1) + "\n")
        print(f"wrote {paths['json']}")
    if paths["markdown"]:
        Path(paths["markdown"]).write_text(markdown_report(doc))
        print(f"wrote {paths['markdown']}")
    if paths["plot"] and write_plot(doc, paths["plot"]):
        print(f"wrote {paths['plot']}")
    return 0


def jsonable(value):
    """Strict JSON: non-finite floats (an infinite error, a ratio with no peer) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
