"""Many images at once: one batched SIREN per folder follows the trajectories of single-image
fits, handles mixed sizes with padding, writes per-image outputs and a summary, and shards
across two torchrun processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

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


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


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
