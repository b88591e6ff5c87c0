"""The sdf task: its loss against the official formula on nested autograd (float64), its mesh in
the input's units with metrics checked on an analytic sphere, and the CLI end to end."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("mcubes")

from fastsiren.reference import gradient  # noqa: E402

import fastsiren as fs  # noqa: E402
from fastsiren.cli import main  # noqa: E402
from fastsiren.mesh_metrics import mesh_metrics  # noqa: E402
from fastsiren.tasks.base import FitContext  # noqa: E402
from fastsiren.tasks.sdf import SdfSettings, SdfTask  # noqa: E402

CPU = FitContext(torch.device("cpu"))
CENTRE, RADIUS = np.array([5.0, -1.0, 2.0]), 2.0
TINY = ["--width", "16", "--depth", "1", "--batch", "64", "--resolution", "12",
        "--metric-samples", "500", "--quiet"]


@pytest.fixture
def sphere_ply(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS)
    sphere.apply_translation(CENTRE)
    path = tmp_path / "sphere.ply"
    sphere.export(path)
    return path


def official_sdf_loss(model, coords, normals_on):
    """loss_functions.sdf of the official code, on autograd: on-surface rows carry gt sdf 0 and
    their normals, off-surface rows sdf -1 and normals -1, every term a mean over all rows."""
    n_on = normals_on.shape[0]
    coords = coords.clone().requires_grad_(True)
    pred = model(coords)
    grad = gradient(pred, coords)
    gt_sdf = torch.cat([torch.zeros(n_on, 1), -torch.ones(len(coords) - n_on, 1)]).double()
    gt_normals = torch.cat([normals_on, -torch.ones(len(coords) - n_on, 3).double()])
    on = gt_sdf != -1
    sdf = torch.where(on, pred, torch.zeros_like(pred))
    inter = torch.where(on, torch.zeros_like(pred), torch.exp(-1e2 * torch.abs(pred)))
    normal = torch.where(on, 1 - F.cosine_similarity(grad, gt_normals, dim=-1)[..., None],
                         torch.zeros_like(grad[..., :1]))
    eikonal = torch.abs(grad.norm(dim=-1) - 1)
    return {"sdf": sdf.abs().mean() * 3e3, "inter": inter.mean() * 1e2,
            "normal": normal.mean() * 1e2, "grad": eikonal.mean() * 5e1}


def test_loss_matches_the_official_formula_on_the_float64_reference():
    settings = SdfSettings(width=16, depth=2, batch=50).resolved(torch.device("cpu"))
    task = SdfTask.create(settings, CPU)  # the built-in kitten
    batch = {k: v.double() for k, v in task.sample(0, torch.Generator().manual_seed(3)).items()}
    fast = task.build_model().double()
    reference = fs.reference.Siren(3, 16, 2, 1, outermost_linear=True).double()
    reference.load_state_dict(fast.state_dict())
    loss_fast, terms_fast = task.loss(task.jet(fast, batch), batch)
    terms_ref = official_sdf_loss(reference, batch["coords"], batch["normals"])
    for name, term in terms_ref.items():
        torch.testing.assert_close(terms_fast[name], term.detach(), rtol=1e-12, atol=1e-12)
    loss_fast.backward()
    sum(terms_ref.values()).backward()
    grads_ref = dict(reference.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads_ref[name].grad, rtol=1e-9, atol=1e-10)


def test_mesh_in_input_units_and_metrics_on_an_analytic_sphere(sphere_ply):
    # The field is the exact SDF of the input sphere in network coordinates; the mesh must come
    # back onto the input sphere (a wrong inverse map moves it by the offset, about 5 units).
    settings = SdfSettings(input=str(sphere_ply), points=3000, resolution=40,
                           coarse_to_fine=True, metric_samples=20000).resolved(torch.device("cpu"))
    task = SdfTask.create(settings, CPU)
    norm = task.normalization
    centre = torch.tensor(norm.apply(CENTRE[None])[0], dtype=torch.float32)
    task.field = lambda model: (lambda x: (x - centre).norm(dim=-1) - RADIUS / norm.scale)
    metrics = task.evaluate(model=None)
    mesh = task.final_mesh(None)
    voxel = 2 * 1.02 / (40 - 1) * norm.scale
    assert np.abs(np.linalg.norm(mesh.vertices - CENTRE, axis=1) - RADIUS).max() < voxel
    assert metrics["watertight"] is True
    assert metrics["normal_consistency"] > 0.97
    # Both meshes are within a voxel of each other; what remains is the spacing of the 3000
    # input points and 20000 mesh samples on a sphere of area 50 (about 0.13 and 0.05 units).
    assert metrics["chamfer"] < 0.15
    assert metrics["chamfer_relative"] == pytest.approx(
        metrics["chamfer"] / np.linalg.norm(np.ptp(task.cloud.points, axis=0)))
    assert metrics["mesh_mode"] == "coarse_to_fine"
    # Flipped input normals are reported as such.
    flipped = mesh_metrics(mesh, task.cloud.points, -task.cloud.normals, 20000)
    assert flipped["normal_consistency"] == pytest.approx(-metrics["normal_consistency"])


def test_fit_sdf_and_mesh_from_the_command_line(sphere_ply, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "sdf", str(sphere_ply), "--points", "300", "--steps", "3",
                 "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    for key in ("chamfer", "chamfer_relative", "normal_consistency", "watertight",
                "mesh_evaluations"):
        assert key in summary["metrics"]
    assert summary["data"]["points"] == 300
    from PIL import Image

    assert Image.open(out / "preview.png").size == (512, 512)
    capsys.readouterr()
    assert main(["mesh", str(out), "--resolution", "10", "--out", str(tmp_path / "m.obj")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["units"] == "input" and report["evaluations"] == 1000
    assert (tmp_path / "m.obj").is_file()


def _error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_fails_in_one_line(tmp_path, capsys):
    no_normals = tmp_path / "bare.xyz"
    np.savetxt(no_normals, np.random.default_rng(0).normal(size=(10, 3)))
    err = _error_line(capsys, ["fit", "sdf", str(no_normals), "--out", str(tmp_path / "r")])
    assert "no normals" in err and "estimate" in err
    assert not (tmp_path / "r").exists()
    err = _error_line(capsys, ["mesh", str(tmp_path / "nothing"), "--out", "m.ply"])
    assert "checkpoint" in err
    err = _error_line(capsys, ["mesh", str(tmp_path), "--out", str(tmp_path / "m.vtk")])
    assert ".ply" in err
