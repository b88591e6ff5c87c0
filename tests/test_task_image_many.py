"""Many images at once: one batched SIREN per dataset follows the trajectories of single-image
fits, handles mixed sizes with padding, reads folders (recursively), globs and numpy stacks,
skips unreadable images without losing the run, writes a summary (per-image outputs for small
datasets or on request), and shards across two torchrun processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_task_image import smooth_image

import fastsiren as fs
from fastsiren.errors import InputError
from fastsiren.fit import BatchedSiren, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


TINY = {"width": 12, "depth": 1, "lr": 3e-3, "device": "cpu", "progress": False}


@pytest.fixture
def folder(tmp_path):
    """Three RGB images, two sizes."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (h, w) in enumerate([(12, 20), (9, 7), (12, 20)]):
        Image.fromarray(smooth_image(h, w, 3, seed=i)).save(folder / f"im{i}.png")
    return folder


def test_batched_fit_follows_each_single_fit(folder, tmp_path, float64):
    # Loss = sum over images of each image's own mean: network b gets exactly its image's
    # gradient, padding contributes nothing, and each network starts from the single-fit init.
    # In float64 the only difference is matmul rounding (batched vs not), far below 1e-9.
    batched = fs.fit("image", folder, out=tmp_path / "all", steps=6, **TINY)
    assert isinstance(batched.model, BatchedSiren) and batched.model.n_networks == 3
    for i in range(2):  # one image of each size (image 2 is the size of image 0)
        single = fs.fit("image", folder / f"im{i}.png", out=tmp_path / f"one{i}", steps=6,
                        **TINY)
        network = fs.load_model(tmp_path / "all", index=i)
        for name, p in single.model.state_dict().items():
            torch.testing.assert_close(network.state_dict()[name].double(), p.double(),
                                       rtol=1e-9, atol=1e-12, msg=name)
        psnr_single = single.metrics["metrics"]["psnr"]
        assert batched.metrics["metrics"]["images"][i]["psnr"] == pytest.approx(psnr_single)


def test_folder_fit_writes_every_image_and_a_summary(folder, tmp_path):
    out = tmp_path / "run"
    result = fs.fit("image", folder, out=out, steps=30, batch_fraction=0.5, render_range=1.5,
                    **TINY)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["final_logged_loss"] < 0.5 * summary["first_logged_loss"]
    assert summary["signals_per_second"] > 0 and summary["metrics"]["n_images"] == 3
    assert summary["data"]["sizes"] == ["12x20", "9x7"]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["image"] for r in rows] == ["im0.png", "im1.png", "im2.png"]
    for row, image in zip(rows, result.metrics["metrics"]["images"]):
        assert float(row["psnr"]) == pytest.approx(image["psnr"])
    for name in ("target", "reconstruction", "gradient", "laplacian", "comparison", "render"):
        assert (out / "images" / "im1.png" / f"{name}.png").is_file(), name
    assert Image.open(out / "images" / "im1.png" / "reconstruction.png").size == (7, 9)
    assert Image.open(out / "images" / "im1.png" / "render.png").size == (10, 14)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["model_class"] == "BatchedSiren" and state["model_kwargs"]["n_networks"] == 3
    Image.fromarray(smooth_image(5, 5, 3)).save(folder / "late.png")
    with pytest.raises(InputError, match="no longer matches the checkpoint"):
        fs.fit("image", out=out, resume=True, steps=40, progress=False)


def test_torchrun_two_processes_shard_the_folder(folder, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "fastsiren", "fit", "image", str(folder),
               "--out", str(out), "--steps", "4", "--width", "12", "--depth", "1",
               "--device", "cpu", "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["metrics"]["n_images"] == 3
    # Rank 0 fitted images 0 and 2, rank 1 image 1 (every second file).
    assert load_checkpoint(out)["model_kwargs"]["n_networks"] == 2
    rank1 = load_checkpoint(out / "checkpoint-rank1.pt")
    assert rank1["model_kwargs"]["n_networks"] == 1
    rows = {r["image"]: float(r["psnr"]) for r in csv.DictReader((out / "summary.csv").open())}
    assert sorted(rows) == ["im0.png", "im1.png", "im2.png"]
    for name in rows:
        assert (out / "images" / name / "reconstruction.png").is_file()
    # The shard's fit is the single-process fit of that image.
    single = fs.fit("image", folder / "im1.png", out=tmp_path / "one", steps=4, width=12,
                    depth=1, device="cpu", progress=False)
    assert rows["im1.png"] == pytest.approx(single.metrics["metrics"]["psnr"], abs=1e-3)


@pytest.mark.interpret
def test_the_loop_is_backend_agnostic(folder, tmp_path, device):
    # The same fit on the Triton kernels (interpreted on the CPU, compiled on a GPU) and
    # on the torch backend: the loop and the task never name a backend. fp32 kernels against
    # fp32 torch ops over 3 Adam steps: agreement to rounding (Adam's first steps move each
    # weight by about lr whatever the gradient's size, so compare to a fraction of lr).
    common = {"steps": 3, "width": 8, "depth": 1, "lr": 1e-3, "device": device.type,
              "progress": False}
    image = folder / "im1.png"  # 9 x 7: the interpreter is slow
    triton = fs.fit("image", image, out=tmp_path / "triton", backend="triton", **common)
    torch_ = fs.fit("image", image, out=tmp_path / "torch", backend="torch", **common)
    assert triton.metrics["backend"] == "triton"
    for name, p in torch_.model.state_dict().items():
        torch.testing.assert_close(triton.model.state_dict()[name], p, rtol=0, atol=1e-4,
                                   msg=name)


def test_folders_globs_and_stacks(tmp_path):
    # A folder with a subfolder, a glob, an .npy stack of grayscale and an .npz stack of RGB
    # floats: one dataset, names that say where each image came from, grayscale promoted to RGB.
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    Image.fromarray(smooth_image(8, 8, 3, seed=0)).save(data / "a.png")
    Image.fromarray(smooth_image(8, 8, 3, seed=1)).save(data / "sub" / "b.png")
    np.save(tmp_path / "gray.npy", np.stack([smooth_image(6, 6, 1, seed=s) for s in range(3)]))
    rgb = np.stack([smooth_image(6, 6, 3, seed=s) for s in range(2)]).astype(np.float32) / 255
    np.savez(tmp_path / "rgb.npz", images=rgb, labels=np.arange(2))
    inputs = [str(data), str(tmp_path / "gray.np?"), str(tmp_path / "rgb.npz")]
    result = fs.fit("image", inputs, out=tmp_path / "run", steps=3, save_images=False, **TINY)
    names = [row["image"] for row in result.metrics["metrics"]["images"]]
    assert names == ["a.png", "sub/b.png", "gray.npy[0]", "gray.npy[1]", "gray.npy[2]",
                     "rgb.npz[0]", "rgb.npz[1]"]
    assert result.model.n_networks == 7 and result.task.out_features == 3
    # Network i of the run is image i: its own fs.Siren reproduces the batched values.
    network = fs.load_model(tmp_path / "run", index=5)
    coords = result.task.coords[5, :36]
    with torch.no_grad():
        torch.testing.assert_close(network(coords), result.model(result.task.coords)[5, :36])
    assert not (tmp_path / "run" / "images").exists()  # save_images=False: no pictures


def test_a_corrupt_file_among_many_is_skipped_and_listed(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(smooth_image(5, 6, 1, seed=i)).save(folder / f"im{i:02d}.png")
    (folder / "im17.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(smooth_image(1, 6, 1)).save(folder / "line.png")  # too small to fit
    with pytest.warns(UserWarning, match="skipped 2 of 41 images"):
        result = fs.fit("image", folder, out=tmp_path / "run", steps=2, save_images=False,
                        **TINY)
    metrics = result.metrics["metrics"]
    assert metrics["n_images"] == 39 and metrics["n_skipped"] == 2
    assert [s["image"] for s in metrics["skipped"]] == ["im17.png", "line.png"]
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "39 images fitted, 2 skipped" in summary and "| im17.png | image " in summary
    rows = list(csv.DictReader((tmp_path / "run" / "summary.csv").open()))
    assert len(rows) == 39 and "im17.png" not in {r["image"] for r in rows}
    assert (tmp_path / "run" / "psnr_histogram.png").is_file()


def test_bad_datasets_fail_before_any_work(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no images in it or below it"):
        fs.fit("image", empty, out=tmp_path / "a", steps=1, **TINY)
    with pytest.raises(InputError, match="matches no files"):
        fs.fit("image", str(tmp_path / "*.png"), out=tmp_path / "b", steps=1, **TINY)
    np.save(tmp_path / "none.npy", np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(InputError, match="an empty stack"):
        fs.fit("image", tmp_path / "none.npy", out=tmp_path / "c", steps=1, **TINY)
    np.save(tmp_path / "four.npy", np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(InputError, match=r"expected \[N, H, W\] or \[N, H, W, C\]"):
        fs.fit("image", tmp_path / "four.npy", out=tmp_path / "d", steps=1, **TINY)
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 8, 8)), b=np.zeros((2, 8, 8)))
    with pytest.raises(InputError, match="expected one, or one named 'images'"):
        fs.fit("image", tmp_path / "two.npz", out=tmp_path / "e", steps=1, **TINY)
    np.save(tmp_path / "hot.npy", np.full((2, 8, 8), 2.0, np.float32))
    with pytest.raises(InputError, match="none of the 2 images could be read.*outside"):
        fs.fit("image", tmp_path / "hot.npy", out=tmp_path / "f", steps=1, **TINY)
    for name in "abcdef":
        assert not (tmp_path / name).exists()


def test_a_stack_run_resumes_to_the_uninterrupted_weights(tmp_path):
    stack = np.stack([smooth_image(6, 7, 3, seed=s) for s in range(4)])
    np.save(tmp_path / "four.npy", stack)
    whole = fs.fit("image", tmp_path / "four.npy", out=tmp_path / "whole", steps=6, **TINY)
    fs.fit("image", tmp_path / "four.npy", out=tmp_path / "part", steps=3, **TINY)
    resumed = fs.fit("image", out=tmp_path / "part", resume=True, steps=6, progress=False)
    for name, p in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], p, rtol=0, atol=0,
                                   msg=name)
    assert resumed.metrics["data"]["names"] == [f"four.npy[{i}]" for i in range(4)]


def test_stack_images_shrink_as_files_do(tmp_path):
    from fastsiren.tasks.image_dataset import dataset_items

    pixels = smooth_image(20, 30, 3, seed=4)
    np.save(tmp_path / "one.npy", pixels[None])
    Image.fromarray(pixels).save(tmp_path / "one.png")
    from_stack, from_file = dataset_items((str(tmp_path / "one.npy"), str(tmp_path / "one.png")))
    shrunk = from_stack.read(10)
    assert shrunk.shape == (7, 10, 3) and shrunk.dtype == np.float32
    np.testing.assert_allclose(shrunk, from_file.read(10), atol=2 / 255)
