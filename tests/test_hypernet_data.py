"""The hypernetwork's images: folder reading (crop, resize, mixed sizes and modes), the seeded
split, and one-line errors for bad folders."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastsiren.errors import InputError
from fastsiren.hypernet.data import load_image_folder, split_indices

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def save(path, array):
    Image.fromarray(array).save(path)


def test_folder_of_mixed_images(tmp_path):
    """Centre square crop then resize: a 40x64 RGB image whose centre 40x40 square is one colour
    (other colours outside it) becomes that colour; gray and RGBA images join as RGB."""
    wide = np.zeros((40, 64, 3), np.uint8)
    wide[:, :12] = (255, 0, 0)
    wide[:, 12:52] = (10, 200, 30)
    wide[:, 52:] = (0, 0, 255)
    save(tmp_path / "a_wide.png", wide)
    save(tmp_path / "b_gray.png", np.full((50, 33), 128, np.uint8))
    save(tmp_path / "c_rgba.png", np.full((32, 32, 4), 255, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    images, names = load_image_folder(tmp_path, (16, 16), channels=3)
    assert names == ["a_wide.png", "b_gray.png", "c_rgba.png"]
    assert images.shape == (3, 16, 16, 3) and images.dtype == torch.float32
    assert torch.allclose(images[0], torch.tensor([10, 200, 30]) / 255.0, atol=1 / 255)
    assert torch.allclose(images[1], torch.tensor(128 / 255.0), atol=1 / 255)
    gray, _ = load_image_folder(tmp_path, (16, 16), channels=1)
    assert gray.shape == (3, 16, 16, 1)


def test_split_is_seeded_and_disjoint():
    train, test = split_indices(50, 0.2, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert sorted(train.tolist() + test.tolist()) == list(range(50))
    again, _ = split_indices(50, 0.2, seed=3)
    assert torch.equal(train, again)
    assert not torch.equal(split_indices(50, 0.2, seed=4)[0], train)


@pytest.mark.parametrize("case", ["missing", "empty", "small", "unreadable", "one"])
def test_bad_folders_give_one_line_errors(tmp_path, case):
    folder = tmp_path / "images"
    if case != "missing":
        folder.mkdir()
    if case == "small":
        save(folder / "tiny.png", np.zeros((20, 40, 3), np.uint8))
    if case == "unreadable":
        (folder / "broken.jpg").write_bytes(b"this is no jpeg")
    expected = {
        "missing": "expected a folder of images, found no such folder",
        "empty": "no images in it",
        "small": "tiny.png: image is 40x20 pixels, smaller than the 32x32 crop",
        "unreadable": "broken.jpg: not a readable image",
        "one": "need at least 2 images",
    }[case]
    with pytest.raises(InputError, match=expected) as info:
        if case == "one":
            save(folder / "x.png", np.zeros((32, 32), np.uint8))
            images, _ = load_image_folder(folder)
            split_indices(len(images), 0.2, 0)
        else:
            load_image_folder(folder, (32, 32))
    assert "\n" not in str(info.value)
