"""The wave task: an end-to-end fit of the standing wave (exact solution) from the command line
with its frames, the pulse on the official sampling, the metric checked on the exact solution,
the time curriculum, and bad input. (Its residual and losses have float64 autograd twins in
test_physics.py.)"""

from __future__ import annotations

import json

import imageio.v3 as iio
import pytest
import torch
from helpers import assert_labelled

from fastsiren.cli import main
from fastsiren.jet import Jet
from fastsiren.tasks import FitContext
from fastsiren.tasks.wave import WaveSettings, WaveTask

TINY = ["--width", "32", "--depth", "1", "--points", "600", "--source-points", "100",
        "--eval-size", "20", "--frames", "4", "--device", "cpu", "--quiet"]


def test_fit_standing_wave_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "wave", "--initial", "mode", "--out", str(out), "--steps", "20",
                 "--lr", "1e-3", "--log-every", "5", *TINY]) == 0
    assert "rel_error" in capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    metrics = summary["metrics"]
    assert 0 < metrics["rel_error"] < 10 and metrics["initial_rel_error"] < 10
    assert summary["final_logged_loss"] < summary["first_logged_loss"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all("rel_error" in e for e in log)
    frames = iio.imread(out / "frames.gif")
    assert frames.shape[:3] == (4, 20, 20)
    labels = assert_labelled(out / "frames.png", "t = 0.000", colorbars=1)
    assert f"relative L2 error {metrics['rel_error']:.3f}" in labels["title"]
    assert_labelled(out / "error.png", "error", colorbars=1)


def test_fit_pulse_runs(tmp_path):
    out = tmp_path / "pulse"
    assert main(["fit", "wave", "--initial", "pulse", "--out", str(out), "--steps", "3",
                 *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert "rel_error" not in metrics and metrics["pde_residual_mean_abs"] >= 0


def _task(**kwargs):
    settings = WaveSettings(**kwargs).resolved(torch.device("cpu"))
    return WaveTask(settings, FitContext(torch.device("cpu")))


class _ExactModel(torch.nn.Module):
    def __init__(self, task):
        super().__init__()
        self.task = task

    def jet(self, x, order=2, hessian_diag=False):
        value = self.task.solution(x)[..., None]
        zeros = torch.zeros(*value.shape, 3)
        return Jet(value, zeros, zeros.sum(-1), zeros)


def test_metric_reads_zero_on_the_exact_solution():
    task = _task(initial="mode", mode_x=1, mode_y=3, speed=1.5, t_end=0.3, eval_size=24,
                 points=900, source_points=100, steps=10)
    model = _ExactModel(task)
    metrics = task.evaluate(model)
    assert metrics["rel_error"] < 1e-6 and metrics["initial_rel_error"] < 1e-6
    batch = task.sample(9, torch.Generator().manual_seed(0))
    _, logged = task.loss(model.jet(batch["coords"]), batch)
    assert logged["rel_error"] < 1e-6 and logged["initial"] < 1e-6
    # Only points inside the domain of dependence count: |x|, |y| <= 1 - c t.
    assert not task.determined(torch.tensor([[0.3, 0.6, 0.0]])).item()
    assert task.determined(torch.tensor([[0.3, 0.5, -0.5]])).item()


def test_time_window_grows_with_the_official_curriculum():
    task = _task(steps=100, curriculum=0.5, t_end=0.4, points=900, source_points=100)
    assert [task.t_max(s) for s in (0, 25, 50, 99)] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    batch = task.sample(25, torch.Generator().manual_seed(0))
    t = batch["coords"][:, 0]
    assert t.max() <= 0.2 and (t[batch["initial"]] == 0).all() and batch["initial"].sum() == 200


def test_bad_inputs_fail_in_one_line(tmp_path, capsys):
    run = ["fit", "wave", "--out", str(tmp_path / "run"), *TINY]
    for expected, extra in {
        "--speed: expected a value > 0": ["--speed", "0"],
        "too few points": ["--points", "150"],
        "--curriculum: expected a value <= 1.0": ["--curriculum", "2"],
    }.items():
        assert main([*run, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err
    with pytest.raises(SystemExit) as exc:
        main([*run, "--velocity", "blob"])
    assert exc.value.code == 2
    assert not (tmp_path / "run").exists()


def test_cpu_default_is_the_standing_wave_and_cuda_the_official_pulse():
    assert WaveSettings().resolved(torch.device("cpu")).initial == "mode"
    assert WaveSettings().resolved(torch.device("cuda")).initial == "pulse"
    assert WaveSettings(initial="pulse").resolved(torch.device("cpu")).initial == "pulse"
