"""Video in and out: frame arrays, GIF and MP4 for the video task.

A video is an array of frames [T, H, W, C] (C = 1 or 3) with values in [0, 1], float32, plus a
frame rate when the file knows one. Readers:

- ``.npy``: the array itself, [T, H, W, C] or [T, H, W] (grayscale); uint8 (0..255) or float
  already in [0, 1];
- ``.npz``: the same array under the key ``frames`` (or the archive's only array) and an
  optional scalar ``fps``;
- ``.gif``: through imageio (Pillow); an alpha channel is dropped;
- ``.mp4`` / ``.mov`` / ``.mkv`` / ``.avi`` / ``.webm``: through imageio's FFMPEG plugin, which
  needs the optional ``video`` extra (imageio-ffmpeg); without it the error says how to install it.

Writers: ``write_gif``, ``write_mp4`` (same extra) and ``write_frame_grid`` (a PNG contact
sheet of frames, row-major); they create parent folders and return the path written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..deps import missing, require
from ..errors import InputError, check_not_folder

__all__ = [
    "MOVIE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "has_mp4_support",
    "read_video",
    "write_frame_grid",
    "write_gif",
    "write_mp4",
]

MOVIE_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
VIDEO_SUFFIXES = (".npy", ".npz", ".gif", *MOVIE_SUFFIXES)


def has_mp4_support() -> bool:
    """Whether imageio's FFMPEG plugin can run (the ``video`` extra is installed)."""
    return not missing("video")


def _as_unit_frames(array: np.ndarray, path: str) -> np.ndarray:
    """[T, H, W, C] float32 in [0, 1] from uint8 or [0, 1] float frames, C in (1, 3)."""
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"{path!r}: expected frames shaped T x H x W x C with C = 1 or 3 "
            f"(or T x H x W), got shape {tuple(array.shape)}"
        )
    if array.shape[-1] == 4:  # RGBA: drop the alpha channel
        array = array[..., :3]
    if array.dtype == np.uint8:
        return (array.astype(np.float32) / 255.0)
    if array.dtype.kind != "f":
        raise InputError(f"{path!r}: expected uint8 or float frames, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise InputError(
            f"{path!r}: float frames must be finite and within [0, 1], got range "
            f"[{np.nanmin(array):.4g}, {np.nanmax(array):.4g}]"
        )
    return array


def _read_npz(path: str) -> tuple[np.ndarray, float | None]:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.keys())
        if "frames" in names:
            key = "frames"
        elif len([n for n in names if n != "fps"]) == 1:
            key = next(n for n in names if n != "fps")
        else:
            raise InputError(
                f"{path!r}: expected an array named 'frames' (T x H x W x C), found {names}"
            )
        frames = archive[key]
        fps = float(archive["fps"]) if "fps" in names else None
    return frames, fps


def _read_with_imageio(path: str, movie: bool) -> tuple[np.ndarray, float | None]:
    import imageio.v3 as iio

    plugin = "FFMPEG" if movie else None
    frames = [np.asarray(frame) for frame in iio.imiter(path, plugin=plugin)]
    if not frames:
        return np.zeros((0, 1, 1, 1), np.uint8), None
    meta = iio.immeta(path, plugin=plugin)
    if movie:
        fps = meta.get("fps")
    else:  # GIF: duration per frame in milliseconds
        fps = 1000.0 / meta["duration"] if meta.get("duration") else None
    if any(f.shape != frames[0].shape for f in frames):
        raise InputError(f"{path!r}: frames differ in size")
    return np.stack(frames), (float(fps) if fps else None)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """Frames [T, H, W, C] float32 in [0, 1] (C = 1 or 3) and the frame rate (None if unknown).

    Raises InputError for a missing file, an unsupported suffix, an unreadable file, frames of
    the wrong shape or range, and for MP4 without the ``video`` extra.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(
            f"unsupported video format {suffix or '(no suffix)'!r} for {path!r}: expected one "
            f"of {', '.join(VIDEO_SUFFIXES)}"
        )
    check_not_folder(path, "video file")
    if not os.path.isfile(path):
        raise InputError(f"video file not found: {path!r}")
    if suffix in MOVIE_SUFFIXES:
        require("video", f"reading {suffix}")
    try:
        if suffix == ".npy":
            frames, fps = np.load(path, allow_pickle=False), None
        elif suffix == ".npz":
            frames, fps = _read_npz(path)
        else:
            frames, fps = _read_with_imageio(path, movie=suffix in MOVIE_SUFFIXES)
    except InputError:
        raise
    except Exception as exc:  # numpy, Pillow and ffmpeg each raise their own kinds
        raise InputError(f"cannot read {path!r} as {suffix[1:]} video: {exc}") from None
    return _as_unit_frames(np.asarray(frames), path), fps


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, C] in [0, 1] -> uint8, grayscale squeezed to [T, H, W] for the encoders."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"expected frames [T, H, W, C] with C = 1 or 3, got {frames.shape}")
    out = np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def _parent_made(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Write frames [T, H, W, C] in [0, 1] as a looping GIF."""
    import imageio.v3 as iio

    path = _parent_made(path)
    iio.imwrite(path, _to_uint8(frames), duration=1000.0 / fps, loop=0)
    return path


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Write frames [T, H, W, C] in [0, 1] as H.264 MP4 (needs the ``video`` extra).

    H.264 in yuv420p needs even sizes: odd heights or widths are padded by one edge row/column.
    """
    require("video", "writing MP4")
    import imageio.v3 as iio

    data = _to_uint8(frames)
    if data.ndim == 3:  # the encoder wants colour frames
        data = np.repeat(data[..., None], 3, axis=-1)
    pad_h, pad_w = data.shape[1] % 2, data.shape[2] % 2
    if pad_h or pad_w:
        data = np.pad(data, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = _parent_made(path)
    iio.imwrite(path, data, fps=fps, plugin="FFMPEG", macro_block_size=1)
    return path


def write_frame_grid(
    path: str | os.PathLike, frames: np.ndarray, columns: int = 8, gap: int = 2
) -> Path:
    """Write frames [T, H, W, C] in [0, 1] as one PNG: a grid ``columns`` wide, white gaps."""
    import imageio.v3 as iio

    data = _to_uint8(frames)
    if data.ndim == 3:
        data = data[..., None]
    t, h, w, c = data.shape
    columns = max(1, min(columns, t))
    rows = math.ceil(t / columns)
    sheet = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, c), 255, np.uint8)
    for i in range(t):
        r, col = divmod(i, columns)
        sheet[r * (h + gap) : r * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = data[i]
    path = _parent_made(path)
    iio.imwrite(path, sheet[..., 0] if c == 1 else sheet)
    return path
