"""Poisson: an image recovered from its gradient or its Laplacian alone (paper section 4.1).

Beside the official ``train_poisson_grad_img.py``, ``train_poisson_lapl_img.py`` and
``train_poisson_gradcomp_img.py``:

data        an image [H, W, C] mapped to [-1, 1] (the official pixel grid of ``tasks.common``).
targets     ``--supervise grad``: the Sobel gradient, per channel, along rows and columns;
            ``--supervise lap``: the 5-point discrete Laplacian;
            ``--composite IMG2``: the blend ``(1 - a) grad(img1) + a grad(img2)`` of two images'
            Sobel gradients (Poisson image editing: fitting gradients, not pixels, joins the two
            without seams).
loss        on the jet, nothing else: ``mean_n sum_i (d_i f - g_i)^2`` on the order-1 jet (the
            official ``gradients_mse``), ``mean_n (lap f - l)^2`` on the order-2 jet
            (``laplace_mse``).
metrics     the fit is defined only up to a constant, so ``psnr`` is taken after the
            least-squares gain and offset that best map the fit onto the ground truth, per
            channel. From the Laplacian the fit is defined only up to a harmonic function (any
            h with Δh = 0: the boundary values the Laplacian does not see), so a Laplacian fit
            also reports ``psnr_up_to_harmonic``: the PSNR after the least-squares gain plus
            the harmonic polynomials Re, Im (x + iy)^k, k <= ``HARMONIC_DEGREE``, per channel:
            what the Laplacian determined, judged apart from the
            smooth coat it cannot. metrics.json's ``psnr_note`` says which is which.

Finite differences become derivatives in coordinate units: on the grid linspace(-1, 1, n) the
spacing is ``h = 2 / (n - 1)`` per axis, the Sobel kernel (a central difference ``[-1, 0, 1]``
smoothed by ``[1, 2, 1]``) is ``8 h`` times the derivative, and the 5-point stencil is ``h^2``
times the second derivative. Dividing by those makes the targets those of the image itself, so
the fitted function is the image (gain 1) up to its offset. The official code instead scales the
image by 10 (gradient) or 1e4 (Laplacian) and runs ``scipy.ndimage.sobel`` on the [C, H, W]
tensor, which also smooths across the channel axis: the fit then has a resolution-dependent gain
(and, in colour, channels that leak into each other). The gain-and-offset PSNR is blind to the
gain; the per-channel 2-D Sobel here avoids the leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..errors import InputError
from ..io.image import write_image
from ..jet import Jet
from .base import FitContext, FitSettings, Task, setting
from .common import (
    Panel,
    evaluate_on_grid,
    load_pixels,
    panel_figure,
    pixel_grid,
    psnr,
    random_subset,
    sample_image_path,
    save_figure,
)

__all__ = [
    "MIN_SIDE",
    "PoissonSettings",
    "PoissonTask",
    "composite_gradient",
    "discrete_laplacian",
    "gradient_loss",
    "grid_spacing",
    "laplacian_loss",
    "align_up_to_harmonic",
    "harmonic_basis",
    "psnr_after_gain_offset",
    "psnr_up_to_harmonic",
    "sobel_gradient",
]

# The 3x3 stencils need a pixel on each side of a centre: smaller images have no interior.
MIN_SIDE = 3

# CPU defaults: a run of at most three minutes on two cores with a picture worth looking at
# (bench/fit_results/cpu_defaults.md); CUDA gets the paper's settings (256 x 256, 3 x 256,
# lr 1e-4, 10,000 steps, all pixels).
CPU_MAX_SIZE = 64
CPU_WIDTH = 64
CPU_STEPS = 300
CPU_LR = 1e-3
# Degree of the harmonic polynomials removed before ``psnr_up_to_harmonic`` (2k + 1 functions).
HARMONIC_DEGREE = 6


def grid_spacing(shape: tuple[int, int]) -> tuple[float, float]:
    """(h_row, h_col): the step of linspace(-1, 1, n) along rows and columns."""
    height, width = shape
    if min(height, width) < MIN_SIDE:
        raise InputError(
            f"image too small to differentiate: {height}x{width} pixels, the Sobel and "
            f"Laplacian stencils need at least {MIN_SIDE}x{MIN_SIDE}"
        )
    return 2.0 / (height - 1), 2.0 / (width - 1)


def sobel_gradient(image: np.ndarray) -> np.ndarray:
    """Sobel estimate of the gradient of ``image`` [H, W, C] in grid units: [H, W, C, 2].

    Component 0 differentiates along rows (the first coordinate), 1 along columns; each
    channel is filtered alone, borders by reflection (scipy.ndimage's default, as the
    official dataio).
    """
    image = np.asarray(image, dtype=np.float64)
    h_row, h_col = grid_spacing(image.shape[:2])
    grads = []
    for axis, h in ((0, h_row), (1, h_col)):
        per_channel = [ndimage.sobel(image[..., c], axis=axis) for c in range(image.shape[2])]
        grads.append(np.stack(per_channel, axis=-1) / (8.0 * h))
    return np.stack(grads, axis=-1)


def discrete_laplacian(image: np.ndarray) -> np.ndarray:
    """5-point Laplacian of ``image`` [H, W, C] in grid units: [H, W, C].

    ``sum_axis (f[i-1] - 2 f[i] + f[i+1]) / h_axis^2`` (``scipy.ndimage.laplace`` with each
    axis' own spacing), borders by reflection.
    """
    image = np.asarray(image, dtype=np.float64)
    h_row, h_col = grid_spacing(image.shape[:2])
    stencil = [1.0, -2.0, 1.0]
    return (
        ndimage.correlate1d(image, stencil, axis=0) / h_row**2
        + ndimage.correlate1d(image, stencil, axis=1) / h_col**2
    )


def composite_gradient(grad1: np.ndarray, grad2: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """The blend ``(1 - weight) grad1 + weight grad2`` of two gradient fields of one shape."""
    if grad1.shape != grad2.shape:
        raise InputError(
            f"composite images differ in shape: {grad1.shape[:3]} and {grad2.shape[:3]}"
        )
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"composite weight must be within [0, 1], got {weight}")
    return (1.0 - weight) * grad1 + weight * grad2


def gradient_loss(jet: Jet, target_grad: torch.Tensor) -> torch.Tensor:
    """``mean over points and channels of sum_i (d_i f - g_i)^2``; target_grad [..., N, C, d]."""
    return (jet.grad - target_grad).square().sum(-1).mean()


def laplacian_loss(jet: Jet, target_lap: torch.Tensor) -> torch.Tensor:
    """``mean over points and channels of (lap f - l)^2``; target_lap [..., N, C]."""
    return (jet.lap - target_lap).square().mean()


def psnr_after_gain_offset(fit: np.ndarray, truth: np.ndarray) -> tuple[float, list, list]:
    """PSNR (dB, on [0, 1]) of ``a fit + b`` against ``truth`` (both [..., C] in [-1, 1]),
    with the gain a and offset b per channel that minimise the squared error.

    Returns (psnr, gains, offsets). The error is measured on [0, 1] (half the [-1, 1] values),
    as every PSNR in fastsiren.
    """
    fit = np.asarray(fit, np.float64).reshape(-1, truth.shape[-1])
    truth = np.asarray(truth, np.float64).reshape(-1, truth.shape[-1])
    gains, offsets, aligned = [], [], np.empty_like(fit)
    for c in range(fit.shape[1]):
        design = np.stack([fit[:, c], np.ones(len(fit))], axis=1)
        (gain, offset), *_ = np.linalg.lstsq(design, truth[:, c], rcond=None)
        gains.append(float(gain))
        offsets.append(float(offset))
        aligned[:, c] = gain * fit[:, c] + offset
    mse = np.mean(((aligned - truth) / 2.0) ** 2)
    return psnr(max(mse, 1e-20)), gains, offsets


def harmonic_basis(coords: np.ndarray, degree: int = HARMONIC_DEGREE) -> np.ndarray:
    """[N, 2k + 1] harmonic polynomials at coords [N, 2]: 1 and Re, Im (x + iy)^k for
    k = 1..degree (each has Δ = 0, as the real and imaginary parts of an analytic function)."""
    z = np.asarray(coords, np.float64) @ np.array([1.0, 1j])
    columns = [np.ones(len(z))]
    for k in range(1, degree + 1):
        columns += [(z**k).real, (z**k).imag]
    return np.stack(columns, axis=1)


def align_up_to_harmonic(fit: np.ndarray, truth: np.ndarray, coords: np.ndarray,
                         degree: int = HARMONIC_DEGREE) -> np.ndarray:
    """``a fit + h`` [N, C] with the gain a and the harmonic polynomial h of
    ``harmonic_basis(coords, degree)`` that best match ``truth`` (least squares, per channel);
    fit and truth [N, C] (or [H, W, C] on the grid of coords)."""
    fit = np.asarray(fit, np.float64).reshape(len(coords), -1)
    truth = np.asarray(truth, np.float64).reshape(len(coords), -1)
    basis = harmonic_basis(coords, degree)
    aligned = np.empty_like(fit)
    for c in range(fit.shape[1]):
        design = np.concatenate([fit[:, c:c + 1], basis], axis=1)
        weights, *_ = np.linalg.lstsq(design, truth[:, c], rcond=None)
        aligned[:, c] = design @ weights
    return aligned


def psnr_up_to_harmonic(fit: np.ndarray, truth: np.ndarray, coords: np.ndarray,
                        degree: int = HARMONIC_DEGREE) -> float:
    """PSNR (dB, on [0, 1]) of ``align_up_to_harmonic(fit, truth, coords)`` against ``truth``
    (values on [-1, 1]).

    A Laplacian fixes a function only up to a harmonic one; this judges the part it fixes.
    (Any part of the truth that is itself such a polynomial counts as matched.)"""
    aligned = align_up_to_harmonic(fit, truth, coords, degree)
    truth = np.asarray(truth, np.float64).reshape(aligned.shape)
    return psnr(max(float(np.mean(((aligned - truth) / 2.0) ** 2)), 1e-20))


# -- the task -------------------------------------------------------------------------------------
def _resize_like(pixels: np.ndarray, shape: tuple[int, int], channels: int) -> np.ndarray:
    """pixels [h, w, c] resampled to shape (antialiased bilinear), gray expanded to RGB."""
    if pixels.shape[:2] != shape:
        image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
        image = torch.nn.functional.interpolate(image, size=shape, mode="bilinear",
                                                antialias=True, align_corners=False)
        pixels = image[0].permute(1, 2, 0).clamp(0, 1).numpy()
    if pixels.shape[2] < channels:
        pixels = np.repeat(pixels, channels, axis=2)
    return pixels


@dataclass
class PoissonSettings(FitSettings):
    """Fit an image from its gradient or its Laplacian alone (PNG/JPEG, grayscale or RGB)."""

    supervise: str = setting(
        "grad", "what the fit sees: grad (Sobel gradient, order-1 jet) or lap (discrete "
        "Laplacian, order-2 jet)", choices=("grad", "lap"))
    composite: str | None = setting(
        None, "a second image: fit the blend of both images' gradients (Poisson image "
        "editing; with --supervise grad; resized to the first image)", metavar="IMG2")
    composite_weight: float = setting(
        0.5, "weight of IMG2's gradient in the blend", low=0.0, high=1.0)
    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=CPU_STEPS,
                                cuda=10000)
    lr: float | None = setting(None, "Adam learning rate", positive=True, cpu=CPU_LR, cuda=1e-4)
    width: int | None = setting(None, "hidden features per layer", positive=True,
                                cpu=CPU_WIDTH, cuda=256)
    max_size: int | None = setting(
        None, "shrink the image so that its longer side is at most this many pixels (0: full "
        "size)", low=0, cpu=CPU_MAX_SIZE, cuda=256)
    batch_fraction: float = setting(
        1.0, "fraction of the pixels sampled each step", positive=True, high=1.0)

    def validate(self) -> None:
        super().validate()
        if self.composite is not None and self.supervise != "grad":
            raise InputError("--composite blends gradients: use it with --supervise grad")


class PoissonTask(Task):
    name = "poisson"
    settings_class = PoissonSettings
    order = 1
    progress_metric = "grad_rel_err"  # or lap_rel_err, as metrics.json names it
    example = ("fastsiren fit poisson photo.png --supervise lap --out runs/poisson\n"
               "  fastsiren fit poisson a.png --composite b.png --out runs/blend   "
               "# Poisson image editing")

    def __init__(self, settings: PoissonSettings, context: FitContext):
        super().__init__(settings, context)
        self.path = (self.single_input("image", " (a second one goes to --composite)")
                     or sample_image_path())
        pixels = load_pixels(self.path, settings.max_size)  # [H, W, C] in [0, 1]
        grid_spacing(pixels.shape[:2])  # too small to differentiate: fail before anything else
        self.order = 2 if settings.supervise == "lap" else 1
        self.progress_metric = f"{settings.supervise}_rel_err"
        image = pixels.astype(np.float64) * 2 - 1
        if settings.supervise == "lap":
            supervised = discrete_laplacian(image)
        else:
            supervised = sobel_gradient(image)
        if settings.composite is not None:
            second = load_pixels(Path(settings.composite), None)
            channels = max(pixels.shape[2], second.shape[2])
            pixels = _resize_like(pixels, pixels.shape[:2], channels)
            second = _resize_like(second, pixels.shape[:2], channels)
            weight = settings.composite_weight
            supervised = composite_gradient(sobel_gradient(pixels * 2.0 - 1),
                                            sobel_gradient(second * 2.0 - 1), weight)
            # Sobel is linear: the blend of gradients is the gradient of the blended image,
            # the ground truth the PSNR is measured against.
            pixels = ((1 - weight) * pixels + weight * second).astype(np.float32)
        height, width, channels = pixels.shape
        self.shape, self.pixels = (height, width), pixels
        self.in_features, self.out_features = 2, channels
        self.coords = pixel_grid(height, width, device=self.device)
        self.truth = torch.from_numpy(pixels).reshape(-1, channels) * 2 - 1
        shape = (-1, channels, 2) if self.order == 1 else (-1, channels)
        self.supervised = torch.from_numpy(supervised).float().reshape(shape).to(self.device)
        power = self.supervised.square()
        self.supervised_power = float((power.sum(-1) if self.order == 1 else power).mean())
        self._evaluated: tuple | None = None
        self._metrics: dict | None = None  # the last evaluate's, for the pictures' titles

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = {"coords": self.coords, "target": self.supervised}
        pick = random_subset(self.coords.shape[0], self.settings.batch_fraction, generator,
                             self.device)
        return batch if pick is None else {k: v[pick] for k, v in batch.items()}

    def loss(self, jet: Jet, batch: dict[str, torch.Tensor]):
        if self.order == 1:
            loss = gradient_loss(jet, batch["target"])
        else:
            loss = laplacian_loss(jet, batch["target"])
        # sqrt(loss / mean |target|^2): the supervised field's relative RMS error (none for a
        # constant image, whose supervised field is zero).
        if self.supervised_power == 0:
            return loss, {}
        rel_err = (loss.detach() / self.supervised_power).sqrt()
        return loss, {self.progress_metric: rel_err}

    def fitted(self, model: nn.Module) -> tuple:
        """(value, grad, lap) of the fitted network on the pixel grid (cached)."""
        if self._evaluated is None:
            jet = evaluate_on_grid(model, self.coords, order=2)
            self._evaluated = tuple(t.float().cpu() for t in (jet.value, jet.grad, jet.lap))
        return self._evaluated

    def evaluate(self, model: nn.Module) -> dict:
        self._evaluated = None
        value, grad, lap = self.fitted(model)
        psnr_db, gains, offsets = psnr_after_gain_offset(value.numpy(), self.truth.numpy())
        field = grad if self.order == 1 else lap
        loss = (field - self.supervised.cpu()).square()
        loss = (loss.sum(-1) if self.order == 1 else loss).mean().item()
        metrics = {
            "psnr": psnr_db, "gain": gains, "offset": offsets,
            f"{self.settings.supervise}_mse": loss,
            self.progress_metric: (loss / self.supervised_power) ** 0.5
            if self.supervised_power > 0 else None,
            "psnr_note": "psnr: PSNR on [0, 1] of gain * fit + offset against the ground "
            "truth, with the least-squares gain and offset per channel (the fit is defined only "
            "up to a constant)",
        }
        if self.order == 2:
            metrics["psnr_up_to_harmonic"] = psnr_up_to_harmonic(
                value.numpy(), self.truth.numpy(), self.coords.cpu().numpy())
            metrics["psnr_note"] += (
                "; psnr_up_to_harmonic: the same after the least-squares gain plus harmonic "
                f"polynomials up to degree {HARMONIC_DEGREE} per channel (from a Laplacian the "
                "fit is defined only up to a harmonic function: the boundary values it does not "
                "see)")
        self._metrics = metrics
        return metrics

    def write_outputs(self, model: nn.Module, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        value, grad, lap = self.fitted(model)
        height, width = self.shape
        _, gains, offsets = psnr_after_gain_offset(value.numpy(), self.truth.numpy())
        aligned = value.numpy() * np.array(gains) + np.array(offsets)
        recon = np.clip((aligned + 1) / 2, 0, 1).reshape(height, width, -1)
        supervised, fitted = self.supervised.cpu(), grad if self.order == 1 else lap
        metrics = self._metrics or self.evaluate(model)
        panels = self.field_panels(supervised, fitted)
        paths = [
            write_image(out_dir / "target.png", self.pixels),
            write_image(out_dir / "reconstruction.png", recon),
            save_figure(panel_figure([panels], self.fields_title(metrics)),
                        out_dir / "supervised_vs_fitted.png"),
        ]
        pictures = [Panel(self.pixels, f"target ({height}x{width})"),
                    Panel(recon, f"fit + offset: {metrics['psnr']:.1f} dB")]
        if self.order == 2:
            harmonic = align_up_to_harmonic(value.numpy(), self.truth.numpy(),
                                            self.coords.cpu().numpy())
            pictures.append(Panel(np.clip((harmonic + 1) / 2, 0, 1).reshape(height, width, -1),
                                  f"fit + harmonic: {metrics['psnr_up_to_harmonic']:.1f} dB"))
        paths.append(save_figure(panel_figure([pictures + panels], self.summary_title(metrics)),
                                 out_dir / "comparison.png"))
        return paths

    def summary_title(self, metrics: dict) -> str:
        what = "gradient (Sobel)" if self.order == 1 else "Laplacian (5-point)"
        if self.settings.composite:
            what = "blended gradients of two images"
        text = (f"Poisson: an image fitted from its {what} alone. PSNR after the best gain "
                f"and offset (a gradient fixes the image up to a constant): "
                f"{metrics['psnr']:.1f} dB")
        if self.order == 2:
            text += (f"\nafter the best gain and harmonic polynomial (a Laplacian fixes it up to "
                     f"a harmonic function): {metrics['psnr_up_to_harmonic']:.1f} dB")
        return text

    def fields_title(self, metrics: dict) -> str:
        what = "|gradient| (mean over channels)" if self.order == 1 else "Laplacian"
        error = metrics[self.progress_metric]
        if error is None:
            return f"supervised and fitted {what} (zero: the image is constant)"
        return f"supervised and fitted {what}: relative RMS error {error:.3f}"

    def field_panels(self, supervised: torch.Tensor, fitted: torch.Tensor) -> list[Panel]:
        """The supervised field and the fitted network's, on one colour scale: |∇f| (mean over
        channels) from zero, or Δf (mean over channels) diverging around zero."""
        images = [field_values(f, self.order, self.shape) for f in (supervised, fitted)]
        scale = float(np.percentile(np.abs(images[0]), 99)) or 1.0
        if self.order == 1:
            style = {"cmap": "magma", "vmin": 0.0, "vmax": scale,
                     "colorbar": "|∇f| (value / coordinate)"}
            names = ("supervised |∇f| (Sobel)", "fitted |∇f| (network)")
        else:
            style = {"cmap": "RdBu_r", "vmin": -scale, "vmax": scale,
                     "colorbar": "Δf (value / coordinate²)"}
            names = ("supervised Δf (5-point)", "fitted Δf (network)")
        return [Panel(image, name, **style) for image, name in zip(images, names)]

    def describe(self) -> dict:
        s = self.settings
        return {
            "source": str(self.path), "composite": s.composite,
            "composite_weight": s.composite_weight if s.composite else None,
            "height": self.shape[0], "width": self.shape[1], "channels": self.out_features,
            "supervised": "Sobel gradient per channel / (8 h)" if self.order == 1
            else "5-point Laplacian / h^2",
            "jet_order": self.order,
            "coordinates": "(row, col), each linspace(-1, 1), row-major; h = 2 / (n - 1)",
            "values": "pixel * 2 - 1 (pixels in [0, 1])",
        }


def field_values(field: torch.Tensor, order: int, shape: tuple[int, int]) -> np.ndarray:
    """A gradient field [N, C, 2] as |∇f| (mean over channels), or a Laplacian [N, C] as its
    mean over channels: [H, W]."""
    if order == 1:
        values = field.float().square().sum(-1).sqrt().mean(-1)
    else:
        values = field.float().mean(-1)
    return values.reshape(shape).numpy()
