"""Audio: a waveform as a function of time (paper section 4.1, supplement section 5).

Beside the official ``train_audio.py`` (``AudioFile`` + ``ImplicitAudioWrapper``,
``function_mse``):

data        a WAV file (``fastsiren.io.audio``), mono, divided by its peak max|x| so that the
            target lies in [-1, 1] (the official wrapper's ``scale``).
coordinates time on linspace(-1, 1, N), one per sample.
loss        ``mean_n (f(t_n) - x_n)^2`` on the value (order-0 jet).
metrics     MSE on the peak-normalised signal and SNR = 10 log10(sum x^2 / sum (f - x)^2).
outputs     ``fitted.wav`` (the network sampled at the file's times, at its rate and peak),
            ``target.wav`` (the samples fitted, after any ``--seconds`` crop) and
            ``waveform.png`` (target and fit over the clip and over a 20 ms window, and the
            error).

Audio needs a first layer that oscillates thousands of times over the clip: first_omega_0 =
3000 on [-1, 1]. The official code gets the same frequencies from its grid instead:
linspace(-100, 100) with omega_0 = 30. The two are one function: a first layer computes
``sin(omega (W t + b))``, and ``30 (W (100 t) + b) = 3000 (W t + b / 100)``, so the official
network with first-layer bias b equals this one with bias b / 100, every other weight shared
(``official_to_unit_time`` maps a state dict; a test checks value and jet). The hidden layers keep
omega_0 = 30 in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.audio import read_audio, write_audio
from ..jet import Jet
from .base import FitContext, FitSettings, Task, setting
from .common import data_file, evaluate_on_grid, pyplot, random_subset, save_figure

__all__ = [
    "OFFICIAL_TIME_RANGE",
    "AudioSettings",
    "AudioTask",
    "normalise_waveform",
    "official_to_unit_time",
    "sample_audio_path",
    "snr_db",
    "time_grid",
    "waveform_loss",
]

# The official grid is linspace(-100, 100): time scaled by 100 against [-1, 1].
OFFICIAL_TIME_RANGE = 100.0

# CPU defaults: a run of under two minutes on two cores that is worth listening to (one second
# of the clip took 2.6 minutes; half a second halves the step); CUDA gets the paper's settings
# (all samples, width 256, lr 1e-4). bench/fit_results/cpu_defaults.md has the measured run.
CPU_SECONDS = 0.5
CPU_WIDTH = 128
CPU_STEPS = 300
CPU_LR = 1e-4
CPU_BATCH_FRACTION = 0.25


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


def sample_audio_path() -> Path:
    """The built-in sample (guitar_fifths.wav, CC0; see fastsiren/data/README.md)."""
    return data_file("guitar_fifths.wav")


@dataclass
class AudioSettings(FitSettings):
    """Fit a waveform (WAV: PCM 8/16/24/32-bit or float; stereo averaged to mono)."""

    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=CPU_STEPS,
                                cuda=9000)
    lr: float | None = setting(None, "Adam learning rate", positive=True, cpu=CPU_LR,
                               cuda=1e-4)
    width: int | None = setting(None, "hidden features per layer", positive=True,
                                cpu=CPU_WIDTH, cuda=256)
    first_omega0: float = setting(
        3000.0, "omega_0 of the first sine layer: time runs over [-1, 1], so audio needs "
        "thousands of oscillations (the official grid [-100, 100] with omega_0 30)",
        positive=True)
    seconds: float | None = setting(
        None, "fit only the first this many seconds of the file (0: all of it)", low=0,
        cpu=CPU_SECONDS, cuda=0.0)
    batch_fraction: float | None = setting(
        None, "fraction of the samples drawn at random each step (1: all)", positive=True,
        high=1.0, cpu=CPU_BATCH_FRACTION, cuda=1.0)


class AudioTask(Task):
    name = "audio"
    settings_class = AudioSettings
    order = 0
    progress_metric = "snr"
    example = ("fastsiren fit audio song.wav --out runs/song\n"
               "  fastsiren fit audio --seconds 0 --steps 3000 --out runs/guitar   "
               "# the whole built-in clip")

    def __init__(self, settings: AudioSettings, context: FitContext):
        super().__init__(settings, context)
        self.path = self.single_input("WAV file") or sample_audio_path()
        samples, self.rate = read_audio(self.path)
        self.file_samples = samples.size
        if settings.seconds:
            samples = samples[: max(1, round(settings.seconds * self.rate))]
        target, self.peak = normalise_waveform(samples, f"audio {self.path}")
        self.in_features = self.out_features = 1
        self.coords = time_grid(target.size).to(self.device)
        self.target = torch.from_numpy(target).unsqueeze(-1).to(self.device)
        self.power = float(np.mean(target.astype(np.float64) ** 2))
        self._fitted: np.ndarray | None = None

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pick = random_subset(self.coords.shape[0], self.settings.batch_fraction, generator,
                             self.device)
        if pick is None:
            return {"coords": self.coords, "target": self.target}
        return {"coords": self.coords[pick], "target": self.target[pick]}

    def loss(self, jet: Jet, batch: dict[str, torch.Tensor]):
        mse = waveform_loss(jet, batch["target"])
        snr = 10.0 * torch.log10(self.power / mse.detach().clamp_min(1e-30))
        return mse, {"mse": mse.detach(), "snr": snr}

    def fitted(self, model: nn.Module) -> np.ndarray:
        """The network at every sample time, [N] (cached until the next ``evaluate``)."""
        if self._fitted is None:
            value = evaluate_on_grid(model, self.coords, order=0).value
            self._fitted = value.reshape(-1).double().cpu().numpy()
        return self._fitted

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self._fitted = None
        fit, truth = self.fitted(model), self.target.reshape(-1).double().cpu().numpy()
        return {"mse": float(np.mean((fit - truth) ** 2)), "snr_db": snr_db(fit, truth)}

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        fit, truth = self.fitted(model), self.target.reshape(-1).cpu().numpy()
        paths = [out_dir / "fitted.wav", out_dir / "target.wav", out_dir / "waveform.png"]
        write_audio(paths[0], fit * self.peak, self.rate)
        write_audio(paths[1], truth * self.peak, self.rate)
        plot_waveform(paths[2], truth, fit, self.rate)
        return paths

    def describe(self) -> dict:
        return {
            "source": str(self.path), "rate_hz": self.rate, "file_samples": self.file_samples,
            "samples_fitted": int(self.target.shape[0]),
            "seconds_fitted": self.target.shape[0] / self.rate, "peak": self.peak,
            "coordinates": "time, linspace(-1, 1), one point per sample",
            "values": "samples / peak (peak = max |x| of the fitted samples)",
            "metrics": "mse on the peak-normalised samples; snr_db = 10 log10(sum x^2 / "
            "sum (f - x)^2)",
        }


def plot_waveform(path: Path, truth: np.ndarray, fit: np.ndarray, rate: int) -> Path:
    """Target and fit over the whole clip and over a 20 ms window in its middle, and the error;
    amplitudes are the samples divided by the clip's peak, the figure titled with the SNR."""
    plt = pyplot()
    seconds = np.arange(truth.size) / rate
    window = slice(truth.size // 2, truth.size // 2 + max(2, round(0.02 * rate)))
    fig, axes = plt.subplots(3, 1, figsize=(9, 7))
    panels = [(slice(None), f"whole clip ({truth.size / rate:.2f} s at {rate} Hz)"),
              (window, "20 ms in the middle")]
    for ax, (part, title) in zip(axes[:2], panels):
        ax.plot(seconds[part], truth[part], lw=0.8, label="target")
        ax.plot(seconds[part], fit[part], lw=0.8, alpha=0.8, label="fit")
        ax.set_title(title, fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
    axes[2].plot(seconds, fit - truth, lw=0.6, color="C3")
    axes[2].set_title("error: fit - target", fontsize=9)
    axes[2].set_xlabel("time (s)")
    for ax in axes:
        ax.set_ylabel("amplitude / peak", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"SIREN fit of a waveform: SNR {snr_db(fit, truth):.1f} dB "
                 "(10 log10 of signal over error power)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
