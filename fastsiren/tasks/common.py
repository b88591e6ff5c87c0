"""What several tasks share: built-in data, coordinate grids, chunked evaluation of a fitted
network on a grid, random batch sampling, PSNR and relative error, and pictures.

A task imports ``tasks.base``, this module, the helpers of its family (``tasks.image_common`` for
image and its many-images form, ``tasks.shapes`` for sdf and occupancy), ``fastsiren.io`` and the
engine; never another task.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import package_file
from ..errors import InputError
from ..io.image import read_image
from ..jet import Jet, JetLayout
from ..mesh import DEFAULT_CHUNK_POINTS

__all__ = [
    "EVAL_SLAB_POINTS",
    "data_file",
    "eval_chunk",
    "evaluate_on_grid",
    "field_style",
    "load_pixels",
    "Panel",
    "panel_figure",
    "parse_hxw",
    "picture_labels",
    "pixel_grid",
    "plot_field",
    "psnr",
    "psnr_tensor",
    "pyplot",
    "random_subset",
    "relative_l2",
    "sample_image_path",
    "save_figure",
    "side_by_side",
    "xy_grid",
]

# Points x slabs per chunk when a fitted network is evaluated on a whole grid: the mesher's
# budget (64 MiB per activation at width 256) shared out over the jet's slabs, so 65536 points of
# an order-0 jet, 16384 of a 2-d Laplacian jet (value, 2 gradients, Laplacian).
EVAL_SLAB_POINTS = DEFAULT_CHUNK_POINTS


# -- data -----------------------------------------------------------------------------------------
def data_file(name: str) -> Path:
    """A built-in sample of ``fastsiren/data`` (licences in fastsiren/data/README.md)."""
    return package_file(name)


def sample_image_path() -> Path:
    """The built-in image (camera.png, CC0)."""
    return data_file("camera.png")


def load_pixels(path: Path, max_size: int | None) -> np.ndarray:
    """read_image with the task's size check: a grid needs two pixels along each axis."""
    pixels = read_image(path, max_size or None)
    if min(pixels.shape[:2]) < 2:
        raise InputError(f"image {path}: {pixels.shape[0]}x{pixels.shape[1]} pixels is too "
                         "small to fit (at least 2x2 expected)")
    return pixels


def parse_hxw(text: str | int, option: str, example: str = "512x512") -> tuple[int, int]:
    """'HxW' (or a single 'S' for SxS) -> (H, W), each side at least 2; ``option`` names the
    CLI option in the error."""
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 2:
        raise InputError(f"{option}: expected S or HxW with sides >= 2 (e.g. {example}), "
                         f"got {text!r}")
    return size


# -- coordinates ----------------------------------------------------------------------------------
def pixel_grid(height: int, width: int, half_range: float = 1.0,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Coordinates [H*W, 2] of an H x W grid: (row, col), each ``linspace(-R, R)``, row-major
    (the official ``get_mgrid``)."""
    rows = torch.linspace(-half_range, half_range, height, device=device)
    cols = torch.linspace(-half_range, half_range, width, device=device)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def xy_grid(side: int) -> torch.Tensor:
    """Coordinates [side², 2] of a square grid on [-1, 1]² as (x, y), x fastest (an image with
    y up when shown with ``origin="lower"``)."""
    axis = torch.linspace(-1, 1, side)
    return torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)


def random_subset(n: int, fraction: float, generator: torch.Generator,
                  device: torch.device | str) -> torch.Tensor | None:
    """Indices of ``max(1, round(n * fraction))`` distinct points of ``n``, uniform without
    replacement (a random permutation's head), drawn with ``generator``; None when
    ``fraction >= 1`` (every point)."""
    if fraction >= 1.0:
        return None
    size = max(1, round(n * fraction))
    return torch.randperm(n, generator=generator, device=device)[:size]


# -- evaluation -----------------------------------------------------------------------------------
def eval_chunk(order: int, in_features: int, hessian_diag: bool = False,
               networks: int = 1) -> int:
    """Points per chunk for a grid evaluation: ``EVAL_SLAB_POINTS`` over the jet's slabs and the
    number of networks evaluated at once (a batched model)."""
    rows = JetLayout(order, in_features, hessian_diag).rows
    return max(1, EVAL_SLAB_POINTS // (rows * networks))


def evaluate_on_grid(model: nn.Module, coords: torch.Tensor, order: int,
                     hessian_diag: bool = False, chunk: int | None = None) -> Jet:
    """The model's jet over coords [..., N, d] (a leading batch dimension for batched models),
    chunk by chunk along N (``eval_chunk`` by default), without a graph, concatenated."""
    if chunk is None:
        networks = coords.shape[0] if coords.dim() == 3 else 1
        chunk = eval_chunk(order, coords.shape[-1], hessian_diag, networks)
    parts = []
    with torch.no_grad():
        for start in range(0, coords.shape[-2], chunk):
            parts.append(model.jet(coords[..., start:start + chunk, :], order=order,
                                   hessian_diag=hessian_diag))
    fields = {}
    for name, points_dim in (("value", -2), ("grad", -3), ("lap", -2), ("hess_diag", -3)):
        pieces = [getattr(p, name) for p in parts]
        fields[name] = None if pieces[0] is None else torch.cat(pieces, points_dim)
    return Jet(**fields)


# -- metrics --------------------------------------------------------------------------------------
def psnr(mse: float | torch.Tensor, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(peak² / mse), for a mean squared error on a
    [0, peak] range."""
    mse = float(mse)
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def psnr_tensor(mse: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """``psnr`` on a detached tensor, elementwise, without a device synchronisation (for the
    values a step logs); the MSE is floored at 1e-20."""
    return 10.0 * torch.log10(peak**2 / mse.detach().clamp_min(1e-20))


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """||actual − expected|| / ||expected|| (complex or real tensors)."""
    return torch.linalg.vector_norm(actual - expected) / torch.linalg.vector_norm(expected)


# -- pictures -------------------------------------------------------------------------------------
def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 100, **kwargs) -> Path:
    """Write ``fig`` to ``path`` (its folder created) and close it. A PNG carries its words as
    text chunks too (``picture_labels`` reads them back): ``Title`` the figure's title,
    ``Description`` a JSON list of the panel titles, colour-bar labels and axis labels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        kwargs.setdefault("metadata", {}).update(_figure_words(fig))
    fig.savefig(path, dpi=dpi, **kwargs)
    pyplot().close(fig)
    return path


def _figure_words(fig) -> dict[str, str]:
    """{"Title": suptitle, "Description": JSON [{"title", "xlabel", "ylabel"} per axes]}."""
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
    axes = [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
             "colorbar": ax.get_label() == "<colorbar>"}
            for ax in fig.axes if ax.get_visible()]
    return {"Title": suptitle, "Description": json.dumps(axes)}


def picture_labels(path: Path) -> dict:
    """The words a PNG written by ``save_figure`` carries: {"title": ..., "axes": [...]}."""
    from PIL import Image

    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}))
    return {"title": text.get("Title", ""), "axes": json.loads(text.get("Description", "[]"))}


@dataclass
class Panel:
    """One picture of a ``panel_figure``.

    ``image`` [H, W] or [H, W, 3]; ``title`` above it. ``colorbar``: the label (with units) of
    a colour bar beside it, None for a picture shown as itself (RGB, or gray on [0, 1]).
    ``cmap``/``vmin``/``vmax`` as imshow (``field_style`` picks them for a named field);
    ``extent`` the coordinates of the edges (None: no axes, pixels); ``origin`` "upper" for
    row-major images, "lower" for fields on [-1, 1]² with y up."""

    image: np.ndarray
    title: str
    colorbar: str | None = None
    cmap: str | None = None
    vmin: float | None = None
    vmax: float | None = None
    extent: tuple[float, float, float, float] | None = None
    origin: str = "upper"


def panel_figure(rows: list[list[Panel | None]], title: str, panel_inches: float = 2.6,
                 dpi: int = 100):
    """Panels in a grid (None: an empty cell), each titled, colour bars where asked for, the
    whole titled with ``title`` (what is shown and its metric). A panel is ``panel_inches``
    on its longer side; small images are enlarged without smoothing."""
    plt = pyplot()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    shapes = [p.image.shape[:2] for r in rows for p in r if p is not None]
    aspect = max(h / w for h, w in shapes)  # height over width of the tallest panel
    bars = any(p is not None and p.colorbar for r in rows for p in r)
    width = panel_inches * (1.25 if bars else 1.0)
    height = panel_inches * min(aspect, 1.5) + 0.45
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows + 0.5),
                             squeeze=False, dpi=dpi)
    for row_axes, row in zip(axes, rows):
        for ax, panel in zip(row_axes, list(row) + [None] * (n_cols - len(row))):
            if panel is None:
                ax.set_visible(False)
                continue
            gray = panel.image.ndim == 2 or panel.image.shape[-1] == 1
            image = panel.image[..., 0] if panel.image.ndim == 3 and gray else panel.image
            style = {"cmap": panel.cmap or ("gray" if gray else None),
                     "vmin": panel.vmin if panel.vmin is not None else (0 if gray else None),
                     "vmax": panel.vmax if panel.vmax is not None else (1 if gray else None)}
            shown = ax.imshow(image, origin=panel.origin, extent=panel.extent,
                              interpolation="nearest", **style)
            ax.set_title(panel.title, fontsize=9)
            if panel.extent is None:
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.tick_params(labelsize=7)
            if panel.colorbar:
                bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
                bar.set_label(panel.colorbar, fontsize=8)
                bar.ax.tick_params(labelsize=7)
    # about 11 characters of 10-point text per inch: wrap each line of the title to the figure
    columns = max(40, int(11 * width * n_cols))
    fig.suptitle("\n".join(textwrap.fill(line, columns) for line in title.split("\n")),
                 fontsize=10)
    fig.tight_layout()
    return fig


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Images [H, W] or [H, W, C] in [0, 1], of one height, in a row with white gaps (RGB if
    any of them is)."""
    rgb = any(im.ndim == 3 and im.shape[2] == 3 for im in images)
    rows = []
    for im in images:
        im = im if im.ndim == 3 else im[:, :, None]
        rows.append(np.repeat(im, 3, axis=2) if rgb and im.shape[2] == 1 else im)
        rows.append(np.ones((im.shape[0], gap, rows[-1].shape[2]), dtype=np.float32))
    return np.concatenate(rows[:-1], axis=1)


SIGNED_FIELDS = ("real", "imaginary", "analytic real")


def field_style(name: str, image: np.ndarray) -> dict:
    """imshow colours for a field: diverging around zero for signed fields (``SIGNED_FIELDS``),
    sequential from zero for magnitudes; both scaled to the 99th percentile."""
    finite = image[np.isfinite(image)]
    if name in SIGNED_FIELDS:
        scale = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
        return {"cmap": "RdBu_r", "vmin": -scale, "vmax": scale}
    return {"cmap": "magma" if name != "velocity" else "viridis", "vmin": 0,
            "vmax": float(np.percentile(finite, 99)) if finite.size else 1.0}


def plot_field(path: Path, image: np.ndarray, name: str, title: str | None = None,
               unit: str = "") -> Path:
    """One field on [-1, 1]² (y up) with axes, a colour bar named ``name`` (and ``unit``) and a
    title (default: the field's name)."""
    label = f"{name} ({unit})" if unit else name
    panel = Panel(image, name, colorbar=label, extent=(-1, 1, -1, 1), origin="lower",
                  **field_style(name, image))
    return save_figure(panel_figure([[panel]], title or name, panel_inches=4.0), path)
