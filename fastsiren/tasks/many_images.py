"""Many images at once: B independent SIRENs, one per image, trained together.

``fastsiren fit image FOLDER`` (or several files, a glob, a numpy stack) lands here. The
networks are one ``BatchedSiren`` (weights [B, out, in]); every step evaluates all of them through
its batched jet (``siren_jet`` calls over cache-sized groups of networks) and takes one optimizer
step, never a Python loop over images.

Images of different sizes are padded, not grouped: each image keeps its own [-1, 1] grid
(``common.pixel_grid``), the grids are padded to the longest one, and a per-point weight (zero on
padding, 1/N_b on the N_b real points of image b) makes the loss

    loss = sum_b mean_{n in image b} |f_b(x_bn) - y_bn|^2

so network b receives exactly the gradient of its own image's mean squared error: a batched fit
follows the same trajectory as fitting each image alone with the same seed (every network starts
from the initialisation a single-image fit with that seed would draw). Padding costs the compute
of the missing points; images of one size waste nothing. Grayscale images are promoted to RGB
when the folder mixes both.

The images come from ``tasks.image_dataset``: files, folders (recursive), glob patterns and
``.npy``/``.npz`` stacks; an image that cannot be read is skipped with a warning and listed.

Datasets of any size: the images are fitted in groups of ``networks_per_batch`` (default: as many
as ``MEMORY_FRACTION`` of the free memory holds, from the largest image's size and the network's;
``default_networks_per_batch``), one group after another (``Task.groups``/``start_group``):
only the current group's pixels, networks and Adam state are held. The sizes and channels of
every image are learned first from the headers (``image_dataset.scan_items``), so every group
has the same architecture; each group is read when its turn comes. Network i of the whole run
is image i in input order (the skipped left out), whatever the grouping: since each network
gets its own image's gradient and starts from the same draw, a dataset fitted in groups gives
the networks of a dataset fitted at once (up to the rounding of matmuls of other batch sizes;
with ``batch_fraction < 1`` the points drawn depend on the group's size).

Early stop (``target_psnr``): a network stops updating at the first step whose loss shows it at
the target PSNR on that step's training pixels (``stopped_networks``); the loop keeps its
parameters and Adam state as they are, and a group ends when all its networks have stopped.
Each image's row in the summary gives its steps (updates applied).

Outputs: ``summary.csv`` (one row per image: name, size, PSNR, steps), ``summary.md`` (the PSNR
distribution, the images skipped, the table) and ``psnr_histogram.png``; with ``save_images``
(by default for at most SAVE_IMAGES_UP_TO images) also one folder per image under ``images/``
with the single-image files. metrics.json reports the mean PSNR, images per second, every
image's metrics and, under ``data.names``, the images in the order of the networks: the run's
checkpoint holds them all as one ``BatchedSiren`` (with their names), and ``fs.load_model(run,
index=i)`` is image i's ``fs.Siren``. Under ``torchrun`` each process fits its shard of the
images (``context.shard``), in its own groups, and writes its own checkpoint; rank 0 writes the
summary for all of them.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..jet import Jet
from ..mesh import available_memory
from ..modules import BatchedSiren, Siren
from .base import FitContext, Task
from .common import evaluate_on_grid, pixel_grid, psnr_tensor, pyplot, save_figure
from .image_common import (
    ImageSettings,
    fitted_pixels,
    image_metrics,
    render_grid,
    write_image_outputs,
)
from .image_dataset import ImageItem, read_items, scan_items
from .learned_start import check_start, fit_optimizer, initial_model

__all__ = ["SAVE_IMAGES_UP_TO", "ManyImagesTask", "default_networks_per_batch"]

# save_images left unset writes each image's pictures for datasets up to this size (six files
# per image: a dataset of thousands would spend more time writing PNGs than fitting).
SAVE_IMAGES_UP_TO = 100
# The share of the free memory a group's networks may take by default: the rest is left to the
# process (torch, the evaluation's chunks, the outputs) and to whatever else runs.
MEMORY_FRACTION = 0.25
# The group size when the free memory cannot be read.
NETWORKS_PER_BATCH_UNKNOWN_MEMORY = 1024


def default_networks_per_batch(points: int, channels: int, width: int, depth: int,
                               device: torch.device) -> int:
    """How many networks of ``width`` x ``depth`` fitting images of ``points`` pixels fit in
    ``MEMORY_FRACTION`` of the free memory of ``device``.

    Bytes per network, float32: per pixel its coordinates, target and weight (3 + C), the
    order-2 jet its evaluation keeps (4C), the activations training keeps for the backward and
    their cotangents (about 6 values per hidden feature and layer), and the parameters with their
    gradient and Adam's two moments (4 copies). Measured: 1.59 MiB per network of 2->64x3->1 on
    16x16 pixels (peak RSS of 2048 networks in one group against groups of 256,
    bench/fit_results/stream-cpu-16px.json); this estimate gives 1.70 MiB.
    """
    params = 3 * width + depth * (width + 1) * width + (width + 1) * channels
    per_point = 3 + channels + 4 * channels + 6 * width * (depth + 1)
    per_network = 4 * (points * per_point + 4 * params)
    free = available_memory(device)
    if free is None:
        return NETWORKS_PER_BATCH_UNKNOWN_MEMORY
    return max(1, int(free * MEMORY_FRACTION) // per_network)


class _Image:
    """One image of the batch: what the single-image writers need."""

    def __init__(self, item: ImageItem, name: str, pixels: np.ndarray, settings: ImageSettings,
                 device):
        self.path, self.name, self.pixels = item.path, name, pixels
        self.shape = pixels.shape[:2]
        self.n_points = self.shape[0] * self.shape[1]
        self.train_index = fitted_pixels(settings, self.shape, device)


def unique_names(items: list[ImageItem]) -> list[str]:
    """One output name per image: its item name (the file name, the path below the folder it was
    found in, or ``stack.npz[i]``), or, where several share one (``a/rgb.png``, ``b/rgb.png``
    given as files), its path below the inputs' common folder with "/" as "-" (``a-rgb.png``,
    ``b-rgb.png``)."""
    names = [item.name for item in items]
    if len(set(names)) == len(names):
        return names
    resolved = [item.path.resolve() for item in items]
    common = Path(os.path.commonpath([p.parent for p in resolved]))
    return [name if names.count(name) == 1 else "-".join(path.relative_to(common).parts)
            + ("" if item.index is None else f"[{item.index}]")
            for name, path, item in zip(names, resolved, items)]


class ManyImagesTask(Task):
    name = "image"
    settings_class = ImageSettings
    order = 0
    progress_metric = "psnr"
    model_class = "BatchedSiren"
    shards_items = True

    def __init__(self, settings: ImageSettings, context: FitContext, items: list[ImageItem]):
        """``items``: every input image; this process fits its share (``context.shard``), in
        groups of ``settings.networks_per_batch`` (filled in here when unset)."""
        super().__init__(settings, context)
        self.save_images = (settings.save_images if settings.save_images is not None
                            else len(items) <= SAVE_IMAGES_UP_TO)
        shard = context.shard(list(zip(items, unique_names(items))))
        self.names = dict(shard)
        scanned, skipped = scan_items([item for item, _ in shard], settings.max_size)
        self.skipped_in_scan = [{"image": self.names[item], "reason": reason}
                                for item, reason in skipped]
        self.sizes = {item: shape[:2] for item, shape in scanned}
        self.in_features = 2
        self.out_features = max(shape[2] for _, shape in scanned)
        check_start(settings, super().model_kwargs())  # before any work
        self.largest = max(h * w for h, w in self.sizes.values())
        if settings.networks_per_batch is None:
            settings.networks_per_batch = default_networks_per_batch(
                self.largest, self.out_features, settings.width, settings.depth, self.device)
        size = settings.networks_per_batch
        fitted = [item for item, _ in scanned]
        self.group_items = [fitted[start:start + size] for start in range(0, len(fitted), size)]
        self.group: int | None = None
        self.images: list[_Image] = []
        if self.groups() == 1:  # the data is at hand as soon as the task is
            self.start_group(0)

    # -- groups: one batch of networks at a time ------------------------------------------------
    def groups(self) -> int:
        return len(self.group_items)

    def start_group(self, index: int) -> None:
        """Read group ``index``'s images (the previous group's are let go first) and lay them out
        as padded grids, targets and per-point loss weights [B, N_max, ...]."""
        if index == self.group:
            return
        self.images, self._evaluated, self.all_points = [], None, {}
        self.coords = self.target = self.weight = None
        self.group = index
        settings, channels = self.settings, self.out_features
        # One group of several may turn out empty (its files' pixels all broken): the loop
        # fits nothing there and the summary lists them.
        read, skipped = read_items(self.group_items[index], settings.max_size,
                                   none_is_error=self.groups() == 1)
        self.skipped = (self.skipped_in_scan if index == 0 else []) + [
            {"image": self.names[item], "reason": reason} for item, reason in skipped]
        self.images = [_Image(item, self.names[item], np.repeat(pixels, channels, 2)
                              if pixels.shape[2] < channels else pixels, settings, self.device)
                       for item, pixels in read]
        n_max = max((im.n_points for im in self.images), default=0)
        batch = len(self.images)
        self.coords = torch.zeros(batch, n_max, 2, device=self.device)
        self.target = torch.zeros(batch, n_max, channels, device=self.device)
        self.weight = torch.zeros(batch, n_max, device=self.device)
        for b, im in enumerate(self.images):
            self.coords[b, :im.n_points] = pixel_grid(*im.shape, device=self.device)
            self.target[b, :im.n_points] = (
                torch.from_numpy(im.pixels).reshape(-1, channels).to(self.device) * 2 - 1)
            fitted = (slice(None, im.n_points) if im.train_index is None else im.train_index)
            n_fitted = im.n_points if im.train_index is None else len(im.train_index)
            self.weight[b, fitted] = 1.0 / n_fitted
        self.fitted_counts = torch.tensor(
            [im.n_points if im.train_index is None else len(im.train_index)
             for im in self.images], device=self.device)
        self.all_points = {"coords": self.coords, "target": self.target, "weight": self.weight}
        # Early stop: which networks stopped, and after how many updates.
        self.stopped = torch.zeros(batch, dtype=torch.bool, device=self.device)
        self.stop_step = torch.zeros(batch, dtype=torch.long, device=self.device)
        self._last_mse: torch.Tensor | None = None

    def network_names(self) -> list[str]:
        return [im.name for im in self.images]

    def stopped_networks(self, step: int) -> torch.Tensor | None:
        target = self.settings.target_psnr
        if target is None:
            return None
        reached = psnr_tensor(self._last_mse, peak=2.0) >= target
        self.stop_step = torch.where(reached & ~self.stopped, step, self.stop_step)
        self.stopped = self.stopped | reached
        return self.stopped

    def state(self) -> dict:
        return {"stopped": self.stopped.cpu(), "stop_step": self.stop_step.cpu()}

    def restore_state(self, state: dict) -> None:
        if state:
            self.stopped = state["stopped"].to(self.device)
            self.stop_step = state["stop_step"].to(self.device)

    # -- the model: B networks, each with the initialisation of a single fit -----------------
    def model_kwargs(self) -> dict:
        return {"n_networks": len(self.images), **super().model_kwargs()}

    def build_model(self) -> nn.Module:
        kwargs = super().model_kwargs()
        if self.settings.init is not None:  # every network from the learned start
            return initial_model(self.settings, kwargs, len(self.images))
        sirens = []
        for _ in self.images:
            torch.manual_seed(self.settings.seed)  # the draw of a single-image fit
            sirens.append(Siren(**kwargs))
        return BatchedSiren.from_sirens(sirens, self.settings.compile_chunks).to(
            backend=self.settings.backend)

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return fit_optimizer(self.settings, model)

    # -- training ---------------------------------------------------------------------------
    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        fraction = self.settings.batch_fraction
        if fraction >= 1.0:
            return self.all_points
        # n points per image, drawn uniformly (with replacement) among its fitted ones.
        batch = len(self.images)
        n = max(1, round(int(self.fitted_counts.max()) * fraction))
        position = (torch.rand(batch, n, generator=generator, device=self.device)
                    * self.fitted_counts[:, None]).long()
        index = torch.stack([
            position[b] if im.train_index is None else im.train_index[position[b]]
            for b, im in enumerate(self.images)])
        return {
            "coords": self.coords.gather(1, index[..., None].expand(-1, -1, 2)),
            "target": self.target.gather(1, index[..., None].expand(-1, -1,
                                                                  self.out_features)),
            "weight": torch.full((batch, n), 1.0 / n, device=self.device),
        }

    def loss(self, jet, batch):
        per_point = (jet.value - batch["target"]).square().mean(-1)  # [B, N]
        per_image = (per_point * batch["weight"]).sum(-1)  # each image's own MSE
        self._last_mse = per_image.detach()  # what stopped_networks reads
        psnr_db = psnr_tensor(per_image, peak=2.0)  # values span 2 on [-1, 1]
        return per_image.sum(), {"mse": per_image.detach().mean(), "psnr": psnr_db.mean()}

    # -- results ----------------------------------------------------------------------------
    def reconstruct(self, model: nn.Module) -> Jet:
        """The order-2 jets [B, N_max, ...] of the fitted networks on their grids (cached)."""
        if self._evaluated is None:
            self._evaluated = evaluate_on_grid(model, self.coords, order=2)
        return self._evaluated

    def evaluate(self, model: nn.Module | None) -> dict:
        if not self.images:  # a group none of whose images could be read
            return {"images": [], "skipped": self.skipped}
        self._evaluated = None
        value = self.reconstruct(model).value
        steps = torch.where(self.stopped, self.stop_step, self.settings.steps).tolist()
        rows = []
        for b, im in enumerate(self.images):
            metrics = image_metrics(value[b, :im.n_points], self.target[b, :im.n_points],
                                    im.train_index)
            rows.append({"image": im.name, "height": im.shape[0], "width": im.shape[1],
                         **metrics, "steps": steps[b]})
        return {"images": rows, "skipped": self.skipped}

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        if not self.save_images:
            return []
        jet = self.reconstruct(model)
        rendered = {}
        for b, im in enumerate(self.images):
            grid = render_grid(self.settings, im.shape, self.device)
            if grid is not None:
                coords, size = grid
                rendered.setdefault(size, (coords, []))[1].append(b)
        renders = {}
        for size, (coords, members) in rendered.items():  # one batched call per render size
            values = evaluate_on_grid(model, coords.expand(len(self.images), -1, -1),
                                      order=0).value
            for b in members:
                renders[b] = values[b].reshape(*size, -1)
        paths = []
        for b, im in enumerate(self.images):
            n = im.n_points
            own = Jet(jet.value[b, :n], jet.grad[b, :n], jet.lap[b, :n])
            paths += write_image_outputs(im, own, out_dir / "images" / im.name,
                                         renders.get(b))
        return paths

    def summarize(self, shard_metrics: list[dict], out_dir: Path) -> dict:
        """All processes' rows in one table (summary.csv; summary.md with the distribution and
        the images skipped; psnr_histogram.png) and the PSNR statistics."""
        rows = [row for metrics in shard_metrics for row in metrics["images"]]
        skipped = [entry for metrics in shard_metrics for entry in metrics.get("skipped", [])]
        columns = list(rows[0])
        with (out_dir / "summary.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        psnrs = np.array([row["psnr"] for row in rows])
        finite = psnrs[np.isfinite(psnrs)]
        stats = {"psnr": float(np.mean(psnrs)), "psnr_min": float(np.min(psnrs)),
                 "psnr_median": float(np.median(psnrs)), "psnr_max": float(np.max(psnrs)),
                 "n_images": len(rows), "n_skipped": len(skipped)}
        steps = np.array([row["steps"] for row in rows])
        stats["steps_mean"] = float(np.mean(steps))
        target = self.settings.target_psnr
        reached = "" if target is None else (
            f"; {int(np.sum(steps < self.settings.steps))} stopped at the target "
            f"{target:g} dB before step {self.settings.steps}")
        lines = [f"# {len(rows)} images fitted" + (f", {len(skipped)} skipped" if skipped else ""),
                 "", f"In groups of up to {self.settings.networks_per_batch} images, "
                 f"{self.settings.steps} steps at most{reached}.", "",
                 "| | mean | min | 5% | median | 95% | max |",
                 "|---|---:|---:|---:|---:|---:|---:|",
                 *(f"| {label} | " + " | ".join(f"{v:.{digits}f}" for v in (
                     np.mean(values), np.min(values), *np.percentile(values, [5, 50, 95]),
                     np.max(values))) + " |"
                   for label, values, digits in (("PSNR (dB)", psnrs, 2), ("steps", steps, 1))),
                 "", "![PSNR histogram](psnr_histogram.png)", ""]
        if skipped:
            lines += ["## Skipped (could not be read)", "", "| image | reason |", "|---|---|"]
            lines += [f"| {e['image']} | {e['reason']} |" for e in skipped] + [""]
        lines += ["## Every image", "", "| " + " | ".join(columns) + " |",
                  "|" + "---|" * len(columns)]
        for row in rows:
            lines.append("| " + " | ".join(
                f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
        (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(finite, bins=min(50, max(5, len(finite) // 10)))
        ax.set_xlabel("PSNR (dB)")
        ax.set_ylabel("images")
        ax.set_title(f"{len(rows)} images, mean {stats['psnr']:.1f} dB")
        save_figure(fig, out_dir / "psnr_histogram.png")
        return {**stats, "skipped": skipped, "images": rows}

    def describe(self) -> dict:
        """The dataset as scanned (the images that could not be read are counted in the
        metrics); the loop adds ``names``, network i's image for every group."""
        return {
            "images": len(self.sizes), "skipped_unreadable_headers": len(self.skipped_in_scan),
            "channels": self.out_features,
            "sizes": sorted({f"{h}x{w}" for h, w in self.sizes.values()}),
            "padded_points_per_image": self.largest,
            "groups": self.groups(), "networks_per_batch": self.settings.networks_per_batch,
            "coordinates": "(row, col), each linspace(-1, 1) on the image's own grid",
            "values": "pixel * 2 - 1 (pixels in [0, 1])",
        }
