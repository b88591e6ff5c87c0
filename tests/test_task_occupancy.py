"""The occupancy task: labels, IoU and the 0.5-level mesh checked with an analytic ball, the CLI
end to end, and the refusal of a mesh that is not watertight."""

import json

import numpy as np
import pytest
import torch
from torch import nn

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("mcubes")
pytest.importorskip("rtree")

from fastsiren.cli import main  # noqa: E402
from fastsiren.tasks.base import FitContext  # noqa: E402
from fastsiren.tasks.occupancy import OccupancySettings, OccupancyTask  # noqa: E402

CPU = FitContext(torch.device("cpu"))
CENTRE, RADIUS = np.array([-3.0, 1.0, 0.5]), 1.5
TINY = ["--width", "16", "--depth", "1", "--batch", "256", "--pool", "500", "--held-out",
        "500", "--resolution", "12", "--metric-samples", "500", "--quiet"]


@pytest.fixture
def ball_stl(tmp_path):
    ball = trimesh.creation.icosphere(subdivisions=2, radius=RADIUS)
    ball.apply_translation(CENTRE)
    path = tmp_path / "ball.stl"
    ball.export(path)
    return path


class BallLogit(nn.Module):
    """logit = k (r - |x - c|): above 0 inside a ball (the exact occupancy of the input)."""

    def __init__(self, centre, radius, sharpness=10.0):
        super().__init__()
        self.register_buffer("centre", torch.tensor(centre, dtype=torch.float32))
        self.radius, self.sharpness = radius, sharpness

    def forward(self, x):
        return self.sharpness * (self.radius - (x - self.centre).norm(dim=-1, keepdim=True))


def test_labels_iou_and_mesh_with_the_exact_occupancy(ball_stl):
    settings = OccupancySettings(input=str(ball_stl), pool=500, held_out=2000, resolution=24,
                                 metric_samples=5000).resolved(torch.device("cpu"))
    task = OccupancyTask.create(settings, CPU)
    norm = task.normalization
    # Containment labels agree with the polygon's volume (2000 uniform points: 3 sigma ~ 10%).
    polygon_fraction = trimesh.load(ball_stl).volume / (2 * norm.scale) ** 3
    assert task.held_labels.float().mean().item() == pytest.approx(polygon_fraction, rel=0.1)
    model = BallLogit(norm.apply(CENTRE[None])[0], RADIUS / norm.scale)
    metrics = task.evaluate(model)
    # Only held-back points between the polygon and the true sphere can disagree: the shell
    # holds 3.4% of the ball's volume (the icosphere's volume deficit at 2 subdivisions).
    assert metrics["iou"] > 0.9 and metrics["accuracy"] > 0.97
    mesh = task.final_mesh(model)
    voxel = 2 * 1.02 / (24 - 1) * norm.scale
    assert np.abs(np.linalg.norm(mesh.vertices - CENTRE, axis=1) - RADIUS).max() < voxel
    assert metrics["watertight"] is True and metrics["normal_consistency"] > 0.97
    assert metrics["mesh_mode"] == "dense"


def test_fit_occupancy_and_mesh_from_the_command_line(ball_stl, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "occupancy", str(ball_stl), "--steps", "3", "--out", str(out),
                 *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert 0 <= metrics["iou"] <= 1 and 0 <= metrics["accuracy"] <= 1
    assert (out / "mesh.ply").is_file() and (out / "preview.png").is_file()
    capsys.readouterr()
    assert main(["mesh", str(out), "--resolution", "10", "--out", str(tmp_path / "m.ply")]) == 0
    assert json.loads(capsys.readouterr().out)["level"] == 0.5
    assert main(["mesh", str(out), "--coarse-to-fine", "--out", str(tmp_path / "c.ply")]) == 2
    assert "signed distance" in capsys.readouterr().err


def test_a_mesh_that_is_not_watertight_is_refused(tmp_path, capsys):
    box = trimesh.creation.box()
    opened = tmp_path / "open.obj"
    trimesh.Trimesh(box.vertices, box.faces[:-2]).export(opened)
    assert main(["fit", "occupancy", str(opened), "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "not watertight" in err and "\n" not in err
    assert not (tmp_path / "r").exists()
