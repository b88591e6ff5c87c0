"""init: meta-learn a starting point (and per-weight step sizes) for images of one kind.

``fastsiren fit init DATA`` reads a dataset as ``fit image`` does (a folder, a glob, an
``.npy``/``.npz`` stack; ``tasks.image_dataset``), all of one size, holds the last ``held_out``
images back and meta-learns on the others a ``LearnedStart`` (``fastsiren.modules``): a starting
network theta_0 and a positive step size s per weight, such that K = ``inner_steps`` gradient
steps theta <- theta - s * grad L(theta) from theta_0 fit an unseen image of the kind well.

Method (Meta-SGD, i.e. MAML with learned per-parameter inner step sizes, second order): each step
draws ``meta_batch`` training images, takes the K steps on each from theta_0 (differentiably,
``tasks.learned_start.adapted_values``) and minimises the images' mean squared error after them,

    min over (theta_0, log s) of  mean_b L_b(theta_K,b),
    theta_{k+1,b} = theta_{k,b} - s * grad L_b(theta_{k,b}),  theta_{0,b} = theta_0,

with Adam (``lr`` on theta_0, ``step_size_lr`` on log s). The meta-gradient runs through the K
steps' own gradients (second derivatives), which first-order variants drop and which measured
worth the most here (bench/fit_results/learned-init.md). This task is the one that uses autograd
on the network itself: the K inner steps are part of its forward, on a plain-torch batched SIREN.

A fit from the start (``fit image DATA --init RUN``) takes the K learned steps, then continues
with Adam. At the end the run fits its held-out images from the learned start and from the
standard SIREN init, each at every Adam rate of ``CURVE_LRS``, and reports the PSNR after 1 ...
100 steps (``held_out_curve.png``, metrics.json): ``adam_lr``, the rate after the learned steps
that reaches 30 dB first (``learned_start.best_rate``), is the one ``--init`` uses unless
``--lr`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..jet import Jet
from ..modules import LearnedStart
from .base import FitContext, FitSettings, Task, setting
from .common import pixel_grid, psnr_tensor, pyplot, save_figure
from .image_dataset import dataset_items, read_items
from .learned_start import INIT_TASK, TARGET_DB, adapted_values, held_out_curves, steps_to

__all__ = ["InitSettings", "InitTask"]


@dataclass
class InitSettings(FitSettings):
    """Meta-learn a starting network and step sizes for a dataset of images of one kind."""

    # CPU: 600 meta-steps of 8 images of 32 px, about 5 minutes on two cores at a load average
    # of 2.5 (0.45 s a step; bench/fit_results/learned-init.md); width 64, so that the fits
    # from the start stay cheap.
    steps: int | None = setting(None, "meta-training steps (each on meta_batch images)",
                                positive=True, cpu=600, cuda=5000)
    lr: float = setting(1e-4, "Adam rate of the starting network's weights", positive=True)
    width: int | None = setting(None, "hidden features per layer", positive=True, cpu=64,
                                cuda=256)
    step_size_lr: float = setting(1e-2, "Adam rate of the logarithms of the step sizes",
                                  positive=True)
    inner_steps: int = setting(3, "learned gradient steps a fit from the start takes before "
                               "Adam", positive=True)
    initial_step_size: float = setting(1e-2, "step size of every weight before meta-training",
                                       positive=True)
    meta_batch: int = setting(8, "training images per meta-training step", positive=True)
    batch_fraction: float = setting(
        1.0, "fraction of each image's pixels used in a meta-training step (the held-out fits "
        "use all)", positive=True, high=1.0)
    held_out: int = setting(16, "images held back (the last ones of the dataset) for the "
                            "held-out curve", positive=True)
    curve_steps: int = setting(100, "fit steps of the held-out curve", positive=True)


class InitTask(Task):
    name = INIT_TASK
    settings_class = InitSettings
    order = 0
    progress_metric = "psnr"
    model_class = "LearnedStart"
    example = ("fastsiren fit init crops.npz --out runs/crops-init\n"
               "  fastsiren fit image other_crops.npz --init runs/crops-init   # fit from it")

    def __init__(self, settings: InitSettings, context: FitContext):
        super().__init__(settings, context)
        if not settings.input:
            raise InputError("fit init needs a dataset of images of one kind (a folder, a glob "
                             "or an .npy/.npz stack)")
        read, _ = read_items(dataset_items(settings.input), None)
        shapes = {pixels.shape[:2] for _, pixels in read}
        if len(shapes) > 1:
            sizes = ", ".join(f"{h}x{w}" for h, w in sorted(shapes)[:4])
            raise InputError(f"fit init: images of {len(shapes)} sizes ({sizes}); expected one "
                             "size (crop or resize them alike)")
        if len(read) < settings.held_out + 1:
            raise InputError(f"fit init: {len(read)} images; expected more than --held-out "
                             f"{settings.held_out} (they are held back for the curve)")
        channels = max(pixels.shape[2] for _, pixels in read)
        stack = np.stack([np.repeat(pixels, channels // pixels.shape[2], 2)
                          for _, pixels in read])
        self.shape = stack.shape[1:3]
        self.in_features, self.out_features = 2, channels
        targets = torch.from_numpy(stack).reshape(len(read), -1, channels).to(self.device) * 2 - 1
        self.train_target = targets[:-settings.held_out]
        self.held_out_target = targets[-settings.held_out:]
        self.names = [item.name for item, _ in read]
        self.coords = pixel_grid(*self.shape, device=self.device)

    def model_kwargs(self) -> dict:
        return {**super().model_kwargs(), "inner_steps": self.settings.inner_steps,
                "initial_step_size": self.settings.initial_step_size}

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam([
            {"params": model.siren.parameters(), "lr": self.settings.lr},
            {"params": model.log_step_sizes.parameters(), "lr": self.settings.step_size_lr}])

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n_train, n_points = self.train_target.shape[:2]
        pick = torch.randint(n_train, (self.settings.meta_batch,), generator=generator,
                             device=self.device)
        target, coords = self.train_target[pick], self.coords
        if self.settings.batch_fraction < 1.0:
            keep = max(1, round(n_points * self.settings.batch_fraction))
            points = torch.randperm(n_points, generator=generator, device=self.device)[:keep]
            target, coords = target[:, points], coords[points]
        return {"coords": coords.expand(len(pick), -1, -1), "target": target}

    def jet(self, model: LearnedStart, batch: dict[str, torch.Tensor]) -> Jet:
        """The values after the start's learned steps on each image of the batch."""
        return Jet(adapted_values(model, batch["coords"], batch["target"]))

    def loss(self, jet: Jet, batch: dict[str, torch.Tensor]):
        per_image = (jet.value - batch["target"]).square().mean((1, 2))
        loss = per_image.mean()
        return loss, {"mse": loss.detach(),
                      "psnr": psnr_tensor(per_image.detach(), peak=2.0).mean()}

    def evaluate(self, model: LearnedStart) -> dict:
        held = len(self.held_out_target)
        with torch.enable_grad():
            curves = held_out_curves(model, self.coords.expand(held, -1, -1),
                                     self.held_out_target, self.settings.curve_steps,
                                     self.settings.seed, backend=self.settings.backend)
        self.curves = curves
        best_standard, best_learned = curves["best_standard_lr"], curves["best_learned_lr"]
        standard, learned = curves["standard"][best_standard], curves["learned"][best_learned]
        return {
            "adam_lr": best_learned, "standard_lr": best_standard,
            "inner_steps": model.inner_steps,
            f"learned_steps_to_{TARGET_DB:g}db": steps_to(learned, TARGET_DB),
            f"standard_steps_to_{TARGET_DB:g}db": steps_to(standard, TARGET_DB),
            "held_out_psnr_learned": {str(k): v for k, v in learned.items()},
            "held_out_psnr_standard": {str(k): v for k, v in standard.items()},
            "held_out_curves": {kind: {f"{lr:g}": {str(k): v for k, v in curve.items()}
                                       for lr, curve in curves[kind].items()}
                                for kind in ("standard", "learned")},
            "step_size_mean_per_tensor": [float(s.mean()) for s in model.step_sizes()],
        }

    def write_outputs(self, model: LearnedStart, out_dir: Path) -> list[Path]:
        curves = self.curves
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for kind, style in (("standard", "--"), ("learned", "-")):
            best = curves[f"best_{kind}_lr"]
            for lr, curve in curves[kind].items():
                steps = [s for s in curve if s > 0]
                label = f"{kind} init, Adam {lr:g}" + (
                    f" after {model.inner_steps} learned steps" if kind == "learned" else "")
                ax.plot(steps, [curve[s] for s in steps], style,
                        alpha=1.0 if lr == best else 0.3, label=label)
        ax.axhline(TARGET_DB, color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("fit steps")
        ax.set_ylabel("held-out PSNR (dB)")
        ax.set_title(f"{len(self.held_out_target)} held-out images, "
                     f"{self.shape[0]}x{self.shape[1]} px")
        ax.legend(fontsize=6)
        return [save_figure(fig, out_dir / "held_out_curve.png")]

    def describe(self) -> dict:
        return {"images": len(self.names), "train": len(self.train_target),
                "held_out": self.names[-len(self.held_out_target):],
                "height": int(self.shape[0]), "width": int(self.shape[1]),
                "channels": self.out_features}
