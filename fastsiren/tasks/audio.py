"""Audio: a waveform as a function of time (paper section 4.1, supplement section 5).

Beside the official ``train_audio.py`` (``AudioFile`` + ``ImplicitAudioWrapper``,
``function_mse``):

data        a WAV file (``fastsiren.io.audio``), mono, divided by its peak max|x| so that the
            target lies in [-1, 1] (the official wrapper's ``scale``).
coordinates time on linspace(-1, 1, N), one per sample.
loss        ``mean_n (f(t_n) - x_n)^2`` on the value (order-0 jet).
metrics     MSE on the peak-normalised signal and SNR = 10 log10(sum x^2 / sum (f - x)^2).

Audio needs a first layer that oscillates thousands of times over the clip: first_omega_0 =
3000 on [-1, 1]. The official code gets the same frequencies from its grid instead:
linspace(-100, 100) with omega_0 = 30. The two are one function: a first layer computes
``sin(omega (W t + b))``, and ``30 (W (100 t) + b) = 3000 (W t + b / 100)``, so the official
network with first-layer bias b equals this one with bias b / 100, every other weight shared
(``official_to_unit_time`` maps a state dict; a test checks value and jet). The hidden layers keep
omega_0 = 30 in both.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..jet import Jet

__all__ = [
    "OFFICIAL_TIME_RANGE",
    "normalise_waveform",
    "official_to_unit_time",
    "snr_db",
    "time_grid",
    "waveform_loss",
]

# The official grid is linspace(-100, 100): time scaled by 100 against [-1, 1].
OFFICIAL_TIME_RANGE = 100.0


def normalise_waveform(samples: np.ndarray, what: str = "audio") -> tuple[np.ndarray, float]:
    """(samples / max|samples|, max|samples|); at least 2 samples, not all zero."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size < 2:
        raise InputError(
            f"{what} has {samples.size} sample{'s' * (samples.size != 1)}: a waveform to fit "
            "needs at least 2"
        )
    if not np.isfinite(samples).all():
        raise InputError(f"{what} contains NaN or infinite samples")
    peak = float(np.abs(samples).max())
    if peak == 0.0:
        raise InputError(f"{what} is silent (every sample is zero): nothing to fit")
    return samples / peak, peak


def time_grid(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sample times on linspace(-1, 1, n): [n, 1]."""
    return torch.linspace(-1.0, 1.0, n, dtype=dtype).unsqueeze(-1)


def waveform_loss(jet: Jet, target: torch.Tensor) -> torch.Tensor:
    """``mean_n (f(t_n) - x_n)^2`` (the official ``function_mse``); target [..., N, 1]."""
    return (jet.value - target).square().mean()


def snr_db(fit: np.ndarray, truth: np.ndarray) -> float:
    """Signal-to-noise ratio of ``fit`` against ``truth``: 10 log10(sum x^2 / sum (f - x)^2)."""
    fit, truth = np.asarray(fit, np.float64), np.asarray(truth, np.float64)
    noise = np.sum((fit - truth) ** 2)
    return float(10.0 * np.log10(np.sum(truth**2) / max(noise, 1e-300)))


def official_to_unit_time(state_dict: dict, scale: float = OFFICIAL_TIME_RANGE) -> dict:
    """Weights of a SIREN trained on the official time grid [-scale, scale] with first-layer
    omega_0 = w, as the same function of t in [-1, 1] with first-layer omega_0 = scale * w:
    only the first-layer bias changes (divided by ``scale``)."""
    converted = dict(state_dict)
    converted["net.0.linear.bias"] = state_dict["net.0.linear.bias"] / scale
    return converted
