"""Optional dependencies: a missing one is one line naming the extra, before any work starts.

The import failure is simulated by putting ``None`` in ``sys.modules`` (``import mcubes`` then
raises ImportError, as on a machine without the package), so the tests run where the extras are
installed.
"""

import sys
from pathlib import Path

import pytest
import torch

from fastsiren.cli import main
from fastsiren.deps import EXTRAS, MissingDependency, missing, require
from fastsiren.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def _hide(monkeypatch, *modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_extras_match_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra, modules in EXTRAS.items():
        listed = {requirement.split(";")[0].split(">")[0].split("=")[0].strip().lower()
                  for requirement in extras[extra]}
        assert listed == {dist.lower() for dist in modules.values()}, extra


def test_installed_extras_pass():
    # the test extra installs mesh and video
    assert missing("mesh") == [] and missing("video") == []
    require("mesh", "fit sdf")


@pytest.mark.parametrize("hidden", ["trimesh", "mcubes", "rtree"])
def test_missing_module_names_its_extra(monkeypatch, hidden):
    _hide(monkeypatch, hidden)
    with pytest.raises(MissingDependency) as info:
        require("mesh", "fit sdf")
    message = str(info.value)
    assert message == (f"fit sdf needs {hidden} (the 'mesh' extra), not installed here: "
                       "pip install 'fastsiren[mesh]'")
    # an InputError (the CLI's one line, exit 2) and an ImportError (guarded imports still work)
    assert isinstance(info.value, InputError) and isinstance(info.value, ImportError)


def test_unknown_extra_is_a_programming_error():
    with pytest.raises(KeyError, match="unknown extra 'meshes'"):
        require("meshes")


def _one_line_exit_2(capsys, argv, expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err
    return lines[0]


@pytest.mark.parametrize("task,hidden", [("sdf", "mcubes"), ("occupancy", "trimesh")])
def test_fit_stops_before_any_step(capsys, monkeypatch, tmp_path, task, hidden):
    _hide(monkeypatch, hidden)
    steps = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda *a, **k: steps.append(1))
    out = tmp_path / "run"
    _one_line_exit_2(capsys, ["fit", task, "--out", str(out), "--steps", "2", "--quiet"],
                     f"fastsiren fit: error: fit {task} needs {hidden} (the 'mesh' extra)")
    assert steps == [] and not out.exists()  # nothing trained, no run folder left behind


def test_mesh_command_stops_before_reading_the_run(capsys, monkeypatch, tmp_path):
    _hide(monkeypatch, "mcubes")
    out = tmp_path / "shape.ply"
    # the run folder does not exist either: the dependency is checked first
    _one_line_exit_2(capsys, ["mesh", str(tmp_path / "no-run"), "--out", str(out)],
                     "fastsiren mesh: error: fastsiren mesh needs mcubes (the 'mesh' extra)")
    assert not out.exists()


def test_extract_mesh_checks_before_evaluating(monkeypatch):
    from fastsiren.mesh import extract_mesh

    _hide(monkeypatch, "mcubes")
    calls = []

    def field(x):
        calls.append(len(x))
        return x.norm(dim=-1) - 0.5

    with pytest.raises(MissingDependency, match="extract_mesh needs mcubes"):
        extract_mesh(field, 16)
    assert calls == []


def test_mp4_without_the_video_extra(monkeypatch, tmp_path):
    from fastsiren.io.video import has_mp4_support, read_video

    _hide(monkeypatch, "imageio_ffmpeg")
    assert not has_mp4_support()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read: the dependency is checked first")
    with pytest.raises(MissingDependency) as info:
        read_video(str(clip))
    assert str(info.value) == ("reading .mp4 needs imageio_ffmpeg (the 'video' extra), not "
                               "installed here: pip install 'fastsiren[video]'")
