"""hypernet: complete an image from a few of its pixels (the official
``train_img_neural_process.py``, the paper's section 4.4).

Data: a folder of images (INPUT or ``--data``), each centre-cropped to a square and resized to
``resolution`` (32x32 as the paper's CelebA; 16x16 by default on CPU), values mapped to [-1, 1],
split into train and test with a seeded permutation; with neither, the built-in set of crops of
the bundled samples (``fastsiren.hypernet.data.builtin_images``). Coordinates: the official grid
(row first, each ``linspace(-1, 1)``).

Model (``fastsiren.hypernet.NeuralProcessHypernet``): an encoder (``set`` over (coordinate,
value) of the context pixels, or ``conv`` over the sparse image) -> a 256-d latent -> heads
(``official`` per-parameter MLPs, or ``lowrank`` offsets of a shared SIREN) -> the weights of
one SIREN per image; the meta-batch of SIRENs is one batched ``fs.siren_jet`` call.

Each step: ``batch_size`` training images, each with a random number of context pixels uniform
in [context_min, context_max] (official: 10 to 200); the loss is the official one: the image MSE
over all pixels + ``latent_weight`` x mean(z^2) + ``param_weight`` x mean(theta^2) over the
predicted SIREN parameters; gradients clipped to norm 1 as the official script.

Metrics: test MSE on [0, 1] with 10, 100 and 1000 context pixels (sizes below the image's pixel
count) and with the top half of the image, as the paper's table (CelebA 32x32, conv encoder:
0.033 / 0.009 / 0.008), and the trivial baseline: the mean training image. Outputs:
``completions.png`` (test images; for each context: the context, the completion; then the truth).

Each step's batch is a global batch: ``batch_size`` images in the order of a seeded permutation
of the training set per epoch, context pixels drawn per batch slot from (seed, step). Under
``torchrun`` the fit loop gives each process its share of the slots (``Task.batch_items``) and
averages the gradients, so K processes follow the one-process run with the same global batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..hypernet import Context, hypernetwork_loss
from ..hypernet.data import (
    builtin_images,
    half_context,
    load_image_folder,
    sample_context,
    split_indices,
    train_counts,
)
from .base import FitContext, FitSettings, Task, setting
from .common import Panel, panel_figure, parse_hxw, pixel_grid, save_figure

__all__ = ["EVAL_CONTEXTS", "HypernetSettings", "HypernetTask", "parse_resolution"]

# The paper's evaluation: context sizes and "half" (the top half of the rows).
EVAL_CONTEXTS = (10, 100, 1000, "half")
GRID_IMAGES = 6  # test images shown in completions.png


def parse_resolution(text: str) -> tuple[int, int]:
    """--resolution 'S' or 'HxW' -> (H, W)."""
    return parse_hxw(text, "--resolution", "32")


@dataclass
class HypernetSettings(FitSettings):
    """Complete images from a few pixels: a hypernetwork predicts a SIREN per image."""

    data: str | None = setting(
        None, "folder of images (the same as INPUT); none: the built-in set of crops of the "
        "bundled samples", metavar="DIR")
    # CPU: 16x16 images, low-rank heads and a weak parameter penalty learn in 600 steps (a
    # third of the image default's step each: about a minute or two on two cores) completions
    # that follow the context: test MSE with 100 pixels 0.017 against the mean image's 0.052,
    # seed 0 (bench/fit_results/cpu_defaults.md). At the official 32x32, per-parameter heads
    # and fw_weight 100, 300 steps stay at the mean image (coloured noise).
    # CUDA: the official run (32x32, per-parameter heads, lr 5e-5, fw_weight 100).
    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=600, cuda=20000)
    lr: float | None = setting(None, "Adam learning rate (official: 5e-5)", positive=True,
                               cpu=3e-4, cuda=5e-5)
    width: int | None = setting(None, "hidden features of the predicted SIREN", positive=True,
                                cpu=64, cuda=256)
    clip_grad: float | None = setting(1.0, "clip the gradient norm to this value (official: 1)",
                                      positive=True)
    checkpoint_every: int = setting(500, "steps between checkpoints (one is always written "
                                    "at the end and on Ctrl-C)", positive=True)
    encoder: str = setting("set", "context encoder: 'set' over (coordinate, value) pairs, "
                           "'conv' over the sparse image", choices=("set", "conv"))
    heads: str | None = setting(None, "hypernetwork: 'official' per-parameter MLP heads (52M "
                                "parameters for a 256-wide SIREN), 'lowrank' offsets of a "
                                "shared SIREN (4M)", choices=("official", "lowrank"),
                                cpu="lowrank", cuda="official")
    rank: int = setting(8, "rank of the low-rank offsets (--heads lowrank)", positive=True)
    latent_dim: int | None = setting(None, "size of the latent code (official: 256)",
                                     positive=True, cpu=128, cuda=256)
    hyper_width: int | None = setting(None, "hidden features of the hypernetwork heads "
                                      "(official: 256)", positive=True, cpu=128, cuda=256)
    hyper_depth: int = setting(1, "hidden layers of the hypernetwork heads", low=0)
    batch_size: int | None = setting(None, "images per step (the global batch under torchrun)",
                                     positive=True, cpu=16, cuda=100)
    resolution: tuple[int, int] | None = setting(
        None, "image size after the centre crop (the paper: 32)", metavar="S|HxW",
        parse=parse_resolution, cpu=16, cuda=32)
    channels: int = setting(3, "colour channels (1: gray, 3: RGB)", choices=(1, 3))
    test_fraction: float = setting(0.2, "share of the images held out for the metrics",
                                   positive=True, high=0.9)
    context_min: int = setting(10, "fewest context pixels per training image", positive=True)
    context_max: int = setting(200, "most context pixels per training image", positive=True)
    latent_weight: float = setting(0.1, "weight of mean(z^2) in the loss (official kl_weight)",
                                   low=0)
    param_weight: float | None = setting(None, "weight of the mean squared predicted SIREN "
                                         "parameter (official fw_weight: 100)", low=0, cpu=1.0,
                                         cuda=100.0)

    def __post_init__(self):
        super().__post_init__()
        if self.resolution is None:  # the device's default, filled in by resolved()
            return
        if isinstance(self.resolution, (str, int)):
            self.resolution = parse_resolution(self.resolution)
        else:  # a tuple, or a list from a checkpoint's settings
            self.resolution = tuple(int(v) for v in self.resolution)

    def validate(self) -> None:
        super().validate()
        if self.context_min > self.context_max:
            raise InputError(f"--context-min {self.context_min} exceeds --context-max "
                             f"{self.context_max}")
        pixels = math.prod(self.resolution or (1 << 30,))  # unresolved: checked once resolved
        if self.context_max > pixels:
            raise InputError(f"--context-max {self.context_max}: larger than the "
                             f"{self.resolution[0]}x{self.resolution[1]} image's {pixels} "
                             "pixels")


class HypernetTask(Task):
    name = "hypernet"
    settings_class = HypernetSettings
    order = 0
    progress_metric = "mse"
    model_class = "NeuralProcessHypernet"
    example = ("fastsiren fit hypernet --out runs/hypernet      # built-in images, CPU minutes\n"
               "  fastsiren fit hypernet faces/ --encoder conv --heads lowrank\n"
               "  torchrun --nproc_per_node 4 -m fastsiren fit hypernet faces/\n"
               "  python -m fastsiren.data samples    # the built-in samples, to complete one\n"
               "  fastsiren hypernet-predict runs/hypernet samples/camera.png --context 100")

    def __init__(self, settings: HypernetSettings, context: FitContext):
        super().__init__(settings, context)
        folder = self._folder(settings)
        if folder is None:
            images, self.sources = builtin_images(settings.resolution, settings.channels)
        else:
            images, _ = load_image_folder(folder, settings.resolution, settings.channels)
            self.sources = [str(folder)]
        train, test = split_indices(len(images), settings.test_fraction, settings.seed)
        self.n_images = len(images)
        self.in_features, self.out_features = 2, settings.channels
        self.n_pixels = math.prod(settings.resolution)
        # values on [-1, 1] as the official Normalize(0.5, 0.5), flattened row-major [N, P, C]
        flat = images.reshape(len(images), self.n_pixels, settings.channels) * 2 - 1
        self.train_images = flat[train].to(self.device)
        self.test_images = flat[test].to(self.device)
        self.coords = pixel_grid(*settings.resolution, device=self.device)
        if settings.batch_size > len(train):
            raise InputError(f"--batch-size {settings.batch_size}: larger than the "
                             f"{len(train)} training images")
        self.steps_per_epoch = len(train) // settings.batch_size  # whole batches per epoch
        self._epoch, self._order = None, None
        self._metrics: dict[str, float] | None = None  # the last evaluate's, for the picture

    @property
    def batch_items(self) -> int:
        return self.settings.batch_size

    @staticmethod
    def _folder(settings: HypernetSettings) -> Path | None:
        inputs = list(settings.input) + ([settings.data] if settings.data else [])
        if len(inputs) > 1:
            raise InputError(f"expected one folder of images (INPUT or --data), got {inputs}")
        return Path(inputs[0]) if inputs else None

    # -- the model ---------------------------------------------------------------------------
    def model_kwargs(self) -> dict:
        s = self.settings
        return {
            "channels": s.channels, "resolution": list(s.resolution), "encoder": s.encoder,
            "heads": s.heads, "rank": s.rank, "latent_dim": s.latent_dim,
            "hyper_hidden_features": s.hyper_width, "hyper_hidden_layers": s.hyper_depth,
            "siren_hidden_features": s.width, "siren_hidden_layers": s.depth,
            "omega_0": s.omega0, "first_omega_0": s.first_omega0,
        }

    # -- one step ----------------------------------------------------------------------------
    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Global batch ``step``: the next ``batch_size`` images of the epoch's permutation
        (seeded by seed + epoch), context drawn per batch slot from (seed, step). Both depend on
        the step alone, so any share of the slots is the same as in a one-process run."""
        s = self.settings
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            order_generator = torch.Generator().manual_seed(s.seed + epoch)
            self._epoch = epoch
            self._order = torch.randperm(len(self.train_images), generator=order_generator)
        chosen = self._order[position * s.batch_size:(position + 1) * s.batch_size]
        step_generator = torch.Generator().manual_seed(s.seed * 1_000_003 + step)
        counts = train_counts(s.batch_size, step_generator, (s.context_min, s.context_max))
        context = sample_context(s.batch_size, self.n_pixels, counts, step_generator)
        return {
            "coords": self.coords.expand(s.batch_size, -1, -1),  # the points evaluated
            "pixels": self.train_images[chosen.to(self.device)],
            "context_index": context.index.to(self.device),
            "context_mask": context.mask.to(self.device),
        }

    def jet(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        """The hypernetwork's output (the SIRENs' jet with the latent and the predicted
        parameters, all of which the loss needs)."""
        context = Context(batch["context_index"], batch["context_mask"])
        return model(batch["pixels"], self.coords, context, order=self.order)

    def loss(self, output, batch):
        s = self.settings
        terms = hypernetwork_loss(output, batch["pixels"], s.latent_weight, s.param_weight)
        logged = {"mse": terms["image_mse"].detach() / 4,  # on [0, 1]
                  "latent_term": terms["latent"].detach(), "param_term": terms["params"].detach()}
        return terms["loss"], logged

    # -- metrics and outputs -----------------------------------------------------------------
    def _contexts(self, n: int, size) -> Context:
        if size == "half":
            return half_context(n, self.settings.resolution, self.device)
        generator = torch.Generator().manual_seed(self.settings.seed + 12345 + size)
        return sample_context(n, self.n_pixels, size, generator, self.device)

    def eval_sizes(self) -> list:
        return [c for c in EVAL_CONTEXTS if c == "half" or c < self.n_pixels]

    def complete(self, model: nn.Module, pixels: torch.Tensor, context: Context):
        """Completions [N, P, C] on [-1, 1], in chunks of the batch size."""
        chunk = self.settings.batch_size
        parts = []
        for start in range(0, len(pixels), chunk):
            part = Context(context.index[start:start + chunk], context.mask[start:start + chunk])
            parts.append(model(pixels[start:start + chunk], self.coords, part).value)
        return torch.cat(parts)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        metrics = {}
        for size in self.eval_sizes():
            context = self._contexts(len(self.test_images), size)
            completion = self.complete(model, self.test_images, context).clamp(-1, 1)
            metrics[f"test_mse_{size}"] = float((completion - self.test_images).square().mean()
                                                / 4)
        mean_image = self.train_images.mean(0, keepdim=True)
        metrics["test_mse_mean_image"] = float((mean_image - self.test_images).square().mean()
                                               / 4)
        self._metrics = metrics
        return metrics

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        """completions.png: one row per test image; per context size the context given (the
        rest grey) and the completion; the truth last. Columns are titled, the figure with the
        test MSE per context size."""
        height, width = self.settings.resolution
        shown = self.test_images[:GRID_IMAGES]
        n = len(shown)

        def image(values):  # [n, P, C] on [-1, 1] -> [n, H, W, C] on [0, 1]
            return ((values + 1) / 2).clamp(0, 1).reshape(n, height, width, -1).cpu().numpy()

        columns, titles = [], []
        for size in self.eval_sizes():
            context = self._contexts(n, size)
            keep = torch.zeros(n, self.n_pixels, 1, device=self.device)
            keep.scatter_(1, context.index.unsqueeze(-1), context.mask.unsqueeze(-1))
            given = "top half" if size == "half" else f"{size} px"
            columns.append(image(shown * keep))  # 0 on [-1, 1]: grey away from the context
            columns.append(image(self.complete(model, shown, context)))
            titles += [f"context: {given}", f"completion\nfrom {given}"]
        columns.append(image(shown))
        titles.append("truth")
        rows = [[Panel(column[r], titles[c] if r == 0 else "") for c, column in
                 enumerate(columns)] for r in range(n)]
        metrics = self._metrics or self.evaluate(model)
        scores = ", ".join(f"{'half' if size == 'half' else size}: "
                           f"{metrics[f'test_mse_{size}']:.3f}" for size in self.eval_sizes())
        title = (f"hypernetwork completions of {n} held-out test images ({height}x{width}; "
                 f"grey: pixels not given)\ntest MSE on [0, 1] by context size: {scores} "
                 f"(mean image: {metrics['test_mse_mean_image']:.3f})")
        figure = panel_figure(rows, title, panel_inches=1.15)
        return [save_figure(figure, Path(out_dir) / "completions.png")]

    def describe(self) -> dict:
        return {
            "sources": self.sources, "images": self.n_images,
            "train_images": len(self.train_images), "test_images": len(self.test_images),
            "resolution": list(self.settings.resolution), "channels": self.out_features,
            "coordinates": "(row, col), each linspace(-1, 1), row-major",
            "values": "pixel * 2 - 1 (pixels in [0, 1]); metrics are MSE on [0, 1]",
            "columns_of_completions_png": [f"context {c}, completion {c}"
                                           for c in self.eval_sizes()] + ["truth"],
        }

