"""The image task: the official grid and value mapping, its loss against the float64 reference
twin, an end-to-end fit with its outputs, inpainting and rendering, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_labelled
from PIL import Image

import fastsiren as fs
from fastsiren.cli import main
from fastsiren.errors import InputError
from fastsiren.fit import load_checkpoint, save_checkpoint
from fastsiren.tasks import FitContext
from fastsiren.tasks.common import pixel_grid
from fastsiren.tasks.image import ImageSettings, ImageTask

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


TINY = ["--width", "16", "--depth", "1", "--device", "cpu", "--quiet"]


def smooth_image(height, width, channels, seed=0):
    """A smooth random picture (a few low-frequency waves) as uint8."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    planes = [0.5 + 0.4 * np.sin(rng.uniform(2, 6) * rows + rng.uniform(2, 6) * cols
                                 + rng.uniform(0, 6)) for _ in range(channels)]
    image = np.stack(planes, -1) if channels > 1 else planes[0]
    return (image * 255).round().astype(np.uint8)


@pytest.fixture
def rgb_png(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(smooth_image(12, 20, 3)).save(path)
    return path


def test_grid_is_the_official_one():
    # get_mgrid: (row, col) each linspace(-1, 1), row-major, first coordinate the row.
    grid = pixel_grid(3, 4)
    assert grid.shape == (12, 2)
    torch.testing.assert_close(grid[:4, 0], torch.full((4,), -1.0))
    torch.testing.assert_close(grid[:4, 1], torch.linspace(-1, 1, 4))
    torch.testing.assert_close(grid[::4, 0], torch.linspace(-1, 1, 3))


def test_values_and_shape_follow_the_file(rgb_png):
    settings = ImageSettings(input=str(rgb_png), width=8).resolved(torch.device("cpu"))
    task = ImageTask.create(settings, FitContext(torch.device("cpu")))
    assert (task.in_features, task.out_features, task.shape) == (2, 3, (12, 20))
    pixels = np.asarray(Image.open(rgb_png), dtype=np.float32) / 255
    torch.testing.assert_close(task.target, torch.from_numpy(pixels).reshape(-1, 3) * 2 - 1)


def test_loss_matches_the_float64_reference_twin(rgb_png):
    # The task's loss on the fast jet and on nested autograd (fastsiren.reference), float64:
    # same value and same weight gradients up to rounding.
    settings = ImageSettings(input=str(rgb_png), width=16).resolved(torch.device("cpu"))
    task = ImageTask.create(settings, FitContext(torch.device("cpu")))
    batch = {k: v.double() for k, v in task.sample(0, torch.Generator()).items()}
    fast = task.build_model().double()
    reference = fs.reference.Siren(2, 16, 3, 3, outermost_linear=True).double()
    reference.load_state_dict(fast.state_dict())
    loss_fast, _ = task.loss(task.jet(fast, batch), batch)
    loss_ref = (reference(batch["coords"]) - batch["target"]).square().mean()
    loss_fast.backward()
    loss_ref.backward()
    torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-12, atol=0)
    grads_ref = dict(reference.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads_ref[name].grad, rtol=1e-9, atol=1e-12)


def test_fit_image_end_to_end(rgb_png, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "image", str(rgb_png), "--out", str(out), "--steps", "40", "--lr",
                 "3e-3", "--log-every", "5", "--render-size", "24x40", *TINY]) == 0
    assert "psnr" in capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["final_logged_loss"] < 0.5 * summary["first_logged_loss"]
    assert summary["data"]["height"] == 12 and summary["data"]["channels"] == 3
    sizes = {name: Image.open(out / f"{name}.png").size for name in
             ("target", "reconstruction", "gradient", "laplacian", "render")}
    assert sizes["render"] == (40, 24) and sizes["reconstruction"] == (20, 12)
    labels = assert_labelled(out / "comparison.png", "target", "reconstruction, PSNR",
                             "gradient magnitude", "Laplacian", colorbars=2)
    assert f"PSNR {summary['metrics']['psnr']:.1f} dB" in labels["title"]
    # The reported PSNR is the one of the written reconstruction (up to 8-bit rounding).
    recon = np.asarray(Image.open(out / "reconstruction.png"), dtype=np.float64) / 255
    truth = np.asarray(Image.open(rgb_png), dtype=np.float64) / 255
    psnr_file = 10 * np.log10(1 / np.mean((recon - truth) ** 2))
    assert psnr_file == pytest.approx(summary["metrics"]["psnr"], abs=0.1)
    # The gradient image is the jet's: the reloaded network's grad at the grid.
    model = fs.load_model(out)
    assert model.out_features == 3


def test_inpainting_reports_held_back_pixels(rgb_png, tmp_path):
    out = tmp_path / "run"  # a new folder: the input's folder holds a file the run did not write
    result = fs.fit("image", rgb_png, out=out, steps=5, keep_fraction=0.5,
                    render_range=1.5, width=8, depth=1, device="cpu", progress=False)
    metrics = result.metrics["metrics"]
    assert {"psnr", "psnr_fitted_pixels", "psnr_held_back_pixels"} <= set(metrics)
    assert result.metrics["data"]["pixels_fitted"] == 120  # half of 12 x 20
    assert Image.open(out / "render.png").size == (30, 18)  # pixel pitch kept
    assert_labelled(out / "comparison.png", "pixels fitted (50%", "held back",
                    colorbars=2)


def test_cpu_default_shrinks_the_built_in_sample():
    settings = ImageSettings().resolved(torch.device("cpu"))
    task = ImageTask.create(settings, FitContext(torch.device("cpu")))
    assert task.shape == (128, 128) and task.out_features == 1
    assert ImageSettings().resolved(torch.device("cuda")).max_size == 0  # full size on CUDA


def test_help_is_generated_from_the_settings(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "image", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--keep-fraction", "--render-size", "--batch-fraction", "--first-omega0",
                   "--resume", "(default: 200 on CPU, 10000 on CUDA)", "example:"):
        assert option in text, option


def _error_line(capsys, argv, status=2):
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_fail_in_one_line(tmp_path, capsys, rgb_png):
    run = ["--out", str(tmp_path / "run"), *TINY]
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    Image.fromarray(np.zeros((1, 5), np.uint8)).save(tmp_path / "line.png")
    cases = {
        "no such file": ["fit", "image", str(tmp_path / "missing.png"), *run],
        "not a readable image": ["fit", "image", str(tmp_path / "notes.png"), *run],
        "no images in it": ["fit", "image", str(tmp_path / "empty"), *run],
        "too small to fit": ["fit", "image", str(tmp_path / "line.png"), *run],
        "--keep-fraction: expected a value <= 1.0": ["fit", "image", "--keep-fraction", "1.5",
                                                     *run],
        "--steps: expected a value > 0": ["fit", "image", "--steps", "0", *run],
        "cannot write there": ["fit", "image", str(rgb_png), "--out",
                               str(rgb_png / "sub"), *TINY],
        "no checkpoint": ["fit", "image", "--resume", str(tmp_path / "empty"), *TINY[-1:]],
    }
    for expected, argv in cases.items():
        assert expected in _error_line(capsys, argv), expected
    for bad in (["--steps", "many"], ["--render-size", "big"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as exc:  # argparse: usage and one error line
            main(["fit", "image", *bad])
        assert exc.value.code == 2
    assert not (tmp_path / "run").exists()


def test_resume_refuses_a_checkpoint_of_another_task(tmp_path, capsys, rgb_png):
    out = tmp_path / "run"
    assert main(["fit", "image", str(rgb_png), "--out", str(out), "--steps", "2", *TINY]) == 0
    state = load_checkpoint(out)
    save_checkpoint(out / "checkpoint.pt", {**state, "task": "audio"})
    before = (out / "checkpoint.pt").read_bytes()
    err = _error_line(capsys, ["fit", "image", "--resume", str(out), "--steps", "4", *TINY])
    assert "from task 'audio', not 'image'" in err
    assert (out / "checkpoint.pt").read_bytes() == before  # nothing written is lost


def test_batch_fraction_samples_distinct_pixels_with_their_targets(rgb_png):
    settings = ImageSettings(input=str(rgb_png), batch_fraction=0.25, keep_fraction=0.5,
                             width=8).resolved(torch.device("cpu"))
    task = ImageTask.create(settings, FitContext(torch.device("cpu")))
    batch = task.sample(0, torch.Generator().manual_seed(0))
    assert batch["coords"].shape == (30, 2)  # a quarter of the 120 kept pixels
    kept = {tuple(c) for c in task.coords[task.train_index].tolist()}
    rows = {tuple(c) for c in batch["coords"].tolist()}
    assert len(rows) == 30 and rows <= kept
    index = [task.coords.tolist().index(list(c)) for c in batch["coords"].tolist()]
    torch.testing.assert_close(batch["target"], task.target[index])


def test_mask_image_selects_the_fitted_pixels(rgb_png, tmp_path):
    mask = np.zeros((12, 20), np.uint8)
    mask[:, :5] = 255  # the first five columns
    Image.fromarray(mask).save(tmp_path / "mask.png")
    settings = ImageSettings(input=str(rgb_png), mask=str(tmp_path / "mask.png"),
                             width=8).resolved(torch.device("cpu"))
    task = ImageTask.create(settings, FitContext(torch.device("cpu")))
    assert task.train_index.tolist() == [r * 20 + c for r in range(12) for c in range(5)]
    Image.fromarray(mask[:6]).save(tmp_path / "small.png")
    Image.fromarray(mask * 0).save(tmp_path / "black.png")
    for bad, message in [("small.png", "6x20 pixels"), ("black.png", "no white pixels")]:
        with pytest.raises(InputError, match=message):
            fs.fit("image", rgb_png, out=tmp_path / "run", mask=str(tmp_path / bad))
