"""Audio task: the time-grid equivalence with the official code, the loss against its float64
twin, the normalisation and SNR."""

import json

import fastsiren.reference as ref
import numpy as np
import pytest
import torch
from helpers import assert_labelled, assert_rel_close
from scipy.io import wavfile

import fastsiren as fs
from fastsiren.cli import main
from fastsiren.errors import InputError
from fastsiren.io.audio import read_audio
from fastsiren.tasks import FitContext
from fastsiren.tasks.audio import (
    CPU_SECONDS,
    AudioSettings,
    AudioTask,
    normalise_waveform,
    official_to_unit_time,
    snr_db,
    time_grid,
    waveform_loss,
)


def test_unit_time_with_omega_3000_is_the_official_grid_with_omega_30(gen):
    # The official audio network: linspace(-100, 100), omega_0 = 30 in every layer.
    torch.manual_seed(0)
    official = ref.Siren(1, 32, 2, 1, outermost_linear=True, first_omega_0=30.0).double()
    ours = fs.Siren(1, 32, 2, 1, outermost_linear=True, first_omega_0=3000.0,
                    backend="torch").double()
    ours.load_state_dict(official_to_unit_time(official.state_dict()))
    t = time_grid(101, torch.float64)
    t_official = t * 100.0
    assert torch.allclose(t_official, torch.linspace(-100, 100, 101, dtype=torch.float64)[:, None])
    jet = ours.jet(t, order=2)
    tr = t_official.clone().requires_grad_()
    value = official(tr)
    # Same values; derivatives by the chain rule: d/dt = 100 d/dt', d2/dt2 = 1e4 d2/dt'2.
    assert_rel_close(jet.value, value, 1e-12, "value")
    assert_rel_close(jet.grad[..., 0], 100 * ref.gradient(value, tr), 1e-11, "gradient")
    assert_rel_close(jet.lap, 1e4 * ref.laplace(value, tr), 1e-10, "Laplacian")


def test_waveform_loss_matches_reference_twin(gen):
    torch.manual_seed(1)
    fast = fs.Siren(1, 24, 2, 1, outermost_linear=True, first_omega_0=3000.0,
                    backend="torch").double()
    slow = ref.Siren(1, 24, 2, 1, outermost_linear=True, first_omega_0=3000.0).double()
    slow.load_state_dict(fast.state_dict())
    t = time_grid(37, torch.float64)
    target = torch.rand(37, 1, generator=gen, dtype=torch.float64) * 2 - 1
    loss = waveform_loss(fast.jet(t, order=0), target)
    twin = ((slow(t) - target) ** 2).mean()  # the official function_mse
    assert_rel_close(loss, twin, 1e-13, "loss")
    grads = torch.autograd.grad(loss, list(fast.parameters()))
    twins = torch.autograd.grad(twin, list(slow.parameters()))
    for g, t_ in zip(grads, twins):
        assert_rel_close(g, t_, 1e-11, "parameter gradient")


def test_normalise_and_snr():
    samples = np.array([0.1, -0.4, 0.2], np.float32)
    scaled, peak = normalise_waveform(samples)
    assert peak == pytest.approx(0.4) and scaled.tolist() == pytest.approx([0.25, -1.0, 0.5])
    truth = np.array([1.0, -1.0, 1.0, -1.0])
    assert snr_db(truth + [0.1, 0, 0, 0], truth) == pytest.approx(10 * np.log10(4 / 0.01))


@pytest.mark.parametrize(
    "samples, message",
    [([], "0 samples"), ([0.3], "1 sample:"), ([0.0, 0.0], "silent"), ([0.1, np.nan], "NaN")],
    ids=["empty", "one-sample", "silent", "nan"],
)
def test_unfittable_waveforms(samples, message):
    with pytest.raises(InputError, match=message):
        normalise_waveform(np.array(samples))


# -- the task end to end ---------------------------------------------------------------------------
TINY = ["--width", "16", "--depth", "1", "--device", "cpu", "--quiet"]


@pytest.fixture
def stereo_wav(tmp_path):
    """400 samples at 8 kHz, PCM16 stereo: two tones, one per channel."""
    t = np.arange(400) / 8000
    left, right = np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 700 * t)
    path = tmp_path / "tones.wav"
    wavfile.write(path, 8000, (np.stack([left, right], 1) * 20000).astype(np.int16))
    return path


def test_fit_audio_end_to_end(stereo_wav, tmp_path, capsys):
    out = tmp_path / "run"
    # 400 samples, not 44,100 per second of music: first omega 300 keeps the first layer's
    # frequencies within what 400 samples can show (3000 would sit far above their Nyquist).
    assert main(["fit", "audio", str(stereo_wav), "--out", str(out), "--steps", "40", "--lr",
                 "1e-3", "--batch-fraction", "1", "--seconds", "0", "--first-omega0", "300",
                 "--log-every", "5", *TINY]) == 0
    assert "snr_db" in capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["final_logged_loss"] < 0.5 * summary["first_logged_loss"]
    assert summary["data"]["samples_fitted"] == 400 and summary["data"]["rate_hz"] == 8000
    # The written WAV is the fit at the file's rate and amplitude: its SNR against the
    # (mono-averaged) input is the reported one, up to 16-bit rounding.
    fitted, rate = read_audio(out / "fitted.wav")
    truth, _ = read_audio(stereo_wav)
    assert rate == 8000 and fitted.shape == (400,)
    assert snr_db(fitted, truth) == pytest.approx(summary["metrics"]["snr_db"], abs=0.05)
    labels = assert_labelled(out / "waveform.png", "whole clip", "20 ms", "error")
    assert "SNR" in labels["title"]
    assert all(a["ylabel"] == "amplitude / peak" for a in labels["axes"])
    # The checkpoint reloads as a network of time alone.
    model = fs.load_model(out)
    assert model(time_grid(3)).shape == (3, 1)


def test_cpu_defaults_crop_the_built_in_clip():
    settings = AudioSettings().resolved(torch.device("cpu"))
    task = AudioTask(settings, FitContext(torch.device("cpu")))
    assert task.rate == 44100 and task.target.shape == (round(CPU_SECONDS * 44100), 1)
    assert settings.first_omega0 == 3000.0
    cuda = AudioSettings().resolved(torch.device("cuda"))
    assert (cuda.seconds, cuda.width, cuda.lr, cuda.batch_fraction) == (0.0, 256, 1e-4, 1.0)


def test_bad_audio_fails_in_one_line(tmp_path, capsys):
    wavfile.write(tmp_path / "one.wav", 8000, np.array([100], np.int16))
    wavfile.write(tmp_path / "empty.wav", 8000, np.zeros(0, np.int16))
    (tmp_path / "notes.wav").write_text("not audio")
    run = ["--out", str(tmp_path / "run"), *TINY]
    cases = {
        "has 1 sample": ["fit", "audio", str(tmp_path / "one.wav"), *run],
        "has 0 samples": ["fit", "audio", str(tmp_path / "empty.wav"), *run],
        "cannot read": ["fit", "audio", str(tmp_path / "notes.wav"), *run],
        "not found": ["fit", "audio", str(tmp_path / "missing.wav"), *run],
        "--seconds: expected a value >= 0": ["fit", "audio", "--seconds", "-1", *run],
    }
    for expected, argv in cases.items():
        assert main(argv) == 2, expected
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()
