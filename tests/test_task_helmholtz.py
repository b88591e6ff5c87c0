"""The helmholtz task: an end-to-end fit from the command line with its outputs and error curve,
the metric checked on the analytic field itself, and every bad input. (Its residual and losses
have float64 autograd twins in test_physics.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_labelled

from fastsiren import physics
from fastsiren.cli import main
from fastsiren.errors import InputError
from fastsiren.fit import fit
from fastsiren.jet import Jet
from fastsiren.tasks import FitContext
from fastsiren.tasks.helmholtz import HelmholtzSettings, HelmholtzTask

TINY = ["--width", "32", "--depth", "1", "--points", "400", "--near-points", "100",
        "--eval-size", "24", "--device", "cpu", "--quiet"]


def test_fit_helmholtz_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "helmholtz", "--out", str(out), "--steps", "20", "--lr", "1e-3",
                 "--log-every", "5", *TINY]) == 0
    assert "rel_error" in capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    metrics = summary["metrics"]
    assert 0 < metrics["rel_error"] < 10 and metrics["pde_residual_mean_abs"] > 0
    assert summary["final_logged_loss"] < summary["first_logged_loss"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 5, 10, 15, 19]
    assert all(np.isfinite(e["rel_error"]) for e in log)  # the error curve, in curve.png
    for name in ("real", "imaginary", "magnitude", "error"):
        labels = assert_labelled(out / f"{name}.png", name, colorbars=1)
        assert f"relative L2 error against the analytic field {metrics['rel_error']:.3f}" in \
            labels["title"]
    assert_labelled(out / "helmholtz.png", "fitted Re u", "analytic Re u", "|u - analytic u|",
                    colorbars=5)
    assert (out / "curve.png").exists()


class _AnalyticModel(torch.nn.Module):
    """Returns the analytic field as its value (derivatives zero): the metric must read 0."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def jet(self, x, order=2, hessian_diag=False):
        u = torch.from_numpy(self.task.analytic_field(x)).to(torch.complex64)
        value = torch.view_as_real(u)
        zeros = torch.zeros(*value.shape, 2)
        return Jet(value, zeros, zeros.sum(-1), zeros)


@pytest.mark.parametrize("log_step", [True, False])
def test_metric_reads_zero_on_the_analytic_field(log_step):
    settings = HelmholtzSettings(points=4000, eval_size=40, steps=10).resolved(
        torch.device("cpu"))
    task = HelmholtzTask(settings, FitContext(torch.device("cpu")))
    model = _AnalyticModel(task)
    assert task.evaluate(model)["rel_error"] < 1e-6
    batch = task.sample(0 if log_step else 3, torch.Generator().manual_seed(0))
    _, logged = task.loss(model.jet(batch["coords"]), batch)
    if log_step:  # the curve's estimate on the batch, taken on log steps only
        assert batch["region"].sum() > 300 and logged["rel_error"] < 1e-6
        assert not batch["region"][:settings.near_points].any()  # uniform points only
    else:
        assert "rel_error" not in logged


def test_square_medium_runs_without_analytic_metric(tmp_path):
    result = fit("helmholtz", out=tmp_path / "sq", velocity="square", steps=2, width=16,
                 depth=1, points=300, near_points=50, eval_size=16, device="cpu",
                 progress=False)
    assert "rel_error" not in result.metrics["metrics"]
    assert result.task.source_xy == (-0.35, 0.0)
    assert (tmp_path / "sq" / "velocity.png").exists()


def _error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_fail_in_one_line(tmp_path, capsys):
    run = ["fit", "helmholtz", "--out", str(tmp_path / "run"), *TINY]
    cases = {
        "--wavenumber: expected a value > 0": ["--wavenumber", "0"],
        "--wavenumber: expected a value > 0 ": ["--wavenumber", "-3"],
        "PML width must be in [0, 1.0)": ["--pml-width", "1.5"],
        "too few points": ["--points", "80"],
        "100 --source-points and 350 --near-points": ["--near-points", "350"],
        "takes no input file": ["some.png"],
    }
    for expected, extra in cases.items():
        assert expected.strip() in _error_line(capsys, [*run, *extra]), expected
    with pytest.raises(SystemExit) as exc:  # argparse: usage and one error line
        main([*run, "--velocity", "blob"])
    assert exc.value.code == 2
    with pytest.raises(InputError, match="unknown velocity model 'blob'|expected one of"):
        fit("helmholtz", out=tmp_path / "run", velocity="blob", progress=False)
    assert physics.VELOCITY_MODELS == ("uniform", "square", "circle")
    assert not (tmp_path / "run").exists()


def test_device_defaults_keep_the_official_run_on_cuda():
    cpu = HelmholtzSettings().resolved(torch.device("cpu"))
    assert (cpu.steps, cpu.points, cpu.near_points, cpu.width) == (1500, 4096, 1024, 128)
    cpu.validate()
    cuda = HelmholtzSettings().resolved(torch.device("cuda"))
    assert (cuda.steps, cuda.points, cuda.near_points, cuda.lr) == (50000, 52900, 0, 2e-5)
    with pytest.raises(InputError, match="--near-points"):
        HelmholtzSettings(points=1100).resolved(torch.device("cpu")).validate()
