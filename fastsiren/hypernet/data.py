"""Images for the hypernetwork: a folder (or the built-in samples) -> small square images, a seeded
train/test split, the pixel grid, and context sampling.

As the paper's CelebA setup: each image is centre-cropped to a square and resized (32x32 by
default), values mapped to [-1, 1]; coordinates span [-1, 1] with the row index first
(``fastsiren.hypernet.data.pixel_grid``). Context (``sample_context``): during training each image
gets a random number of context pixels, uniform in [10, 200]; the paper evaluates with 10, 100
and 1000 pixels and with the top half of the image. The official conv encoder draws a Bernoulli
mask with that *expected* count; here both encoders get exactly that many distinct pixels.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .models import Context

__all__ = [
    "IMAGE_SUFFIXES",
    "builtin_images",
    "half_context",
    "load_image_folder",
    "pixel_grid",
    "prepare_image",
    "sample_context",
    "split_indices",
    "train_counts",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TRAIN_CONTEXT_RANGE = (10, 200)  # the official train_sparsity_range


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """[H*W, 2] coordinates in [-1, 1], row-major, (row, column) as the official ``get_mgrid``."""
    rows = torch.linspace(-1.0, 1.0, height)
    cols = torch.linspace(-1.0, 1.0, width)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def prepare_image(image, resolution: tuple[int, int], channels: int, name: str) -> np.ndarray:
    """A PIL image -> centre square crop, resized to ``resolution`` (H, W) -> float32 [H, W, C]
    in [0, 1]. Gray images are repeated to 3 channels when ``channels`` is 3 and colour ones
    converted to luminance when it is 1."""
    from PIL import Image

    height, width = resolution
    side = min(image.size)
    if side < max(height, width):
        raise InputError(
            f"{name}: image is {image.size[0]}x{image.size[1]} pixels, smaller than the "
            f"{height}x{width} crop; use larger images or a smaller --resolution"
        )
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    image = image.convert("RGB" if channels == 3 else "L")
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array.reshape(height, width, channels)


def load_image_folder(folder: str | Path, resolution: tuple[int, int] = (32, 32),
                      channels: int = 3) -> tuple[torch.Tensor, list[str]]:
    """Every image file of ``folder`` (sorted by name; other files are ignored) as
    [N, H, W, C] in [0, 1], with the file names."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--data {folder}: expected a folder of images, found no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(
            f"--data {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder"
        )
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
                images.append(prepare_image(image, resolution, channels, str(path)))
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{path}: not a readable image ({exc})") from None
    return torch.from_numpy(np.stack(images)), [p.name for p in files]


def _data_file(name: str) -> Path:
    path = resources.files("fastsiren") / "data" / name
    if not path.is_file():
        raise InputError(f"the built-in sample {name} is missing from fastsiren/data")
    return Path(str(path))


def builtin_images(resolution: tuple[int, int] = (32, 32), channels: int = 3,
                   crops_per_frame: int = 4, camera_crops: int = 96,
                   seed: int = 0) -> torch.Tensor:
    """The built-in data set: square crops of the bundled camera.png (sizes 64 to 256 pixels at
    seeded random places) and of the 32 Big Buck Bunny frames (the centre square and
    ``crops_per_frame - 1`` random squares of 72 to 144 pixels each), resized to
    ``resolution``: [N, H, W, C] in [0, 1]. Deterministic for a seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    crops = []

    def add(image, size, left, top):
        crops.append(prepare_image(image.crop((left, top, left + size, top + size)),
                                   resolution, channels, "built-in sample"))

    with Image.open(_data_file("camera.png")) as camera:
        camera.load()
    for _ in range(camera_crops):
        size = int(rng.integers(64, 257))
        add(camera, size, int(rng.integers(0, camera.size[0] - size + 1)),
            int(rng.integers(0, camera.size[1] - size + 1)))
    with np.load(_data_file("bunny_clip.npz")) as clip:
        frames = clip["frames"]
    for frame in frames:
        image = Image.fromarray(frame)
        w, h = image.size
        add(image, h, (w - h) // 2, 0)
        for _ in range(crops_per_frame - 1):
            size = int(rng.integers(72, h + 1))
            add(image, size, int(rng.integers(0, w - size + 1)),
                int(rng.integers(0, h - size + 1)))
    return torch.from_numpy(np.stack(crops))


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
