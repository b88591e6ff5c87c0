"""The sdf task: its loss against the official formula on nested autograd (float64), its mesh in
the input's units with metrics checked on an analytic sphere, and the CLI end to end."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("mcubes")

from fastsiren.reference import gradient, laplace  # noqa: E402

import fastsiren as fs  # noqa: E402
from fastsiren.cli import main  # noqa: E402
from fastsiren.mesh_metrics import mesh_metrics  # noqa: E402
from fastsiren.tasks.base import FitContext  # noqa: E402
from fastsiren.tasks.sdf import (  # noqa: E402
    LOSS_PRESETS,
    SPHERE_INIT_RADIUS,
    SdfSettings,
    SdfTask,
    laplacian_weight,
    point_spacing,
    sdf_loss,
    sphere_init,
)

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
    settings = SdfSettings(width=16, depth=2, batch=50, loss="official"
                           ).resolved(torch.device("cpu"))
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
    # Relative to the input mesh's bounding box (the icosphere's vertices: about 2 R per axis).
    assert metrics["diagonal"] == pytest.approx(2 * RADIUS * np.sqrt(3), rel=0.05)
    assert metrics["chamfer_relative"] == pytest.approx(metrics["chamfer"] / metrics["diagonal"])
    assert metrics["mesh_mode"] == "coarse_to_fine"
    # Flipped input normals are reported as such.
    against_points = mesh_metrics(mesh, task.cloud.points, task.cloud.normals, 20000)
    flipped = mesh_metrics(mesh, task.cloud.points, -task.cloud.normals, 20000)
    assert against_points["normal_consistency"] > 0.97
    assert flipped["normal_consistency"] == pytest.approx(-against_points["normal_consistency"])


def test_fit_sdf_and_mesh_from_the_command_line(sphere_ply, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "sdf", str(sphere_ply), "--points", "300", "--steps", "3",
                 "--sphere-init-steps", "5", "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    for key in ("chamfer", "chamfer_relative", "normal_consistency", "watertight",
                "mesh_evaluations", "pieces"):
        assert key in summary["metrics"]
    assert summary["data"]["points"] == 300
    from PIL import Image

    from fastsiren.tasks.common import picture_labels

    preview = out / "preview.png"
    assert Image.open(preview).size[1] == 512
    labels = picture_labels(preview)
    assert labels["title"].startswith("sdf: the level set 0")
    if summary["metrics"]["mesh_faces"]:  # the colour bar of the curvature
        assert "mean curvature (1 / input units)" in [a["ylabel"] for a in labels["axes"]]
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


def regularized_sdf_loss(model, coords, normals_on, weight):
    """The official terms plus weight * sum(|lap f|) / P over the off-surface rows, all on
    nested autograd (reference.laplace: the divergence of the gradient)."""
    terms = official_sdf_loss(model, coords, normals_on)
    n_on = normals_on.shape[0]
    off = coords[n_on:].clone().requires_grad_(True)
    lap = laplace(model(off), off)
    terms["laplacian"] = weight * lap.abs().sum() / len(coords)
    return terms


def test_laplacian_term_matches_nested_autograd_in_float64():
    settings = SdfSettings(width=16, depth=2, batch=50, steps=100, sphere_init_steps=0,
                           laplacian_weight=100.0, laplacian_until=0.5
                           ).resolved(torch.device("cpu"))
    task = SdfTask.create(settings, CPU)
    for step, weight in ((0, 100.0), (20, 60.0)):
        batch = task.sample(step, torch.Generator().manual_seed(3))
        assert float(batch["laplacian_weight"]) == pytest.approx(weight)
        batch = {k: v.double() for k, v in batch.items()}
        fast = task.build_model().double()
        reference = fs.reference.Siren(3, 16, 2, 1, outermost_linear=True).double()
        reference.load_state_dict(fast.state_dict())
        loss_fast, terms_fast = task.loss(task.jet(fast, batch), batch)
        terms_ref = regularized_sdf_loss(reference, batch["coords"], batch["normals"], weight)
        assert set(terms_fast) == set(terms_ref)
        for name, term in terms_ref.items():
            torch.testing.assert_close(terms_fast[name], term.detach(), rtol=1e-11, atol=1e-11)
        loss_fast.backward()
        sum(terms_ref.values()).backward()
        grads_ref = dict(reference.named_parameters())
        for name, p in fast.named_parameters():
            torch.testing.assert_close(p.grad, grads_ref[name].grad, rtol=1e-9, atol=1e-10)
    # Past laplacian_until * steps the term is gone and the step is the official one again.
    late = task.sample(50, torch.Generator().manual_seed(3))
    assert "laplacian_weight" not in late


def test_laplacian_schedule():
    assert laplacian_weight(0, 100, 50.0, 0.5) == 50.0
    assert laplacian_weight(25, 100, 50.0, 0.5) == 25.0
    assert laplacian_weight(50, 100, 50.0, 0.5) == 0.0
    assert laplacian_weight(0, 100, 50.0, 0.0) == 0.0
    assert laplacian_weight(99, 100, 50.0, 1.0) == pytest.approx(0.5)


def test_presets_and_the_sphere_start():
    cpu = torch.device("cpu")
    official = SdfTask.create(SdfSettings(width=16, depth=1, loss="official").resolved(cpu), CPU)
    assert official.sphere_init_steps == 0 and official.laplacian == 0
    # the preset fills what is unset, into the settings the run records; yours win
    assert SdfSettings().resolved(cpu).laplacian_weight == \
        LOSS_PRESETS["regularized"]["laplacian_weight"]
    assert SdfSettings(laplacian_weight=0.0).resolved(cpu).laplacian_weight == 0.0
    assert SdfSettings(loss="official", sphere_init_steps=7).resolved(cpu).sphere_init_steps == 7
    assert "laplacian_weight" not in official.sample(0, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = official.build_model()
    regular = SdfTask.create(SdfSettings(width=16, depth=1, sphere_init_steps=150, lr=1e-3
                                         ).resolved(cpu), CPU)
    assert regular.laplacian > 0
    torch.manual_seed(0)
    started = regular.build_model()
    x = torch.rand(4000, 3, generator=torch.Generator().manual_seed(9)) * 2 - 1
    target = x.norm(dim=-1) - SPHERE_INIT_RADIUS
    with torch.no_grad():
        error_plain = (plain(x)[:, 0] - target).abs().mean()
        error_started = (started(x)[:, 0] - target).abs().mean()
    # SIREN's initialisation is a random field about 0 (error ~ the mean of | |x| - 0.5 |);
    # the started one is the sphere to within a small fraction of that.
    assert error_started < 0.2 * error_plain


def test_near_surface_samples_follow_the_point_spacing_and_skip_the_exp_term(sphere_ply):
    cpu = torch.device("cpu")
    task = SdfTask.create(SdfSettings(input=str(sphere_ply), points=2000, width=16, depth=1,
                                      batch=400, near_surface=0.25).resolved(cpu), CPU)
    batch = task.sample(0, torch.Generator().manual_seed(0))
    assert batch["coords"].shape == (800, 3) and task.n_near == 100
    near = batch["coords"][-100:]
    uniform = batch["coords"][400:700]
    # near points scatter about the sphere (radius ~1 in network units) by about a spacing
    # (the radial part of N(0, sigma^2 I) has mean |.| 0.8 sigma); uniform ones much further
    radius = task.coords.norm(dim=-1).mean()
    spacing = float(task.spacing.mean())
    assert 0.05 < spacing < 0.4
    near_off = (near.norm(dim=-1) - radius).abs().mean()
    assert 0.4 * spacing < near_off < 1.6 * spacing
    assert (uniform.norm(dim=-1) - radius).abs().mean() > 2 * near_off
    # the spacing is the 10th-neighbour distance
    points = np.array([[float(i), 0.0, 0.0] for i in range(12)])
    assert point_spacing(points)[0] == pytest.approx(10.0)
    # the exp term counts the uniform off-surface points only
    value, grad = torch.zeros(6, dtype=torch.float64), torch.ones(6, 3, dtype=torch.float64)
    normals = torch.ones(2, 3, dtype=torch.float64)
    all_off = sdf_loss(value, grad, normals, 2)[1]["inter"]
    two_near = sdf_loss(value, grad, normals, 2, n_near=2)[1]["inter"]
    assert all_off == pytest.approx(1e2 * 4 / 6) and two_near == pytest.approx(1e2 * 2 / 6)


def test_sphere_init_leaves_the_fit_random_streams_alone():
    model = fs.Siren(3, 8, 1, 1, outermost_linear=True)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    sphere_init(model, 2, 1e-4, seed=0)
    assert torch.equal(torch.rand(3), expected)


class SphereSdf(torch.nn.Module):
    """The exact SDF of a sphere in network coordinates (no jet: autograd serves it)."""

    def __init__(self, centre, radius):
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32))
        self.radius = radius

    def forward(self, x):
        return (x - self.centre).norm(dim=-1, keepdim=True) - self.radius


def test_mesh_curvature_projection_and_standard_metrics_against_the_input_mesh(
        sphere_ply, tmp_path):
    settings = SdfSettings(input=str(sphere_ply), points=3000, resolution=24,
                           project_vertices=True, metric_samples=20000
                           ).resolved(torch.device("cpu"))
    task = SdfTask.create(settings, CPU)
    norm = task.normalization
    model = SphereSdf(norm.apply(CENTRE[None])[0], RADIUS / norm.scale)
    metrics = task.evaluate(model)
    mesh = task.final_mesh(model)
    # Projected vertices lie on the sphere far below the grid spacing (0.18 input units).
    assert np.abs(np.linalg.norm(mesh.vertices - CENTRE, axis=1) - RADIUS).max() < 1e-4
    curvature = mesh.vertex_values["mean_curvature"]  # in 1 / input units
    np.testing.assert_allclose(curvature, 1 / RADIUS, rtol=5e-3)
    assert metrics["reference"] == "input mesh" and metrics["pieces"] == 1
    # What is left: the input icosphere's chords (3 subdivisions: up to ~1% of the radius inside
    # the true sphere) and the spacing of 20000 samples on an area of 50 (about 0.05 units).
    assert metrics["chamfer_l1"] < 0.02 * RADIUS and metrics["iou"] > 0.97
    paths = task.write_outputs(model, tmp_path)
    written = trimesh.load(paths[0], process=False)
    values = written.metadata["_ply_raw"]["vertex"]["data"]["mean_curvature"]
    np.testing.assert_allclose(values, 1 / RADIUS, rtol=5e-3)
