"""WAV reading and writing on tiny generated files: every PCM width, float, stereo, bad files."""

import wave

import numpy as np
import pytest
from scipy.io import wavfile

from fastsiren.errors import InputError
from fastsiren.io.audio import read_audio, write_audio

RATE = 8000


@pytest.fixture
def tone():
    """A 37-sample test signal within [-0.9, 0.9] (odd length, both signs, exact zero)."""
    t = np.arange(37) / RATE
    return (0.9 * np.sin(2 * np.pi * 440 * t)).astype(np.float64)


@pytest.mark.parametrize(
    "dtype, scale, offset",
    [(np.int16, 2**15, 0), (np.int32, 2**31, 0), (np.uint8, 128, 128)],
    ids=["pcm16", "pcm32", "pcm8"],
)
def test_integer_pcm_maps_full_scale_to_unit(tmp_path, tone, dtype, scale, offset):
    path = tmp_path / "a.wav"
    wavfile.write(path, RATE, (np.round(tone * scale) + offset).astype(dtype))
    samples, rate = read_audio(path)
    assert rate == RATE and samples.dtype == np.float32 and samples.shape == tone.shape
    # Quantisation: half a step of the format, plus float32 rounding.
    np.testing.assert_allclose(samples, tone, atol=0.5 / scale + 1e-7)


def test_pcm24_through_the_wave_module(tmp_path, tone):
    # scipy writes no 24-bit PCM, so the file is built with the standard library.
    path = tmp_path / "a24.wav"
    ints = np.round(tone * 2**23).astype(np.int32)
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(3), f.setframerate(RATE)
        f.writeframes(raw)
    samples, rate = read_audio(path)
    assert rate == RATE
    np.testing.assert_allclose(samples, tone, atol=0.5 / 2**23 + 1e-7)


def test_float_and_stereo_average_to_mono(tmp_path, tone):
    path = tmp_path / "stereo.wav"
    stereo = np.stack([tone, -0.5 * tone], axis=1).astype(np.float32)
    wavfile.write(path, RATE, stereo)
    samples, _ = read_audio(path)
    np.testing.assert_allclose(samples, 0.25 * tone, atol=1e-7)


@pytest.mark.parametrize("float32", [False, True], ids=["pcm16", "float32"])
def test_write_then_read_round_trip(tmp_path, tone, float32):
    path = tmp_path / "out.wav"
    write_audio(path, tone, RATE, float32=float32)
    samples, rate = read_audio(path)
    assert rate == RATE
    np.testing.assert_allclose(samples, tone, atol=1e-7 if float32 else 0.5 / 2**15 + 1e-7)


def test_write_clips_out_of_range(tmp_path):
    path = tmp_path / "clip.wav"
    write_audio(path, np.array([-3.0, 0.0, 3.0]), RATE)
    samples, _ = read_audio(path)
    np.testing.assert_allclose(samples, [-1.0, 0.0, 32767 / 32768], atol=1e-7)


def test_missing_and_malformed_files_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_audio(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_text("not a wav file")
    with pytest.raises(InputError, match="cannot read .* as WAV"):
        read_audio(bad)
