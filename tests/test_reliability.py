"""Nothing lost: stop signals and SIGKILL at random points, two fits into one folder, reruns into
folders holding other files, and every size, path, type and backend checked before the first
step. The interruptions run ``fastsiren fit`` as a real subprocess; after each the run folder
must be consistent and ``--resume`` must reach the uninterrupted run's weights bit for bit."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsiren as fs
from fastsiren.checkpoint import load_checkpoint
from fastsiren.cli import main
from fastsiren.errors import InputError
from fastsiren.fit import FitInterrupted
from fastsiren.fit.run_folder import LOCK_NAME, MANIFEST_NAME, STAGING_NAME
from fastsiren.tasks.image import ImageTask

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# A 16-pixel image, half of it sampled each step (the sampling generator is part of the state).
TINY = {"max_size": 16, "width": 8, "depth": 1, "batch_fraction": 0.5, "device": "cpu",
        "log_every": 1, "lr": 1e-3}
STEPS = 300


def _cli_args(out: Path, steps: int = STEPS) -> list[str]:
    return ["fit", "image", "--out", str(out), "--steps", str(steps), "--max-size", "16",
            "--width", "8", "--depth", "1", "--batch-fraction", "0.5", "--lr", "1e-3",
            "--device", "cpu", "--log-every", "1", "--checkpoint-every", "1", "--quiet"]


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fastsiren", *_cli_args(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_a_random_step(process: subprocess.Popen, out: Path) -> None:
    """Returns once the fit has logged a random number of steps (between 2 and 30 of
    ``STEPS``), its first checkpoint written."""
    target = random.randint(2, 30)
    deadline = time.monotonic() + 120
    log = out / "log.jsonl"
    while not ((out / "checkpoint.pt").is_file() and log.is_file()
               and log.read_text().count("\n") >= target):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    torch.set_num_threads(1)
    fs.fit("image", out=out, steps=STEPS, checkpoint_every=1000, progress=False, **TINY)
    return load_checkpoint(out)["model"]


def _assert_consistent(out: Path) -> None:
    """One run's files, all listed in its manifest; a checkpoint that loads; a log whose steps
    increase (no interleaving)."""
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    present = {str(p.relative_to(out)) for p in out.rglob("*")
               if p.is_file() and not p.name.startswith(".")} - {MANIFEST_NAME}
    assert present <= set(manifest["files"]), present - set(manifest["files"])
    assert json.loads((out / "settings.json").read_text())["task"] == "image"
    assert load_checkpoint(out)["task"] == "image"
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
    assert not (out / STAGING_NAME).exists()


def _resume_matches(out: Path, uninterrupted: dict) -> None:
    fs.fit("image", out=out, resume=True, checkpoint_every=1000, progress=False)
    resumed = load_checkpoint(out)
    assert resumed["step"] == STEPS
    for name, value in uninterrupted.items():
        assert torch.equal(resumed["model"][name], value), name
    _assert_consistent(out)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_signal_at_a_random_step_loses_nothing(tmp_path, uninterrupted, signum):
    out = tmp_path / "run"
    process = _start(out)
    _wait_for_a_random_step(process, out)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
        # the kernel dropped its lock; the lock file names a dead process, taken over
        with pytest.warns(UserWarning, match=f"process {process.pid} ended without releasing"):
            _resume_matches(out, uninterrupted)
        return
    assert process.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted by SIGINT at step " in lines[0], err
    assert not (out / LOCK_NAME).exists()
    _assert_consistent(out)
    _resume_matches(out, uninterrupted)


def test_a_second_fit_into_a_busy_folder_stops_and_sigterm_saves(tmp_path, uninterrupted,
                                                                   capsys):
    out = tmp_path / "run"
    process = _start(out)
    _wait_for_a_random_step(process, out)
    settings_before = (out / "settings.json").read_bytes()
    # the other process's settings differ: they must not reach the folder
    with pytest.raises(InputError, match=f"process {process.pid} is fitting into this folder"):
        fs.fit("image", out=out, steps=5, progress=False, overwrite=True, **TINY)
    assert main([*_cli_args(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"process {process.pid}" in err[0]
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM at step " in err and "--resume" in err
    assert (out / "settings.json").read_bytes() == settings_before
    _assert_consistent(out)
    _resume_matches(out, uninterrupted)


# -- what a run may replace -------------------------------------------------------------------
def test_a_new_run_refuses_a_folder_holding_other_files(tmp_path):
    (tmp_path / "target.png").write_bytes(b"the user's own picture")
    with pytest.raises(InputError, match=r"holds files that are not a fastsiren run's "
                                         r"\(target.png\)"):
        fs.fit("image", out=tmp_path, steps=2, progress=False, **TINY)
    assert (tmp_path / "target.png").read_bytes() == b"the user's own picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target.png"]


def test_overwrite_replaces_only_the_runs_own_files(tmp_path):
    fs.fit("image", out=tmp_path, steps=2, render_size=(8, 8), progress=False, **TINY)
    assert (tmp_path / "render.png").is_file()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="already holds a run"):
        fs.fit("image", out=tmp_path, steps=2, progress=False, **TINY)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    (tmp_path / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="also holds notes.txt"):
        fs.fit("image", out=tmp_path, steps=2, overwrite=True, progress=False, **TINY)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # refused: untouched
    (tmp_path / "notes.txt").unlink()
    fs.fit("image", out=tmp_path, steps=3, overwrite=True, progress=False, **TINY)
    assert not (tmp_path / "render.png").exists()  # the old run's output, not this one's
    assert load_checkpoint(tmp_path)["step"] == 3
    _assert_consistent(tmp_path)


def test_a_failing_run_after_overwrite_leaves_the_old_run_intact(tmp_path, monkeypatch):
    fs.fit("image", out=tmp_path, steps=2, progress=False, **TINY)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    sample = ImageTask.sample

    def failing(self, step, generator):
        if step == 2:
            raise RuntimeError("the disk caught fire")
        return sample(self, step, generator)

    monkeypatch.setattr(ImageTask, "sample", failing)
    with pytest.raises(RuntimeError, match="caught fire"):
        fs.fit("image", out=tmp_path, steps=5, seed=1, overwrite=True, progress=False, **TINY)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_outputs_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        fs.fit("image", out=tmp_path, steps=2, progress=False, **TINY)
    finally:
        os.umask(previous)
    for name in ("checkpoint.pt", "metrics.json", "manifest.json", "reconstruction.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_mesh_files_follow_the_umask(tmp_path):
    from fastsiren.mesh import Mesh, save_mesh

    mesh = Mesh(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))
    previous = os.umask(0o022)
    try:
        save_mesh(mesh, tmp_path / "mesh.ply")
    finally:
        os.umask(previous)
    assert (tmp_path / "mesh.ply").stat().st_mode & 0o777 == 0o644


def test_a_stale_lock_is_reported_and_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(f"{dead.pid}\n")
    with pytest.warns(UserWarning, match=f"process {dead.pid} ended without releasing"):
        fs.fit("image", out=tmp_path, steps=2, progress=False, **TINY)
    assert not (tmp_path / LOCK_NAME).exists()


# -- signals and time-based checkpoints --------------------------------------------------------
def test_a_second_signal_stops_at_once(tmp_path, monkeypatch):
    sample = ImageTask.sample

    def signalled_twice(self, step, generator):
        if step == 3:
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
        return sample(self, step, generator)

    monkeypatch.setattr(ImageTask, "sample", signalled_twice)
    with pytest.raises(FitInterrupted, match="second SIGTERM at step 3: stopped at once; the "
                                             "checkpoint of step 2 is kept"):
        fs.fit("image", out=tmp_path, steps=6, checkpoint_every=2, progress=False, **TINY)
    assert load_checkpoint(tmp_path)["step"] == 2


def test_checkpoints_by_the_minute(tmp_path, monkeypatch):
    sample = ImageTask.sample

    def crashing(self, step, generator):
        if step == 4:
            raise RuntimeError("power cut")
        return sample(self, step, generator)

    monkeypatch.setattr(ImageTask, "sample", crashing)
    with pytest.raises(RuntimeError, match="power cut"):
        fs.fit("image", out=tmp_path, steps=9, checkpoint_every=1000, checkpoint_minutes=1e-9,
               progress=False, **TINY)
    assert load_checkpoint(tmp_path)["step"] == 4


# -- resuming ---------------------------------------------------------------------------------
def test_resume_below_the_step_reached_says_so(tmp_path):
    fs.fit("image", out=tmp_path, steps=3, progress=False, **TINY)
    with pytest.raises(InputError, match="already reached step 3, past --steps 2"):
        fs.fit("image", out=tmp_path, resume=True, steps=2, progress=False)


def test_resume_warns_when_the_input_changed_and_times_add_up(tmp_path):
    from fastsiren.tasks.common import sample_image_path

    picture = tmp_path / "picture.png"
    shutil.copy(sample_image_path(), picture)
    out = tmp_path / "run"
    first = fs.fit("image", picture, out=out, steps=3, progress=False, **TINY)
    assert first.metrics["inputs"][0]["size"] == picture.stat().st_size
    import imageio.v3 as iio

    iio.imwrite(picture, np.zeros((32, 32), np.uint8))
    wall_at_checkpoint = load_checkpoint(out)["wall_seconds"]
    with pytest.warns(UserWarning, match="the input changed since the run began"):
        result = fs.fit("image", out=out, resume=True, steps=5, progress=False)
    # both sessions' times: the wall time of the run so far includes the first session's
    assert result.metrics["wall_seconds"] >= result.metrics["train_seconds"]
    assert result.metrics["wall_seconds"] > wall_at_checkpoint


# -- checked before the first step --------------------------------------------------------------
def test_setting_types_are_checked_before_the_folder_is_made(tmp_path):
    with pytest.raises(InputError, match=r"--steps: expected an integer, got '3' \(str\)"):
        fs.fit("image", out=tmp_path / "new", steps="3", progress=False)
    assert not (tmp_path / "new").exists()


def test_sizes_are_checked_before_the_first_step(tmp_path):
    with pytest.raises(InputError, match="--render-size 100000x100000: the render needs"):
        fs.fit("image", out=tmp_path / "render", steps=2, render_size=(100000, 100000),
               progress=False, **TINY)
    assert not (tmp_path / "render").exists()
    with pytest.raises(InputError, match=r"a dense 100000\^3 grid needs"):
        fs.fit("sdf", out=tmp_path / "sdf", steps=2, resolution=100000, progress=False)
    from fastsiren.mesh import check_mesh_memory

    with pytest.raises(InputError, match=r"coarse-to-fine at 100000\^3 may need"):
        check_mesh_memory(100000, coarse_to_fine=True)


def test_a_random_bytes_checkpoint_is_one_line_without_unsafe_advice(tmp_path):
    for seed in range(5):
        path = tmp_path / f"random{seed}.pt"
        path.write_bytes(np.random.default_rng(seed).bytes(4096))
        with pytest.raises(InputError) as caught:
            load_checkpoint(path)
        message = str(caught.value)
        assert "\n" not in message and "weights_only" not in message, message
        assert message.startswith(f"{path}: not a readable fastsiren checkpoint")


def test_poisson_on_a_constant_image_writes_its_metrics(tmp_path):
    import imageio.v3 as iio

    picture = tmp_path / "grey.png"
    iio.imwrite(picture, np.full((16, 16), 128, np.uint8))
    result = fs.fit("poisson", picture, out=tmp_path / "run", steps=2, width=8, depth=1,
                    device="cpu", progress=False)
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert result.metrics["metrics"]["grad_rel_err"] is None


# -- the command line ---------------------------------------------------------------------------
def _one_line(capsys, argv, match, status=2):
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], captured.err


def test_cli_negative_numbers_are_values(capsys, tmp_path):
    _one_line(capsys, ["fit", "image", "--lr", "-1e-3", "--out", str(tmp_path / "r")],
              "--lr: expected a value > 0, got -0.001")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without CUDA")
def test_cli_triton_without_cuda_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr("fastsiren.env.interpreting", lambda: False)
    _one_line(capsys, [*_cli_args(tmp_path / "r", 2), "--backend", "triton"],
              "--backend triton: the Triton kernels need CUDA tensors")
    assert not (tmp_path / "r").exists()
    _one_line(capsys, ["demo", "--n", "8", "--width", "4", "--backend", "triton"],
              "--backend triton: the Triton kernels need CUDA tensors")


def test_cli_output_paths_are_checked_before_work(capsys, tmp_path):
    _one_line(capsys, ["mesh", str(tmp_path), "--out", str(tmp_path / "mesh.ply")],
              "a folder with no checkpoint (checkpoint.pt) in it")
    (tmp_path / "folder.ply").mkdir()
    _one_line(capsys, ["mesh", str(tmp_path), "--out", str(tmp_path / "folder.ply")],
              "is a folder; expected a file name")
    _one_line(capsys, ["bench", "--quick", "--json", "/proc/results.json"],
              "--json /proc/results.json: cannot write there")
    _one_line(capsys, ["bench", "--quick", "--markdown", str(tmp_path)],
              "is a folder; expected a file name")


def test_a_folder_where_a_file_is_expected_is_named_a_folder(capsys, tmp_path):
    _one_line(capsys, ["fit", "audio", str(tmp_path), "--out", str(tmp_path / "r")],
              f"{str(tmp_path)!r} is a folder; expected a WAV")
    _one_line(capsys, ["fit", "sdf", str(tmp_path), "--out", str(tmp_path / "r")],
              f"{str(tmp_path)!r} is a folder; expected a point cloud file")
    assert not (tmp_path / "r").exists()


def test_cli_ctrl_c_before_work_is_one_line(capsys, monkeypatch):
    import fastsiren.cli.fit as cli_fit

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_fit, "build_fit_parser", interrupted)
    _one_line(capsys, ["fit", "image"], "fastsiren fit: interrupted", status=130)


def test_inputs_with_one_file_name_get_their_own_outputs(tmp_path):
    import imageio.v3 as iio

    for folder, value in (("a", 0), ("b", 255)):
        (tmp_path / folder).mkdir()
        iio.imwrite(tmp_path / folder / "rgb.png", np.full((8, 8), value, np.uint8))
    result = fs.fit("image", [tmp_path / "a" / "rgb.png", tmp_path / "b" / "rgb.png"],
                    out=tmp_path / "run", steps=2, progress=False, **TINY)
    names = [row["image"] for row in result.metrics["metrics"]["images"]]
    assert names == ["a-rgb.png", "b-rgb.png"]
    assert sorted(p.name for p in (tmp_path / "run" / "images").iterdir()) == names


def test_cli_sigterm_before_work_is_one_line(capsys, monkeypatch):
    import fastsiren.cli.fit as cli_fit

    def terminated(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(cli_fit, "build_fit_parser", terminated)
    before = signal.getsignal(signal.SIGTERM)
    _one_line(capsys, ["fit", "image"], "fastsiren fit: interrupted (SIGTERM)",
              status=128 + signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_bench_json_keeps_the_cases_done_when_a_later_one_fails(tmp_path, monkeypatch):
    from fastsiren.benchmark import run as bench_run
    from fastsiren.cli import build_parser

    run_case = bench_run.Runner.run_case
    done = []

    def failing_second_case(self, case, names, precision):
        if done and case != done[0]:
            raise RuntimeError("out of memory on the second case")
        done.append(case)
        return run_case(self, case, names, precision)

    monkeypatch.setattr(bench_run.Runner, "run_case", failing_second_case)
    json_path = tmp_path / "r.json"
    args = build_parser().parse_args([
        "bench", "--preset", "smoke", "--workloads", "jet2,step_lap", "--widths", "8",
        "--n", "32", "--providers", "fastsiren-torch,autograd", "--min-time", "0",
        "--no-memory", "--json", str(json_path)])
    with pytest.raises(RuntimeError, match="second case"):
        args.func(args)
    doc = json.loads(json_path.read_text())
    assert doc["partial"] is True
    assert {r["workload"] for r in doc["results"]} == {done[0].workload}
