"""The images of a dataset, for the many-images form of the image task.

INPUT may name image files, folders (searched recursively, any mix of sizes), glob patterns
(``"shots/**/*.png"``, quoted so the shell leaves them alone) and stacks: an ``.npy`` file, or an
``.npz`` file with one array (or one named ``images``), shaped [N, H, W] or [N, H, W, C] with
C = 1 or 3; uint8 stacks are divided by 255, float stacks must lie in [0, 1]. Each image is an
``ImageItem`` named by its path relative to the folder it was found in, or ``stack.npz[i]``, and
is read only when the task asks for it.

Before any pixel is read, ``scan_items`` learns every image's size and channels from the file
headers and the stacks' shapes (what a dataset fitted in groups needs to know up front: the
channels of the one architecture, the largest image for the group size); ``read_items`` then
reads one group's pixels at a time.

An item that cannot be read does not end a run of thousands: a corrupt file, an image of fewer
than 2x2 pixels, or, found in a folder or by a glob, an ``.npz`` that is not an image stack (a
video clip with its frame rate, say) is skipped with one warning naming the count, and returned
with its reason so that the summary lists it. A stack named on its own is read as the user
asked, and its shape checked: a wrong one is an error before any work.
"""

from __future__ import annotations

import functools
import glob
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.image import IMAGE_SUFFIXES, image_shape
from .common import load_pixels, sample_image_path

__all__ = ["STACK_SUFFIXES", "ImageItem", "dataset_items", "is_dataset", "read_items",
           "scan_items"]

STACK_SUFFIXES = (".npy", ".npz")
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class ImageItem:
    """One image of a dataset: a file, or entry ``index`` of a stack file."""

    name: str
    path: Path
    index: int | None = None

    @property
    def in_stack(self) -> bool:
        return self.path.suffix.lower() in STACK_SUFFIXES

    def shape(self, max_size: int | None) -> tuple[int, int, int]:
        """(H, W, C) of ``read(max_size)``, from the header or the stack's shape alone; an
        InputError for an item that cannot be read or is too small."""
        if self.in_stack:
            stack = _stack(self.path)  # raises for a file that is not an image stack
            height, width = stack.shape[1:3]
            channels = 1 if stack.ndim == 3 else stack.shape[3]
            if max_size and max(height, width) > max_size:
                scale = max_size / max(height, width)
                height, width = max(1, round(height * scale)), max(1, round(width * scale))
        else:
            height, width, channels = image_shape(self.path, max_size or None)
        if min(height, width) < 2:
            raise InputError(f"{self.name}: {height}x{width} pixels is too small to fit (at "
                             "least 2x2 expected)")
        return height, width, channels

    def read(self, max_size: int | None) -> np.ndarray:
        """The pixels [H, W, C] (C = 1 or 3) in [0, 1], shrunk as ``read_image`` shrinks."""
        if not self.in_stack:
            return load_pixels(self.path, max_size)
        stack = _stack(self.path)
        if self.index is None:
            raise InputError(f"{self.name}: a numpy file found among the images, not one entry "
                             "of an image stack")
        pixels = stack[self.index]
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        if pixels.dtype == np.uint8:
            pixels = pixels.astype(np.float32) / 255.0
        else:
            pixels = np.asarray(pixels, dtype=np.float32)
            if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
                raise InputError(f"{self.name}: float pixels outside [0, 1] (expected uint8, "
                                 "or floats in [0, 1])")
        if max_size and max(pixels.shape[:2]) > max_size:
            pixels = _shrink(pixels, max_size)
        if min(pixels.shape[:2]) < 2:
            raise InputError(f"{self.name}: {pixels.shape[0]}x{pixels.shape[1]} pixels is too "
                             "small to fit (at least 2x2 expected)")
        return pixels


def is_dataset(inputs: tuple[str, ...]) -> bool:
    """Whether INPUT names several images (many at once) rather than one file."""
    return len(inputs) > 1 or any(
        Path(item).is_dir() or _is_pattern(item) or Path(item).suffix.lower() in STACK_SUFFIXES
        for item in inputs)


def dataset_items(inputs: tuple[str, ...]) -> list[ImageItem]:
    """The images INPUT names, in order: files as given, folders and glob matches sorted, stacks
    entry by entry; none: the built-in sample."""
    if not inputs:
        path = sample_image_path()
        return [ImageItem(path.name, path)]
    items: list[ImageItem] = []
    for text in inputs:
        path = Path(text)
        if path.exists():
            items += _items_of(path, path.parent if path.is_file() else path, named=True)
        elif _is_pattern(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"{text}: the pattern matches no files")
            for match in matches:
                items += _items_of(match, match.parent if match.is_file() else match,
                                   named=False)
        else:
            raise InputError(f"image {text}: no such file or folder")
    if not items:
        raise InputError(f"{', '.join(inputs)}: no images (expected files ending in "
                         f"{', '.join(IMAGE_SUFFIXES + STACK_SUFFIXES)})")
    return items


def scan_items(items: list[ImageItem], max_size: int | None
               ) -> tuple[list[tuple[ImageItem, tuple[int, int, int]]],
                          list[tuple[ImageItem, str]]]:
    """(item, (H, W, C)) for every item whose header or stack shape can be read, and (item,
    reason) for each one skipped (warned about once). An InputError when none is left."""
    return _each_or_skip(items, lambda item: item.shape(max_size))


def read_items(items: list[ImageItem], max_size: int | None, none_is_error: bool = True
               ) -> tuple[list[tuple[ImageItem, np.ndarray]], list[tuple[ImageItem, str]]]:
    """(item, pixels) for every readable item, and (item, reason) for each one skipped (warned
    about once). An InputError when none is readable, unless not ``none_is_error`` (one group
    of a larger dataset)."""
    return _each_or_skip(items, lambda item: item.read(max_size), none_is_error)


def _each_or_skip(items: list[ImageItem], read, none_is_error: bool = True
                  ) -> tuple[list, list[tuple[ImageItem, str]]]:
    done, skipped = [], []
    for item in items:
        try:
            done.append((item, read(item)))
        except InputError as exc:
            skipped.append((item, str(exc)))
    if not done and none_is_error:
        raise InputError(f"none of the {len(items)} images could be read; the first: "
                         f"{skipped[0][1]}")
    if skipped:
        names = ", ".join(item.name for item, _ in skipped[:3])
        warnings.warn(f"skipped {len(skipped)} of {len(items)} images that cannot be read "
                      f"({names}{', ...' if len(skipped) > 3 else ''}); the summary lists them",
                      stacklevel=3)
    return done, skipped


def _is_pattern(text: str) -> bool:
    return not _GLOB_CHARACTERS.isdisjoint(text)


def _items_of(path: Path, root: Path, named: bool) -> list[ImageItem]:
    """The items of ``path`` (a file or a folder below ``root``); ``named``: the user gave this
    very file, so a stack that cannot be read is an error rather than an item to skip."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and
                       p.suffix.lower() in IMAGE_SUFFIXES + STACK_SUFFIXES)
        if not files:
            raise InputError(f"folder {path}: no images in it or below it (expected files "
                             f"ending in {', '.join(IMAGE_SUFFIXES + STACK_SUFFIXES)})")
        return [item for f in files for item in _items_of(f, path, named=False)]
    name = path.relative_to(root).as_posix()
    if path.suffix.lower() not in STACK_SUFFIXES:
        return [ImageItem(name, path)]
    try:
        count = len(_stack(path))
    except InputError:
        if named:
            raise
        # Found among images, not asked for by name: one item, skipped when scanned.
        return [ImageItem(name, path)]
    return [ImageItem(f"{name}[{i}]", path, i) for i in range(count)]


@functools.lru_cache(maxsize=4)
def _stack(path: Path) -> np.ndarray:
    """The image array of a stack file, checked: [N, H, W] or [N, H, W, C], C = 1 or 3, N >= 1
    (an .npy file memory-mapped, so only the images read are loaded)."""
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                key = "images" if "images" in names else names[0] if len(names) == 1 else None
                if key is None:
                    raise InputError(f"{path}: {len(names)} arrays ({', '.join(names[:5])}); "
                                     "expected one, or one named 'images'")
                array = archive[key]
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable numpy stack ({exc})") from None
    shape = tuple(array.shape)
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
        raise InputError(f"{path}: images of shape {shape}; expected [N, H, W] or "
                         "[N, H, W, C] with C = 1 or 3")
    if shape[0] == 0:
        raise InputError(f"{path}: an empty stack (no images)")
    if not (array.dtype == np.uint8 or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{path}: pixels of dtype {array.dtype}; expected uint8 or float")
    return array


def _shrink(pixels: np.ndarray, max_size: int) -> np.ndarray:
    """Lanczos shrink so that the longer side is ``max_size``, as ``read_image`` does."""
    from PIL import Image

    height, width = pixels.shape[:2]
    scale = max_size / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    channels = [np.asarray(Image.fromarray(pixels[..., c], mode="F").resize(
        size, Image.Resampling.LANCZOS)) for c in range(pixels.shape[2])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)
