"""The benchmark machinery end to end on tiny sizes: verification flags a wrong provider, every
status becomes a row, and the JSON and Markdown reports have their structure. No timings are
asserted."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fastsiren import benchmark as fb
from fastsiren.cli import build_parser

TINY = dict(d=2, width=8, n=32)


def _wrong_lap(prob):
    """fastsiren's jet with the Laplacian 1 % off: fast and wrong."""
    jet = fb.PROVIDERS["fastsiren-torch"].make(prob)

    def wrong(x, params):
        out = jet(x, params)
        if "lap" in out:
            out["lap"] = out["lap"] * 1.01
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
    settings = fb.Settings(device=torch.device("cpu"), min_time=0.0, min_reps=2, warmup=0)
    return fb.Runner(settings, providers)


@pytest.mark.parametrize("workload", ["jet2", "step_lap", "batched_step_lap", "hessdiag"])
def test_runner_verifies_before_timing(runner, workload):
    case = fb.Case(workload, batch=2 if fb.WORKLOADS[workload].batched else 1, **TINY)
    names = ["autograd", "fastsiren-torch", "fastsiren-triton", "wrong", "nothing", fb.BOUND]
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
        assert r.peak_mib is not None and r.peak_mib >= 0
    assert fast.gemm_fraction is not None

    wrong = results["wrong"]
    assert wrong.status == "wrong", wrong
    assert wrong.median_ms is None and wrong.speedup is None  # wrong is never timed
    assert "relative RMS" in wrong.note
    assert results["nothing"].status == "unsupported"
    assert results["nothing"].note == "by construction"
    assert results["fastsiren-triton"].status == "skipped"  # no CUDA here


def test_gemm_shapes_count_the_jet_rows():
    fwd = fb.gemm_shapes(fb.Case("jet2", d=3, width=64, n=100))
    # first layer value matmul, then 3 hidden + 1 final layer on all d + 2 slabs
    assert fwd[0] == (1, 100, 3, 64)
    assert [s[1] for s in fwd[1:]] == [5 * 100] * 4
    step = fb.gemm_shapes(fb.Case("step_lap", d=3, width=64, n=100))
    assert len(step) == 1 + 3 * 4 + 1
    assert fb.gemm_flops(fb.Case("value", d=2, width=4, n=10)) == 2 * (
        10 * 2 * 4 + 3 * 10 * 4 * 4 + 10 * 4 * 1)


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    json_path, md_path = tmp_path / "r.json", tmp_path / "r.md"
    args = build_parser().parse_args([
        "bench", "--preset", "smoke", "--workloads", "jet2,step_lap", "--widths", "8",
        "--n", "32", "--providers", "fastsiren-torch,autograd,gemm", "--min-time", "0",
        "--json", str(json_path), "--markdown", str(md_path),
    ])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "machine:" in printed and "speedup over eager autograd" in printed

    doc = json.loads(json_path.read_text())
    assert doc["schema"] == fb.SCHEMA
    assert {"device", "device_type", "torch", "triton", "commit"} <= set(doc["machine"])
    assert {r["workload"] for r in doc["results"]} == {"jet2", "step_lap"}
    assert [r["provider"] for r in doc["results"][:3]] == ["autograd", "fastsiren-torch", "gemm"]
    fields = {f.name for f in dataclasses.fields(fb.Result)}
    for r in doc["results"]:
        assert set(r) == fields and r["status"] == "ok"
    assert [t["status"] for t in doc["targets"]] in (
        [a, b] for a in ("met", "MISSED") for b in ("met", "MISSED"))

    md = md_path.read_text()
    assert md.startswith("# fastsiren benchmark") and "Machine:" in md
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
