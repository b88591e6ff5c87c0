"""Timing, peak memory and verification of one callable."""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

# Verification tolerance: relative RMS error against eager autograd at fp32 (TF32 off). Both
# sides round in fp32; measured disagreement is ~2e-6 at width 256, so 1e-4 leaves margin and
# still flags a 1 % error. TF32 rounds inputs to 10 mantissa bits and the Laplacian carries
# omega^2 of it, so TF32 rows get a looser bound.
RTOL = {"fp32": 1e-4, "tf32": 3e-2}


@dataclass
class Settings:
    device: torch.device
    precisions: tuple[str, ...] = ("fp32",)
    min_time: float = 0.3  # seconds of timed calls per measurement (CPU wall clock)
    min_reps: int = 3
    max_reps: int = 100
    # Warm-up calls after the first (verified, possibly compiling) call.
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


def time_interleaved(fns: Sequence[Callable[[], object]], settings: Settings) -> list[Timing]:
    """Median and quartiles of each fn's run time, after warm-up.

    On CPU the calls are interleaved: round after round, every fn once (in a rotating order),
    until each has ``min_reps`` calls and the whole took ``min_time`` per fn. A machine shared
    with other work then slows every provider alike, instead of whichever ran while it was busy;
    the ratios hold even when the absolute times drift. On CUDA each fn is timed on its own by
    ``triton.testing.do_bench`` (the GPU is not shared).
    """
    device = settings.device
    for fn in fns:
        for _ in range(settings.warmup):
            fn()
    if device.type == "cuda":
        return [_time_cuda(fn, settings) for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    budget_end = time.perf_counter() + settings.min_time * len(fns)
    rounds = 0
    while rounds < settings.max_reps and (
        rounds < settings.min_reps or time.perf_counter() < budget_end
    ):
        for i in range(len(fns)):
            k = (i + rounds) % len(fns)
            start = time.perf_counter()
            fns[k]()
            times[k].append((time.perf_counter() - start) * 1e3)
        rounds += 1
    return [_timing(ts) for ts in times]


def _time_cuda(fn: Callable[[], object], settings: Settings) -> Timing:
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
    return _timing(times)


def _timing(times: list[float]) -> Timing:
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return Timing(statistics.median(times), q[0], q[2], len(times))


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> tuple[int, object]:
    """Peak bytes torch allocated during one call of fn, above what was allocated before, and
    fn's result.

    CUDA: the caching allocator's statistics. CPU: the profiler's memory timeline, which records
    every tensor allocation and free with its time (inductor-generated kernels included: their
    buffers come from the same allocator); the running sum's maximum is the peak. Per-op memory
    counts would not do: an op that allocates and frees inside itself (a whole autograd.Function,
    a compiled graph) shows only its net allocation. The benchmark calls the CPU form only in a
    child process (``fastsiren.benchmark.memory``): after many profiled calls, the profiler's
    leftovers made the interpreter abort at exit (torch 2.13, Python 3.11).
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
    return peak, result


@contextlib.contextmanager
def environ(name: str, value: str | None):
    """An environment variable set for the duration of a block, restored after (``None``:
    left as it is)."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


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


def compare(outputs: dict, truth: dict, omits: Sequence[str] = ()) -> dict[str, float]:
    """Relative RMS error per output (and per parameter gradient, 'dW0' ... 'db4'); outputs
    named in ``omits`` (a provider that does not compute them) are left out."""
    errors = {}
    for name, expected in truth.items():
        if name in omits:
            continue
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

