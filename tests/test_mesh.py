"""Meshing against analytic level sets: a sphere's SDF and an occupancy-like sphere field.

Marching cubes places a vertex on a grid edge by linear interpolation of the two end values, so on
an exact SDF every vertex lies within one grid spacing of the surface (much closer in practice:
the SDF of a sphere is linear along the normal and curves only across it). Coarse-to-fine with a
true Lipschitz bound must give exactly the dense triangles: the bound only drops blocks without
a sign change.
"""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("mcubes")
trimesh = pytest.importorskip("trimesh")

import fastsiren as fs  # noqa: E402
from fastsiren.errors import InputError  # noqa: E402
from fastsiren.mesh import (  # noqa: E402
    extract_mesh,
    mean_curvature,
    plan_coarse_to_fine,
    project_to_level_set,
    save_mesh,
)

RADIUS = 0.6


def sphere_sdf(x):
    return x.norm(dim=-1) - RADIUS


def sphere_occupancy(x):
    # A smooth inside/outside indicator: above 0.5 inside, 0.5 exactly on the sphere.
    return torch.sigmoid(-20.0 * (x.norm(dim=-1) - RADIUS))


def assert_same_triangles(mesh, expected, atol):
    """The same oriented triangles up to ``atol`` per coordinate, in any order.

    Each triangle is rotated to start at its lexicographically smallest corner (orientation
    kept) and the 9-vectors are matched by nearest neighbour. ``atol`` covers float32 values that
    depend on how a field call was batched (BLAS picks kernels by matrix size).
    """
    from scipy.spatial import cKDTree

    def canonical(m):
        tri = m.vertices[m.faces]
        keys = np.round(tri, 5)
        start = np.array([min(range(3), key=lambda r, k=k: tuple(k[r])) for k in keys])
        order = (start[:, None] + np.arange(3)[None]) % 3
        return np.take_along_axis(tri, order[:, :, None], axis=1).reshape(-1, 9)

    assert len(mesh.faces) == len(expected.faces)
    got, want = canonical(mesh), canonical(expected)
    distance, match = cKDTree(want).query(got, p=np.inf)
    assert distance.max() <= atol, f"triangle off by {distance.max():.3g} > {atol}"
    assert len(np.unique(match)) == len(want)


@pytest.mark.parametrize("resolution", [24, 41])
def test_sphere_vertices_within_one_voxel(resolution):
    mesh = extract_mesh(sphere_sdf, resolution)
    voxel = 2.0 / (resolution - 1)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - RADIUS).max() < voxel
    tm = mesh.to_trimesh()
    assert tm.is_watertight
    # Outward normals: positive enclosed volume, close to the ball's.
    assert tm.volume == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.02)
    assert mesh.stats["evaluations"] == resolution**3


@pytest.mark.parametrize("resolution, block", [(42, 4), (37, 8), (30, 1)])
def test_coarse_to_fine_equals_dense(resolution, block):
    # 42 points = 41 cells: a partial leaf block at the far end of every axis.
    dense = extract_mesh(sphere_sdf, resolution)
    fine = extract_mesh(sphere_sdf, resolution, coarse_to_fine=True, lipschitz=1.0, block=block)
    assert len(fine.faces) == len(dense.faces)
    assert_same_triangles(fine, dense, atol=1e-12)
    assert fine.to_trimesh().is_watertight
    assert fine.stats["evaluations"] < dense.stats["evaluations"]
    assert 0 < fine.stats["leaf_blocks"] < fine.stats["leaf_blocks_total"]
    # The plan (descent only) counts exactly what the extraction evaluated.
    plan = plan_coarse_to_fine(sphere_sdf, resolution, lipschitz=1.0, block=block)
    assert plan["evaluations"] == fine.stats["evaluations"]
    assert plan["leaf_blocks"] == fine.stats["leaf_blocks"]


def test_occupancy_level_half_inside_above():
    resolution = 33
    mesh = extract_mesh(sphere_occupancy, resolution, level=0.5, inside="above")
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - RADIUS).max() < 2.0 / (resolution - 1)
    assert mesh.to_trimesh().volume > 0  # oriented outward


def test_siren_field_coarse_to_fine_with_its_lipschitz_bound(gen):
    # A Siren is Lipschitz with constant prod_l omega_l |W_l|_2 (|cos| <= 1): a true bound, so
    # coarse-to-fine must reproduce the dense triangles on a network's level set too.
    torch.manual_seed(0)
    model = fs.Siren(3, 16, 1, 1, outermost_linear=True, first_omega_0=3.0, hidden_omega_0=3.0)
    weights, _, omegas = model.layer_parameters()
    bound = math.prod(w * torch.linalg.matrix_norm(W, 2).item() for W, w in zip(weights, omegas))
    with torch.no_grad():
        # A level set through a point off the grid (a grid value equal to the level makes
        # zero-area triangles, which the coarse-to-fine weld drops).
        level = float(model(torch.tensor([[0.013, 0.021, -0.017]])))
    dense = extract_mesh(model, 21, level=level)
    fine = extract_mesh(model, 21, level=level, coarse_to_fine=True, lipschitz=bound, block=2)
    assert len(dense.faces) > 0
    # float32 values differ by rounding between batchings: a vertex moves by at most about
    # eps32 * |f| / |f_1 - f_0| voxels; 1e-4 of the domain is far above that and far below a voxel.
    assert_same_triangles(fine, dense, atol=1e-4)


def test_level_set_outside_the_grid_gives_an_empty_mesh():
    for coarse_to_fine in (False, True):
        mesh = extract_mesh(
            lambda x: x.norm(dim=-1) + 1.0, 12, coarse_to_fine=coarse_to_fine, lipschitz=1.0
        )
        assert mesh.vertices.shape == (0, 3) and mesh.faces.shape == (0, 3)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".stl", ".off"])
def test_save_mesh_round_trip(tmp_path, suffix):
    mesh = extract_mesh(sphere_sdf, 16)
    path = save_mesh(mesh, tmp_path / f"sphere{suffix}")
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.faces) == len(mesh.faces)
    assert loaded.volume == pytest.approx(mesh.to_trimesh().volume, rel=1e-5)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="needs 4.0 GiB"):
        extract_mesh(sphere_sdf, 1024, memory_limit=2**30)
    with pytest.raises(InputError, match="lipschitz"):
        extract_mesh(sphere_occupancy, 16, level=0.5, coarse_to_fine=True, lipschitz=None)
    with pytest.raises(InputError, match="resolution"):
        extract_mesh(sphere_sdf, 1)
    with pytest.raises(InputError, match=r"\[M\] or \[M, 1\]"):
        extract_mesh(lambda x: x, 8)
    with pytest.raises(InputError, match="NaN"):
        extract_mesh(lambda x: x[:, 0] * float("nan"), 8)
    existing = tmp_path / "keep.ply"
    existing.write_text("already here")
    with pytest.raises(InputError, match=r"\.ply, \.obj"):
        save_mesh(extract_mesh(sphere_sdf, 8), tmp_path / "keep.glb")
    with pytest.raises(InputError, match="does not exist"):
        save_mesh(extract_mesh(sphere_sdf, 8), tmp_path / "missing" / "out.ply")
    assert existing.read_text() == "already here"


class AnalyticSphere(torch.nn.Module):
    """The SDF of a sphere of radius ``RADIUS`` with a ``jet`` like a Siren's, so that the
    projection and the curvature take their jet path on it (a plain callable takes autograd)."""

    def forward(self, x):
        return sphere_sdf(x)[:, None]

    def jet(self, x, order=1):
        r = x.norm(dim=-1, keepdim=True)
        lap = (2 / r) if order == 2 else None  # div(x / r) = (d - 1) / r in d = 3
        return fs.Jet(value=r - RADIUS, grad=(x / r)[:, None, :], lap=lap)


def squared_sphere(x):
    # The same zero set as the sphere's SDF but not a distance: |grad f| = 2 |x| and marching
    # cubes' linear interpolation misplaces every vertex by O(h^2).
    return x.square().sum(-1) - RADIUS**2


@pytest.mark.parametrize("field", [squared_sphere, AnalyticSphere()], ids=["autograd", "jet"])
def test_projection_moves_vertices_onto_the_level_set(field):
    mesh = extract_mesh(field, 17, bounds=(-1.0, 1.0))
    before = np.abs(np.linalg.norm(mesh.vertices, axis=1) - RADIUS)
    projected = project_to_level_set(field, mesh.vertices, steps=3, max_move=2 / 16)
    after = np.abs(np.linalg.norm(projected, axis=1) - RADIUS)
    if field is squared_sphere:
        assert before.max() > 1e-3  # the raw vertices are visibly off
    assert after.max() < 1e-6  # float32 field values, float64 positions
    assert projected.dtype == np.float64 and projected.shape == mesh.vertices.shape
    # A move is bounded by max_move; a level other than 0 is honoured.
    shifted = project_to_level_set(field, mesh.vertices, level=0.01, steps=1, max_move=1e-4)
    assert np.linalg.norm(shifted - mesh.vertices, axis=1).max() <= 1e-4 * (1 + 1e-9)


@pytest.mark.parametrize("field", [squared_sphere, AnalyticSphere()], ids=["autograd", "jet"])
def test_mean_curvature_of_a_sphere_is_one_over_its_radius(field):
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(500, 3))
    points = RADIUS * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    curvature = mean_curvature(field, points)
    np.testing.assert_allclose(curvature, 1 / RADIUS, rtol=2e-3)
    # Off the surface: the level set through the point, a sphere of that radius.
    np.testing.assert_allclose(mean_curvature(field, 0.5 * points), 2 / RADIUS, rtol=2e-3)
