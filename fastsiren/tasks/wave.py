"""wave: solve the wave equation u_tt = c² Δu from initial data (the official
``train_wave_equation.py``, paper section 4.3 and supplement section 5).

Data: none; the network is u(t, x, y) on [0, t_end] x [-1, 1]². Initial data: the official Gaussian
pulse (``--initial pulse``: u0 = exp(-|x|²/(2σ))/50, σ = 5e-4, at rest) or a standing wave
(``--initial mode``: u0 = A cos(πm x) cos(πn y), at rest), which stays an exact solution
A cos(πm x) cos(πn y) cos(cπ√(m²+n²) t) for all time (``physics.standing_wave``).

Loss: one jet over (t, x, y) of order 2 with the Hessian diagonal gives u, u_t, u_tt and Δu in one
pass: the residual u_tt − c²Δu everywhere, u − u0 and u_t on the initial-condition points, in L1,
reduced by mean with the official weighting (``physics.wave_loss``). Each step draws the official
batch (``physics.sample_wave_points``): t uniform in [0, t_max(step)], with the official curriculum
t_max = t_end · step / (curriculum · steps) growing from 0 (the official run: t_end = 0.4 over its
100k steps), 2·source_points points at t = 0, half of them near the pulse.

Metric (mode): the relative L2 error against the exact standing wave over ``frames`` times in
[0, t_end] on the evaluation grid, inside the domain of dependence |x|, |y| ≤ 1 − c_max t (beyond
it the field depends on what happens outside [-1, 1]², where nothing is imposed). ``rel_error``
in the log is the same on each logged step's batch. Both initial data also report the mean
|residual| on the grid and the error of the initial data.

Outputs: frames.gif (the field over time), frames.png (the frames in a grid), and for the mode
error.png (|u − exact| at the last frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import physics
from ..errors import InputError
from .base import FitContext, FitSettings, Task, setting
from .common import evaluate_on_grid, plot_field, pyplot, relative_l2, save_figure, xy_grid

__all__ = ["WaveSettings", "WaveTask"]


@dataclass
class WaveSettings(FitSettings):
    """Solve the wave equation u_tt = c² Δu on [-1, 1]² from a pulse or a standing wave.

    CPU defaults: 300 steps of 4096 points at width 128, lr 1e-4, the time window grown over
    the first half of the steps: under three minutes on two cores, and the standing wave's
    relative error 0.11 (docs/wave-mode.png); 100 steps leave it noisy (the curriculum has then
    shown the late times for only 50 steps). CUDA: the official run."""

    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=300, cuda=100000)
    lr: float | None = setting(None, "Adam learning rate (official: 2e-5)", positive=True,
                               cpu=1e-4, cuda=2e-5)
    width: int | None = setting(None, "hidden features per layer", positive=True, cpu=128,
                                cuda=512)
    points: int | None = setting(None, "points per step (official: 340² = 115600)",
                                 positive=True, cpu=4096, cuda=115600)
    # A CPU run cannot learn the official pulse (σ = 5e-4) in minutes: its default is the
    # standing wave, whose exact solution measures the fit; CUDA runs the official experiment.
    initial: str | None = setting(None, "initial data: the official Gaussian pulse, or a "
                                  "standing wave with an exact solution",
                                  choices=("pulse", "mode"), cpu="mode", cuda="pulse")
    mode_x: int = setting(2, "standing wave: m in cos(pi m x)", low=0)
    mode_y: int = setting(2, "standing wave: n in cos(pi n y)", low=0)
    amplitude: float = setting(0.02, "standing wave amplitude (the pulse's peak is 0.02)",
                               positive=True)
    speed: float = setting(1.0, "wave speed c of the background medium", positive=True)
    velocity: str = setting("uniform", "velocity model (square/circle: an inclusion twice as "
                            "fast)", choices=physics.VELOCITY_MODELS)
    t_end: float = setting(0.4, "last time fitted (official: 0.4)", positive=True)
    curriculum: float | None = setting(
        None, "fraction of the steps over which the time window grows from 0 to t_end "
        "(official: 1)", positive=True, high=1.0, cpu=0.5, cuda=1.0)
    source_points: int | None = setting(None, "initial-condition points near the pulse per step "
                                        "(as many again uniform)", positive=True, cpu=512,
                                        cuda=physics.WAVE_SOURCE_POINTS)
    frames: int = setting(8, "frames in frames.gif / frames.png and times in the metric", low=2)
    eval_size: int | None = setting(None, "evaluation grid (and frame) side", positive=True,
                                    cpu=96, cuda=256)

    def validate(self) -> None:
        super().validate()
        if (self.points is not None and self.source_points is not None
                and self.points <= 2 * self.source_points):
            raise InputError(
                f"--points: too few points, {self.points} per step; expected more than twice "
                f"--source-points ({2 * self.source_points} initial-condition points)"
            )


class WaveTask(Task):
    name = "wave"
    settings_class = WaveSettings
    order = 2
    hessian_diag = True
    progress_metric = "rel_error"
    example = ("fastsiren fit wave --initial pulse --out runs/wave   # the official pulse\n"
               "  fastsiren fit wave --initial mode --out runs/wave-mode   "
               "# exact solution: relative error")

    def __init__(self, settings: WaveSettings, context: FitContext):
        super().__init__(settings, context)
        if settings.input:
            raise InputError("wave takes no input file: the initial data are settings")
        self.in_features, self.out_features = 3, 1
        self.exact = settings.initial == "mode"
        if not self.exact:
            self.progress_metric = "pde"
        # The fastest speed anywhere bounds the domain of dependence.
        self.max_speed = settings.speed * (1.0 if settings.velocity == "uniform"
                                           else physics.INCLUSION_SPEED_RATIO)
        xy = xy_grid(settings.eval_size)
        self.times = torch.linspace(0, settings.t_end, settings.frames)
        t = self.times[:, None, None].expand(-1, xy.shape[0], 1)
        self.grid = torch.cat((t, xy.expand(settings.frames, -1, -1)), -1)  # [F, side², 3]
        self._metrics: dict | None = None  # the last evaluate's, for the pictures' titles

    # -- data -------------------------------------------------------------------------------
    def initial_data(self, xy: torch.Tensor) -> torch.Tensor:
        if self.exact:
            return self.solution(torch.cat((torch.zeros_like(xy[..., :1]), xy), -1))
        return physics.gaussian_pulse(xy)

    def solution(self, txy: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return physics.standing_wave(txy, (s.mode_x, s.mode_y), s.speed, s.amplitude)

    def speed2(self, xy: torch.Tensor) -> torch.Tensor:
        return self.settings.speed**2 / physics.squared_slowness(xy, self.settings.velocity)

    def determined(self, txy: torch.Tensor) -> torch.Tensor:
        """Points inside the domain of dependence of the initial data on [-1, 1]²."""
        return (txy[..., 1:].abs() <= 1 - self.max_speed * txy[..., :1]).all(-1)

    def t_max(self, step: int) -> float:
        s = self.settings
        return s.t_end * min(1.0, step / max(1.0, s.curriculum * s.steps))

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        s = self.settings
        sigma = None if self.exact else physics.WAVE_SIGMA
        txy, initial = physics.sample_wave_points(s.points, self.t_max(step), generator,
                                                  n_source=s.source_points, sigma=sigma)
        batch = {"coords": txy, "initial": initial, "u0": self.initial_data(txy[:, 1:]),
                 "speed2": self.speed2(txy[:, 1:])}
        if self.exact and (step % s.log_every == 0 or step == s.steps - 1):
            batch["truth"], batch["region"] = self.solution(txy), self.determined(txy)
        return batch

    # -- loss -------------------------------------------------------------------------------
    def loss(self, jet, batch):
        residual = physics.wave_residual(jet, batch["speed2"])
        terms = physics.wave_loss(jet, residual, batch["initial"], batch["u0"])
        logged = {name: value.detach() for name, value in terms.items()}
        if "truth" in batch:
            region = batch["region"]
            logged["rel_error"] = relative_l2(jet.value[region, 0].detach(),
                                              batch["truth"][region])
        return sum(terms.values()), logged

    # -- results ----------------------------------------------------------------------------
    def fields(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """u and the residual on the evaluation grid, [F, side²] each (CPU)."""
        grid = self.grid.reshape(-1, 3).to(self.device)
        jet = evaluate_on_grid(model, grid, order=2, hessian_diag=True)
        residual = physics.wave_residual(jet, self.speed2(grid[:, 1:]))
        shape = self.grid.shape[:2]
        return jet.value[:, 0].reshape(shape).cpu(), residual.reshape(shape).cpu()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        u, residual = self.fields(model)
        u0 = self.initial_data(self.grid[0, :, 1:])
        metrics = {
            "pde_residual_mean_abs": float(residual.abs().mean()),
            "initial_rel_error": float(relative_l2(u[0], u0)),
        }
        if self.exact:
            region = self.determined(self.grid)
            metrics["rel_error"] = float(relative_l2(u[region], self.solution(self.grid)[region]))
        self._metrics = metrics
        return metrics

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        u, _ = self.fields(model)
        side = self.settings.eval_size
        frames = u.reshape(-1, side, side).numpy()
        scale = float(np.percentile(np.abs(frames), 99.5)) or 1.0
        out_dir = Path(out_dir)
        metrics = self._metrics or self.evaluate(model)
        s = self.settings
        if self.exact:
            what = (f"standing wave {s.amplitude} cos({s.mode_x}πx) cos({s.mode_y}πy), "
                    f"relative L2 error {metrics['rel_error']:.3f} against the exact solution")
        else:
            what = (f"Gaussian pulse, mean |u_tt - c²Δu| "
                    f"{metrics['pde_residual_mean_abs']:.3g} on the grid")
        paths = [write_frames_gif(out_dir / "frames.gif", frames, scale),
                 plot_frames(out_dir / "frames.png", frames, self.times.tolist(), scale,
                             f"wave u(t, x, y), c = {s.speed} ({s.velocity}): {what}")]
        if self.exact:
            last = self.grid[-1]
            error = (u[-1] - self.solution(last)).abs()
            error[~self.determined(last)] = float("nan")
            paths.append(plot_field(
                out_dir / "error.png", error.reshape(side, side).numpy(), "error",
                f"|u - exact| at t = {self.times[-1]:.2f} (blank: outside the domain of "
                f"dependence)\nrelative L2 error over all frames {metrics['rel_error']:.3f}",
                unit="u"))
        return paths

    def describe(self) -> dict:
        s = self.settings
        return {
            "equation": "u_tt = c^2 (u_xx + u_yy) on [0, t_end] x [-1, 1]^2, u_t(0) = 0",
            "initial": s.initial if not self.exact else
            f"{s.amplitude} cos(pi {s.mode_x} x) cos(pi {s.mode_y} y)",
            "speed": s.speed, "velocity": s.velocity, "t_end": s.t_end,
            "coordinates": "(t, x, y)",
        }


def write_frames_gif(path: Path, frames: np.ndarray, scale: float) -> Path:
    """Frames [F, side, side] (y up) as an animated GIF, blue-white-red over [-scale, scale]."""
    import imageio.v3 as iio
    from matplotlib import colormaps

    path.parent.mkdir(parents=True, exist_ok=True)
    cmap = colormaps["RdBu_r"]
    rgb = [(cmap(0.5 + f[::-1] / (2 * scale))[..., :3] * 255).astype(np.uint8) for f in frames]
    iio.imwrite(path, np.stack(rgb), duration=250, loop=0)
    return path


def plot_frames(path: Path, frames: np.ndarray, times: list[float], scale: float,
                title: str = "wave u(t, x, y)") -> Path:
    """The frames in a grid of up to four columns, each titled with its time, one colour bar
    for u over [-scale, scale], the figure titled with ``title``."""
    plt = pyplot()
    cols = min(4, len(frames))
    rows = math.ceil(len(frames) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 0.8, 2.6 * rows + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, frame, t in zip(axes.flat, frames, times):
        ax.set_visible(True)
        shown = ax.imshow(frame, origin="lower", extent=(-1, 1, -1, 1), cmap="RdBu_r",
                          vmin=-scale, vmax=scale)
        ax.set_title(f"t = {t:.3f}", fontsize=9)
        ax.set_xticks([-1, 0, 1])
        ax.set_yticks([-1, 0, 1])
        ax.tick_params(labelsize=7)
    bar = fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
    bar.set_label("u")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, bbox_inches="tight")
