"""Video task: the official voxel grid, the loss against its float64 twin, an end-to-end fit
with its outputs, the device defaults and bad input."""

import json

import fastsiren.reference as ref
import numpy as np
import pytest
import torch
from helpers import assert_labelled, assert_rel_close

import fastsiren as fs
from fastsiren.cli import main
from fastsiren.io.video import has_mp4_support, read_video
from fastsiren.tasks import FitContext
from fastsiren.tasks.video import VideoSettings, VideoTask, shrink_frames, voxel_grid

TINY = ["--width", "16", "--depth", "1", "--device", "cpu", "--quiet"]


@pytest.fixture
def clip_npz(tmp_path):
    """4 smooth RGB frames of 6 x 8 (a drifting wave), uint8, 5 fps."""
    t, r, c = np.meshgrid(np.arange(4), np.arange(6), np.arange(8), indexing="ij")
    planes = [0.5 + 0.4 * np.sin(0.5 * r + 0.4 * c - 0.6 * t + k) for k in range(3)]
    path = tmp_path / "clip.npz"
    np.savez(path, frames=np.round(np.stack(planes, -1) * 255).astype(np.uint8), fps=5.0)
    return path


def test_grid_is_the_official_one():
    # get_mgrid(dim=3): (t, row, col) each linspace(-1, 1), time-major then row-major.
    grid = voxel_grid(2, 3, 4)
    assert grid.shape == (24, 3)
    torch.testing.assert_close(grid[:4, 2], torch.linspace(-1, 1, 4))
    torch.testing.assert_close(grid[:12:4, 1], torch.linspace(-1, 1, 3))
    torch.testing.assert_close(grid[::12, 0], torch.tensor([-1.0, 1.0]))


def test_loss_matches_the_float64_reference_twin(clip_npz):
    settings = VideoSettings(input=str(clip_npz), width=16, depth=2,
                             batch_fraction=0.3).resolved(torch.device("cpu"))
    task = VideoTask(settings, FitContext(torch.device("cpu")))
    batch = {k: v.double() for k, v in task.sample(0, torch.Generator()).items()}
    assert batch["coords"].shape == (round(0.3 * 4 * 6 * 8), 3)  # common.random_subset
    fast = task.build_model().double()
    slow = ref.Siren(3, 16, 2, 3, outermost_linear=True).double()
    slow.load_state_dict(fast.state_dict())
    loss, _ = task.loss(task.jet(fast, batch), batch)
    twin = ((slow(batch["coords"]) - batch["target"]) ** 2).mean()  # the official image_mse
    assert_rel_close(loss, twin, 1e-13, "loss")
    grads = torch.autograd.grad(loss, list(fast.parameters()))
    for g, t in zip(grads, torch.autograd.grad(twin, list(slow.parameters()))):
        assert_rel_close(g, t, 1e-11, "parameter gradient")


def test_fit_video_end_to_end(clip_npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "video", str(clip_npz), "--out", str(out), "--steps", "40", "--lr",
                 "3e-3", "--batch-fraction", "0.5", "--log-every", "5", *TINY]) == 0
    assert "psnr" in capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["final_logged_loss"] < 0.5 * summary["first_logged_loss"]
    metrics = summary["metrics"]
    assert len(metrics["psnr_per_frame"]) == 4
    assert metrics["psnr_mean_over_frames"] == pytest.approx(np.mean(metrics["psnr_per_frame"]))
    frames, fps = read_video(out / "reconstruction.gif")
    assert frames.shape == (4, 6, 8, 3) and fps == pytest.approx(5)
    truth, _ = read_video(clip_npz)
    # The GIF is the reconstruction up to its palette: its PSNR is close to the reported one.
    psnr_gif = 10 * np.log10(1 / np.mean((frames - truth) ** 2))
    assert psnr_gif == pytest.approx(metrics["psnr"], abs=1.0)
    labels = assert_labelled(out / "frames.png", "target, frame 0", "fit, ")
    assert f"PSNR {metrics['psnr']:.1f} dB over the clip" in labels["title"]
    assert (out / "reconstruction.mp4").exists() == has_mp4_support()
    assert fs.load_model(out)(voxel_grid(2, 2, 2)).shape == (8, 3)


def test_device_defaults_and_shrinking():
    cpu = VideoSettings().resolved(torch.device("cpu"))
    cuda = VideoSettings().resolved(torch.device("cuda"))
    assert (cuda.width, cuda.depth, cuda.lr, cuda.batch_fraction, cuda.max_size) == (
        1024, 3, 1e-4, 38e-4, 0)  # the official train_video.py
    assert cpu.max_size > 0
    frames = np.random.default_rng(0).random((2, 8, 12, 3)).astype(np.float32)
    small = shrink_frames(frames, 6)
    assert small.shape == (2, 4, 6, 3)
    np.testing.assert_allclose(small[0, 0, 0], frames[0, :2, :2].mean((0, 1)), rtol=1e-5)


def test_bad_video_fails_in_one_line(tmp_path, capsys):
    np.save(tmp_path / "still.npy", np.zeros((1, 4, 4, 3), np.uint8))
    (tmp_path / "clip.txt").write_text("frames")
    run = ["--out", str(tmp_path / "run"), *TINY]
    cases = {
        "1 frame(s); a video needs at least 2": ["fit", "video", str(tmp_path / "still.npy")],
        "unsupported video format '.txt'": ["fit", "video", str(tmp_path / "clip.txt")],
        "--batch-fraction: expected a value <= 1.0": ["fit", "video", "--batch-fraction", "2"],
    }
    for expected, argv in cases.items():
        assert main([*argv, *run]) == 2, expected
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()
