"""Oriented point clouds: formats, the official normalisation and its inverse, bad input."""

from pathlib import Path

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from fastsiren.errors import InputError  # noqa: E402
from fastsiren.io.mesh import read_mesh  # noqa: E402
from fastsiren.io.pointcloud import Normalization, read_oriented_points  # noqa: E402

KITTEN = Path(__file__).resolve().parents[1] / "fastsiren" / "data" / "kitten.xyz"


def write_xyz(path, rows):
    np.savetxt(path, np.asarray(rows, dtype=np.float64))
    return path


def write_ply_points(path, xyz, normals=None):
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals is not None else [])
    header = ["ply", "format ascii 1.0", f"element vertex {len(xyz)}"]
    header += [f"property float {n}" for n in names] + ["end_header"]
    rows = xyz if normals is None else np.hstack([xyz, normals])
    path.write_text("\n".join(header + [" ".join(f"{v:.9g}" for v in r) for r in rows]) + "\n")
    return path


def test_xyz_reads_points_and_unit_normals(tmp_path):
    rows = [[0, 0, 0, 0, 0, 2], [1, 0, 0, 0, 3, 0], [0, 1, 0, 4, 0, 0], [0, 0, 1, 1, 1, 1]]
    cloud = read_oriented_points(write_xyz(tmp_path / "c.xyz", rows))
    np.testing.assert_array_equal(cloud.points, np.asarray(rows, float)[:, :3])
    np.testing.assert_allclose(np.linalg.norm(cloud.normals, axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(cloud.normals[0], [0, 0, 1])


def test_normalization_is_the_official_one_and_inverts_exactly():
    cloud = read_oriented_points(KITTEN)
    assert len(cloud) == 5210
    norm = Normalization.fit(cloud.points)
    normalized = norm.apply(cloud.points)
    # The official dataio.PointCloud, written out: centre on the mean, scale by the extreme
    # coordinates over all axes into [0, 1], then to [-1, 1].
    centred = cloud.points - cloud.points.mean(axis=0, keepdims=True)
    official = (centred - centred.min()) / (centred.max() - centred.min()) * 2 - 1
    np.testing.assert_allclose(normalized, official, rtol=0, atol=1e-15)
    assert normalized.min() == pytest.approx(-1, abs=1e-15)
    assert normalized.max() == pytest.approx(1, abs=1e-15)
    # The inverse brings the input's own coordinates back to float64 rounding (a few ulps of the
    # bbox size: one multiply and one add).
    extent = np.abs(cloud.points).max()
    np.testing.assert_allclose(norm.invert(normalized), cloud.points, rtol=0,
                               atol=4 * np.finfo(np.float64).eps * extent)
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_ply_point_cloud_with_normals(tmp_path):
    gen = np.random.default_rng(0)
    xyz, normals = gen.normal(size=(20, 3)), gen.normal(size=(20, 3))
    cloud = read_oriented_points(write_ply_points(tmp_path / "c.ply", xyz, normals))
    np.testing.assert_allclose(cloud.points, xyz, rtol=1e-7)
    unit = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    np.testing.assert_allclose(cloud.normals, unit, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".off", ".stl"])
def test_mesh_sampled_to_oriented_points(tmp_path, suffix):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=2.0)
    path = tmp_path / f"sphere{suffix}"
    sphere.export(path)
    cloud = read_oriented_points(path, points=500, seed=3)
    assert len(cloud) == 500
    radii = np.linalg.norm(cloud.points, axis=1)
    assert radii.max() <= 2.0 + 1e-6 and radii.min() > 1.9  # on the faces, inside the sphere
    # Face normals point outward: nearly radial on a subdivided sphere.
    cosine = (cloud.normals * cloud.points).sum(axis=1) / radii
    assert cosine.min() > 0.95
    again = read_oriented_points(path, points=500, seed=3)
    np.testing.assert_array_equal(again.points, cloud.points)


def test_bad_input(tmp_path):
    good = [[0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 1]]
    cases = {
        "no normals": write_xyz(tmp_path / "a.xyz", np.asarray(good)[:, :3]),
        "expected 6 columns": write_xyz(tmp_path / "b.xyz", np.asarray(good)[:, :5]),
        "NaN or infinite coordinates": write_xyz(
            tmp_path / "c.xyz", good + [[np.nan, 0, 0, 0, 0, 1]]),
        "normal\\(s\\) are NaN or infinite": write_xyz(
            tmp_path / "d.xyz", good + [[1, 1, 0, 0, np.inf, 1]]),
        "zero length": write_xyz(tmp_path / "e.xyz", good + [[1, 1, 0, 0, 0, 0]]),
        "all at one point": write_xyz(tmp_path / "f.xyz", [[1, 2, 3, 0, 0, 1]] * 4),
        "on one line": write_xyz(tmp_path / "g.xyz", [[t, 2 * t, 3, 0, 0, 1] for t in range(5)]),
        "no nx ny nz": write_ply_points(tmp_path / "h.ply", np.eye(3)),
        "unsupported extension": write_xyz(tmp_path / "i.pcd", good),
        "does not exist": tmp_path / "missing.xyz",
    }
    obj = tmp_path / "j.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    cases["no faces"] = obj
    for message, path in cases.items():
        with pytest.raises(InputError, match=message):
            read_oriented_points(path, points=10)


def test_read_mesh_checks_watertight(tmp_path):
    box = trimesh.creation.box()
    closed = tmp_path / "box.stl"
    box.export(closed)
    assert read_mesh(closed, watertight=True).is_watertight
    opened = tmp_path / "open.obj"
    trimesh.Trimesh(box.vertices, box.faces[:-2]).export(opened)
    with pytest.raises(InputError, match="not watertight"):
        read_mesh(opened, watertight=True)
