"""image: fit a SIREN to a picture, f(row, col) = pixel (the official ``train_img.py``).

Data: PNG/JPEG, grayscale or RGB, any aspect ratio (``fastsiren.io.read_image``), optionally
shrunk so that its longer side is ``max_size``. Coordinates are the official grid (``get_mgrid``):
``linspace(-1, 1)`` along each axis, row-major, the first coordinate the row; pixel values map
from [0, 1] to [-1, 1] (the official ``Normalize(0.5, 0.5)``).

Loss: the mean squared error of the value (order-0 jet) over all pixels, or over a random
``batch_fraction`` of them per step. ``keep_fraction < 1`` fits only a fixed random subset of
the pixels, ``mask`` the white pixels of a mask image (inpainting, as the official
``train_img_inpainting.py`` with its ``sparsity`` or ``mask_path``; the official loss averages
the masked error over all pixels, this one over the fitted pixels: a constant factor Adam
is almost insensitive to), and reports the PSNR of the held-back pixels as well. PSNR is
measured on [0, 1] with the reconstruction clipped to it.

Outputs: ``target.png`` (what was fitted), ``reconstruction.png``, ``gradient.png`` (|∇f| over
all channels) and ``laplacian.png`` (Δf, mean over channels, mid-grey = 0) from the order-2 jet
of the fitted network (the paper's Figure 1 row), ``comparison.png`` side by side, and
``render.png`` when ``render_size`` or ``render_range`` asks for the continuous function on
another grid (super-resolution inside [-1, 1]², extrapolation beyond it).

A folder or several files fit many images at once: ``fastsiren.tasks.many_images``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.image import read_image, write_image
from .base import FitContext, FitSettings, Task, setting

__all__ = ["ImageSettings", "ImageTask", "pixel_grid", "sample_image_path"]

# Points per chunk when the fitted network is evaluated on a whole grid: bounds the memory of an
# order-2 jet (4 slabs x width floats per point per layer) at about 64 MiB for width 256.
EVAL_CHUNK = 16384


def sample_image_path() -> Path:
    """The built-in sample (camera.png, CC0; see fastsiren/data/README.md)."""
    return Path(str(resources.files("fastsiren") / "data" / "camera.png"))


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (or a single 'S' for SxS) -> (H, W)."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 2:
        raise InputError(f"--render-size: expected HxW with H, W >= 2 (e.g. 1024x1024), "
                         f"got {text!r}")
    return size


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
        metavar="HxW", parse=parse_size)
    render_range: float = setting(
        1.0, "render over [-R, R]^2 (R > 1 extrapolates beyond the training square [-1, 1]^2; "
        "the pixel pitch is kept unless --render-size is given)", positive=True)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.render_size, str):
            self.render_size = parse_size(self.render_size)
        elif self.render_size is not None:
            self.render_size = tuple(int(v) for v in self.render_size)


def pixel_grid(height: int, width: int, half_range: float = 1.0,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Coordinates [H*W, 2] of an H x W grid: (row, col), each ``linspace(-R, R)``, row-major
    (the official ``get_mgrid``)."""
    rows = torch.linspace(-half_range, half_range, height, device=device)
    cols = torch.linspace(-half_range, half_range, width, device=device)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def psnr(mse: float | torch.Tensor, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error on a [0, peak] range."""
    mse = float(mse)
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


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


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Images [H, W] or [H, W, C] in [0, 1], of one height, in a row with white gaps (RGB if
    any of them is)."""
    rgb = any(im.ndim == 3 and im.shape[2] == 3 for im in images)
    rows = []
    for im in images:
        im = im if im.ndim == 3 else im[:, :, None]
        rows.append(np.repeat(im, 3, axis=2) if rgb and im.shape[2] == 1 else im)
        rows.append(np.ones((im.shape[0], gap, rows[-1].shape[2]), dtype=np.float32))
    return np.concatenate(rows[:-1], axis=1)


def evaluate_on_grid(model: nn.Module, coords: torch.Tensor, order: int, chunk: int = EVAL_CHUNK):
    """The model's jet over coords [..., N, d], chunk by chunk along N; returns (value, grad,
    lap) concatenated (grad and lap None at order 0)."""
    values, grads, laps = [], [], []
    for start in range(0, coords.shape[-2], chunk):
        jet = model.jet(coords[..., start:start + chunk, :], order=order)
        values.append(jet.value)
        if order == 2:
            grads.append(jet.grad)
            laps.append(jet.lap)
    dim = coords.dim() - 2
    value = torch.cat(values, dim)
    if order < 2:
        return value, None, None
    return value, torch.cat(grads, dim), torch.cat(laps, dim)


class ImageTask(Task):
    name = "image"
    settings_class = ImageSettings
    order = 0
    progress_metric = "psnr"
    example = ("fastsiren fit image photo.png --steps 2000 --out runs/photo\n"
               "  fastsiren fit image --keep-fraction 0.25 --render-size 512x512   "
               "# inpainting, super-resolution\n"
               "  fastsiren fit image photos/ --out runs/photos     # a folder: all at once")

    @classmethod
    def create(cls, settings: ImageSettings, context: FitContext) -> Task:
        files = image_inputs(settings.input)
        if len(files) > 1 or any(Path(p).is_dir() for p in settings.input):
            from .many_images import ManyImagesTask

            return ManyImagesTask(settings, context, context.shard(files))
        return cls(settings, context, files[0])

    def __init__(self, settings: ImageSettings, context: FitContext, path: Path | None = None):
        super().__init__(settings, context)
        self.path = Path(path) if path is not None else sample_image_path()
        pixels = load_pixels(self.path, settings.max_size)
        height, width, channels = pixels.shape
        self.shape = (height, width)
        self.in_features, self.out_features = 2, channels
        self.pixels = pixels  # [H, W, C] in [0, 1], for the outputs
        self.coords = pixel_grid(height, width, device=self.device)
        self.target = torch.from_numpy(pixels).reshape(-1, channels).to(self.device) * 2 - 1
        self.train_index = fitted_pixels(settings, self.shape, self.device)
        self.train_batch = (
            {"coords": self.coords, "target": self.target} if self.train_index is None
            else {"coords": self.coords[self.train_index],
                  "target": self.target[self.train_index]}
        )
        self._evaluated: tuple | None = None

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.settings.batch_fraction >= 1.0:
            return self.train_batch
        n = self.train_batch["coords"].shape[0]
        size = max(1, round(n * self.settings.batch_fraction))
        pick = torch.randperm(n, generator=generator, device=self.device)[:size]
        return {k: v[pick] for k, v in self.train_batch.items()}

    def loss(self, jet, batch):
        mse = (jet.value - batch["target"]).square().mean()
        # Pixels span 2 on [-1, 1]: the MSE on [0, 1] is a quarter of it.
        psnr_db = 10.0 * torch.log10(4.0 / mse.detach().clamp_min(1e-20))
        return mse, {"mse": mse.detach(), "psnr": psnr_db}

    def reconstruct(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(value, grad, lap) of the fitted network on the training grid (cached)."""
        if self._evaluated is None:
            self._evaluated = evaluate_on_grid(model, self.coords, order=2)
        return self._evaluated

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self._evaluated = None
        value = self.reconstruct(model)[0]
        return image_metrics(value, self.target, self.train_index)

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        rendered = None
        grid = render_grid(self.settings, self.shape, self.device)
        if grid is not None:
            coords, size = grid
            rendered = evaluate_on_grid(model, coords, order=0)[0].reshape(*size, -1)
        return write_image_outputs(self, self.reconstruct(model), out_dir, rendered)

    def describe(self) -> dict:
        return {
            "source": str(self.path), "height": self.shape[0], "width": self.shape[1],
            "channels": self.out_features,
            "coordinates": "(row, col), each linspace(-1, 1), row-major",
            "values": "pixel * 2 - 1 (pixels in [0, 1])",
            "pixels_fitted": int(self.train_batch["coords"].shape[0]),
            "mask": self.settings.mask,
        }


def image_inputs(inputs: tuple[str, ...]) -> list[Path]:
    """The image files named by INPUT: files as given, folders expanded (sorted); none: the
    built-in sample."""
    from ..io.image import list_images

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


def load_pixels(path: Path, max_size: int | None) -> np.ndarray:
    """read_image with the task's size check: a grid needs two pixels along each axis."""
    pixels = read_image(path, max_size or None)
    if min(pixels.shape[:2]) < 2:
        raise InputError(f"image {path}: {pixels.shape[0]}x{pixels.shape[1]} pixels is too "
                         "small to fit (at least 2x2 expected)")
    return pixels


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


def write_image_outputs(image, jets: tuple, out_dir: Path, rendered: torch.Tensor | None = None
                        ) -> list[Path]:
    """The files of one fitted image: ``image`` has ``shape``, ``pixels`` [H, W, C] and
    ``train_index``; ``jets`` are (value, grad, lap) on its grid; ``rendered`` the values on the
    render grid, if any."""
    value, grad, lap = jets
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
    panels = [image.pixels, recon, grad_img, lap_img]
    if image.train_index is not None:
        shown = np.zeros(height * width, dtype=bool)
        shown[image.train_index.cpu().numpy()] = True
        panels.insert(1, image.pixels * shown.reshape(height, width, 1))
    paths.append(write_image(out_dir / "comparison.png", side_by_side(panels)))
    if rendered is not None:
        size = rendered.shape[:-1]
        paths.append(write_image(out_dir / "render.png", ((rendered + 1) / 2).clamp(0, 1)
                                 .reshape(*size, -1).cpu().numpy()))
    return paths
