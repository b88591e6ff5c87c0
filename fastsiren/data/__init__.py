"""The built-in samples: the signals each task fits when no INPUT is given.

They ship inside the package (licences and credits in ``fastsiren/data/README.md``)::

    from fastsiren.data import sample
    fs.fit("image", sample("camera"), out="runs/camera")

From a shell, ``python -m fastsiren.data`` lists them with their paths, and
``python -m fastsiren.data DIR`` copies them into DIR (with the video's credit file) to try the
commands that take an INPUT: ``fastsiren fit image DIR/camera.png``.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

__all__ = ["SAMPLES", "copy_samples", "package_file", "sample"]

# name -> (file in this folder, what it is)
SAMPLES: dict[str, tuple[str, str]] = {
    "camera": ("camera.png", "512x512 grayscale photograph; image, poisson, hypernet"),
    "guitar": ("guitar_fifths.wav", "6 s of guitar, mono, 44.1 kHz; the audio task's"),
    "bunny": ("bunny_clip.npz", "32 RGB frames of 144x256; the video task's"),
    "kitten": ("kitten.xyz", "5,210 oriented points; the sdf task's"),
}
# Files that travel with a sample when it is copied (its licence asks for the credit).
COMPANIONS = {"bunny": ("bunny_clip.CREDIT.txt",)}


def package_file(name: str) -> Path:
    """A file of this folder by its file name ("camera.png")."""
    return Path(str(resources.files(__name__) / name))


def sample(name: str) -> Path:
    """The path of the built-in sample ``name`` (one of ``SAMPLES``: camera, guitar, bunny,
    kitten)."""
    if name not in SAMPLES:
        from ..errors import InputError

        raise InputError(f"no built-in sample {name!r}; expected one of {', '.join(SAMPLES)}")
    return package_file(SAMPLES[name][0])


def copy_samples(folder: str | Path) -> list[Path]:
    """Copy every sample (and its credit file) into ``folder`` (created if missing); returns the
    samples' new paths."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        from ..errors import InputError

        raise InputError(f"{folder}: is a file; expected a folder to copy the samples into")
    folder.mkdir(parents=True, exist_ok=True)
    copied = []
    for name, (file, _) in SAMPLES.items():
        for extra in COMPANIONS.get(name, ()):
            shutil.copyfile(package_file(extra), folder / extra)
        copied.append(Path(shutil.copyfile(sample(name), folder / file)))
    return copied
