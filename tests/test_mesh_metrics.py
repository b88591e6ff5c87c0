"""The standard mesh evaluation (fastsiren.mesh_metrics) on analytic shapes, whose distances,
F-scores, normal consistency, pieces and IoU are known in closed form, and ``fastsiren
eval-mesh`` end to end with its one-line errors."""

import json

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from fastsiren.cli import main  # noqa: E402
from fastsiren.errors import InputError  # noqa: E402
from fastsiren.mesh import Mesh  # noqa: E402
from fastsiren.mesh_metrics import compare_meshes, count_pieces, mesh_metrics  # noqa: E402

SAMPLES = 100_000


def sphere(radius=1.0, centre=(0.0, 0.0, 0.0), subdivisions=5):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    mesh.apply_translation(centre)
    return mesh


def test_concentric_spheres_distances_fscores_and_iou():
    # Radius 1.02 against 1: every point is 0.02 from the other surface (plus the spacing of
    # the samples, about 0.006 on a unit sphere, which adds under 10% in quadrature).
    pred, ref = sphere(1.02), sphere(1.0)
    m = compare_meshes(pred, ref, SAMPLES, seed=1)
    diagonal = 2 * np.sqrt(3)
    assert m["diagonal"] == pytest.approx(diagonal, rel=1e-3)
    for name in ("pred_to_ref", "ref_to_pred", "chamfer_l1"):
        assert m[name] == pytest.approx(0.02, rel=0.1), name
    assert m["chamfer_l1_relative"] == pytest.approx(m["chamfer_l1"] / m["diagonal"])
    assert m["chamfer_l2"] == pytest.approx(0.02**2, rel=0.2)
    assert 0.02 <= m["hausdorff"] < 0.03
    # tau = 1% of the diagonal (0.035) holds every point, 0.5% (0.017) none.
    assert m["fscore_1"] == pytest.approx(1.0)
    assert m["fscore_0.5"] < 0.01
    assert m["normal_consistency"] > 0.999
    assert m["pieces"] == 1 and m["watertight"] is True
    assert m["iou"] == pytest.approx((1 / 1.02) ** 3, abs=0.005)
    smaller = compare_meshes(sphere(0.9), ref, SAMPLES, seed=1)
    assert smaller["iou"] == pytest.approx(0.9**3, abs=0.005)
    assert smaller["chamfer_l1"] == pytest.approx(0.1, rel=0.03)


def test_flipped_orientation_pieces_and_open_meshes():
    ref = sphere(1.0)
    flipped = sphere(1.0)
    flipped.invert()
    assert compare_meshes(flipped, ref, 20_000)["normal_consistency"] < -0.99
    two = trimesh.util.concatenate([sphere(0.3, (-1, 0, 0), 3), sphere(0.3, (1, 0, 0), 3)])
    assert count_pieces(two) == 2
    assert compare_meshes(two, ref, 20_000)["pieces"] == 2
    # An unwelded copy (every face its own vertices) is still one piece.
    soup = sphere(1.0, subdivisions=2)
    soup = trimesh.Trimesh(soup.vertices[soup.faces].reshape(-1, 3),
                           np.arange(3 * len(soup.faces)).reshape(-1, 3), process=False)
    assert count_pieces(soup) == 1
    open_sphere = sphere(1.0)
    open_sphere.update_faces(np.arange(len(open_sphere.faces)) > 0)
    result = compare_meshes(open_sphere, ref, 20_000)
    assert result["watertight"] is False and result["iou"] is None


def test_against_oriented_points_as_a_scan():
    # A reference given as points is used as it is (no IoU: points have no inside).
    ref = sphere(1.0)
    points, face = trimesh.sample.sample_surface(ref, 50_000, seed=5)
    m = compare_meshes(sphere(1.02), (points, ref.face_normals[face]), SAMPLES)
    assert m["ref_to_pred"] == pytest.approx(0.02, rel=0.15)
    assert m["iou"] is None and m["normal_consistency"] > 0.99
    run = mesh_metrics(Mesh(sphere(1.02).vertices, sphere(1.02).faces), points,
                       ref.face_normals[face], SAMPLES)
    assert run["chamfer"] == pytest.approx(2 * run["chamfer_l1"])


def test_bad_input_is_one_line():
    ref = sphere(1.0, subdivisions=2)
    with pytest.raises(InputError, match="no faces"):
        compare_meshes(trimesh.Trimesh(ref.vertices, np.zeros((0, 3), int)), ref)
    bad = ref.copy()
    bad.vertices[3] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        compare_meshes(bad, ref)
    with pytest.raises(InputError, match="no normals"):
        compare_meshes(ref, (ref.vertices, None))


def _error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_eval_mesh_command(tmp_path, capsys):
    pred, gt = tmp_path / "pred.ply", tmp_path / "gt.off"
    sphere(1.02, subdivisions=4).export(pred)
    sphere(1.0, subdivisions=4).export(gt)
    assert main(["eval-mesh", str(pred), str(gt), "--samples", "50000"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["chamfer_l1"] == pytest.approx(0.02, rel=0.15)
    assert report["pieces"] == 1 and report["iou"] == pytest.approx(0.942, abs=0.01)
    # A scan as the reference: .xyz rows x y z nx ny nz.
    points, face = trimesh.sample.sample_surface(sphere(1.0), 5000, seed=2)
    scan = tmp_path / "scan.xyz"
    np.savetxt(scan, np.hstack([points, sphere(1.0).face_normals[face]]))
    assert main(["eval-mesh", str(pred), str(scan)]) == 0
    assert json.loads(capsys.readouterr().out)["iou"] is None
    bare = tmp_path / "bare.xyz"
    np.savetxt(bare, points)
    assert "no normals" in _error_line(capsys, ["eval-mesh", str(pred), str(bare)])
    assert "does not exist" in _error_line(capsys, ["eval-mesh", str(tmp_path / "x.ply"),
                                                    str(gt)])
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(points).export(cloud)
    assert "no faces" in _error_line(capsys, ["eval-mesh", str(cloud), str(gt)])
