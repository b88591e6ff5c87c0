"""The first-light script (``bench/gpu_first_light.py``) and its records
(``bench/record_gpu_results.py``) work before any GPU sees them.

The GPU plan itself is checked without running it: every step is in the issue's order with an
estimate inside the 9-minute budget, every test file it names exists, and every ``fastsiren``
command line it builds parses with the real command-line parser (a typo fails here, not on the
GPU). The dry run runs every step on the CPU at tiny sizes under the interpreter, and the
records script turns its folder into results, error table and README table (in a temporary
copy).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_first_light  # noqa: E402
import record_gpu_results  # noqa: E402

from fastsiren.cli import build_parser  # noqa: E402

STEPS = ["install", "check", "tier-gpu", "every-config", "tier-b", "registers", "bench",
         "roofline", "fit-image"]


def test_the_gpu_plan_fits_the_budget_and_parses(tmp_path):
    steps = gpu_first_light.plan(tmp_path, dry_run=False)
    assert [s.name for s in steps] == STEPS
    needed = sum(s.estimate for s in steps if not s.optional)
    assert needed <= gpu_first_light.DEFAULT_BUDGET, needed
    assert all(s.limit >= s.estimate for s in steps)
    parser = build_parser()
    for step in steps:
        cmd = step.command
        if cmd[1:3] == ["-m", "fastsiren"]:
            parser.parse_args(cmd[3:])  # exits (SystemExit) on an unknown option
        if cmd[1:3] == ["-m", "pytest"]:
            files = [a for a in cmd if a.startswith("tests/")]
            assert files and all((ROOT / f).exists() for f in files), files
    bench = next(s for s in steps if s.name == "bench").command
    workloads = bench[bench.index("--workloads") + 1].split(",")
    from fastsiren.benchmark.cases import WORKLOADS

    assert set(workloads) <= set(WORKLOADS), workloads


def test_the_run_refuses_a_folder_in_use(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(SystemExit):
        gpu_first_light.main(["--out", str(tmp_path), "--dry-run"])
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow  # every step in its own process: about 2 minutes on a loaded 2-core machine
def test_dry_run_writes_every_step_and_the_records(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_first_light.py"), "--out",
                           str(run), "--dry-run"], capture_output=True, text=True, timeout=900)
    summary = json.loads((run / "summary.json").read_text())
    statuses = {s["name"]: s["status"] for s in summary["steps"]}
    assert list(statuses) == STEPS[1:], statuses  # no install in the dry run
    assert proc.returncode == 0 and set(statuses.values()) == {"ok"}, (statuses, proc.stdout)
    assert summary["machine"]["device"] == "cpu" and "torch" in summary["machine"]
    for name in ("check.json", "tier-gpu.xml", "every-config.xml", "tier-b.xml",
                 "registers.json", "roofline.json", "fit-image/metrics.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "check.json").read_text())["self_check"]["passed"]
    assert list((run / "bench").glob("*.json")), "no benchmark result"
    picked = json.loads((run / "registers.json").read_text())["picked"]
    assert {p["kernel"] for p in picked} >= {"_sine_layer_fwd_kernel", "_sine_layer_bwd_kernel"}

    results, readme = tmp_path / "results", tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    written = record_gpu_results.record(run, results, readme)
    names = {p.name for p in written}
    assert "kernel-errors-cpu.md" in names and "first-light-cpu.md" in names
    assert any(n.endswith(".json") for n in names) and readme in written
    table = (results / "precision" / "kernel-errors-cpu.md").read_text()
    assert "| fp32-ieee | VJP | 2 |" in table
    report = (results / "first-light-cpu.md").read_text()
    assert "| registers | ok |" in report and "Image fit:" in report
