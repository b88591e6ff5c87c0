"""fit hypernet end to end on tiny images: metrics and the picture, exact resume, the two-process
run against one process, hypernet-predict, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import assert_labelled
from PIL import Image

import fastsiren as fs
from fastsiren.cli import main
from fastsiren.fit import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = dict(resolution=(8, 8), width=8, depth=1, latent_dim=8, hyper_width=8, batch_size=4,
            context_min=2, context_max=10, log_every=1, device="cpu", rank=2)
TINY_CLI = ["--resolution", "8", "--width", "8", "--depth", "1", "--latent-dim", "8",
            "--hyper-width", "8", "--batch-size", "4", "--context-min", "2", "--context-max",
            "10", "--log-every", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Twelve 12x14 RGB images (smooth stripes; seeded), mixed in with a text file."""
    root = tmp_path_factory.mktemp("hypernet_images")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:12, :14] / 12
    for i in range(12):
        a = rng.uniform(0, 3, size=3)
        img = (0.5 + 0.5 * np.sin(a[0] * 6 * x + a[1] * 4 * y + a[2]))[..., None]
        Image.fromarray((img * [255, 180, 100]).astype(np.uint8)).save(root / f"im{i:02d}.png")
    (root / "README.txt").write_text("ignored")
    return root


@pytest.mark.parametrize("encoder,heads", [("set", "official"), ("conv", "lowrank")])
def test_fit_writes_metrics_and_completions(folder, tmp_path, encoder, heads):
    result = fs.fit("hypernet", folder, out=tmp_path, steps=3, encoder=encoder, heads=heads,
                    progress=False, **TINY)
    metrics = result.metrics["metrics"]
    # 8x8 = 64 pixels: of the paper's sizes only 10 context pixels fits, and the top half
    assert sorted(metrics) == ["test_mse_10", "test_mse_half", "test_mse_mean_image"]
    assert all(0 < v < 1 for v in metrics.values())
    data = result.metrics["data"]
    assert (data["images"], data["train_images"], data["test_images"]) == (12, 10, 2)
    # 2 test images: per context size the context and the completion, then the truth
    labels = assert_labelled(tmp_path / "completions.png", "context: 10 px",
                             "completion\nfrom 10 px", "context: top half", "truth")
    assert [a["title"] for a in labels["axes"][:5]] == [
        "context: 10 px", "completion\nfrom 10 px", "context: top half",
        "completion\nfrom top half", "truth"]
    assert len(labels["axes"]) == 2 * 5
    assert f"10: {metrics['test_mse_10']:.3f}" in labels["title"]
    state = load_checkpoint(tmp_path)
    assert state["task"] == "hypernet" and state["model_kwargs"]["encoder"] == encoder
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 1, 2] and all(np.isfinite(e["loss"]) for e in log)


def test_resume_reaches_the_uninterrupted_weights(folder, tmp_path):
    """Stopped at step 3 (inside the second epoch: 10 training images, 2 batches of 4 each) and
    resumed to 5: the weights of the uninterrupted 5-step run, bit for bit."""
    fs.fit("hypernet", folder, out=tmp_path / "full", steps=5, progress=False, **TINY)
    fs.fit("hypernet", folder, out=tmp_path / "part", steps=3, progress=False, **TINY)
    fs.fit("hypernet", out=tmp_path / "part", resume=True, steps=5, progress=False)
    full, part = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part")
    assert part["step"] == 5
    for name, value in full["model"].items():
        assert torch.equal(value, part["model"][name]), name


def test_torchrun_two_processes_follow_one(folder, tmp_path):
    """Two gloo processes (the loop splits the global batch of 4 and averages the gradients and
    the logged values) against one process with the same seed: the same loss curve up to
    float32 rounding of the reductions."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["fit", "hypernet", str(folder), "--steps", "3", *TINY_CLI]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "fastsiren", *common, "--out", str(tmp_path / "two")]
    done = subprocess.run(two, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    curves = {}
    for run in ("one", "two"):
        log = (tmp_path / run / "log.jsonl").read_text().splitlines()
        curves[run] = np.array([[e["loss"], e["mse"]] for e in map(json.loads, log)])
    assert curves["one"].shape == (3, 2)
    np.testing.assert_allclose(curves["two"], curves["one"], rtol=1e-5)
    summary = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert summary["world_size"] == 2
    assert not (tmp_path / "two" / "checkpoint-rank1.pt").exists()  # rank 0 writes
    two_state = load_checkpoint(tmp_path / "two")["model"]
    assert not any(k.startswith("module.") for k in two_state)  # loads without torchrun


def test_hypernet_predict(folder, tmp_path, capsys):
    fs.fit("hypernet", folder, out=tmp_path, steps=1, progress=False, **TINY)
    out = tmp_path / "done.png"
    assert main(["hypernet-predict", str(tmp_path), str(folder / "im03.png"), "--context", "5",
                 "--out", str(out), "--zoom", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["context"] == 5 and 0 < report["mse"] < 1
    labels = assert_labelled(out, "context: 5 px", "completion", "truth")
    assert f"MSE on [0, 1] {report['mse']:.4f}" in labels["title"]
    assert main(["hypernet-predict", str(tmp_path), str(folder / "im03.png"), "--context",
                 "half", "--out", str(out)]) == 0


def test_hypernet_predict_writes_into_the_run_folder(folder, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    fs.fit("hypernet", folder, out=run, steps=1, progress=False, **TINY)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # where the user stands gets nothing
    for checkpoint in (run, run / "checkpoint.pt"):
        assert main(["hypernet-predict", str(checkpoint), str(folder / "im03.png"),
                     "--context", "5"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["written"] == str(run / "im03_completed.png")
        assert (run / "im03_completed.png").is_file()
    assert list(elsewhere.iterdir()) == []


def test_hypernet_predict_help_is_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        main(["hypernet-predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "with a hypernetwork trained by 'fastsiren fit hypernet'." in text
    assert "into the run folder (or --out)" in text


def test_bad_input_gives_one_line_errors(folder, tmp_path, capsys):
    image_run = tmp_path / "image_run"
    fs.fit("image", folder / "im00.png", out=image_run, steps=1, width=8, depth=1,
           device="cpu", progress=False)
    capsys.readouterr()
    cases = [
        (["fit", "hypernet", str(tmp_path / "missing")], "found no such folder"),
        (["fit", "hypernet", str(tmp_path)], "no images in it"),
        (["fit", "hypernet", str(folder), "--resolution", "16"],
         "image is 14x12 pixels, smaller than the 16x16 crop"),
        (["fit", "hypernet", str(folder), "--resolution", "4", "--context-max", "20"],
         "--context-max 20: larger than the 4x4 image's 16 pixels"),
        (["fit", "hypernet", str(folder), "--resolution", "8", "--context-max", "20",
          "--batch-size", "11"],
         "larger than the 10 training images"),
        (["hypernet-predict", str(image_run), str(folder / "im00.png")],
         "a checkpoint of task 'image', not of 'fastsiren fit hypernet'"),
    ]
    for argv, expected in cases:
        assert main(argv + ["--out", str(tmp_path / "x")] if argv[0] == "fit" else argv) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, (argv, err)
    fs.fit("hypernet", folder, out=tmp_path / "run", steps=1, progress=False, **TINY)
    assert main(["hypernet-predict", str(tmp_path / "run"), str(folder / "im00.png"),
                 "--context", "65"]) == 2
    assert "--context 65: larger than the model's 8x8 image (64 pixels)" in \
        capsys.readouterr().err
