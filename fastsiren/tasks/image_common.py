"""What the image task and its many-images form share: settings, the image files of INPUT, the
fitted pixels, the metrics and the files one fitted image writes.

Both tasks fit pictures on the official grid (``common.pixel_grid``), with values mapped from
[0, 1] to [-1, 1]; PSNR is measured on [0, 1] with the reconstruction clipped to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.image import list_images, read_image, write_image
from ..jet import Jet
from .base import FitSettings, setting
from .common import (
    Panel,
    panel_figure,
    parse_hxw,
    pixel_grid,
    psnr,
    sample_image_path,
    save_figure,
)
from .learned_start import settings_from_start

__all__ = [
    "ImageSettings", "fitted_pixels", "image_inputs", "image_metrics", "jet_images",
    "parse_render_size", "render_grid", "write_image_outputs",
]


def parse_render_size(text: str) -> tuple[int, int]:
    """--render-size 'HxW' (or 'S') -> (H, W)."""
    return parse_hxw(text, "--render-size", "1024x1024")


@dataclass
class ImageSettings(FitSettings):
    """Fit an image (PNG/JPEG, grayscale or RGB); a folder or several files fit many at once."""

    # CPU: 128 px, 2->128x3->1, 200 steps at lr 1e-3 (about 0.3 s per step on two cores) reach
    # 46.5 dB on the sample with seed 0; lr 5e-4 is smoother but reaches 40.0 dB in 200 steps.
    # CUDA: train_img.py's settings (512 px, 256 wide, 10,000 steps, lr 1e-4).
    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=200, cuda=10000)
    lr: float | None = setting(None, "Adam learning rate", positive=True, cpu=1e-3, cuda=1e-4)
    max_size: int | None = setting(
        None, "shrink the image so that its longer side is at most this many pixels before "
        "fitting (0: full size)", low=0, cpu=128, cuda=0)
    keep_fraction: float = setting(
        1.0, "fit only this random fraction of the pixels (inpainting); PSNR is also reported "
        "on the pixels held back", positive=True, high=1.0)
    mask: str | None = setting(
        None, "fit only the pixels where this image is white (> 0.5), as the official "
        "--mask_path; the others are held back and scored apart (replaces --keep-fraction)",
        metavar="PNG")
    batch_fraction: float = setting(
        1.0, "fraction of the (kept) pixels sampled each step", positive=True, high=1.0)
    render_size: tuple[int, int] | None = setting(
        None, "also render the fitted function on an HxW grid (super-resolution)",
        metavar="HxW", parse=parse_render_size)
    save_images: bool | None = setting(
        None, "many images: write each image's pictures (target, reconstruction, gradient, "
        "Laplacian, comparison) under images/ in the run folder (default: for at most 100 "
        "images)")
    render_range: float = setting(
        1.0, "render over [-R, R]^2 (R > 1 extrapolates beyond the training square [-1, 1]^2; "
        "the pixel pitch is kept unless --render-size is given)", positive=True)
    networks_per_batch: int | None = setting(
        None, "many images: fit the dataset in groups of this many images, one group after "
        "another, each group's networks in one batch (default: as many as a quarter of the "
        "free memory holds; the value used is saved in settings.json)", positive=True,
        metavar="N")
    target_psnr: float | None = setting(
        None, "stop updating a network once its PSNR on the step's training pixels reaches this "
        "many dB (a group of images ends when all of its networks have); summary.csv gives each "
        "image's steps", positive=True, metavar="DB")

    init: str | None = setting(
        None, "start every network from the learned initialisation of this `fastsiren fit "
        "init` run: its learned steps, then Adam at the rate it measured (with --lr: Adam at "
        "--lr from the start)", metavar="RUN")
    init_steps: int | None = setting(None, "steps taken with the learned step sizes of --init "
                                     "(filled in from the run)", low=0, cli=False)

    def resolved(self, device: torch.device) -> ImageSettings:
        if self.init is not None and self.init_steps is None:
            self = dataclasses.replace(self, **settings_from_start(self.init, self.lr,
                                                                   self.width))
        return super().resolved(device)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.render_size, str):
            self.render_size = parse_render_size(self.render_size)
        elif self.render_size is not None:
            self.render_size = tuple(int(v) for v in self.render_size)


def jet_images(jet_grad: torch.Tensor, jet_lap: torch.Tensor, shape: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Gradient-magnitude and Laplacian images in [0, 1] from jets on an H x W grid:
    |∇f| over all channels scaled by its 99th percentile; Δf (mean over channels) as
    0.5 + Δf / (2 p99(|Δf|)), so mid-grey is zero."""
    grad = jet_grad.reshape(*shape, -1).square().sum(-1).sqrt()
    lap = jet_lap.reshape(*shape, -1).mean(-1)
    grad_scale = torch.quantile(grad.flatten()[:1 << 24].float(), 0.99).clamp_min(1e-12)
    lap_scale = torch.quantile(lap.abs().flatten()[:1 << 24].float(), 0.99).clamp_min(1e-12)
    grad_img = (grad / grad_scale).clamp(0, 1)
    lap_img = (0.5 + lap / (2 * lap_scale)).clamp(0, 1)
    return grad_img.cpu().numpy(), lap_img.cpu().numpy()


def image_inputs(inputs: tuple[str, ...]) -> list[Path]:
    """The image files named by INPUT: files as given, folders expanded (sorted); none: the
    built-in sample."""
    if not inputs:
        return [sample_image_path()]
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(list_images(item))
        elif item.exists():
            files.append(item)
        else:
            raise InputError(f"image {item}: no such file or folder")
    return files


def fitted_pixels(settings: ImageSettings, shape: tuple[int, int], device
                  ) -> torch.Tensor | None:
    """Indices (row-major) of the pixels fitted, or None for all: the white pixels of
    ``settings.mask`` (read and shrunk as the image, so it must have the image's size), else a
    fixed random ``keep_fraction`` of them drawn from the seed."""
    n = shape[0] * shape[1]
    if settings.mask is not None:
        mask = read_image(settings.mask, settings.max_size or None).mean(-1) > 0.5
        if mask.shape != tuple(shape):
            raise InputError(f"--mask {settings.mask}: {mask.shape[0]}x{mask.shape[1]} pixels "
                             f"(after --max-size), the image {shape[0]}x{shape[1]}; expected "
                             "one size")
        if not mask.any():
            raise InputError(f"--mask {settings.mask}: no white pixels, nothing to fit")
        return torch.from_numpy(np.flatnonzero(mask.reshape(-1))).to(device)
    if settings.keep_fraction >= 1.0:
        return None
    generator = torch.Generator().manual_seed(settings.seed)
    keep = max(1, round(n * settings.keep_fraction))
    return torch.randperm(n, generator=generator)[:keep].sort().values.to(device)


def image_metrics(value: torch.Tensor, target: torch.Tensor,
                  train_index: torch.Tensor | None) -> dict[str, float]:
    """PSNR and MSE on [0, 1] (reconstruction clipped), over all pixels and, when only some were
    fitted, over the fitted and the held-back ones."""
    recon = ((value + 1) / 2).clamp(0, 1)
    truth = (target + 1) / 2
    err = (recon - truth).square().mean(-1)  # per pixel
    metrics = {"psnr": psnr(err.mean()), "mse": float(err.mean())}
    if train_index is not None:
        held = torch.ones(err.shape[-1], dtype=torch.bool, device=err.device)
        held[train_index] = False
        metrics["psnr_fitted_pixels"] = psnr(err[..., train_index].mean())
        if held.any():
            metrics["psnr_held_back_pixels"] = psnr(err[..., held].mean())
    return metrics


def render_grid(settings: ImageSettings, shape: tuple[int, int], device
                ) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """Coordinates and size of the ``render.png`` grid, or None when none was asked for."""
    if settings.render_size is None and settings.render_range == 1.0:
        return None
    size = settings.render_size or (round(shape[0] * settings.render_range),
                                    round(shape[1] * settings.render_range))
    return pixel_grid(*size, half_range=settings.render_range, device=device), size


def write_image_outputs(image, jet: Jet, out_dir: Path, rendered: torch.Tensor | None = None
                        ) -> list[Path]:
    """The files of one fitted image: ``image`` has ``shape``, ``pixels`` [H, W, C] and
    ``train_index``; ``jet`` is the order-2 jet on its grid; ``rendered`` the values on the
    render grid, if any."""
    value, grad, lap = jet.value, jet.grad, jet.lap
    height, width = image.shape
    out_dir = Path(out_dir)
    recon = ((value + 1) / 2).clamp(0, 1).reshape(height, width, -1).cpu().numpy()
    grad_img, lap_img = jet_images(grad, lap, (height, width))
    paths = [
        write_image(out_dir / "target.png", image.pixels),
        write_image(out_dir / "reconstruction.png", recon),
        write_image(out_dir / "gradient.png", grad_img),
        write_image(out_dir / "laplacian.png", lap_img),
    ]
    target = torch.from_numpy(image.pixels).reshape(height * width, -1).to(value.device) * 2 - 1
    metrics = image_metrics(value, target, image.train_index)
    paths.append(save_figure(comparison_figure(image, recon, grad, lap, metrics),
                             out_dir / "comparison.png"))
    if rendered is not None:
        size = rendered.shape[:-1]
        paths.append(write_image(out_dir / "render.png", ((rendered + 1) / 2).clamp(0, 1)
                                 .reshape(*size, -1).cpu().numpy()))
    return paths


def comparison_figure(image, recon: np.ndarray, grad: torch.Tensor, lap: torch.Tensor,
                      metrics: dict[str, float]):
    """comparison.png: the target (and the pixels fitted, when not all were), the
    reconstruction with its PSNR, |∇f| and Δf of the fitted network with colour bars in the
    units of the fit (values on [-1, 1] per unit of the [-1, 1] coordinates)."""
    height, width = image.shape
    grad_norm = grad.reshape(height, width, -1).square().sum(-1).sqrt().float().cpu().numpy()
    lap_mean = lap.reshape(height, width, -1).mean(-1).float().cpu().numpy()
    lap_scale = float(np.percentile(np.abs(lap_mean), 99)) or 1.0
    panels = [Panel(image.pixels, f"target ({height}x{width})")]
    if image.train_index is not None:
        shown = np.zeros(height * width, dtype=bool)
        shown[image.train_index.cpu().numpy()] = True
        panels.append(Panel(image.pixels * shown.reshape(height, width, 1),
                            f"pixels fitted ({shown.mean():.0%}; black: held back)"))
    quality = f"PSNR {metrics['psnr']:.1f} dB"
    if "psnr_held_back_pixels" in metrics:
        quality += f", held back {metrics['psnr_held_back_pixels']:.1f} dB"
    panels += [
        Panel(recon, f"reconstruction, {quality}"),
        Panel(grad_norm, "gradient magnitude |∇f|", colorbar="|∇f| (value / coordinate)",
              cmap="magma", vmin=0, vmax=float(np.percentile(grad_norm, 99)) or 1.0),
        Panel(lap_mean, "Laplacian Δf (mean over channels)",
              colorbar="Δf (value / coordinate²)", cmap="RdBu_r", vmin=-lap_scale,
              vmax=lap_scale),
    ]
    return panel_figure([panels], f"SIREN fit of {image.path.name}: {quality} "
                        "(values on [-1, 1], coordinates on [-1, 1]²)")
