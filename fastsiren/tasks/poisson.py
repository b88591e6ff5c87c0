"""Poisson: an image recovered from its gradient or its Laplacian alone (paper section 4.1).

Beside the official ``train_poisson_grad_img.py``, ``train_poisson_lapl_img.py`` and
``train_poisson_gradcomp_img.py``:

data        an image [H, W, C] mapped to [-1, 1] (the image task's reader and grid).
targets     ``--supervise grad``: the Sobel gradient, per channel, along rows and columns;
            ``--supervise lap``: the 5-point discrete Laplacian;
            ``--composite IMG2``: the blend ``(1 - a) grad(img1) + a grad(img2)`` of two images'
            Sobel gradients (Poisson image editing: fitting gradients, not pixels, joins the two
            without seams).
loss        on the jet, nothing else: ``mean_n sum_i (d_i f - g_i)^2`` on the order-1 jet (the
            official ``gradients_mse``), ``mean_n (lap f - l)^2`` on the order-2 jet
            (``laplace_mse``).
metrics     the fit is defined only up to a constant (and, from the Laplacian, up to a harmonic
            function), so PSNR is taken after the least-squares gain and offset that best map
            the fit onto the ground truth, per channel; metrics.json says so.

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

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError
from ..jet import Jet

__all__ = [
    "MIN_SIDE",
    "composite_gradient",
    "discrete_laplacian",
    "gradient_loss",
    "grid_spacing",
    "laplacian_loss",
    "psnr_after_gain_offset",
    "sobel_gradient",
]

# The 3x3 stencils need a pixel on each side of a centre: smaller images have no interior.
MIN_SIDE = 3


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
    return float(10.0 * np.log10(1.0 / max(mse, 1e-20))), gains, offsets
