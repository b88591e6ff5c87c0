"""Video reading and writing on tiny generated files: arrays, GIF, MP4, bad files."""

import sys

import numpy as np
import pytest

import fastsiren.io.video as video
from fastsiren.errors import InputError
from fastsiren.io.video import read_video, write_frame_grid, write_gif, write_mp4


@pytest.fixture
def clip():
    """3 RGB frames of 6 x 10 on the uint8 grid, as float in [0, 1]."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(3, 6, 10, 3)).astype(np.float32) / 255


def test_npy_uint8_and_float_and_grayscale(tmp_path, clip):
    np.save(tmp_path / "u8.npy", np.round(clip * 255).astype(np.uint8))
    frames, fps = read_video(tmp_path / "u8.npy")
    assert fps is None and frames.dtype == np.float32
    np.testing.assert_allclose(frames, clip, atol=1e-6)
    np.save(tmp_path / "gray.npy", clip[..., 0])  # T x H x W, float
    frames, _ = read_video(tmp_path / "gray.npy")
    assert frames.shape == (3, 6, 10, 1)
    np.testing.assert_array_equal(frames[..., 0], clip[..., 0])


def test_npz_frames_and_fps(tmp_path, clip):
    np.savez(tmp_path / "v.npz", frames=np.round(clip * 255).astype(np.uint8), fps=12.0)
    frames, fps = read_video(tmp_path / "v.npz")
    assert fps == 12.0
    np.testing.assert_allclose(frames, clip, atol=1e-6)


def test_gif_round_trip_keeps_frames_and_rate(tmp_path, clip):
    write_gif(tmp_path / "v.gif", clip, fps=5)
    frames, fps = read_video(tmp_path / "v.gif")
    assert frames.shape == clip.shape and fps == pytest.approx(5)
    # GIF quantises to a 256-colour palette per frame: 3 x 60 random colours fit exactly, or
    # nearly (Pillow's quantiser may merge close ones).
    assert np.abs(frames - clip).mean() < 2 / 255


@pytest.mark.skipif(not video.has_mp4_support(), reason="the optional 'video' extra is absent")
def test_mp4_round_trip_with_odd_size_padding(tmp_path):
    # A smooth clip (H.264 is lossy: random pixels would not survive), odd width padded to even.
    t, r, c = np.meshgrid(np.arange(4), np.arange(16), np.arange(15), indexing="ij")
    smooth = (0.5 + 0.4 * np.sin(0.3 * r + 0.2 * c + 0.5 * t))[..., None].repeat(3, -1)
    write_mp4(tmp_path / "v.mp4", smooth.astype(np.float32), fps=8)
    frames, fps = read_video(tmp_path / "v.mp4")
    assert frames.shape == (4, 16, 16, 3) and fps == pytest.approx(8)
    assert np.abs(frames[:, :, :15] - smooth).mean() < 0.03


def test_mp4_without_the_extra_says_how_to_install(tmp_path, monkeypatch, clip):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as where it is not installed
    (tmp_path / "v.mp4").write_bytes(b"\x00")
    with pytest.raises(InputError, match=r"pip install 'fastsiren\[video\]'"):
        read_video(tmp_path / "v.mp4")
    with pytest.raises(InputError, match=r"pip install 'fastsiren\[video\]'"):
        write_mp4(tmp_path / "out.mp4", clip)


def test_frame_grid_layout(tmp_path, clip):
    import imageio.v3 as iio

    write_frame_grid(tmp_path / "grid.png", clip, columns=2, gap=1)
    sheet = iio.imread(tmp_path / "grid.png")
    assert sheet.shape == (2 * 6 + 1, 2 * 10 + 1, 3)
    np.testing.assert_array_equal(sheet[7:, 11:], 255)  # the empty fourth cell
    np.testing.assert_allclose(sheet[7:, :10] / 255, clip[2], atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("v.avi2", b"", "unsupported video format"),
        ("missing.npy", None, "not found"),
        ("bad.gif", b"GIF89a garbage", "cannot read"),
        ("shape.npy", np.zeros((2, 3)), "T x H x W x C"),
        ("range.npy", np.full((2, 3, 3, 3), 2.0), r"within \[0, 1\]"),
        ("ints.npy", np.zeros((2, 3, 3, 3), np.int64), "uint8 or float"),
    ],
    ids=["suffix", "missing", "garbage", "shape", "range", "dtype"],
)
def test_bad_files_raise_one_line_input_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(InputError, match=message) as info:
        read_video(path)
    assert "\n" not in str(info.value)
