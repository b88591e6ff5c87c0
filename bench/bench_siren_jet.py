"""Every provider of SIREN jets on every workload, one pytest-benchmark group per workload
(and size). Each provider is verified against eager autograd before it is timed: a wrong one
fails, an unsupported one is skipped with the reason (see ``fastsiren.benchmark``)."""

from __future__ import annotations

import pytest

from fastsiren import benchmark as fb
from fastsiren.benchmark.gemm import bound_applies


def test_siren_jet(benchmark, runner, case, provider):
    if provider in fb.BOUNDS:
        if not bound_applies(provider, case):
            pytest.skip("the adjoint sweep serves order 1 only")
        fn = fb.gemm_bound_fn(case, runner.settings.device, algorithm=fb.BOUNDS[provider])
        prepared = fb.Prepared("ok", fn=fn)
    else:
        prepared = runner.prepare(case, provider)
    if prepared.status in ("wrong", "error"):
        pytest.fail(f"{provider} on {case.workload} {case.label()}: {prepared.status}: "
                    f"{prepared.note}")
    if prepared.status != "ok":
        pytest.skip(f"{prepared.status}: {prepared.note}")
    benchmark.group = f"{case.workload} {case.label()}"
    benchmark.extra_info.update(
        provider=provider, workload=case.workload, d=case.d, width=case.width, n=case.n,
        batch=case.batch, points=case.points, gemm_flops=fb.gemm_flops(case),
        compile_s=prepared.compile_s, max_rel_err=max(prepared.errors.values(), default=0.0),
    )
    benchmark(prepared.fn)
