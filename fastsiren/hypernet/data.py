"""Images for the hypernetwork: a folder (or the built-in samples) -> small square images, a seeded
train/test split, the pixel grid, and context sampling.

As the paper's CelebA setup: each image is centre-cropped to a square and resized (32x32 by
default), values mapped to [-1, 1]; coordinates span [-1, 1] with the row index first
(``fastsiren.tasks.common.pixel_grid``, the official ``get_mgrid``). Context
(``sample_context``): during training each image gets a random number of context pixels,
uniform in [10, 200]; the paper evaluates with 10, 100
and 1000 pixels and with the top half of the image. The official conv encoder draws a Bernoulli
mask with that *expected* count; here both encoders get exactly that many distinct pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io.image import list_images, read_image
from ..tasks.common import data_file
from .models import Context

__all__ = [
    "builtin_images",
    "half_context",
    "load_image_folder",
    "prepare_image",
    "sample_context",
    "split_indices",
    "train_counts",
]

TRAIN_CONTEXT_RANGE = (10, 200)  # the official train_sparsity_range
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's RGB -> L


def prepare_image(image: np.ndarray, resolution: tuple[int, int], channels: int,
                  name: str) -> torch.Tensor:
    """[H, W, C] in [0, 1] (C = 1 or 3) -> centre square crop, resized to ``resolution``
    (bicubic with antialiasing) -> [h, w, channels] in [0, 1]. Gray images are repeated to 3
    channels, colour ones turned to luminance for 1."""
    height, width = resolution
    rows, cols = image.shape[:2]
    side = min(rows, cols)
    if side < max(height, width):
        raise InputError(
            f"{name}: image is {cols}x{rows} pixels, smaller than the {height}x{width} crop; "
            "use larger images or a smaller --resolution"
        )
    top, left = (rows - side) // 2, (cols - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(image[top:top + side, left:left + side]))
    square = square.permute(2, 0, 1).unsqueeze(0).float()
    small = F.interpolate(square, size=(height, width), mode="bicubic", antialias=True,
                          align_corners=False)[0].clamp(0.0, 1.0)
    if small.shape[0] == 1 and channels == 3:
        small = small.expand(3, -1, -1)
    elif small.shape[0] == 3 and channels == 1:
        small = (small * torch.tensor(LUMA).view(3, 1, 1)).sum(0, keepdim=True)
    return small.permute(1, 2, 0).contiguous()


def load_image_folder(folder: str | Path, resolution: tuple[int, int] = (32, 32),
                      channels: int = 3) -> tuple[torch.Tensor, list[str]]:
    """Every image file of ``folder`` (sorted by name; other files are ignored) as
    [N, H, W, C] in [0, 1], with the file names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--data {folder}: expected a folder of images, found no such folder")
    files = list_images(folder)
    images = [prepare_image(read_image(path), resolution, channels, str(path)) for path in files]
    return torch.stack(images), [p.name for p in files]


def builtin_images(resolution: tuple[int, int] = (32, 32), channels: int = 3,
                   crops_per_frame: int = 4, camera_crops: int = 96,
                   seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """The built-in data set, [N, H, W, C] in [0, 1], and the files it came from: square crops
    of the bundled camera.png (64 to 256 pixels wide at seeded random places) and, where the
    package has it, of the 32 Big Buck Bunny frames of bunny_clip.npz (the centre square and
    ``crops_per_frame - 1`` random squares of 72 pixels or more each). Deterministic for a
    seed."""
    rng = np.random.default_rng(seed)
    crops, sources = [], []

    def add(image, size, top, left, name):
        crops.append(prepare_image(image[top:top + size, left:left + size], resolution,
                                   channels, name))

    camera = read_image(data_file("camera.png"))
    sources.append("camera.png")
    for _ in range(camera_crops):
        size = int(rng.integers(64, 257))
        add(camera, size, int(rng.integers(0, camera.shape[0] - size + 1)),
            int(rng.integers(0, camera.shape[1] - size + 1)), "camera.png")
    clip = data_file("bunny_clip.npz")
    if clip.is_file():
        sources.append("bunny_clip.npz")
        with np.load(clip) as data:
            frames = data["frames"].astype(np.float32) / 255.0
        for frame in frames:
            h, w = frame.shape[:2]
            add(frame, h, 0, (w - h) // 2, "bunny_clip.npz")
            for _ in range(crops_per_frame - 1):
                size = int(rng.integers(72, h + 1))
                add(frame, size, int(rng.integers(0, h - size + 1)),
                    int(rng.integers(0, w - size + 1)), "bunny_clip.npz")
    return torch.stack(crops), sources


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of range(n) into (train, test); at least one image on each side."""
    if n < 2:
        raise InputError(f"need at least 2 images for a train/test split, got {n}")
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test:].sort().values, order[:n_test].sort().values


def sample_context(batch: int, n_pixels: int, counts, generator: torch.Generator | None = None,
                   device=None) -> Context:
    """Random distinct context pixels for each image of a batch.

    ``counts``: one int for every image, or a sequence/tensor of one count per image (the batch
    is padded to the largest, padding masked out). Train with counts drawn from
    ``TRAIN_CONTEXT_RANGE`` (``train_counts``).
    """
    counts = torch.as_tensor(counts, dtype=torch.long).expand(batch)
    k = int(counts.max())
    if k > n_pixels or int(counts.min()) < 1:
        raise InputError(
            f"context size must be between 1 and the image's {n_pixels} pixels, got "
            f"{k if k > n_pixels else int(counts.min())}"
        )
    index = torch.rand(batch, n_pixels, generator=generator).argsort(dim=1)[:, :k]
    mask = (torch.arange(k).unsqueeze(0) < counts.unsqueeze(1)).float()
    return Context(index, mask).to(device) if device is not None else Context(index, mask)


def train_counts(batch: int, generator: torch.Generator | None = None,
                 low_high: tuple[int, int] = TRAIN_CONTEXT_RANGE) -> torch.Tensor:
    """A context size per image, uniform in [low, high] (the official training sparsity)."""
    low, high = low_high
    return torch.randint(low, high + 1, (batch,), generator=generator)


def half_context(batch: int, resolution: tuple[int, int], device=None) -> Context:
    """The top half of the image's rows as context, for every image."""
    height, width = resolution
    k = max(1, height // 2) * width
    index = torch.arange(k, device=device).expand(batch, k)
    return Context(index, torch.ones(batch, k, device=device))
