"""The physics pieces of the Helmholtz and wave tasks against their twins and analytic facts.

- The residuals from one jet (analytic, order 2 with the Hessian diagonal) equal the same residuals
  computed the official way (``fastsiren.reference.physics``: nested autograd on
  ``fastsiren.reference``, the PML in the official divergence form), in float64, and so do the
  gradients of the losses with respect to every parameter.
- The losses are the official sums divided by a constant (2N for Helmholtz, N for the wave).
- The analytic Helmholtz solution (the metric's truth) satisfies the discretised equation away
  from the source, matches the convolution of the Green's function with the source as sampled,
  and matches a finite-difference solve of the PML problem with the Gaussian source (which fixes
  its sign, scale and outgoing direction at once).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from fastsiren.reference import Siren as RefSiren
from fastsiren.reference import diff_operators
from fastsiren.reference import physics as reference_physics
from helpers import assert_rel_close

import fastsiren as fs
from fastsiren import physics
from fastsiren.errors import InputError

# Float64 jets against nested autograd agree to rounding; the Laplacian terms carry omega^2
# (900) and k^2 (400) factors, so allow a little more than the raw 1e-13.
TWIN_TOL = 1e-10
K = 20.0


def _twin_models(gen, d, out, width=32, hidden=2):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    model = fs.Siren(d, width, hidden, out, outermost_linear=True, backend="torch").double()
    ref = RefSiren(d, width, hidden, out, outermost_linear=True).double()
    ref.load_state_dict(model.state_dict())
    return model, ref


@pytest.mark.parametrize("velocity", ["uniform", "circle"])
def test_helmholtz_residual_matches_autograd_twin(gen, velocity):
    model, ref = _twin_models(gen, d=2, out=2)
    source_xy = (0.0, 0.0) if velocity == "uniform" else (-0.35, 0.0)
    xy = physics.sample_helmholtz_points(300, source_xy, gen, dtype=torch.float64)
    assert (xy.abs() > 0.5).any(dim=-1).sum() > 100, "the points must reach into the PML"
    pml = physics.Pml()
    slowness2 = physics.squared_slowness(xy, velocity)
    jet = model.jet(xy, order=2, hessian_diag=True)
    residual = physics.helmholtz_residual(jet, xy, K, slowness2, pml)
    x = xy.clone().requires_grad_(True)
    twin = reference_physics.helmholtz_residual_autograd(ref(x), x, K, slowness2, pml)
    assert_rel_close(torch.view_as_real(residual), torch.view_as_real(twin), TWIN_TOL, "residual")

    # The mean losses are the official sums / 2N, and their parameter gradients match too.
    source = (1 + 1j) * physics.gaussian_source(xy, source_xy, physics.HELMHOLTZ_SIGMA)
    assert (source != 0).sum() >= physics.HELMHOLTZ_SOURCE_POINTS
    ours = physics.helmholtz_loss(residual, source)
    on = torch.view_as_real(source) != 0
    r, f = torch.view_as_real(twin), torch.view_as_real(source)
    n = xy.shape[0]
    official = {
        "source": (r - f)[on].abs().sum() * n / 1e3,
        "pde": r[~on].abs().sum(),
    }
    for name in official:
        assert_rel_close(ours[name] * 2 * n, official[name], TWIN_TOL, f"loss {name}")
    total, total_twin = sum(ours.values()), sum(official.values()) / (2 * n)
    grads = torch.autograd.grad(total, list(model.parameters()))
    grads_twin = torch.autograd.grad(total_twin, list(ref.parameters()))
    for (name, _), g, gt in zip(model.named_parameters(), grads, grads_twin):
        assert_rel_close(g, gt, TWIN_TOL, f"d loss / d {name}")


@pytest.mark.parametrize("velocity", ["uniform", "square"])
def test_wave_residual_matches_autograd_twin(gen, velocity):
    model, ref = _twin_models(gen, d=3, out=1)
    txy, initial = physics.sample_wave_points(400, 0.3, gen, n_source=50, dtype=torch.float64)
    speed2 = 1.5**2 / physics.squared_slowness(txy[:, 1:], velocity)
    u0 = physics.gaussian_pulse(txy[:, 1:])
    jet = model.jet(txy, order=2, hessian_diag=True)
    residual = physics.wave_residual(jet, speed2)

    x = txy.clone().requires_grad_(True)
    y = ref(x)
    twin, u_t = reference_physics.wave_residual_autograd(y, x, speed2)
    assert_rel_close(residual, twin, TWIN_TOL, "wave residual")

    ours = physics.wave_loss(jet, residual, initial, u0)
    n = txy.shape[0]
    official = {
        "initial": (y[initial, 0] - u0[initial]).abs().sum() * n / 1e1,
        "velocity": u_t[initial].abs().sum() * n / 1e2,
        "pde": twin.abs().sum(),
    }
    for name in official:
        assert_rel_close(ours[name] * n, official[name], TWIN_TOL, f"loss {name}")
    grads = torch.autograd.grad(sum(ours.values()), list(model.parameters()))
    grads_twin = torch.autograd.grad(sum(official.values()) / n, list(ref.parameters()))
    for (name, _), g, gt in zip(model.named_parameters(), grads, grads_twin):
        assert_rel_close(g, gt, TWIN_TOL, f"d loss / d {name}")


def test_green_function_satisfies_discrete_helmholtz_away_from_source():
    """The 5-point Laplacian of the analytic field plus k^2 times it vanishes to the stencil's
    truncation error (kh)^2/12 relative to k^2 u, on a patch away from the source."""
    h = 1e-3
    x = np.arange(0.2, 0.6, h)
    X, Y = np.meshgrid(x, x, indexing="ij")
    u = physics.helmholtz_green(np.stack([X, Y], -1), K)
    lap = (u[2:, 1:-1] + u[:-2, 1:-1] + u[1:-1, 2:] + u[1:-1, :-2] - 4 * u[1:-1, 1:-1]) / h**2
    residual = lap + K**2 * u[1:-1, 1:-1]
    ratio = np.abs(residual).max() / np.abs(K**2 * u).max()
    assert ratio < 2 * (K * h) ** 2 / 12, ratio


def test_green_function_scale_is_that_of_the_sampled_gaussian_source():
    """u = s (G * g): quadrature of the Green's function against the (floored) Gaussian source
    reproduces the analytic field, exp(-sigma k^2 / 2) included (a 2% effect at k = 20)."""
    h = 1e-3
    s = np.arange(-0.07, 0.07 + h / 2, h)
    SX, SY = np.meshgrid(s, s, indexing="ij")
    src = np.stack([SX, SY], -1)
    g = physics.gaussian_source(torch.from_numpy(src), (0.0, 0.0), physics.HELMHOLTZ_SIGMA)
    weights = (1 + 1j) * g.numpy() * h**2
    for point in [(0.3, 0.1), (-0.45, 0.2)]:
        green = physics.helmholtz_green(np.array(point) - src, K, amplitude=1.0, sigma=0.0)
        convolved = (green * weights).sum()
        analytic = physics.helmholtz_green(np.array(point), K)
        assert abs(convolved - analytic) / abs(analytic) < 1e-4
        assert abs(convolved - analytic / math.exp(-physics.HELMHOLTZ_SIGMA * K**2 / 2)) > (
            0.01 * abs(analytic)
        )


def test_green_function_matches_finite_difference_pml_solve():
    """Solve the PML problem with the Gaussian source by second-order finite differences (the
    divergence form, Dirichlet zero beyond the layer) and compare with the analytic field in the
    interior, away from the source: 1.5% at h = 0.0125, then 1.0%, 0.44%, 0.25% at h = 0.01,
    0.0067, 0.005 (second order; the field without its exp(-sigma k^2/2) factor stays 1.8-1.9%
    off, which the quadrature test above resolves). The outgoing H0^(1) or a wrong scale would be
    off by order one."""
    n = 161
    h = 2 / (n - 1)
    x = np.linspace(-1, 1, n)
    pml = physics.Pml()

    def stretch(p):
        return 1 - 1j * pml.sigma(torch.from_numpy(p))[0].numpy()

    def d_e_d(e_mid):  # interior nodes of d/dx (1/e d/dx), e at the half-points
        w = 1 / e_mid / h**2
        return sp.diags([w[1:-1], -(w[:-1] + w[1:]), w[1:-1]], [-1, 0, 1])

    inner = x[1:-1]
    e_node = sp.diags(stretch(inner))
    d_op = d_e_d(stretch((x[:-1] + x[1:]) / 2))
    # e_x e_y [(1/e_x) d/dx (1/e_x d/dx) + (1/e_y) d/dy (1/e_y d/dy) + k^2], u[iy, ix] row-major
    operator = sp.kron(e_node, d_op) + sp.kron(d_op, e_node) + K**2 * sp.kron(e_node, e_node)
    X, Y = np.meshgrid(inner, inner)
    xy = np.stack([X, Y], -1)
    f = (1 + 1j) * physics.gaussian_source(torch.from_numpy(xy), (0.0, 0.0), 1e-4).numpy()
    u = spla.spsolve(operator.tocsc(), f.ravel()).reshape(X.shape)
    analytic = physics.helmholtz_green(xy, K)
    keep = (np.hypot(X, Y) > 0.1) & (np.abs(X) < pml.inner) & (np.abs(Y) < pml.inner)
    err = np.linalg.norm(u[keep] - analytic[keep]) / np.linalg.norm(analytic[keep])
    assert err < 0.02, err


def test_standing_wave_solves_the_wave_equation(gen):
    txy = (torch.rand(50, 3, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    speed = 1.3
    u = physics.standing_wave(txy, (2, 1), speed, amplitude=0.5)[:, None]
    hess = diff_operators.hessian(u, txy)[:, 0]
    residual = hess[:, 0, 0] - speed**2 * (hess[:, 1, 1] + hess[:, 2, 2])
    assert residual.abs().max() < 1e-10 * hess[:, 0, 0].abs().max()
    du_dt = diff_operators.gradient(u, txy)[:, 0]
    at_zero = txy.detach().clone()
    at_zero[:, 0] = 0
    assert_rel_close(
        physics.standing_wave(at_zero, (2, 1), speed, 0.5),
        0.5 * torch.cos(2 * math.pi * at_zero[:, 1]) * torch.cos(math.pi * at_zero[:, 2]),
        1e-15, "initial data",
    )
    assert du_dt.shape == (50,)


def test_sampling_and_media(gen):
    xy = physics.sample_helmholtz_points(1000, (-0.35, 0.0), gen)
    near = xy[-physics.HELMHOLTZ_SOURCE_POINTS :] - torch.tensor([-0.35, 0.0])
    assert near.norm(dim=-1).max() <= 0.05 + 1e-6
    assert xy.abs().max() <= 1.0
    xy = physics.sample_helmholtz_points(1000, (-0.35, 0.0), gen, n_near=300, near_radius=0.2)
    around = (xy - torch.tensor([-0.35, 0.0])).norm(dim=-1)
    assert around[:300].max() <= 0.2 + 1e-6 and around[300:-100].max() > 0.5  # the rest uniform
    txy, initial = physics.sample_wave_points(3000, 0.25, gen)
    assert initial.sum() == 2 * physics.WAVE_SOURCE_POINTS
    assert (txy[initial, 0] == 0).all() and txy[:, 0].max() <= 0.25
    assert txy[-physics.WAVE_SOURCE_POINTS :, 1:].norm(dim=-1).max() <= 0.25 + 1e-6
    grid = torch.tensor([[0.0, 0.0], [0.2, 0.2], [0.05, 0.0], [0.9, 0.0]])
    assert physics.squared_slowness(grid, "square").tolist() == [0.25, 0.25, 0.25, 1.0]
    assert physics.squared_slowness(grid, "circle").tolist() == [0.25, 1.0, 0.25, 1.0]


def test_bad_physics_input_is_one_line_error(gen):
    with pytest.raises(InputError, match="unknown velocity model 'blob'"):
        physics.squared_slowness(torch.zeros(3, 2), "blob")
    with pytest.raises(InputError, match="PML width must be in"):
        physics.Pml(width=1.2)
    with pytest.raises(InputError, match="too few points"):
        physics.sample_helmholtz_points(50, (0.0, 0.0), gen)
    with pytest.raises(InputError, match="too few points"):
        physics.sample_helmholtz_points(400, (0.0, 0.0), gen, n_near=300)
    with pytest.raises(InputError, match="too few points"):
        physics.sample_wave_points(1500, 0.1, gen)
