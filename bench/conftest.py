"""pytest front end of the benchmark suite (the machinery lives in ``fastsiren.benchmark``).

    pytest bench/ --benchmark-only                      # smoke sizes, every provider
    pytest bench/ --benchmark-only --siren-preset quick # the `fastsiren bench --quick` cases
    pytest bench/ --benchmark-disable                   # one verified call each: a smoke check

Files named ``bench_*.py`` are collected here (pytest's default pattern is ``test_*.py``), so the
benchmarks mirror the module names of what they measure.
"""

from __future__ import annotations

import pytest
import torch

from fastsiren import benchmark as fb


def pytest_addoption(parser):
    group = parser.getgroup("fastsiren benchmark")
    group.addoption("--siren-preset", default="smoke", choices=sorted(fb.PRESETS),
                    help="case list from fastsiren.benchmark.PRESETS (default: smoke)")
    group.addoption("--siren-providers", default=None,
                    help="comma list of providers (default: all, and the bare-GEMM bound)")
    group.addoption("--siren-workloads", default=None, help="comma list of workloads")


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "case" in metafunc.fixturenames:
        cases = fb.cases_for_preset(config.getoption("--siren-preset"))
        workloads = config.getoption("--siren-workloads")
        if workloads:
            cases = [c for c in cases if c.workload in workloads.split(",")]
        metafunc.parametrize("case", cases, ids=[f"{c.workload}-{c.label()}".replace(" ", "-")
                                                 for c in cases])
    if "provider" in metafunc.fixturenames:
        names = config.getoption("--siren-providers")
        names = names.split(",") if names else [*fb.PROVIDERS, *fb.BOUNDS]
        metafunc.parametrize("provider", names)


@pytest.fixture(scope="session")
def runner():
    """One runner for the session: it caches the reference outputs every provider is checked
    against."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return fb.Runner(fb.Settings(device=device))
