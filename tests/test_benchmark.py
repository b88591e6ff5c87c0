"""The benchmark machinery end to end on tiny sizes: verification flags a wrong provider, every
status becomes a row, untrustworthy rows are flagged, and the JSON and Markdown reports have
their structure. No timings are asserted."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from fastsiren import benchmark as fb
from fastsiren.cli import build_parser

TINY = dict(d=2, width=8, n=32)


def _wrong_lap(prob):
    """fastsiren's jet with the second derivatives 1 % off: fast and wrong."""
    jet = fb.PROVIDERS["fastsiren-torch"].make(prob)

    def wrong(x, params):
        out = jet(x, params)
        for name in ("lap", "hess_diag"):
            if name in out:
                out[name] = out[name] * 1.01
        return out

    return wrong


def _unsupported(prob):
    raise fb.Unsupported("by construction")


@pytest.fixture
def runner():
    providers = {
        "autograd": fb.PROVIDERS["autograd"],
        "fastsiren-torch": fb.PROVIDERS["fastsiren-torch"],
        "fastsiren-triton": fb.PROVIDERS["fastsiren-triton"],
        "wrong": fb.Provider("wrong", "wrong on purpose", _wrong_lap),
        "nothing": fb.Provider("nothing", "unsupported", _unsupported),
    }
    # Memory is measured in one test only: its worker process costs seconds to start.
    settings = fb.Settings(device=torch.device("cpu"), min_time=0.0, min_reps=2, warmup=0,
                           memory=False)
    return fb.Runner(settings, providers)


@pytest.mark.parametrize(
    "workload", ["jet2", "step_lap", "batched_step_lap", "hessdiag", "step_helmholtz"]
)
def test_runner_verifies_before_timing(runner, workload):
    case = fb.Case(workload, batch=2 if fb.WORKLOADS[workload].batched else 1, **TINY)
    names = ["autograd", "fastsiren-torch", "fastsiren-triton", "wrong", "nothing", *fb.BOUNDS]
    results = {r.provider: r for r in runner.run_case(case, names, "fp32")}
    assert set(results) == set(names)

    ref, fast = results["autograd"], results["fastsiren-torch"]
    assert ref.status == fast.status == "ok"
    assert ref.speedup == pytest.approx(1.0)
    assert fast.max_rel_err is not None and fast.max_rel_err < fb.RTOL["fp32"]
    expected = {"value", "grad", "lap"} if not fb.WORKLOADS[workload].train else {"loss", "dW0"}
    assert expected <= set(fast.errors)
    for r in (ref, fast, results[fb.BOUND]):
        assert r.median_ms > 0 and r.p25_ms <= r.median_ms <= r.p75_ms and r.reps >= 2
        assert r.points_per_s == pytest.approx(case.points / (r.median_ms / 1e3))
    assert fast.gemm_fraction is not None and fast.algorithm == "forward"
    adjoint = results[fb.ADJOINT_BOUND]  # order 1 only
    assert adjoint.status == "skipped" and adjoint.median_ms is None

    wrong = results["wrong"]
    assert wrong.status == "wrong", wrong
    assert wrong.median_ms is None and wrong.speedup is None  # wrong is never timed
    assert "relative RMS" in wrong.note
    assert results["nothing"].status == "unsupported"
    assert results["nothing"].note == "by construction"
    assert results["fastsiren-triton"].status == "skipped"  # no CUDA here


def test_cpu_peak_memory_comes_from_a_child_process(runner):
    """The profiler never runs in this process (it made long runs abort at exit); the worker
    rebuilds the case from its seed and profiles one steady call."""
    from fastsiren.benchmark import memory

    runner.settings.memory = True
    case = fb.Case("step_lap", **TINY)
    fast, bound = runner.run_case(case, ["fastsiren-torch", fb.BOUND], "fp32")
    assert fast.status == "ok" and fast.peak_mib is not None and fast.peak_mib > 0, fast.note
    assert bound.peak_mib is None  # the bound preallocates everything
    assert memory._worker is not None
    memory.shutdown()


def test_order1_rows_are_held_to_their_own_algorithms_bound(runner):
    """d = 3 > 1 output: the torch backend and autograd take the adjoint sweep at order 1."""
    case = fb.Case("jet1", d=3, width=8, n=32)
    names = ["autograd", "fastsiren-torch", *fb.BOUNDS]
    results = {r.provider: r for r in runner.run_case(case, names, "fp32")}
    assert results["fastsiren-torch"].algorithm == "adjoint"
    assert results["autograd"].algorithm == "adjoint"
    bound = results[fb.ADJOINT_BOUND]
    assert bound.status == "ok" and bound.median_ms > 0
    fast = results["fastsiren-torch"]
    assert fast.gemm_fraction == pytest.approx(bound.median_ms / fast.median_ms)


def test_gemm_shapes_count_the_jet_rows():
    fwd = fb.gemm_shapes(fb.Case("jet2", d=3, width=64, n=100))
    # first layer value matmul, then 3 hidden + 1 final layer on all d + 2 slabs
    assert fwd[0] == (1, 100, 3, 64)
    assert [s[1] for s in fwd[1:]] == [5 * 100] * 4
    step = fb.gemm_shapes(fb.Case("step_lap", d=3, width=64, n=100))
    assert len(step) == 1 + 3 * 4 + 1
    assert fb.gemm_flops(fb.Case("value", d=2, width=4, n=10)) == 2 * (
        10 * 2 * 4 + 3 * 10 * 4 * 4 + 10 * 4 * 1)
    # The order-1 adjoint sweep (1 output): values forward, one adjoint slab back to x.
    jet1 = fb.Case("jet1", d=3, width=64, n=100)
    adjoint = fb.gemm_shapes(jet1, "adjoint")
    assert [s[1] for s in adjoint] == [100] * 5 + [1 * 100] * 4
    assert (1, 100, 64, 3) in adjoint  # dy/dx = q_0 W_0
    assert fb.gemm_flops(jet1, "adjoint") < fb.gemm_flops(jet1, "forward")
    step = fb.Case("step_grad", d=3, width=64, n=100)
    # per sine layer 3 matmuls (4 above the first), plus the final layer's 2
    assert len(fb.gemm_shapes(step, "adjoint")) == 9 + 4 * 3 + 3 + 2
    with pytest.raises(ValueError, match="order 1"):
        fb.gemm_shapes(fb.Case("jet2", d=3, width=8, n=4), "adjoint")
    # The Helmholtz step: d + 1 + d slabs, two outputs from the final layer.
    helmholtz = fb.gemm_shapes(fb.Case("step_helmholtz", d=2, width=64, n=100))
    assert helmholtz[1] == (1, 5 * 100, 64, 64) and (1, 5 * 100, 64, 2) in helmholtz


def test_helmholtz_step_is_defined_in_two_dimensions_only():
    cases = fb.Sweep(("step_helmholtz", "jet2"), (2, 3), (8,), (32,)).cases()
    assert [(c.workload, c.d) for c in cases] == [
        ("step_helmholtz", 2), ("jet2", 2), ("jet2", 3)]
    assert all(c.d == 2 for p in fb.PRESETS for c in fb.cases_for_preset(p)
               if c.workload == "step_helmholtz")
    assert any(c.workload == "step_helmholtz" for c in fb.cases_for_preset("quick"))


def _row(provider, median, spread=0.0, algorithm="forward"):
    return fb.Result("jet2", provider, "fp32", 2, 8, 32, 1, "ok", median_ms=median,
                     p25_ms=median - spread / 2, p75_ms=median + spread / 2,
                     algorithm=algorithm)


def test_untrustworthy_rows_are_flagged():
    from fastsiren.benchmark.run import fill_ratios

    rows = [_row("autograd", 10.0, 0.5), _row("sound", 5.0, 0.2), _row("noisy", 9.0, 3.0),
            _row("too-fast", 0.5), _row(fb.BOUND, 1.0)]
    fill_ratios(rows)
    flags = {r.provider: r.flags for r in rows}
    assert flags["sound"] == [] and flags["autograd"] == [] and flags[fb.BOUND] == []
    assert flags["noisy"] == ["within noise"]
    assert flags["too-fast"] == ["faster than its bound"]
    assert rows[1].speedup == pytest.approx(2.0) and rows[1].gemm_fraction == pytest.approx(0.2)

    slow_bound = [_row("autograd", 1.0), _row(fb.BOUND, 2.0)]
    fill_ratios(slow_bound)
    assert slow_bound[1].flags == ["bound slower than autograd"]


def test_collapsed_taylor_runs_or_skips_with_the_reason(runner):
    """jet-for-pytorch needs Python >= 3.12: where it cannot import, the row says why."""
    runner.providers["collapsed-taylor"] = fb.PROVIDERS["collapsed-taylor"]
    case = fb.Case("jet2", **TINY)
    results = {r.provider: r for r in runner.run_case(case, ["autograd", "collapsed-taylor"],
                                                       "fp32")}
    row = results["collapsed-taylor"]
    importable = sys.version_info >= (3, 12) and importlib.util.find_spec("jet") is not None
    if importable:
        assert row.status == "ok" and "grad" not in row.errors and "lap" in row.errors
    else:
        assert row.status == "skipped" and row.median_ms is None
        assert "jet-for-pytorch" in row.note


def test_help_loads_no_provider_runner_or_matplotlib():
    # (torch.profiler itself comes with `import torch` in torch 2.13: nothing to save there.)
    code = ("import sys; from fastsiren.cli import build_parser; build_parser(); "
            "heavy = ['fastsiren.benchmark.providers', 'fastsiren.benchmark.run', "
            "'fastsiren.benchmark.memory', 'fastsiren.benchmark.tables', "
            "'fastsiren.benchmark.plot', 'fastsiren.benchmark.readme', 'matplotlib']; "
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    json_path, md_path = tmp_path / "r.json", tmp_path / "r.md"
    args = build_parser().parse_args([
        "bench", "--preset", "smoke", "--workloads", "jet2,step_lap", "--widths", "8",
        "--n", "32", "--providers", "fastsiren-torch,autograd,gemm", "--min-time", "0",
        "--no-memory",
        "--json", str(json_path), "--markdown", str(md_path),
    ])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "machine:" in printed and "speedup over eager autograd" in printed
    assert "legend:" in printed and "MISSED" in printed and "unsup." in printed

    doc = json.loads(json_path.read_text())
    assert doc["schema"] == fb.SCHEMA
    assert {"device", "device_type", "torch", "triton", "commit"} <= set(doc["machine"])
    assert {r["workload"] for r in doc["results"]} == {"jet2", "step_lap"}
    assert [r["provider"] for r in doc["results"][:3]] == ["autograd", "fastsiren-torch", "gemm"]
    fields = {f.name for f in dataclasses.fields(fb.Result)}
    for r in doc["results"]:
        assert set(r) == fields and r["status"] == "ok"
    measured = {t["target"]: t["status"] for t in doc["targets"] if t["status"] != "not measured"}
    # speedups of both workloads and the bound of jet2; no compiled peer, no other workloads
    assert len(measured) == 3 and set(measured.values()) <= {"met", "MISSED"}, measured

    md = md_path.read_text()
    assert md.startswith("# fastsiren benchmark") and "Machine:" in md
    assert "- **gemm-adjoint**:" in md
    assert "## Targets" in md and "## training step, Laplacian loss" in md
    assert "| d=2 W=8 N=32 |" in md


def test_readme_section_touches_only_the_markers():
    doc = {"machine": fb.machine_info(torch.device("cpu")), "targets": [], "results": [
        dict(workload="jet2", provider=p, precision="fp32", d=2, width=8, n=32, batch=1,
             status="ok", speedup=s, median_ms=1.0) for p, s in (("autograd", 1.0),
                                                                ("fastsiren-torch", 3.5))]}
    section = fb.readme_section([("cpu-x.json", doc)])
    assert "3.50x" in section
    readme = f"intro\n{fb.README_BEGIN}\nold table\n{fb.README_END}\noutro\n"
    new = fb.replace_readme_section(readme, section)
    assert new.startswith(f"intro\n{fb.README_BEGIN}\n")
    assert new.endswith(f"{fb.README_END}\noutro\n")
    assert "old table" not in new and "3.50x" in new
    with pytest.raises(ValueError):
        fb.replace_readme_section("no markers here", section)
