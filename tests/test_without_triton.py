"""Tier a runs where Triton is not installed (macOS, Windows: no Triton wheels there).

The test extra installs Triton on Linux only; everything else must import, collect and run
without it, the Triton tiers skipping with their reason. Checked in a fresh interpreter in which
``import triton`` fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Makes ``import triton`` raise ImportError, as on a machine without it.
NO_TRITON = "import sys; sys.modules['triton'] = None; "


def _run(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", NO_TRITON + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_test_extra_pulls_triton_on_linux_only():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    triton_reqs = [r for r in extras["test"] if r.replace(" ", "").startswith("triton")]
    assert triton_reqs, extras["test"]
    for req in triton_reqs:
        assert "platform_system" in req and "Linux" in req, req


def test_the_engine_runs_without_triton():
    """The package, its CLI and a jet on the CPU; naming the Triton backend says what to install."""
    code = (
        "import torch, fastsiren as fs, fastsiren.kernels, fastsiren.cli\n"
        "m = fs.Siren(2, 8, 1, 1)\n"
        "j = m.jet(torch.rand(5, 2), order=2)\n"
        "assert torch.isfinite(j.lap).all()\n"
        "try:\n"
        "    fs.siren_jet(torch.rand(5, 2), [p for n, p in m.named_parameters() if 'weight' in n],"
        " [p for n, p in m.named_parameters() if 'bias' in n], [30.0] * 3, backend='triton')\n"
        "except RuntimeError as e:\n"
        "    print('ERROR', e)\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ERROR backend 'triton' is not available" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_the_suite_collects_without_triton():
    """Every test module imports without Triton: the Triton tiers skip with their reason,
    nothing errors at collection."""
    code = ("import pytest; sys.exit(pytest.main(['-q', '--collect-only', '-p', "
            "'no:cacheprovider', 'tests']))")
    proc = _run(code, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # 2: errors
