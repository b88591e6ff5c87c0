"""The command line: `fastsiren demo` really compares with autograd; bad arguments fail."""

import json

import pytest

from fastsiren.cli import main


def test_demo_reports_agreement_and_timings(capsys):
    assert main(["demo", "--n", "64", "--width", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    # float32 jets against float32 nested autograd: rounding only (~1e-6 relative).
    for name in ("value", "grad", "lap"):
        assert report[f"max_rel_err_{name}"] < 1e-4, name
    for workload in ("jet_forward_order2", "laplacian_training_step"):
        timing = report[workload]
        assert timing["median_seconds_fastsiren"] > 0 and timing["median_seconds_autograd"] > 0
    assert report["backend"] == "torch" and report["points"] == 64


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
