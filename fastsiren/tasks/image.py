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

A folder or several files fit many images at once: ``fastsiren.tasks.many_images``. What both
forms share is in ``fastsiren.tasks.image_common``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..jet import Jet
from ..mesh import available_memory
from .base import FitContext, Task, load_class
from .common import (
    evaluate_on_grid,
    load_pixels,
    pixel_grid,
    psnr_tensor,
    random_subset,
    sample_image_path,
)
from .image_common import (
    ImageSettings,
    fitted_pixels,
    image_inputs,
    image_metrics,
    render_grid,
    write_image_outputs,
)
from .image_dataset import dataset_items, is_dataset
from .learned_start import check_start, fit_optimizer, initial_model

__all__ = ["ImageSettings", "ImageTask"]

# The many-images form, named by its registry entry so that neither task module imports the other.
MANY_IMAGES = "fastsiren.tasks.many_images:ManyImagesTask"


class ImageTask(Task):
    name = "image"
    settings_class = ImageSettings
    order = 0
    progress_metric = "psnr"
    example = ("fastsiren fit image photo.png --steps 2000 --out runs/photo\n"
               "  fastsiren fit image --keep-fraction 0.25 --render-size 512x512   "
               "# inpainting, super-resolution\n"
               "  fastsiren fit image photos/ --out runs/photos     # a network per image\n"
               "  fastsiren fit image crops.npy --networks-per-batch 256 --target-psnr 35")

    @classmethod
    def create(cls, settings: ImageSettings, context: FitContext) -> Task:
        if is_dataset(settings.input):
            return load_class(MANY_IMAGES)(settings, context, dataset_items(settings.input))
        return cls(settings, context, image_inputs(settings.input)[0])

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
        check_render_memory(settings, self.shape, channels, self.device)
        check_start(settings, self.model_kwargs())

    def build_model(self) -> nn.Module:
        if self.settings.init is not None:
            return initial_model(self.settings, self.model_kwargs())
        return super().build_model()

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return fit_optimizer(self.settings, model)

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = self.train_batch["coords"].shape[0]
        pick = random_subset(n, self.settings.batch_fraction, generator, self.device)
        if pick is None:
            return self.train_batch
        return {k: v[pick] for k, v in self.train_batch.items()}

    def loss(self, jet, batch):
        mse = (jet.value - batch["target"]).square().mean()
        # Pixels span 2 on [-1, 1]: the PSNR on [0, 1] has peak 2 on this scale.
        psnr_db = psnr_tensor(mse, peak=2.0)
        self._last_psnr = psnr_db  # what stopped_networks reads
        return mse, {"mse": mse.detach(), "psnr": psnr_db}

    def stopped_networks(self, step: int) -> torch.Tensor | None:
        """With ``target_psnr``: the fit ends at the first step whose loss reaches it."""
        if self.settings.target_psnr is None:
            return None
        return (self._last_psnr >= self.settings.target_psnr).reshape(1)

    def reconstruct(self, model: nn.Module) -> Jet:
        """The order-2 jet of the fitted network on the training grid (cached)."""
        if self._evaluated is None:
            self._evaluated = evaluate_on_grid(model, self.coords, order=2)
        return self._evaluated

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self._evaluated = None
        value = self.reconstruct(model).value
        return image_metrics(value, self.target, self.train_index)

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        rendered = None
        grid = render_grid(self.settings, self.shape, self.device)
        if grid is not None:
            coords, size = grid
            rendered = evaluate_on_grid(model, coords, order=0).value.reshape(*size, -1)
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


# Bytes per rendered pixel besides its channels' float32 values: its two float32 coordinates.
RENDER_COORD_BYTES = 8


def check_render_memory(settings: ImageSettings, shape: tuple[int, int], channels: int,
                        device: torch.device) -> None:
    """An InputError before training when ``render.png`` (``--render-size`` or
    ``--render-range``) cannot be held: its coordinates and values on ``device``."""
    if settings.render_size is None and settings.render_range == 1.0:
        return
    size = settings.render_size or (round(shape[0] * settings.render_range),
                                    round(shape[1] * settings.render_range))
    need = size[0] * size[1] * (RENDER_COORD_BYTES + 4 * channels)
    limit = available_memory(device)
    if limit is not None and need > limit:
        raise InputError(f"--render-size {size[0]}x{size[1]}: the render needs "
                         f"{need / 2**30:.1f} GiB and {limit / 2**30:.1f} GiB is available; "
                         "ask for a smaller render")
