"""Datasets fitted in groups and networks that stop early: a dataset fitted in groups gives the
networks of the same dataset fitted at once, holds one group at a time, resumes after a kill in
the middle of a group without refitting the groups before it, and keeps a stopped network's
weights and Adam state exactly as they were; bad input among many images is skipped and listed."""

from __future__ import annotations

import csv
import gc
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_task_image import smooth_image

import fastsiren as fs
from fastsiren.checkpoint import load_checkpoint
from fastsiren.cli import main
from fastsiren.data import copy_samples
from fastsiren.errors import InputError
from fastsiren.fit.run_folder import MANIFEST_NAME
from fastsiren.modules import BatchedSiren
from fastsiren.tasks import many_images
from fastsiren.tasks.many_images import ManyImagesTask

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = {"width": 8, "depth": 1, "lr": 3e-3, "device": "cpu", "progress": False,
        "save_images": False}


@pytest.fixture
def stack(tmp_path) -> Path:
    """Seven RGB images of 6x7 pixels in one .npy stack."""
    path = tmp_path / "seven.npy"
    np.save(path, np.stack([smooth_image(6, 7, 3, seed=s) for s in range(7)]))
    return path


def _rows(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "summary.csv").open()))


def test_groups_give_the_networks_of_one_batch(stack, tmp_path, float64):
    # Each network gets its own image's gradient and the same first draw, so the grouping
    # changes nothing but the batch size of the matmuls (rounding, far below 1e-9 in float64).
    at_once = fs.fit("image", stack, out=tmp_path / "once", steps=8, networks_per_batch=7,
                     **TINY)
    grouped = fs.fit("image", stack, out=tmp_path / "groups", steps=8, networks_per_batch=3,
                     **TINY)
    run = tmp_path / "groups"
    assert grouped.metrics["data"]["groups"] == 3 and at_once.metrics["data"]["groups"] == 1
    names = [f"seven.npy[{i}]" for i in range(7)]
    assert grouped.metrics["data"]["names"] == names
    # One weights file: every group's networks stacked, with their names.
    weights = load_checkpoint(run)
    assert weights["model_kwargs"]["n_networks"] == 7 and weights["names"] == names
    assert "optimizer" not in weights  # Adam's state stays in each group's checkpoint
    assert sorted(p.name for p in (run / "groups").iterdir()) == [
        "group-00000.pt", "group-00001.pt", "group-00002.pt"]
    model = fs.load_model(run)
    assert isinstance(model, BatchedSiren) and model.n_networks == 7
    once = at_once.model.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, once[name], rtol=1e-9, atol=1e-12, msg=name)
    network = fs.load_model(run, index=4)  # group 2's second network
    for name, value in fs.load_model(tmp_path / "once", index=4).state_dict().items():
        torch.testing.assert_close(network.state_dict()[name], value, rtol=1e-9, atol=1e-12)
    rows, rows_once = _rows(run), _rows(tmp_path / "once")
    assert [r["image"] for r in rows] == names and len(rows_once) == 7
    for row, row_once in zip(rows, rows_once):
        assert float(row["psnr"]) == pytest.approx(float(row_once["psnr"]), abs=1e-6)
        assert row["steps"] == "8"
    # The run folder: every file in the manifest, the log numbered by group, the curve.
    manifest = json.loads((run / MANIFEST_NAME).read_text())["files"]
    present = {str(p.relative_to(run)) for p in run.rglob("*")
               if p.is_file() and not p.name.startswith(".")} - {MANIFEST_NAME}
    assert present <= set(manifest) and "groups/group-00002.pt" in present
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert sorted({entry["group"] for entry in log}) == [0, 1, 2]
    assert (run / "curve.png").is_file() and (run / "summary.md").is_file()


def test_only_one_group_is_held_at_a_time(stack, tmp_path, monkeypatch):
    # Instrumentation: weak references to every image and model the fit creates; at each step
    # the live ones are the current group's only.
    images, models, seen = weakref.WeakSet(), weakref.WeakSet(), []
    make_image = many_images._Image.__init__

    def counted_image(self, *args, **kwargs):
        make_image(self, *args, **kwargs)
        images.add(self)

    build = ManyImagesTask.build_model

    def counted_model(self):
        model = build(self)
        models.add(model)
        return model

    sample = ManyImagesTask.sample

    def watched_sample(self, step, generator):
        gc.collect()
        seen.append((self.group, len(images), len(models), len(self.images)))
        return sample(self, step, generator)

    monkeypatch.setattr(many_images._Image, "__init__", counted_image)
    monkeypatch.setattr(ManyImagesTask, "build_model", counted_model)
    monkeypatch.setattr(ManyImagesTask, "sample", watched_sample)
    fs.fit("image", stack, out=tmp_path / "run", steps=3, networks_per_batch=3, **TINY)
    assert [group for group, *_ in seen] == [0] * 3 + [1] * 3 + [2] * 3
    assert max(held for _, held, _, _ in seen) == 3  # images alive at once: one group's
    assert [held for _, held, _, _ in seen][-1] == 1  # the last group holds its one image
    assert all(live_models == 1 for _, _, live_models, _ in seen)


def _cli(stack: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", "image", str(stack), "--out", str(out), "--steps", "40",
            "--networks-per-batch", "2", "--width", "16", "--depth", "1", "--lr", "3e-3",
            "--device", "cpu", "--checkpoint-every", "10", "--log-every", "1",
            "--no-save-images", "--quiet", *extra]


def test_a_kill_in_the_middle_of_group_3_resumes_without_refitting(tmp_path, monkeypatch):
    stack = tmp_path / "ten.npy"
    np.save(stack, np.stack([smooth_image(6, 7, 1, seed=s) for s in range(10)]))
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "fastsiren", *_cli(stack, out)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = out / "log.jsonl", time.monotonic() + 120
    while not (log.is_file() and '"group": 2, "step": 15,' in log.read_text()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGSTOP)  # hold it still while the state is checked
    assert not (out / "groups" / "group-00003.pt").exists(), "the fit left group 3 already"
    process.kill()
    process.communicate(timeout=60)
    third = load_checkpoint(out / "groups" / "group-00002.pt")
    assert third["step"] in (10, 20, 30) and "result" not in third  # mid-group
    first = (out / "groups" / "group-00000.pt").read_bytes()
    assert not (out / "checkpoint.pt").exists()  # no weights file before the end
    # Resume: groups 1 and 2 come from their checkpoints (their images are not read again).
    started = []
    start_group = ManyImagesTask.start_group
    monkeypatch.setattr(ManyImagesTask, "start_group",
                        lambda self, index: (started.append(index), start_group(self, index)))
    with pytest.warns(UserWarning, match=f"process {process.pid} ended without releasing"):
        assert main(["fit", "image", "--resume", str(out), "--quiet"]) == 0
    assert started == [2, 3, 4]
    assert (out / "groups" / "group-00000.pt").read_bytes() == first
    monkeypatch.setattr(ManyImagesTask, "start_group", start_group)
    assert main(_cli(stack, tmp_path / "straight")) == 0
    straight, again = load_checkpoint(tmp_path / "straight"), load_checkpoint(out)
    assert again["names"] == straight["names"] == [f"ten.npy[{i}]" for i in range(10)]
    for name, value in straight["model"].items():
        assert torch.equal(again["model"][name], value), name
    assert (out / "summary.csv").read_text() == (tmp_path / "straight" / "summary.csv").read_text()
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()
             if json.loads(line)["group"] == 2]
    assert steps == list(range(40))  # group 3's lines after its checkpoint were redone once


def test_early_stop_keeps_a_stopped_network_exactly_and_counts_its_steps(tmp_path):
    stack = tmp_path / "four.npy"
    np.save(stack, np.stack([smooth_image(6, 7, 1, seed=s) for s in range(4)]))
    target = 30.0
    stopped = fs.fit("image", stack, out=tmp_path / "target", steps=60, target_psnr=target,
                     **TINY)
    rows = stopped.metrics["metrics"]["images"]
    steps = [row["steps"] for row in rows]
    assert any(s < 60 for s in steps) and all(0 < s <= 60 for s in steps), steps
    assert [int(r["steps"]) for r in _rows(tmp_path / "target")] == steps
    assert "stopped at the target 30 dB" in (tmp_path / "target" / "summary.md").read_text()
    state = load_checkpoint(tmp_path / "target")
    early = [index for index, step in enumerate(steps) if step < 60]
    for index in {early[0], early[-1]}:  # the first and the last network to stop
        step = steps[index]
        # The networks are independent: network i stopped after s updates is network i of a
        # fit of s steps without a target, bit for bit, with the same Adam moments.
        plain = load_checkpoint(fs.fit("image", stack, out=tmp_path / f"plain{index}",
                                       steps=step, **TINY).out_dir)
        for name, value in plain["model"].items():
            assert torch.equal(state["model"][name][index], value[index]), (index, name)
        for key, moments in plain["optimizer"]["state"].items():
            for moment in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(state["optimizer"]["state"][key][moment][index],
                                   moments[moment][index]), (index, key, moment)
        assert rows[index]["psnr"] >= target - 3  # the held-out-free PSNR, clipped to [0, 1]
    # The stopped set survives a checkpoint: 30 steps, then resumed to 60.
    fs.fit("image", stack, out=tmp_path / "part", steps=30, target_psnr=target, **TINY)
    resumed = fs.fit("image", out=tmp_path / "part", resume=True, steps=60, progress=False)
    assert [row["steps"] for row in resumed.metrics["metrics"]["images"]] == steps
    for name, value in stopped.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_a_group_whose_networks_all_stopped_ends_early(tmp_path):
    stack = tmp_path / "four.npy"
    np.save(stack, np.stack([smooth_image(6, 7, 1, seed=s) for s in range(4)]))
    result = fs.fit("image", stack, out=tmp_path / "run", steps=400, target_psnr=30.0,
                    networks_per_batch=2, **TINY)
    steps = [row["steps"] for row in result.metrics["metrics"]["images"]]
    assert max(steps) < 400, steps
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    for group in (0, 1):
        saved = load_checkpoint(tmp_path / "run" / "groups" / f"group-{group:05d}.pt")
        assert saved["all_stopped"] and saved["step"] == max(steps[2 * group:2 * group + 2])
        assert max(e["step"] for e in log if e["group"] == group) < saved["step"]


def test_bad_input_among_many_in_groups(tmp_path):
    # Gray and RGB in different groups: every group fits RGB (the channels come from the
    # headers, before any group is read). A file whose header reads but whose pixels do not
    # is found when its group is read: skipped and listed like one whose header is broken.
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(smooth_image(6, 7, 1 if i < 3 else 3, seed=i)).save(folder / f"{i}.png")
    whole = (folder / "4.png").read_bytes()
    (folder / "4.png").write_bytes(whole[:len(whole) // 2])  # truncated pixels
    (folder / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n not a header")
    with pytest.warns(UserWarning, match="skipped") as warned:
        result = fs.fit("image", folder, out=tmp_path / "run", steps=3, networks_per_batch=2,
                        **TINY)
    assert any("skipped 1 of 7 images" in str(w.message) for w in warned)  # at the scan
    assert any("skipped 1 of 2 images" in str(w.message) for w in warned)  # group 2's read
    metrics = result.metrics["metrics"]
    assert [s["image"] for s in metrics["skipped"]] == ["9.png", "4.png"]
    assert [r["image"] for r in metrics["images"]] == ["0.png", "1.png", "2.png", "3.png",
                                                       "5.png"]
    assert result.model.n_networks == 5 and result.model.kwargs["out_features"] == 3
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "5 images fitted, 2 skipped" in summary and "| 4.png | image " in summary


def test_a_folder_of_the_samples_skips_the_video_clip(tmp_path):
    # `fastsiren fit image samples/`: the folder python -m fastsiren.data samples writes holds
    # the video task's clip (an .npz of frames and a frame rate) beside the photograph: the
    # clip is not an image stack, so it is skipped with a warning and listed; named on its
    # own it is an error before any work.
    samples = tmp_path / "samples"
    copy_samples(samples)
    assert (samples / "bunny_clip.npz").is_file() and (samples / "camera.png").is_file()
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 images .*bunny_clip.npz"):
        result = fs.fit("image", samples, out=tmp_path / "run", steps=2, max_size=16, **TINY)
    metrics = result.metrics["metrics"]
    assert [r["image"] for r in metrics["images"]] == ["camera.png"]
    assert metrics["skipped"][0]["image"] == "bunny_clip.npz"
    assert "expected one, or one named 'images'" in metrics["skipped"][0]["reason"]
    with pytest.raises(InputError, match="expected one, or one named 'images'"):
        fs.fit("image", samples / "bunny_clip.npz", out=tmp_path / "clip", steps=1, **TINY)
    assert not (tmp_path / "clip").exists()


def test_the_group_size_comes_from_the_memory_unless_given(stack, tmp_path, monkeypatch):
    monkeypatch.setattr(many_images, "available_memory", lambda device: 400_000)
    # A quarter of 400,000 bytes for networks 2->8->3 on 42 pixels of 3 channels: per pixel
    # 3 + 3 + 12 + 6 * 8 * 2 = 114 values, 123 parameters held 4 times: 21,120 bytes each, 4 fit.
    assert many_images.default_networks_per_batch(42, 3, 8, 1, torch.device("cpu")) == 4
    result = fs.fit("image", stack, out=tmp_path / "auto", steps=1, **TINY)
    saved = json.loads((tmp_path / "auto" / "settings.json").read_text())
    assert saved["networks_per_batch"] == 4  # saved: a resumed run groups its images alike
    assert result.metrics["data"]["groups"] == 2
    given = fs.fit("image", stack, out=tmp_path / "given", steps=1, networks_per_batch=3,
                   **TINY)
    assert given.metrics["data"]["groups"] == 3


def test_a_single_image_fit_ends_at_the_target(tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(smooth_image(8, 9, 1, seed=3)).save(path)
    common = {k: v for k, v in TINY.items() if k != "save_images"}
    stopped = fs.fit("image", path, out=tmp_path / "target", steps=200, target_psnr=30.0,
                     **common)
    steps = stopped.metrics["steps"]
    assert 0 < steps < 200
    log = [json.loads(line) for line in (tmp_path / "target" / "log.jsonl").read_text()
           .splitlines()]
    assert log[-1]["psnr"] < 30.0  # the last logged step was still below the target
    plain = fs.fit("image", path, out=tmp_path / "plain", steps=steps, **common)
    for name, value in plain.model.state_dict().items():
        assert torch.equal(stopped.model.state_dict()[name], value), name


def test_a_finished_run_in_groups_continues_to_more_steps(stack, tmp_path):
    # Each group's checkpoint keeps its Adam state: --resume with more --steps continues every
    # group where it ended, as one longer run would have.
    straight = fs.fit("image", stack, out=tmp_path / "straight", steps=6, networks_per_batch=3,
                      **TINY)
    fs.fit("image", stack, out=tmp_path / "short", steps=3, networks_per_batch=3, **TINY)
    longer = fs.fit("image", out=tmp_path / "short", resume=True, steps=6, progress=False)
    assert load_checkpoint(tmp_path / "short")["step"] == 6
    for name, value in straight.model.state_dict().items():
        assert torch.equal(longer.model.state_dict()[name], value), name
    assert _rows(tmp_path / "short") == _rows(tmp_path / "straight")


def test_a_group_of_unreadable_images_is_skipped_not_fatal(tmp_path):
    # One image per group, one of them broken past its header: its group has nothing to fit,
    # the run goes on, and network i is still the i-th image that could be read.
    folder = tmp_path / "four"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(smooth_image(6, 7, 1, seed=i)).save(folder / f"{i}.png")
    whole = (folder / "2.png").read_bytes()
    (folder / "2.png").write_bytes(whole[:len(whole) // 2])
    with pytest.warns(UserWarning, match="skipped 1 of 1 images"):
        result = fs.fit("image", folder, out=tmp_path / "run", steps=2, networks_per_batch=1,
                        **TINY)
    metrics = result.metrics["metrics"]
    assert [s["image"] for s in metrics["skipped"]] == ["2.png"]
    names = ["0.png", "1.png", "3.png"]
    assert result.metrics["data"]["names"] == names == load_checkpoint(tmp_path / "run")["names"]
    assert fs.load_model(tmp_path / "run").n_networks == 3
    assert not (tmp_path / "run" / "groups" / "group-00002.pt").exists()
    with pytest.warns(UserWarning, match="skipped 1 of 1 images"):  # read again: no checkpoint
        resumed = fs.fit("image", out=tmp_path / "run", resume=True, progress=False)
    assert resumed.metrics["data"]["names"] == names
