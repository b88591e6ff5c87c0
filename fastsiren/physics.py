"""Physics of the Helmholtz and wave tasks: media, sources, point sampling, residuals, losses and
analytic solutions, as plain functions of tensors.

Everything here follows the paper's experiments (Sitzmann et al. 2020, section 4.3 and the
supplement): the Helmholtz equation with a perfectly matched layer (PML) and a Gaussian point
source on [-1, 1]², and the wave equation with a Gaussian initial pulse on (t, x, y). The residuals
take one jet of the network, order 2 with ``hessian_diag=True`` (value, gradient and per-axis second
derivatives from one forward pass), never nested autograd. ``fastsiren.tasks.helmholtz`` and
``fastsiren.tasks.wave`` compose these pieces with the shared fit loop; the tests compare every
residual with its twin computed the official way, by nested autograd
(``fastsiren.reference.physics``), in float64.

Helmholtz (complex field u = u_re + i u_im, the network's two outputs)::

    ∂x(e_y/e_x ∂x u) + ∂y(e_x/e_y ∂y u) + e_x e_y m k² u = f

with the PML stretching factors e_x = 1 − i σ(x), e_y = 1 − i σ(y) (1 outside the layer, so the
equation there is Δu + m k² u = f), m the squared slowness (1 in the background), k the wavenumber
and f the Gaussian source. Dividing by e_x e_y gives the complex-stretched Laplacian
(1/e_x ∂x)² u + (1/e_y ∂y)² u + m k² u = f: in the layer the coordinate x becomes
x̃ = x − i ∫σ dx, and an outgoing wave e^{−ikx̃} = e^{−ikx} e^{−k∫σ dx} decays, so outgoing waves
are the e^{−ikr} ones, H0^(2) (time convention e^{+iωt}).

Wave (real field u(t, x, y), one output)::

    u_tt − c² Δu = 0,    u(0, ·) = u0,    u_t(0, ·) = v0

with c² = 1 / m from the velocity model and the wave speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import InputError
from .jet import Jet

__all__ = [
    "VELOCITY_MODELS",
    "Pml",
    "gaussian_pulse",
    "gaussian_source",
    "helmholtz_green",
    "helmholtz_loss",
    "helmholtz_residual",
    "sample_disk",
    "sample_helmholtz_points",
    "sample_wave_points",
    "squared_slowness",
    "standing_wave",
    "wave_loss",
    "wave_residual",
]

# The official experiments' constants (dataio.SingleHelmholtzSource, dataio.WaveSource).
HELMHOLTZ_WAVENUMBER = 20.0  # k of the background medium
HELMHOLTZ_AMPLITUDE = 1 + 1j  # the source's complex amplitude s
HELMHOLTZ_SIGMA = 1e-4  # variance of the Gaussian source (standard deviation 0.01)
HELMHOLTZ_SOURCE_POINTS = 100  # extra points drawn near the source every step
WAVE_SIGMA = 5e-4  # variance of the initial Gaussian pulse (standard deviation 0.022)
WAVE_SOURCE_POINTS = 1000  # initial-condition points drawn near the pulse (as many uniform ones)
SOURCE_RADIUS_PER_SIGMA = 500.0  # the extra points fill a disk of radius 500 σ around the source
SOURCE_FLOOR = 1e-5  # source values below this are set to zero: "no constraint here"
VELOCITY_MODELS = ("uniform", "square", "circle")
INCLUSION_SPEED_RATIO = 2.0  # the square and circle inclusions are twice as fast as the background


# --- media -----------------------------------------------------------------------------------


def squared_slowness(xy: torch.Tensor, model: str) -> torch.Tensor:
    """Squared slowness m = (c_background / c)² at points xy [..., 2]: [...].

    "uniform": 1 everywhere; "square": 1/4 inside |x|, |y| < 0.3; "circle": 1/4 inside the disk
    of radius 0.1 at the origin (the inclusions are twice as fast as the background).
    """
    if model not in VELOCITY_MODELS:
        raise InputError(
            f"unknown velocity model {model!r}; expected one of {', '.join(VELOCITY_MODELS)}"
        )
    x, y = xy[..., 0], xy[..., 1]
    if model == "uniform":
        return torch.ones_like(x)
    if model == "square":
        inside = (x.abs() < 0.3) & (y.abs() < 0.3)
    else:
        inside = x.square() + y.square() < 0.1**2
    fast = torch.full_like(x, 1.0 / INCLUSION_SPEED_RATIO**2)
    return torch.where(inside, fast, torch.ones_like(x))


@dataclass(frozen=True)
class Pml:
    """A perfectly matched layer of ``width`` inside the border of [−half_extent, half_extent]².

    In the layer, at depth δ from its inner edge, σ(δ) = strength · (δ / width)² (the official
    s_x / k with s_x = k a0 (δ/L)², a0 = strength = 5, L = width = 0.5), and the coordinate is
    stretched by e = 1 − i σ. The wave is damped by exp(−k ∫σ) = exp(−k · strength · width / 3)
    across the layer: about e^{−17} at the official k = 20.
    """

    width: float = 0.5
    strength: float = 5.0
    half_extent: float = 1.0

    def __post_init__(self):
        if not 0 <= self.width < self.half_extent:
            raise InputError(
                f"PML width must be in [0, {self.half_extent}) (less than the half-width of the "
                f"domain [-{self.half_extent}, {self.half_extent}]²), got {self.width}"
            )
        if self.strength < 0:
            raise InputError(f"PML strength must be >= 0, got {self.strength}")

    @property
    def inner(self) -> float:
        """Half-width of the interior, where e = 1 and the equation is the plain Helmholtz one."""
        return self.half_extent - self.width

    def sigma(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """σ(x) and dσ/dx along one axis, for coordinates x [...] (differentiable in x).

        Depth δ = max(|x| − inner, 0); σ = a0 (δ/L)², dσ/dx = 2 a0 δ sign(x) / L².
        """
        if self.width == 0:
            return torch.zeros_like(x), torch.zeros_like(x)
        depth = (x.abs() - self.inner).clamp_min(0)
        sigma = self.strength * (depth / self.width).square()
        dsigma = 2 * self.strength * depth * torch.sign(x) / self.width**2
        return sigma, dsigma

    def stretch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """e(x) = 1 − i σ(x) and de/dx = −i σ'(x), complex tensors [...]."""
        sigma, dsigma = self.sigma(x)
        return torch.complex(torch.ones_like(sigma), -sigma), torch.complex(
            torch.zeros_like(dsigma), -dsigma
        )


# --- sources and point sampling ---------------------------------------------------------------


def gaussian_source(xy: torch.Tensor, center, sigma: float) -> torch.Tensor:
    """The normalised 2-D Gaussian g(x) = exp(−|x − x0|² / (2σ)) / (2πσ) (variance σ, unit
    integral) at points xy [..., 2], with values below ``SOURCE_FLOOR`` set to zero as the official
    datasets do (zero marks "no source here"): [...]."""
    center = torch.as_tensor(center, dtype=xy.dtype, device=xy.device)
    r2 = (xy - center).square().sum(-1)
    g = torch.exp(-r2 / (2 * sigma)) / (2 * math.pi * sigma)
    return torch.where(g < SOURCE_FLOOR, torch.zeros_like(g), g)


def sample_disk(n: int, center, radius: float, generator, dtype=torch.float32) -> torch.Tensor:
    """n points in the disk of ``radius`` around ``center`` [2], uniform in area
    (r = radius √U, θ = 2π U'): [n, 2] on the generator's device."""
    device = generator.device
    r = radius * torch.rand(n, generator=generator, dtype=dtype, device=device).sqrt()
    theta = 2 * math.pi * torch.rand(n, generator=generator, dtype=dtype, device=device)
    center = torch.as_tensor(center, dtype=dtype, device=device)
    return torch.stack((r * torch.cos(theta), r * torch.sin(theta)), -1) + center


def sample_helmholtz_points(
    n: int,
    source_xy,
    generator: torch.Generator,
    n_source: int = HELMHOLTZ_SOURCE_POINTS,
    sigma: float = HELMHOLTZ_SIGMA,
    dtype=torch.float32,
    n_near: int = 0,
    near_radius: float = 0.25,
) -> torch.Tensor:
    """The official Helmholtz batch: n points uniform in [−1, 1]², the last ``n_source`` of them
    replaced by points uniform in the disk of radius 500σ (= 0.05, five standard deviations)
    around the source, so that every step sees the source: [n, 2] on the generator's device.

    ``n_near`` > 0 (not official) also replaces the first n_near points by points uniform in the
    disk of ``near_radius`` around the source: a small batch then constrains the equation around
    the source as densely as the official 52900 points do (see ``HelmholtzSettings``)."""
    if n <= n_source + n_near:
        raise InputError(
            f"too few points: {n} per step, expected more than the {n_source + n_near} drawn "
            "near the source"
        )
    coords = torch.rand(n, 2, generator=generator, dtype=dtype, device=generator.device) * 2 - 1
    coords[n - n_source :] = sample_disk(
        n_source, source_xy, SOURCE_RADIUS_PER_SIGMA * sigma, generator, dtype
    )
    if n_near:
        coords[:n_near] = sample_disk(n_near, source_xy, near_radius, generator, dtype)
    return coords


def sample_wave_points(
    n: int,
    t_max: float,
    generator: torch.Generator,
    focus_xy=(0.0, 0.0),
    n_source: int = WAVE_SOURCE_POINTS,
    sigma: float | None = WAVE_SIGMA,
    dtype=torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official wave batch over (t, x, y): (coords [n, 3], initial [n] bool).

    x, y uniform in [−1, 1]², t uniform in [0, t_max]; the last 2·n_source points are moved to
    t = 0 (the initial-condition points, flagged in ``initial``), and when ``sigma`` is given the
    last n_source of them are drawn in the disk of radius 500σ (= 0.25) around the pulse."""
    if n <= 2 * n_source:
        raise InputError(
            f"too few points: {n} per step, expected more than the {2 * n_source} "
            "initial-condition points"
        )
    device = generator.device
    xy = torch.rand(n, 2, generator=generator, dtype=dtype, device=device) * 2 - 1
    if sigma is not None:
        xy[n - n_source :] = sample_disk(
            n_source, focus_xy, SOURCE_RADIUS_PER_SIGMA * sigma, generator, dtype
        )
    t = torch.rand(n, 1, generator=generator, dtype=dtype, device=device) * t_max
    initial = torch.zeros(n, dtype=torch.bool, device=device)
    initial[n - 2 * n_source :] = True
    t[initial] = 0.0
    return torch.cat((t, xy), -1), initial


# --- Helmholtz --------------------------------------------------------------------------------


def helmholtz_residual(
    jet: Jet, xy: torch.Tensor, wavenumber: float, slowness2: torch.Tensor, pml: Pml
) -> torch.Tensor:
    """The PML Helmholtz operator applied to the network, complex [..., N].

    ``jet`` holds the field's two channels (real, imaginary) at xy [..., N, 2], order 2 with
    ``hessian_diag=True``. Expanding the divergence form with the product rule (the coefficients
    depend on x through σ only)::

        ∂x(e_y/e_x ∂x u) = (e_y/e_x) u_xx − (e_y e_x' / e_x²) u_x
        ∂y(e_x/e_y ∂y u) = (e_x/e_y) u_yy − (e_x e_y' / e_y²) u_y

    plus e_x e_y m k² u: every term needs only u, its gradient and its per-axis second
    derivatives, which the jet gives in one pass.
    """
    if jet.hess_diag is None:
        raise ValueError("helmholtz_residual needs a jet of order 2 with hessian_diag=True")

    def cplx(t):  # [..., 2] (real, imaginary) -> complex [...]
        return torch.complex(t[..., 0], t[..., 1])

    u = cplx(jet.value)
    u_x, u_y = cplx(jet.grad[..., 0]), cplx(jet.grad[..., 1])
    u_xx, u_yy = cplx(jet.hess_diag[..., 0]), cplx(jet.hess_diag[..., 1])
    with torch.no_grad():  # coefficients depend on the (fixed) coordinates only
        ex, dex = pml.stretch(xy[..., 0])
        ey, dey = pml.stretch(xy[..., 1])
        a, b = ey / ex, ex / ey
        da, db = -ey * dex / ex.square(), -ex * dey / ey.square()
        c = ex * ey * slowness2 * wavenumber**2
    return a * u_xx + da * u_x + b * u_yy + db * u_y + c * u


def helmholtz_loss(residual: torch.Tensor, source: torch.Tensor) -> dict[str, torch.Tensor]:
    """The official Helmholtz losses, reduced by mean.

    ``residual`` complex [N] (``helmholtz_residual``), ``source`` complex [N] (f, zero off the
    source). On points with f ≠ 0 the residual must equal f, elsewhere zero, both in L1 on the real
    and imaginary parts. With ``mean`` over the N points and both parts::

        source = (N / 1000) · mean(|R − f| on f ≠ 0),     pde = mean(|R| on f = 0)

    The official ``helmholtz_pml`` returns sums, ``Σ_on |R − f| · N / 1000`` and ``Σ_off |R|``:
    exactly 2N times these. A constant factor on the loss leaves Adam's steps unchanged (up to its
    ε) and the official run clips no gradients, so training follows the same path while the
    printed loss stays of order one instead of millions.
    """
    n = residual.shape[-1]
    on = source != 0
    zero = torch.zeros_like(residual)
    miss_on = torch.where(on, residual - source, zero)
    miss_off = torch.where(on, zero, residual)

    def l1(z):  # mean over points and (real, imaginary) of |.|
        return torch.view_as_real(z).abs().mean()

    return {"source": (n / 1000.0) * l1(miss_on), "pde": l1(miss_off)}


def helmholtz_green(
    xy, wavenumber: float, source_xy=(0.0, 0.0), amplitude: complex = 1 + 1j,
    sigma: float = HELMHOLTZ_SIGMA,
):
    """The analytic field of the Gaussian source in a uniform medium, away from the source:
    complex numpy array of xy's leading shape (numpy or torch input [..., 2]).

    The free-space Green's function of Δ + k² with outgoing waves e^{−ikr} (the ones the PML
    absorbs, see the module docstring) is G(r) = (i/4) H0^(2)(kr): (Δ + k²) G = δ. [Check of the
    scale: the flux of ∇G through a circle of radius R plus k² ∫G over the disk is
    −(iπ/2) kR H1^(2)(kR) + (iπ/2) kR H1^(2)(kR) + 1 = 1, using ∫ r H0^(2)(kr) dr = r H1^(2)(kr)/k
    and r H1^(2)(kr) → 2i/(πk) as r → 0.] The source is f = s g with g the unit Gaussian of
    variance σ, so u = s (G * g). Outside the source, the convolution of G with a radial function
    is G times the function's 2-D Fourier transform at k (Graf's addition theorem averages
    J0(k|x'|) over the source): ĝ(k) = exp(−σk²/2). Hence

        u(x) = s · exp(−σk²/2) · (i/4) H0^(2)(k |x − x0|)

    (exp(−σk²/2) = 0.980 at k = 20). This is the exact solution of the PML problem in the interior
    |x|, |y| < inner, up to the layer's residual reflection, and of the Helmholtz equation itself
    away from the source; near the source (within a few σ^{1/2}) and inside the layer it is not.
    """
    import numpy as np
    from scipy.special import hankel2

    xy = xy.detach().cpu().numpy() if isinstance(xy, torch.Tensor) else np.asarray(xy)
    r = np.hypot(xy[..., 0] - source_xy[0], xy[..., 1] - source_xy[1])
    scale = amplitude * math.exp(-sigma * wavenumber**2 / 2)
    return scale * 0.25j * hankel2(0, wavenumber * r)


# --- wave -------------------------------------------------------------------------------------


def wave_residual(jet: Jet, speed2: torch.Tensor) -> torch.Tensor:
    """u_tt − c² (u_xx + u_yy) [..., N] from a jet over (t, x, y) of order 2 with
    ``hessian_diag=True`` (one output); ``speed2`` = c² at each point [..., N]."""
    if jet.hess_diag is None:
        raise ValueError("wave_residual needs a jet of order 2 with hessian_diag=True")
    second = jet.hess_diag[..., 0, :]  # [..., N, 3]: u_tt, u_xx, u_yy
    return second[..., 0] - speed2 * (second[..., 1] + second[..., 2])


def wave_loss(
    jet: Jet, residual: torch.Tensor, initial: torch.Tensor, u0: torch.Tensor,
    v0: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The official wave losses, reduced by mean.

    On the initial-condition points (``initial`` [N] bool) the field must equal u0 [N] and its time
    derivative v0 [N] (zero by default); the residual [N] must vanish everywhere. With means over
    the N points::

        initial = (N/10) · mean(|u − u0| on t = 0)
        velocity = (N/100) · mean(|u_t − v0| on t = 0)
        pde = mean(|u_tt − c²Δu|)

    The official ``wave_pml`` returns ``Σ_{t=0} |u − u0| · N/10``, ``Σ_{t=0} |u_t| · N/100`` and
    ``Σ |residual|``: exactly N times these, which Adam does not see (see ``helmholtz_loss``).
    """
    n = residual.shape[-1]
    u, u_t = jet.value[..., 0], jet.grad[..., 0, 0]
    if v0 is None:
        v0 = torch.zeros_like(u0)
    mask = initial.to(u.dtype)
    return {
        "initial": (n / 10.0) * ((u - u0).abs() * mask).mean(),
        "velocity": (n / 100.0) * ((u_t - v0).abs() * mask).mean(),
        "pde": residual.abs().mean(),
    }


def gaussian_pulse(xy: torch.Tensor, sigma: float = WAVE_SIGMA) -> torch.Tensor:
    """The official initial pulse at the origin: exp(−|x|²/(2σ)) / 50 (peak 0.02), with values
    below ``SOURCE_FLOOR`` set to zero: [...]."""
    u0 = torch.exp(-xy.square().sum(-1) / (2 * sigma)) / 50.0
    return torch.where(u0 < SOURCE_FLOOR, torch.zeros_like(u0), u0)


def standing_wave(txy: torch.Tensor, modes=(2, 2), speed: float = 1.0, amplitude: float = 0.02):
    """A standing wave, an exact solution of u_tt = c²Δu in the whole plane:

        u = A cos(πm x) cos(πn y) cos(ω t),   ω = c π √(m² + n²),

    with initial data u0 = A cos(πm x) cos(πn y) and u_t(0) = 0 (what the official velocity term
    asks for) set exactly. ``txy`` [..., 3] -> [...]. Without boundary conditions the equation fixes
    the field on [−1, 1]² only inside the domain of dependence |x|, |y| ≤ 1 − c t: compare there.
    """
    m, n = modes
    omega = speed * math.pi * math.hypot(m, n)
    t, x, y = txy[..., 0], txy[..., 1], txy[..., 2]
    shape = torch.cos(math.pi * m * x) * torch.cos(math.pi * n * y)
    return amplitude * shape * torch.cos(omega * t)
