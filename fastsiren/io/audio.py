"""WAV in and out: the audio task's file formats.

``read_audio`` accepts what ``scipy.io.wavfile`` reads: PCM 8 (unsigned), 16, 24 and 32-bit
integer, and 32/64-bit float. Integer samples are mapped to [-1, 1) by their full scale
(2^(bits-1); scipy returns 24-bit PCM left-justified in int32, so it shares the 32-bit scale);
float samples are kept as they are. Several channels are averaged to mono, as the official SIREN
``AudioFile`` does for stereo. ``write_audio`` writes mono PCM 16-bit (or 32-bit float).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from ..errors import InputError, check_not_folder

__all__ = ["read_audio", "write_audio"]

_WAV_FORMATS = "WAV (PCM 8/16/24/32-bit integer or 32/64-bit float)"


def _full_scale(dtype: np.dtype) -> tuple[float, float]:
    """(offset, scale) mapping integer PCM of this dtype onto [-1, 1)."""
    if dtype == np.uint8:  # 8-bit WAV is unsigned with its zero at 128
        return 128.0, 128.0
    return 0.0, float(2 ** (8 * dtype.itemsize - 1))


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Samples [N] as float32 (mono, integer PCM scaled to [-1, 1)) and the sample rate in Hz.

    Raises InputError for a missing file or one that is not a readable WAV.
    """
    path = os.fspath(path)
    check_not_folder(path, f"{_WAV_FORMATS} file")
    if not os.path.isfile(path):
        raise InputError(f"audio file not found: {path!r} (expected a {_WAV_FORMATS} file)")
    try:
        with warnings.catch_warnings():
            # Unknown chunks (LIST, cue, ...) draw a WavFileWarning; the samples are fine.
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(f"cannot read {path!r} as {_WAV_FORMATS}: {exc}") from None
    if data.dtype.kind in "iu":
        offset, scale = _full_scale(data.dtype)
        samples = (data.astype(np.float64) - offset) / scale
    elif data.dtype.kind == "f":
        samples = data.astype(np.float64)
    else:  # pragma: no cover - scipy returns only integer or float arrays
        raise InputError(f"{path!r}: unsupported WAV sample type {data.dtype}")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return samples.astype(np.float32), int(rate)


def write_audio(
    path: str | os.PathLike, samples: np.ndarray, rate: int, float32: bool = False
) -> Path:
    """Write mono ``samples`` [N] (in [-1, 1]; clipped there) as PCM 16-bit, or float32;
    parent folders are created, the path returned."""
    samples = np.clip(np.asarray(samples, dtype=np.float64).reshape(-1), -1.0, 1.0)
    if float32:
        data = samples.astype(np.float32)
    else:
        # The reader's scale (2^15), so a written file reads back to within half a step.
        data = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, int(rate), data)
    return path
