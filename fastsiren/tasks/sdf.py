"""sdf: a signed distance function from oriented points, with the official ``train_sdf.py`` loss
or (the default) that loss made robust for short fits.

Data: an oriented point cloud (``fastsiren.io.pointcloud``: ``.xyz`` rows x y z nx ny nz, a PLY
point cloud with normals, or a mesh sampled to ``points`` oriented points); the built-in sample
is the kitten (5,210 points, CGAL, CC0). Coordinates are normalised as the official
``dataio.PointCloud`` (centre on the mean, the extreme coordinates to -1 and 1, aspect ratio
kept); the output mesh goes back through the exact inverse into the input's own units.

Each step draws ``batch`` points of the cloud (on the surface, with their normals) and ``batch``
points off the surface, uniform in [-1, 1]^3.

``--loss official`` is the official ``loss_functions.sdf`` on the order-1 jet (value and
gradient: the adjoint sweep on the torch backend, the fused kernels on CUDA), every term
averaged over all P = 2 * batch points (a term that applies to one half counts zero on the
other):

    3e3 * mean(|f| on the surface)                         the surface is the zero set
  + 1e2 * mean(exp(-100 |f|) off the surface)              no spurious zeros elsewhere
  + 1e2 * mean(1 - cos(grad f, n) on the surface)          gradients follow the normals
  + 5e1 * mean(| |grad f| - 1 |) everywhere                eikonal: |grad f| = 1

Paper and code differ; this follows the code (``loss_functions.sdf`` as run by
``train_sdf.py``). The paper (eq. 6) writes the normal term as 1 - <grad f, n> (the code: the
cosine, blind to |grad f|) and integrates each term over its own domain (the code's means over
all samples halve the on- and off-surface terms). The weights are the code's active ones; its
comments list two other sets, "Exp" (surface 1e4, off-surface 1e2, normal 1e2, eikonal 1e1) and
"Lapl" (3e3, 1e3, -, 5e1): the weights are tuned per experiment. Gradients are clipped to norm 1
as the official run (``clip_grad=True``).

``--loss regularized`` (the default) keeps those four terms and adds two things (each also an
option of its own, so ``--loss official --laplacian-weight 100`` is the official loss with the
Laplacian term):

- **A sphere to start from** (``sphere_init_steps``): before the fit, the network is fitted to
  the distance function of a sphere, f(x) = |x| - 0.5, with the mean of |f - (|x| - 0.5)| on
  uniform points in [-1, 1]^3 (order-0 jet, Adam at the fit's learning rate, its own generator).
  A SIREN at its own initialisation is a random field of frequency ~omega_0 with zero crossings
  everywhere; the official loss removes them only where it happens to sample, and a short fit
  leaves them as floating pieces. Starting from one closed surface, the fit deforms it. This is
  the geometric initialisation of SAL/IGR/DiGS done by fitting instead of by closed-form
  weights, so it holds for any width, depth and omega_0 (DiGS' closed form for sine layers
  fixes the last two layers' layout, and gives only a rough sphere here: |f - (2 |x| - 0.8)|
  ~ 0.19 at 3x128).
- **The Laplacian off the surface** (DiGS' divergence term, div grad f = lap f): ``w(t) *
  mean(|lap f|)`` over the off-surface points (summed over them, divided by P like the other
  terms), with ``w(t)`` decaying linearly from ``laplacian_weight`` to 0 at step
  ``laplacian_until * steps``. It smooths the field away from the data early, where the
  stray zero crossings form, and lets go once the surface is in place (a distance function
  has a nonzero Laplacian near curved surfaces, so a permanent term would bias it). While the
  weight is positive, the on-surface points take the order-1 jet and only the off-surface
  points the order-2 jet (value, gradient and Laplacian in one forward pass, no nested
  autograd); the step costs 1.68x the order-1 step, against 2.4x for the order-2 jet on
  every point and 3.24x for the same loss on nested autograd (``bench/measure_sdf_step.py``:
  median of 9 alternated steps, width 128, 2,500 + 2,500 points, one thread, 2-core EPYC).

A third option, off in both presets:

- **Off-surface samples near the surface** (``near_surface``, IGR and Neural-Pull): that
  fraction of the off-surface points is drawn as x + sigma * N(0, I) around a random input
  point x, sigma its distance to its 10th nearest input point (so the spread follows the local
  sampling density); the uniform rest keeps the exp(-100 |f|) term, which the near points skip
  (it would push the field away from zero right at the surface), while the eikonal and
  Laplacian terms take every off-surface point. It concentrates the eikonal constraint where
  the mesh is extracted; at the CPU budget it did not improve the regularized default
  (``bench/fit_results/sdf-shapes-cpu.md``).

Measured on six shapes at the CPU defaults (``bench/fit_results/sdf-shapes-cpu.md``): the
official loss leaves 5 to 23 pieces at 600 steps (4 to 20 at 970 steps, the default's cost);
the default gives one piece on five of them (two on the thin-legged camel: a 40-face bubble
inside the body) at 2.3x to 9.5x lower Chamfer distance. A learning rate of 3e-4, or the
Laplacian kept to the end, fixed one shape and cost another: neither is the default.

Metrics (the mesh extracted at the 0 level, ``fastsiren.mesh``), in the input's units: the
standard evaluation of ``fastsiren.mesh_metrics`` (Chamfer L1 and squared, Hausdorff, the one-sided
distances, F-scores, normal consistency, pieces, watertightness, and volumetric IoU
against a watertight mesh input), against the input mesh itself when the input is a mesh, else
against the input points (``reference`` says which), plus ``chamfer`` / ``chamfer_relative``
(the sum of the two one-sided means, fastsiren's figure before the standard set). With
``project_vertices`` the written mesh, and so its metrics, has its vertices moved onto the level
set (``fastsiren.mesh.project_to_level_set``).

Outputs (``tasks.shapes``): ``mesh.ply`` (input units; per-vertex ``mean_curvature``),
``preview.png`` (shaded and coloured by mean curvature, fixed view), ``normalization.json`` (the
map between input and network coordinates, read by ``fastsiren mesh``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..deps import require
from ..errors import InputError
from ..io.mesh import MESH_SUFFIXES, read_mesh
from ..io.pointcloud import Normalization, OrientedPoints, read_oriented_points
from ..jet import Jet
from ..mesh import check_mesh_memory
from ..mesh_metrics import mesh_metrics, mesh_stats
from .base import FitContext, FitSettings, Task, setting
from .common import data_file
from .shapes import ShapeOutputs

__all__ = [
    "LOSS_PRESETS", "SDF_LOSS_WEIGHTS", "SdfSettings", "SdfTask", "laplacian_weight",
    "point_spacing", "sample_point_cloud_path", "sdf_loss", "sphere_init",
]

# The official loss_functions.sdf weights and the off-surface falloff exp(-alpha |f|).
SDF_LOSS_WEIGHTS = {"sdf": 3e3, "inter": 1e2, "normal": 1e2, "grad": 5e1}
OFF_SURFACE_ALPHA = 1e2
# What each --loss sets when its options are not given (module docstring; measured in
# bench/fit_results/sdf-shapes-cpu.md).
LOSS_PRESETS = {
    "official": {"sphere_init_steps": 0, "laplacian_weight": 0.0},
    "regularized": {"sphere_init_steps": 300, "laplacian_weight": 1e2},
}
# The sphere the fit starts from, in network units: well inside the [-1, 1] cube that the
# official normalisation fills, and of the size of a typical shape in it.
SPHERE_INIT_RADIUS = 0.5
SPHERE_INIT_POINTS = 5000
# Near-surface samples spread by the distance to this neighbour (IGR uses the 50th of a dense
# scan; the 10th keeps the spread near the surface's own sampling on clouds of a few thousand).
NEAR_SURFACE_NEIGHBOUR = 10


def sample_point_cloud_path() -> Path:
    """The built-in sample (kitten.xyz, CC0; see fastsiren/data/README.md)."""
    return data_file("kitten.xyz")


def sdf_loss(
    value: torch.Tensor, grad: torch.Tensor, normals: torch.Tensor, n_on: int,
    lap: torch.Tensor | None = None, laplacian: float | torch.Tensor = 0.0,
    n_near: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official SDF loss from the jet at ``[on-surface; off-surface]`` points, plus the
    Laplacian term when ``lap`` is given.

    Args:
        value: ``[P]`` field values, the first ``n_on`` on the surface.
        grad: ``[P, 3]`` their gradients.
        normals: ``[n_on, 3]`` the on-surface points' normals.
        lap: ``[P - n_on]`` the off-surface points' Laplacians, or None.
        laplacian: the Laplacian term's weight.
        n_near: how many of the off-surface points, at the end, were drawn near the surface:
            the exp(-100 |f|) term skips them.
    Returns (total, terms): the weighted sum and each weighted term (``sdf``, ``inter``,
    ``normal``, ``grad`` and, with ``lap``, ``laplacian``), every term summed over the points
    it applies to and divided by P.
    """
    total_points = value.shape[0]
    on_value, off_value = value[:n_on], value[n_on:total_points - n_near]
    on_grad = grad[:n_on]
    # cos(g, n) as torch's cosine_similarity (each norm clamped at 1e-8).
    cosine = (on_grad * normals).sum(-1) / (
        on_grad.norm(dim=-1).clamp_min(1e-8) * normals.norm(dim=-1).clamp_min(1e-8)
    )
    terms = {
        "sdf": on_value.abs().sum() / total_points,
        "inter": torch.exp(-OFF_SURFACE_ALPHA * off_value.abs()).sum() / total_points,
        "normal": (1 - cosine).sum() / total_points,
        "grad": (grad.norm(dim=-1) - 1).abs().mean(),
    }
    terms = {name: SDF_LOSS_WEIGHTS[name] * term for name, term in terms.items()}
    if lap is not None:
        terms["laplacian"] = laplacian * lap.abs().sum() / total_points
    return sum(terms.values()), terms


def laplacian_weight(step: int, steps: int, weight: float, until: float) -> float:
    """The Laplacian term's weight at ``step``: ``weight`` decaying linearly to 0 at step
    ``until * steps`` (0 after; ``until = 0``: no term)."""
    end = until * steps
    if weight == 0 or step >= end:
        return 0.0
    return weight * (1 - step / end)


def sphere_init(model: nn.Module, steps: int, lr: float, seed: int,
                radius: float = SPHERE_INIT_RADIUS, points: int = SPHERE_INIT_POINTS) -> float:
    """Fit ``model`` to the distance function of a sphere, ``|x| - radius``, for ``steps`` Adam
    steps at ``lr`` on ``points`` uniform points in [-1, 1]^3 per step (mean absolute error,
    order-0 jet), with a generator of its own seeded by ``seed`` (the fit's random streams stay
    untouched). Returns the last step's mean absolute error."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    error = float("nan")
    for _ in range(steps):
        x = torch.rand(points, 3, generator=generator, device=device) * 2 - 1
        loss = (model(x)[:, 0] - (x.norm(dim=-1) - radius)).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        error = loss.detach()
    return float(error)


def point_spacing(points: np.ndarray, neighbour: int = NEAR_SURFACE_NEIGHBOUR) -> np.ndarray:
    """Each point's distance to its ``neighbour``-th nearest other point of ``points`` [n, 3]
    (the local sampling density; the scale of the near-surface samples)."""
    from scipy.spatial import cKDTree

    k = min(neighbour, len(points) - 1)
    if k < 1:
        raise InputError(f"near-surface sampling needs at least 2 input points, got {len(points)}")
    distances, _ = cKDTree(points).query(points, k=k + 1, workers=-1)
    return distances[:, k]


@dataclass
class SdfSettings(FitSettings):
    """Fit a signed distance function to an oriented point cloud (.xyz, PLY) or a mesh."""

    steps: int | None = setting(None, "optimizer steps", positive=True, cpu=600, cuda=10000)
    width: int | None = setting(None, "hidden features per layer", positive=True, cpu=128,
                                cuda=256)
    clip_grad: float | None = setting(1.0, "clip the gradient norm to this value (official: 1)",
                                      positive=True)
    batch: int | None = setting(
        None, "on-surface points per step (as many uniform off-surface points are added)",
        positive=True, cpu=2500, cuda=50000)
    loss: str = setting(
        "regularized", "official: train_sdf.py's loss exactly; regularized: the same terms "
        "from a sphere, with an annealed Laplacian off the surface", choices=tuple(LOSS_PRESETS))
    sphere_init_steps: int | None = setting(
        None, "steps fitting the distance of a sphere before the fit, 0: SIREN's initialisation "
        "(default by --loss: official 0, regularized 300)", low=0)
    laplacian_weight: float | None = setting(
        None, "weight of mean |laplacian f| off the surface at step 0 (default by --loss: "
        "official 0, regularized 100)", low=0)
    laplacian_until: float = setting(
        0.5, "fraction of the steps over which the Laplacian weight decays to 0", low=0, high=1)
    near_surface: float = setting(
        0.0, "fraction of the off-surface points drawn near the surface (Gaussian, sigma = the "
        "distance to the 10th nearest input point) instead of uniform", low=0, high=1)
    points: int = setting(100_000, "oriented points sampled from a mesh input", positive=True)
    resolution: int | None = setting(
        None, "grid points per axis of the output mesh", low=8, cpu=128, cuda=512)
    coarse_to_fine: bool | None = setting(
        None, "mesh coarse-to-fine (only blocks near the surface; pays from about 256^3 on); "
        "false: dense grid", cpu=False, cuda=True)
    lipschitz: float = setting(
        1.5, "bound on |grad f| that coarse-to-fine relies on (1 for an exact SDF)",
        positive=True)
    project_vertices: bool = setting(
        False, "move the mesh's vertices onto the zero level set (Newton steps along the "
        "gradient) before writing it")
    metric_samples: int = setting(
        100_000, "points drawn on each surface for the metrics (fastsiren.mesh_metrics)",
        positive=True)


    def resolved(self, device: torch.device) -> SdfSettings:
        """The device defaults, then the ``--loss`` preset for every option left unset (so
        that settings.json records the values the run used)."""
        settings = super().resolved(device)
        preset = LOSS_PRESETS.get(settings.loss)
        if preset is None:  # validate() names the choices
            return settings
        return dataclasses.replace(settings, **{
            name: value for name, value in preset.items() if getattr(settings, name) is None})


class SdfTask(ShapeOutputs, Task):
    name = "sdf"
    settings_class = SdfSettings
    order = 1
    progress_metric = "sdf"
    example = "fastsiren fit sdf --out runs/kitten"
    level = 0.0
    inside = "below"

    def __init__(self, settings: SdfSettings, context: FitContext):
        super().__init__(settings, context)
        require("mesh", "fit sdf")  # the mesh comes after training: its packages checked now
        # the mesh comes after training: its size is checked before the first step
        check_mesh_memory(settings.resolution, bool(settings.coarse_to_fine))
        self.path = path = self.single_input("point cloud") or sample_point_cloud_path()
        self.cloud: OrientedPoints = read_oriented_points(path, settings.points, settings.seed)
        # A mesh input is its own reference for the metrics (a point cloud is the only one).
        self.reference_mesh = None
        if path.suffix.lower() in MESH_SUFFIXES:
            try:
                self.reference_mesh = read_mesh(path)
            except InputError:  # a PLY point cloud: no faces
                pass
        self.sphere_init_steps = settings.sphere_init_steps
        self.laplacian = settings.laplacian_weight
        self.normalization = Normalization.fit(self.cloud.points)
        self.in_features, self.out_features = 3, 1
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)  # noqa: E731
        self.coords = as_tensor(self.normalization.apply(self.cloud.points))
        self.normals = as_tensor(self.cloud.normals)
        self.n_near = round(settings.near_surface * settings.batch)
        self.spacing = as_tensor(point_spacing(self.coords.cpu().numpy())) if self.n_near \
            else None

    def build_model(self) -> nn.Module:
        """The SIREN, fitted to a sphere's distance first when ``sphere_init_steps`` > 0 (on
        ``--resume`` too; the checkpoint's weights replace it)."""
        model = super().build_model().to(self.device)
        if self.sphere_init_steps:
            sphere_init(model, self.sphere_init_steps, self.settings.lr, self.settings.seed)
        return model

    def sample(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = self.settings.batch
        pick = torch.randint(len(self.coords), (n,), generator=generator, device=self.device)
        off = torch.rand(n - self.n_near, 3, generator=generator, device=self.device) * 2 - 1
        if self.n_near:
            near = torch.randint(len(self.coords), (self.n_near,), generator=generator,
                                 device=self.device)
            noise = torch.randn(self.n_near, 3, generator=generator, device=self.device)
            off = torch.cat([off, self.coords[near] + self.spacing[near, None] * noise])
        batch = {"coords": torch.cat([self.coords[pick], off]), "normals": self.normals[pick]}
        weight = laplacian_weight(step, self.settings.steps, self.laplacian,
                                  self.settings.laplacian_until)
        if weight > 0:
            # a CPU scalar: jet() reads it without waiting for a GPU
            batch["laplacian_weight"] = torch.tensor(weight)
        return batch

    def jet(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Jet | tuple[Jet, Jet]:
        """The order-1 jet at every point, or, while the Laplacian term is on, ``(order-1 jet
        on the surface, order-2 jet off it)``: only the off-surface half pays for the
        Laplacian."""
        coords = batch["coords"]
        if "laplacian_weight" not in batch:
            return model.jet(coords, order=1)
        n_on = batch["normals"].shape[0]
        return model.jet(coords[:n_on], order=1), model.jet(coords[n_on:], order=2)

    def loss(self, jet, batch):
        normals = batch["normals"]
        if isinstance(jet, tuple):
            on, off = jet
            value = torch.cat([on.value[:, 0], off.value[:, 0]])
            grad = torch.cat([on.grad[:, 0, :], off.grad[:, 0, :]])
            total, terms = sdf_loss(value, grad, normals, normals.shape[0], off.lap[:, 0],
                                    batch["laplacian_weight"].to(value.dtype), self.n_near)
        else:
            total, terms = sdf_loss(jet.value[:, 0], jet.grad[:, 0, :], normals,
                                    normals.shape[0], n_near=self.n_near)
            if self.laplacian > 0:  # the same log columns before and after the annealing
                terms["laplacian"] = torch.zeros((), device=total.device)
        return total, {k: v.detach() for k, v in terms.items()}

    def mesh_options(self) -> dict:
        s = self.settings
        return {"coarse_to_fine": s.coarse_to_fine, "lipschitz": s.lipschitz}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self._mesh = None
        mesh = self.final_mesh(model)
        s = self.settings
        metrics = mesh_metrics(mesh, self.cloud.points, self.cloud.normals, s.metric_samples,
                               s.seed, reference=self.reference_mesh)
        metrics["reference"] = "input mesh" if self.reference_mesh is not None \
            else "input points"
        metrics.update(mesh_stats(mesh))
        return metrics

    def describe(self) -> dict:
        lo, hi = self.cloud.points.min(axis=0), self.cloud.points.max(axis=0)
        return {
            "source": str(self.path), "points": len(self.cloud),
            "bbox_min": lo.tolist(), "bbox_max": hi.tolist(),
            "normalization": self.normalization.to_dict(),
            "loss": self.settings.loss, "sphere_init_steps": self.sphere_init_steps,
            "laplacian_weight": self.laplacian, "near_surface": self.settings.near_surface,
        }
