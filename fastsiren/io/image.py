"""Images: PNG, JPEG (and whatever else Pillow reads), grayscale or RGB, to float [H, W, C]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, check_not_folder

__all__ = ["IMAGE_SUFFIXES", "image_shape", "list_images", "read_image", "write_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def read_image(path: str | Path, max_size: int | None = None) -> np.ndarray:
    """The image at ``path`` as float32 [H, W, C] in [0, 1], C = 1 (grayscale) or 3 (RGB).

    An alpha channel is dropped (the colour is fitted, not the transparency); palette and other
    modes convert to RGB; 16-bit grayscale keeps its precision. ``max_size`` shrinks the image
    (Lanczos, aspect ratio kept) so that its longer side is at most that many pixels.
    """
    from PIL import Image

    img = _open(path, load=True)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img, scale = img.convert("F"), 65535.0 if img.mode.startswith("I;16") else None
    elif img.mode in ("L", "LA", "1"):
        img, scale = img.convert("L"), 255.0
    elif img.mode == "F":
        scale = None
    else:
        img, scale = img.convert("RGB"), 255.0
    if max_size is not None and max(img.size) > max_size:
        img = img.resize(_shrunk_size(img.size, max_size), Image.Resampling.LANCZOS)
    array = np.asarray(img, dtype=np.float32)
    if scale is None:  # 32-bit integer or float images: their own range
        lo, hi = float(array.min()), float(array.max())
        array = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    else:
        array = array / scale
    if array.ndim == 2:
        array = array[:, :, None]
    return np.clip(array, 0.0, 1.0)


def image_shape(path: str | Path, max_size: int | None = None) -> tuple[int, int, int]:
    """(H, W, C) of the array ``read_image(path, max_size)`` returns, from the file's header
    alone (no pixels decoded): how a dataset learns its images' sizes and channels before it
    reads them. A file whose pixels are damaged past its header passes here and fails in
    ``read_image``."""
    img = _open(path, load=False)
    channels = 1 if img.mode in _ONE_CHANNEL_MODES else 3
    width, height = img.size
    if max_size is not None and max(width, height) > max_size:
        width, height = _shrunk_size((width, height), max_size)
    return height, width, channels


# Pillow modes read as one channel (grayscale, 16- and 32-bit, float); every other is RGB.
_ONE_CHANNEL_MODES = ("I;16", "I;16B", "I;16L", "I", "L", "LA", "1", "F")


def _open(path: str | Path, load: bool):
    """The Pillow image at ``path`` (its pixels decoded with ``load``), or an InputError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check_not_folder(path, "image file")
    if not path.is_file():
        raise InputError(f"image {path}: no such file")
    try:
        with Image.open(path) as img:
            if load:
                img.load()
    except UnidentifiedImageError:
        raise InputError(
            f"image {path}: not a readable image (expected PNG or JPEG, "
            f"{', '.join(IMAGE_SUFFIXES)})"
        ) from None
    except OSError as exc:
        raise InputError(f"image {path}: cannot be read ({exc})") from None
    return img


def _shrunk_size(size: tuple[int, int], max_size: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is ``max_size`` (aspect ratio kept)."""
    width, height = size
    factor = max_size / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Save float [H, W], [H, W, 1] or [H, W, 3] in [0, 1] (clipped) as an 8-bit image."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    pixels = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(
            f"folder {folder}: no images in it (expected files ending in "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    return files
