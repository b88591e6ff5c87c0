"""Learned initialisation: `fit init` meta-learns a start that beats the standard init on its
held-out images; the meta-training path (plain torch, differentiable twice) computes what the
engine computes; `fit image --init RUN` starts every network at the learned start and takes the
learned steps exactly; bad --init runs fail in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_task_image import smooth_image

import fastsiren as fs
from fastsiren.checkpoint import load_checkpoint
from fastsiren.cli import main
from fastsiren.errors import InputError
from fastsiren.modules import BatchedSiren, LearnedStart, batched_siren_jet
from fastsiren.tasks import get_task
from fastsiren.tasks.base import FitContext
from fastsiren.tasks.learned_start import (
    LearnedStepsThenAdam,
    adapted_values,
    read_learned_start,
    stacked_values,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = {"width": 12, "depth": 1, "device": "cpu", "progress": False}


def stack(path, n, channels=1, size=8, seed=0):
    """n smooth images of one kind (uint8 [n, size, size(, 3)]) saved as an .npy stack."""
    images = np.stack([smooth_image(size, size, channels, seed=seed + i) for i in range(n)])
    np.save(path, images)
    return path


@pytest.fixture(scope="module")
def init_run(tmp_path_factory):
    """A tiny meta-training run on 24 grayscale images of 8x8 (4 held out)."""
    folder = tmp_path_factory.mktemp("init")
    data = stack(folder / "train.npy", 24)
    # Faster meta-rates than the defaults, so that 30 steps learn something.
    result = fs.fit("init", data, out=folder / "run", steps=30, held_out=4, meta_batch=4,
                    curve_steps=5, lr=1e-3, step_size_lr=5e-2, initial_step_size=0.1, **TINY)
    return folder / "run", result


def test_meta_training_beats_the_standard_init_on_held_out_images(init_run):
    run, result = init_run
    metrics = result.metrics["metrics"]
    learned, standard = metrics["held_out_psnr_learned"], metrics["held_out_psnr_standard"]
    # The same network before any step (the start is meta-learned from the standard draw) ...
    assert learned["0"] != standard["0"]
    # ... and after the learned steps the learned start is well ahead of the standard init at
    # its best Adam rate.
    assert learned["3"] > standard["3"] + 3.0, (learned, standard)
    assert metrics["adam_lr"] in (1e-4, 3e-4, 1e-3, 3e-3)
    assert (run / "held_out_curve.png").is_file()
    state = load_checkpoint(run)
    assert state["task"] == "init" and state["model_class"] == "LearnedStart"
    start = fs.load_model(run)
    assert isinstance(start, LearnedStart) and start.inner_steps == 3
    assert all((s > 0).all() for s in start.step_sizes())


def test_stacked_values_are_the_engines_batched_values():
    torch.manual_seed(0)
    start = LearnedStart(2, 16, 2, 3)
    params = [p.unsqueeze(0).expand(4, *p.shape) + 0.01 * torch.randn(4, *p.shape)
              for p in start.start_parameters()]
    coords = torch.rand(4, 50, 2) * 2 - 1
    n = len(params) // 2
    _, _, omegas = start.siren.layer_parameters()
    engine = batched_siren_jet(coords, params[:n], params[n:], omegas, order=0).value
    torch.testing.assert_close(stacked_values(params, coords, omegas), engine,
                               rtol=1e-5, atol=1e-5)


def test_meta_gradient_includes_second_derivatives():
    """d L(theta_K) / d theta_0 against central differences in float64: a first-order
    meta-gradient (the inner gradients held fixed) would differ."""
    torch.manual_seed(0)
    start = LearnedStart(2, 8, 1, 1, inner_steps=2, initial_step_size=0.05).double()
    coords = (torch.rand(2, 30, 2, dtype=torch.float64) * 2 - 1)
    target = torch.rand(2, 30, 1, dtype=torch.float64) * 2 - 1

    def meta_loss():
        return (adapted_values(start, coords, target) - target).square().mean()

    weight = start.start_parameters()[1]  # the hidden layer's weights
    (grad,) = torch.autograd.grad(meta_loss(), weight)
    index, eps = (3, 5), 1e-6
    with torch.no_grad():
        weight[index] += eps
        up = meta_loss()
        weight[index] -= 2 * eps
        down = meta_loss()
        weight[index] += eps
    assert float(grad[index]) == pytest.approx(float((up - down) / (2 * eps)), rel=1e-5)


def test_init_starts_every_network_at_the_learned_start(init_run, tmp_path):
    run, _ = init_run
    data = stack(tmp_path / "new.npy", 3, seed=100)
    task_cls = get_task("image")
    settings = task_cls.settings_class(input=(str(data),), init=str(run), depth=1,
                                       device="cpu").resolved(torch.device("cpu"))
    record = read_learned_start(run)
    # No --lr: the learned steps, then Adam at the rate the init run found best; its width.
    assert settings.init_steps == 3 and settings.lr == record.adam_lr and settings.width == 12
    task = task_cls.create(settings, FitContext(torch.device("cpu")))
    model = task.build_model()
    assert isinstance(model, BatchedSiren) and model.n_networks == 3
    for mine, start in zip(model.parameters(), record.start.start_parameters()):
        for network in mine:
            torch.testing.assert_close(network, start, rtol=0, atol=0)
    optimizer = task.build_optimizer(model)
    assert isinstance(optimizer, LearnedStepsThenAdam)
    # K steps of the fit take exactly the meta-trained steps (engine path vs plain torch).
    batch = task.sample(0, torch.Generator())
    for _ in range(record.start.inner_steps):
        loss, _ = task.loss(task.jet(model, batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    n_points = batch["coords"].shape[1]
    expected = adapted_values(record.start, batch["coords"], batch["target"][:, :n_points],
                              create_graph=False)
    torch.testing.assert_close(model.jet(batch["coords"], order=0).value, expected,
                               rtol=1e-4, atol=1e-4)


def test_lr_given_means_adam_from_the_start(init_run, tmp_path):
    run, _ = init_run
    data = stack(tmp_path / "new.npy", 2, seed=200)
    result = fs.fit("image", data, out=tmp_path / "fit", init=str(run), lr=1e-3, steps=2,
                    depth=1, device="cpu", progress=False)
    assert result.metrics["settings"]["init_steps"] == 0
    assert isinstance(result.task.build_optimizer(result.model), torch.optim.Adam)


def test_single_image_with_init(init_run, tmp_path):
    run, _ = init_run
    from PIL import Image

    Image.fromarray(smooth_image(8, 8, 1, seed=300)).save(tmp_path / "one.png")
    result = fs.fit("image", tmp_path / "one.png", out=tmp_path / "fit", init=str(run), steps=5,
                    depth=1, device="cpu", progress=False)
    assert result.metrics["settings"]["init_steps"] == 3
    assert json.loads((tmp_path / "fit" / "settings.json").read_text())["init"] == str(run)


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], lines


def test_bad_init_runs_fail_in_one_line(init_run, tmp_path, capsys):
    run, _ = init_run
    gray = stack(tmp_path / "gray.npy", 2, seed=400)
    rgb = stack(tmp_path / "rgb.npy", 2, channels=3, seed=500)
    common = ["--steps", "1", "--depth", "1", "--device", "cpu"]
    image_run = tmp_path / "image-run"
    fs.fit("image", gray, out=image_run, steps=1, **TINY)
    _one_line_error(capsys, ["fit", "image", str(gray), "--init", str(image_run), *common,
                             "--out", str(tmp_path / "a")], "not a learned initialisation")
    _one_line_error(capsys, ["fit", "image", str(rgb), "--init", str(run), *common,
                             "--out", str(tmp_path / "b")], "out_features 3 (the start has 1)")
    _one_line_error(capsys, ["fit", "image", str(gray), "--init", str(run), "--steps", "1",
                             "--device", "cpu", "--out", str(tmp_path / "c")],
                    "hidden_layers 3 (the start has 1)")
    _one_line_error(capsys, ["fit", "image", str(gray), "--init", str(tmp_path / "nowhere"),
                             *common, "--out", str(tmp_path / "d")], "no checkpoint")


def test_init_needs_one_size_and_enough_images(tmp_path):
    small = stack(tmp_path / "few.npy", 5)
    with pytest.raises(InputError, match="expected more than --held-out 16"):
        fs.fit("init", small, out=tmp_path / "a", steps=1, **TINY)
    (tmp_path / "mixed").mkdir()
    from PIL import Image

    for i, size in enumerate((8, 8, 9)):
        Image.fromarray(smooth_image(size, size, 1, seed=i)).save(tmp_path / "mixed" / f"{i}.png")
    with pytest.raises(InputError, match="images of 2 sizes"):
        fs.fit("init", tmp_path / "mixed", out=tmp_path / "b", steps=1, held_out=1, **TINY)
