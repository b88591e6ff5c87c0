"""video: a clip as one function of (time, row, column) (paper section 4.1, supplement section 7).

Beside the official ``train_video.py`` (``Video`` + ``Implicit3DWrapper``, ``image_mse``):

data        frames [T, H, W, C] in [0, 1] (``fastsiren.io.video``: .npy/.npz, GIF, MP4 with the
            ``video`` extra), optionally shrunk so that the longer side of a frame is at most
            ``max_size`` pixels (area averaging); values mapped to [-1, 1] (``(x - 0.5) / 0.5``).
coordinates (t, row, col), each ``linspace(-1, 1)`` over its axis, time-major then row-major
            (the official ``get_mgrid(dim=3)``).
loss        ``mean (f - x)^2`` on the value (order-0 jet) over a random ``batch_fraction`` of
            all voxels per step (the official wrapper's ``sample_frac`` 38e-4; it draws with
            replacement, this draws distinct voxels as every task's ``common.random_subset``).
metrics     PSNR on [0, 1] (reconstruction clipped) over the whole clip and per frame, and
            their mean.
outputs     ``reconstruction.gif`` (and ``reconstruction.mp4`` with the extra), ``frames.png``
            (evenly spaced frames: the target above, the reconstruction below).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.video import has_mp4_support, read_video, write_gif, write_mp4
from ..jet import Jet
from .base import FitContext, FitSettings, Task, setting
from .common import (
    Panel,
    data_file,
    evaluate_on_grid,
    panel_figure,
    psnr,
    psnr_tensor,
    random_subset,
    save_figure,
)

__all__ = ["VideoSettings", "VideoTask", "sample_video_path", "shrink_frames", "voxel_grid"]

# CPU defaults: a run of at most two minutes on two cores with a clip worth watching; CUDA gets
# the paper's settings (3 x 1024, lr 1e-4, 38e-4 of the voxels per step, 100k steps).
CPU_MAX_SIZE = 128
CPU_WIDTH = 128
CPU_STEPS = 300
CPU_LR = 1e-3
CPU_BATCH_FRACTION = 0.02
# Frames shown in frames.png.
GRID_FRAMES = 8


def sample_video_path() -> Path:
    """The built-in sample (bunny_clip.npz, CC-BY 3.0 Blender Foundation; see
    fastsiren/data/README.md and bunny_clip.CREDIT.txt)."""
    return data_file("bunny_clip.npz")


def voxel_grid(frames: int, height: int, width: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Coordinates [T*H*W, 3] of a T x H x W grid: (t, row, col), each ``linspace(-1, 1)``,
    time-major then row-major."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device) for n in (frames, height, width)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def shrink_frames(frames: np.ndarray, max_size: int | None) -> np.ndarray:
    """Frames [T, H, W, C] shrunk by area averaging so that max(H, W) <= max_size (aspect kept);
    unchanged when they fit already or max_size is 0/None."""
    height, width = frames.shape[1:3]
    if not max_size or max(height, width) <= max_size:
        return frames
    factor = max_size / max(height, width)
    size = (max(2, round(height * factor)), max(2, round(width * factor)))
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    small = torch.nn.functional.interpolate(video, size=size, mode="area")
    return small.permute(0, 2, 3, 1).contiguous().numpy()


@dataclass
class VideoSettings(FitSettings):
    """Fit a video (.npy/.npz T x H x W x C, GIF; MP4 with the 'video' extra)."""

    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=CPU_STEPS,
                                cuda=100000)
    lr: float | None = setting(None, "Adam learning rate", positive=True, cpu=CPU_LR, cuda=1e-4)
    width: int | None = setting(None, "hidden features per layer", positive=True,
                                cpu=CPU_WIDTH, cuda=1024)
    max_size: int | None = setting(
        None, "shrink the frames so that their longer side is at most this many pixels "
        "(0: full size)", low=0, cpu=CPU_MAX_SIZE, cuda=0)
    batch_fraction: float | None = setting(
        None, "fraction of all voxels drawn at random each step", positive=True, high=1.0,
        cpu=CPU_BATCH_FRACTION, cuda=38e-4)


class VideoTask(Task):
    name = "video"
    settings_class = VideoSettings
    order = 0
    progress_metric = "psnr"
    example = ("fastsiren fit video clip.mp4 --out runs/clip\n"
               "  fastsiren fit video frames.npy --max-size 0 --steps 5000   # full resolution")

    def __init__(self, settings: VideoSettings, context: FitContext):
        super().__init__(settings, context)
        self.path = self.single_input("file") or sample_video_path()
        frames, fps = read_video(self.path)
        if frames.shape[0] < 2:
            raise InputError(
                f"video {self.path}: {frames.shape[0]} frame(s); a video needs at least 2 (fit "
                "a single frame with 'fastsiren fit image')"
            )
        if min(frames.shape[1:3]) < 2:
            raise InputError(f"video {self.path}: frames of {frames.shape[1]}x"
                             f"{frames.shape[2]} pixels; at least 2x2 expected")
        self.original_shape = tuple(frames.shape[:3])
        self.frames = shrink_frames(frames, settings.max_size)  # [T, H, W, C] in [0, 1]
        self.fps = fps or 10.0
        t, h, w, c = self.frames.shape
        self.shape = (t, h, w)
        self.in_features, self.out_features = 3, c
        self.coords = voxel_grid(t, h, w, device=self.device)
        self.target = (torch.from_numpy(self.frames).reshape(-1, c).to(self.device) - 0.5) / 0.5
        self._reconstruction: np.ndarray | None = None

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pick = random_subset(self.coords.shape[0], self.settings.batch_fraction, generator,
                             self.device)
        if pick is None:
            return {"coords": self.coords, "target": self.target}
        return {"coords": self.coords[pick], "target": self.target[pick]}

    def loss(self, jet: Jet, batch: dict[str, torch.Tensor]):
        mse = (jet.value - batch["target"]).square().mean()
        # Values span 2 on [-1, 1]: the PSNR on [0, 1] has peak 2 on this scale.
        return mse, {"mse": mse.detach(), "psnr": psnr_tensor(mse, peak=2.0)}

    def reconstruction(self, model: nn.Module) -> np.ndarray:
        """The fitted clip [T, H, W, C] in [0, 1] (clipped; cached until ``evaluate``)."""
        if self._reconstruction is None:
            values = evaluate_on_grid(model, self.coords, order=0).value
            video = (values * 0.5 + 0.5).clamp(0, 1)
            self._reconstruction = video.reshape(*self.shape, -1).float().cpu().numpy()
        return self._reconstruction

    def evaluate(self, model: nn.Module) -> dict:
        self._reconstruction = None
        error = (self.reconstruction(model).astype(np.float64) - self.frames) ** 2
        per_frame = [psnr(e) for e in error.reshape(self.shape[0], -1).mean(1)]
        return {"psnr": psnr(error.mean()), "psnr_mean_over_frames": float(np.mean(per_frame)),
                "psnr_per_frame": per_frame, "mse": float(error.mean())}

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        video = self.reconstruction(model)
        paths = [out_dir / "reconstruction.gif", out_dir / "frames.png"]
        write_gif(paths[0], video, self.fps)
        paths[1] = save_figure(self.frames_figure(video), paths[1])
        if has_mp4_support():
            paths.append(out_dir / "reconstruction.mp4")
            write_mp4(paths[-1], video, self.fps)
        return paths

    def frames_figure(self, video: np.ndarray):
        """frames.png: evenly spaced frames, the target above and the fit below, each fit
        titled with its frame's PSNR."""
        shown = np.linspace(0, self.shape[0] - 1, min(GRID_FRAMES, self.shape[0])).round()
        shown = shown.astype(int)
        error = (video[shown].astype(np.float64) - self.frames[shown]) ** 2
        frame_psnr = [psnr(e.mean()) for e in error]
        whole = psnr(((video.astype(np.float64) - self.frames) ** 2).mean())
        targets = [Panel(self.frames[i], f"target, frame {i}") for i in shown]
        fits = [Panel(video[i], f"fit, {db:.1f} dB") for i, db in zip(shown, frame_psnr)]
        t, h, w = self.shape
        return panel_figure([targets, fits], f"video fit: {t} frames of {h}x{w}, PSNR "
                            f"{whole:.1f} dB over the clip (per frame below each fit)",
                            panel_inches=1.9)

    def describe(self) -> dict:
        t, h, w = self.shape
        return {
            "source": str(self.path), "frames": t, "height": h, "width": w,
            "channels": self.out_features, "file_shape": list(self.original_shape),
            "fps": self.fps,
            "coordinates": "(t, row, col), each linspace(-1, 1), time-major then row-major",
            "values": "(x - 0.5) / 0.5 (x in [0, 1])",
            "metrics": "PSNR on [0, 1], reconstruction clipped: whole clip, per frame, mean",
        }
