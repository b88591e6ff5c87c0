"""CPU peak memory, measured in a child process.

The profiler's memory timeline (``measure.peak_memory_bytes``) is the only CPU measure that sees
allocations freed inside one op, but after many profiled calls its leftovers made the
interpreter abort at exit (torch 2.13, Python 3.11). So the benchmark never profiles in its own
process: one worker process (spawned, so it shares no threads or allocator state with the
parent) rebuilds the same case from its seed, runs the provider once (compiling it, for a
compiled provider) and profiles the next call; the parent gets a number back. A worker that dies
costs that one row its memory figure, never the run.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import multiprocessing

import torch

from .cases import Case
from .providers import Provider

_worker: concurrent.futures.ProcessPoolExecutor | None = None


def cpu_peak_bytes(
    provider: Provider, case: Case, precision: str = "fp32", seed: int = 0
) -> tuple[int | None, str]:
    """(peak bytes above the inputs during one steady call, "") or (None, why not)."""
    global _worker
    if _worker is None:
        _worker = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),),
        )
    try:
        return _worker.submit(_measure, provider, case, precision, seed).result(), ""
    except concurrent.futures.process.BrokenProcessPool as exc:
        _worker = None  # the next call starts a fresh worker
        return None, f"memory worker died: {exc}"
    except Exception as exc:  # noqa: BLE001 - a failed measurement is a note, not a crash
        return None, f"memory not measured: {type(exc).__name__}: {exc}"[:200]


def shutdown() -> None:
    global _worker
    if _worker is not None:
        _worker.shutdown(wait=True, cancel_futures=True)
        _worker = None


atexit.register(shutdown)


def _measure(provider: Provider, case: Case, precision: str, seed: int) -> int:
    """In the worker: the provider's peak bytes on the case, after a first (warming or
    compiling) call."""
    from .measure import _quiet_compile_logs, peak_memory_bytes
    from .problem import Problem
    from .providers import workload_fn

    device = torch.device("cpu")
    if provider.compiles:
        torch._dynamo.reset()
    prob = Problem(case, device, seed=seed, precision=precision)
    fn = workload_fn(provider, prob)
    with _quiet_compile_logs(provider.compiles):
        fn()
    peak, _ = peak_memory_bytes(fn, device)
    return peak
