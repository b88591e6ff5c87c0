"""The command line: `fastsiren demo` really compares with autograd; bad arguments fail in one
line with exit status 2."""

import json
import subprocess
import sys

import pytest
import torch

from fastsiren.cli import main


def test_demo_reports_agreement_and_timings(capsys):
    assert main(["demo", "--n", "64", "--width", "16"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    # float32 jets against float32 nested autograd: rounding only (~1e-6 relative).
    for name in ("value", "grad", "lap"):
        assert report[f"max_rel_err_{name}"] < 1e-4, name
    for workload in ("jet_forward_order2", "laplacian_training_step"):
        timing = report[workload]
        assert timing["median_seconds_fastsiren"] > 0 and timing["median_seconds_autograd"] > 0
    assert report["backend"] == "torch" and report["points"] == 64
    progress = captured.err.strip().splitlines()
    assert "(4/4)" in progress[-2]
    assert progress[-1].startswith("fastsiren demo: jets agree with nested autograd to ")


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], captured.err


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--n", "0"], "--n must be a number of points >= 1, got 0"),
        (["--n", "-5"], "--n must be a number of points >= 1, got -5"),
        (["--width", "0"], "--width must be a number of hidden features >= 1, got 0"),
    ],
    ids=["n0", "n-5", "width0"],
)
def test_demo_rejects_bad_sizes(capsys, argv, match):
    _one_line_error(capsys, ["demo", *argv], match)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only build")
def test_demo_on_cuda_without_cuda(capsys):
    _one_line_error(capsys, ["demo", "--device", "cuda"], "no CUDA device is available")


def test_unknown_backend_variable(capsys, monkeypatch):
    monkeypatch.setenv("FASTSIREN_BACKEND", "fastest")
    _one_line_error(capsys, ["demo", "--n", "8", "--width", "4"],
                    "$FASTSIREN_BACKEND: unknown backend 'fastest'")


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt: Linux only")
def test_long_commands_keep_freed_memory():
    # In a child process: the setting is process-wide. glibc accepts both values (mallopt
    # returns 0 for an out-of-range one, as 1 GiB would be for the mmap threshold).
    code = "from fastsiren.cli import keep_freed_memory; print(keep_freed_memory())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "True"
    from fastsiren.cli import REPEATED_ALLOCATION
    assert "fit" in REPEATED_ALLOCATION


def test_fit_summary_names_the_process_under_torchrun():
    from fastsiren.cli.fit import summary_line

    summary = {"metrics": {"psnr": 30.0, "note": "text"}, "steps": 5, "train_seconds": 1.25,
               "device": "cpu", "backend": "torch"}
    alone = summary_line("image", summary, "runs/a")
    assert alone == "fit image: psnr 30 after 5 steps, 1.2 s on cpu (torch); wrote runs/a/"
    shard = summary_line("image", summary, "runs/a", rank=1, world_size=2)
    assert shard.startswith("fit image [process 1 of 2]: psnr 30 after 5 steps")
