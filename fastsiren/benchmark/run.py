"""The runner: prepares each provider on a case (build, first call, verification), then times it
and measures its memory."""

from __future__ import annotations

import dataclasses
import textwrap
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from .cases import Case
from .gemm import BOUNDS, bound_applies, gemm_bound_fn, gemm_flops
from .measure import (
    Settings,
    _cold_compile,
    _first_line,
    _quiet_compile_logs,
    _sync,
    compare,
    matmul_precision,
    peak_memory_bytes,
    time_interleaved,
)
from .problem import Problem
from .providers import (
    PROVIDERS,
    REFERENCE,
    Provider,
    Unavailable,
    Unsupported,
    _precision_kwargs,
    provider_algorithm,
    workload_fn,
)

# The layout of a result file's rows (``Result``). /2 added per row "algorithm" (the bound it is
# held to) and "flags" (why its numbers are not to be trusted), and the "gemm-adjoint" bound;
# /1 files read as rows without them.
SCHEMA = "fastsiren-bench/2"
READABLE_SCHEMAS = ("fastsiren-bench/1", SCHEMA)


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
    gemm_tflops: float | None = None  # FLOPs of the row's own algorithm's bound / this time
    speedup: float | None = None  # eager autograd time / this time
    gemm_fraction: float | None = None  # bare-GEMM bound time / this time
    peak_mib: float | None = None
    compile_s: float | None = None
    max_rel_err: float | None = None
    errors: dict = field(default_factory=dict)
    algorithm: str | None = None  # the bound this row is held to: "forward" or "adjoint"
    # Why this row's numbers are not to be trusted (see ``flag_untrustworthy``); empty if sound.
    flags: list = field(default_factory=list)


@dataclass
class Prepared:
    """A provider ready to time: ``fn`` runs the workload once (outputs verified)."""

    status: str
    fn: Callable[[], object] | None = None
    note: str = ""
    compile_s: float | None = None
    errors: dict = field(default_factory=dict)


class Runner:
    """Runs cases: prepares every provider (build, first call, verification), measures their
    peak memory, then times them all interleaved."""

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
            self._problems[key] = Problem(case, self.settings.device, seed=self.settings.seed,
                                          precision=precision)
        return self._problems[key]

    def truth(self, case: Case) -> dict:
        """Eager autograd's outputs at fp32 (TF32 off), detached: what every row is checked
        against."""
        if case not in self._truth:
            prob = self.problem(case, "fp32")
            with matmul_precision("fp32", self.settings.device):
                reference = self.providers.get(REFERENCE, PROVIDERS[REFERENCE])
                outs = workload_fn(reference, prob)()
            if len(self._truth) >= 8:  # a few cases' outputs, for interleaved callers (pytest)
                self._truth.pop(next(iter(self._truth)))
            self._truth[case] = _detach(outs)
        return self._truth[case]

    def prepare(self, case: Case, name: str, precision: str = "fp32",
                reset_compiled: bool = True) -> Prepared:
        """Build the provider's callable for the case, run it once and verify it.

        ``reset_compiled=False`` keeps the compiled graphs of providers prepared before (the
        runner resets once per case, so that all of a case's providers can be timed
        interleaved)."""
        provider = self.providers[name]
        device = self.settings.device
        if provider.needs_cuda and device.type != "cuda":
            return Prepared("skipped", note="needs CUDA")
        if name.startswith("fastsiren-triton"):
            from ..jet_ops import unavailable

            reason = unavailable("triton", device)
            if reason is not None:
                return Prepared("skipped", note=f"Triton unavailable: {reason}")
        verdict = self._compile_verdicts.get((name, case.workload))
        if verdict is not None:
            return Prepared("unsupported", note=verdict)
        truth = self.truth(case)
        prob = self.problem(case, precision)
        note = ""
        if provider.kernel_precision and not _precision_kwargs(prob):
            from ..kernels.precision import current_input_precision

            note = f"kernel matmuls: {current_input_precision()}"
        if provider.omits:
            note = "; ".join(filter(None, [note, f"computes no {', '.join(provider.omits)}"]))
        try:
            if provider.compiles and reset_compiled:
                torch._dynamo.reset()  # a fresh compile per case: static shapes, no cache limit
            fn = workload_fn(provider, prob)
            _sync(device)
            start = time.perf_counter()
            with _quiet_compile_logs(provider.compiles), _cold_compile(provider.compiles):
                outs = fn()
            _sync(device)
            first_s = time.perf_counter() - start
        except Unavailable as exc:
            return Prepared("skipped", note=str(exc))
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
        errors = compare(outs, truth, provider.omits)
        del outs
        worst = max(errors.values(), default=0.0)
        if not worst <= self.settings.rtol[precision]:
            bad = max(errors, key=errors.get)
            return Prepared(
                "wrong", note=f"{bad} off by {worst:.2e} relative RMS "
                f"(tolerance {self.settings.rtol[precision]:.0e})", errors=errors,
            )
        return Prepared(
            "ok", fn=fn, note=note, compile_s=first_s if provider.compiles else None,
            errors=errors,
        )

    def _eager_failure(self, provider: Provider, prob: Problem) -> str | None:
        eager = dataclasses.replace(provider, compiled=False)
        try:
            workload_fn(eager, prob)()
        except Exception as exc:  # noqa: BLE001
            return f"fails without torch.compile too: {_first_line(exc)}"
        return None

    def peak_mib(self, case: Case, name: str, precision: str,
                 fn: Callable[[], object]) -> tuple[float | None, str]:
        """Peak memory of one steady call: CUDA allocator statistics here, the CPU profiler's
        timeline in a child process (``memory``)."""
        device = self.settings.device
        if device.type == "cuda":
            peak, _ = peak_memory_bytes(fn, device)
            return peak / 2**20, ""
        from .memory import cpu_peak_bytes

        peak, why = cpu_peak_bytes(self.providers[name], case, precision, self.settings.seed)
        return (None if peak is None else peak / 2**20), why

    # -- the sweep --------------------------------------------------------------------------

    def run_case(self, case: Case, names: Sequence[str], precision: str) -> list[Result]:
        """Every provider and the bounds on one case at one matmul precision: prepare and
        verify each, measure memory, then time them all interleaved."""
        settings, device = self.settings, self.settings.device
        results, timed = [], []
        if any(self.providers[n].compiles for n in names if n in self.providers):
            torch._dynamo.reset()  # once per case: the case's compiled providers coexist
        with matmul_precision(precision, device):
            for name in names:
                base = dict(workload=case.workload, provider=name, precision=precision,
                            d=case.d, width=case.width, n=case.n, batch=case.batch)
                if name in BOUNDS:
                    algorithm = BOUNDS[name]
                    if not bound_applies(name, case):
                        results.append(Result(**base, status="skipped", algorithm=algorithm,
                                              note="the adjoint sweep serves order 1 only"))
                        continue
                    prepared = Prepared("ok", fn=gemm_bound_fn(case, device, torch.float32,
                                                               algorithm),
                                        note="lower bound: the plain matmuls alone")
                else:
                    algorithm = provider_algorithm(self.providers[name], case)
                    prepared = self.prepare(case, name, precision, reset_compiled=False)
                result = Result(**base, status=prepared.status, note=prepared.note,
                                compile_s=prepared.compile_s, errors=prepared.errors,
                                algorithm=algorithm)
                if prepared.errors:
                    result.max_rel_err = max(prepared.errors.values())
                if prepared.status == "ok" and settings.memory and name not in BOUNDS:
                    try:
                        result.peak_mib, why = self.peak_mib(case, name, precision, prepared.fn)
                    except torch.cuda.OutOfMemoryError as exc:
                        _free(device)
                        result.status, result.note = "oom", _first_line(exc)
                    else:
                        if why:
                            result.note = "; ".join(filter(None, [result.note, why]))
                results.append(result)
                if result.status == "ok":
                    timed.append((result, prepared.fn))
            try:
                timings = time_interleaved([fn for _, fn in timed], settings)
            except torch.cuda.OutOfMemoryError as exc:
                _free(device)
                for result, _ in timed:
                    result.status, result.note = "oom", _first_line(exc)
                timings = []
            for (result, _), timing in zip(timed, timings):
                seconds = timing.median_ms / 1e3
                result.median_ms, result.p25_ms, result.p75_ms = (
                    timing.median_ms, timing.p25_ms, timing.p75_ms)
                result.reps = timing.reps
                # Throughput: points (all B networks' N points) per second, and the bound's
                # GEMM FLOPs over this time: effective GEMM TFLOP/s.
                result.points_per_s = case.points / seconds
                result.gemm_tflops = gemm_flops(case, result.algorithm) / seconds / 1e12
        timed.clear()
        fill_ratios(results)
        for result in results:
            self.log(f"  {precision} {result.provider:<17} {cell_text(result)}")
        return results

    def run(self, cases: Iterable[Case], names: Sequence[str],
            on_results: Callable[[list[Result]], None] | None = None) -> list[Result]:
        """Every case with every provider; ``on_results`` gets the results so far after each
        case (so that a late failure loses none of them)."""
        results: list[Result] = []
        cases = list(cases)
        start = time.perf_counter()
        for i, case in enumerate(cases):
            self.log(f"[{i + 1}/{len(cases)} {time.perf_counter() - start:.0f}s] "
                     f"{case.workload} {case.label()}")
            for precision in self.settings.precisions:
                results.extend(self.run_case(case, names, precision))
            if on_results is not None:
                on_results(results)
        self._problems.clear()
        self._truth.clear()
        return results


def _detach(outs: dict) -> dict:
    return {
        k: [g.detach() for g in v] if isinstance(v, list) else v.detach() for k, v in outs.items()
    }


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fill_ratios(results: list[Result]) -> None:
    """Within one case: speedup over eager autograd, fraction of the bare-GEMM bound of the
    row's own algorithm, and the flags of untrustworthy rows."""
    by_name = {r.provider: r for r in results}
    ref = by_name.get(REFERENCE)
    bounds = {BOUNDS[name]: r for name, r in by_name.items()
              if name in BOUNDS and r.median_ms is not None}
    for r in results:
        if r.median_ms is None:
            continue
        if ref is not None and ref.median_ms is not None:
            r.speedup = ref.median_ms / r.median_ms
        bound = bounds.get(r.algorithm)
        if bound is not None and r.provider not in BOUNDS:
            r.gemm_fraction = bound.median_ms / r.median_ms
    flag_untrustworthy(results)


def flag_untrustworthy(results: list[Result]) -> None:
    """Mark rows whose numbers the run itself contradicts or cannot resolve:

    - "faster than its bound": a verified provider ran faster than the bare matmuls it must
      do (gemm_fraction > 1), so one of the two was measured while the machine was busy;
    - "bound slower than autograd": the bound took longer than the whole reference computation;
    - "within noise": the interquartile range of this row or of the reference is wider than
      the difference of their medians, so the speedup cannot be told from 1.
    """
    by_name = {r.provider: r for r in results}
    ref = by_name.get(REFERENCE)
    for r in results:
        if r.median_ms is None:
            continue
        if r.gemm_fraction is not None and r.gemm_fraction > 1:
            r.flags.append("faster than its bound")
        if r.provider in BOUNDS and ref is not None and ref.median_ms is not None \
                and r.median_ms > ref.median_ms:
            r.flags.append("bound slower than autograd")
        if ref is not None and ref.median_ms is not None and r is not ref \
                and r.provider not in BOUNDS:
            spread = max(r.p75_ms - r.p25_ms, ref.p75_ms - ref.p25_ms)
            if spread > abs(r.median_ms - ref.median_ms):
                r.flags.append("within noise")


def spread_pct(r: Result | dict) -> float | None:
    """Half the interquartile range as a percentage of the median: the row's spread."""
    r = dataclasses.asdict(r) if isinstance(r, Result) else r
    if r.get("median_ms") is None or r.get("p25_ms") is None:
        return None
    return 50 * (r["p75_ms"] - r["p25_ms"]) / r["median_ms"]


def cell_text(r: Result | dict) -> str:
    """One row in words: time, speedup, spread, flags; or the status and why."""
    r = dataclasses.asdict(r) if isinstance(r, Result) else r
    if r["status"] == "ok":
        text = f"{r['median_ms']:.3g} ms ±{spread_pct(r):.0f}%"
        if r.get("speedup") is not None:
            text += f" ({r['speedup']:.2f}x)"
        if r.get("flags"):
            text += " [" + "; ".join(r["flags"]) + "]"
        return text
    return f"{r['status']}: {r['note']}" if r.get("note") else r["status"]
