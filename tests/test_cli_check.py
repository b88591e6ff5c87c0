"""`fastsiren check`: the report a user pastes into a bug report (tier b: the kernel families
run in Triton's interpreter here, as ``--interpret`` has them on a machine without CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fastsiren import selfcheck
from fastsiren.cli import check as check_cli
from fastsiren.cli import main

try:
    import triton  # noqa: F401
except ImportError:
    triton = None
needs_triton = pytest.mark.skipif(triton is None, reason="Triton is not installed")
# The interpreter's report (one precision mode, CPU rows); on CUDA the first-light script runs
# `fastsiren check` itself and keeps its report.
interpreted_only = pytest.mark.skipif(torch.cuda.is_available(),
                                      reason="on CUDA the report has the GPU's modes")

FAMILY_ROWS = 8  # forward at orders 0-2 and the Hessian diagonal, VJP x 2, whole network x 2


@needs_triton
@interpreted_only
@pytest.mark.interpret
def test_json_report_runs_every_family(capsys, one_thread):
    assert main(["check", "--json", "--seconds", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"]["type"] == "cpu" and report["interpreter"] is True
    assert {"fastsiren", "python", "torch", "triton", "cuda", "driver"} == set(report["versions"])
    assert report["backends"] == {"torch": "available", "triton": "available",
                                  "reference": "available"}
    rows = report["self_check"]["rows"]
    assert len(rows) == FAMILY_ROWS and report["self_check"]["passed"]
    assert {r["family"] for r in rows} == set(selfcheck.FAMILIES)
    for r in rows:
        assert r["precision"] == "fp32-ieee" and r["passed"] and 0 <= r["error"] <= r["limit"], r
    assert report["timing"] is None


def test_without_triton_it_says_so(capsys, monkeypatch):
    """No Triton (or no CUDA and no interpreter): the report says why the kernels cannot run,
    still prints everything else, and exits 0."""
    monkeypatch.setattr("fastsiren.jet_ops.unavailable",
                        lambda name, device="cuda": "importing the Triton kernels failed (No "
                        "module named 'triton')" if name == "triton" else None)
    assert main(["check", "--seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "self-check: skipped (importing the Triton kernels failed (No module named" in out
    assert "triton: importing the Triton kernels failed" in out and "versions:" in out


@needs_triton
@pytest.mark.interpret
def test_a_failed_family_fails_the_command(capsys, monkeypatch):
    def wrong(family, device, dtype, layout, *args, **kwargs):
        return selfcheck.Measurement(family, "fp32-ieee", "_sine_layer_fwd_kernel", 0.3, 1e-4,
                                     0.1)

    monkeypatch.setattr(selfcheck, "measure", wrong)
    assert main(["check", "--seconds", "0"]) == 1
    out = capsys.readouterr().out
    assert "FAILED 3.0e-01 (limit 1e-04, _sine_layer_fwd_kernel" in out


def test_timing_against_autograd(capsys, one_thread, monkeypatch):
    monkeypatch.setitem(check_cli.TIMED_POINTS, "cpu", 32)
    monkeypatch.setattr(check_cli, "TIMED_WIDTH", 16)
    monkeypatch.setattr(check_cli, "_self_check_rows", lambda torch, device: ([], "not here"))
    assert main(["check", "--json", "--seconds", "0.2"]) == 0
    timing = json.loads(capsys.readouterr().out)["timing"]
    assert timing["repeats"] >= 1 and timing["speedup"] > 0
    assert timing["backend"] == ("triton" if torch.cuda.is_available() else "torch")


def test_bad_seconds_is_an_input_error(capsys):
    assert main(["check", "--seconds", "-1"]) == 2
    assert "error: --seconds must be >= 0" in capsys.readouterr().err


@needs_triton
@interpreted_only
@pytest.mark.slow
def test_interpret_flag_in_a_fresh_process(tmp_path):
    """``--interpret`` sets TRITON_INTERPRET before the kernels import (a fresh process, as a
    user runs it on a machine without CUDA)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastsiren", "check", "--interpret", "--json",
                           "--seconds", "0"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["interpreter"] and len(report["self_check"]["rows"]) == FAMILY_ROWS
