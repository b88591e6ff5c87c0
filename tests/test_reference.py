"""The reference itself, checked against finite differences and the official conventions."""

from __future__ import annotations

import math

import pytest
import torch
from fastsiren.reference import (
    Siren,
    autograd_jet,
    gradient,
    hessian,
    jacobian,
    laplace,
    naive_jet,
)
from helpers import assert_rel_close


@pytest.fixture
def small_siren():
    torch.manual_seed(7)
    # omega_0 = 3 keeps the function smooth at the finite-difference step used below.
    return Siren(2, 12, 1, 1, outermost_linear=True, first_omega_0=3.0, hidden_omega_0=3.0).double()


def _fd_gradient(fn, x, h):
    cols = []
    for i in range(x.shape[-1]):
        e = torch.zeros_like(x)
        e[..., i] = h
        cols.append((fn(x + e) - fn(x - e)) / (2 * h))
    return torch.stack(cols, dim=-1)  # [N, out, d]


def test_gradient_and_laplacian_match_finite_differences(small_siren, gen):
    x = (torch.rand(9, 2, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()
    with torch.no_grad():
        fd_grad = _fd_gradient(small_siren, x, 1e-5)  # central: error ~ h^2 f''' ~ 1e-9
        fd_lap = sum(
            (small_siren(x + e) - 2 * small_siren(x) + small_siren(x - e)) / 1e-6
            for e in (torch.tensor([1e-3, 0.0], dtype=torch.float64),
                      torch.tensor([0.0, 1e-3], dtype=torch.float64))
        )  # second difference: error ~ h^2 f'''' / 12 ~ 1e-6
    y = small_siren(x)
    assert_rel_close(gradient(y, x), fd_grad[:, 0], 1e-7, "gradient")
    assert_rel_close(laplace(y, x), fd_lap, 1e-5, "laplace")
    jet = autograd_jet(small_siren, x, 2, hessian_diag=True)
    assert_rel_close(jet.grad, fd_grad, 1e-7, "jet grad")
    assert_rel_close(jet.lap, fd_lap, 1e-5, "jet lap")


def test_hessian_matches_finite_differences_of_gradient(small_siren, gen):
    x = (torch.rand(5, 2, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()
    hess = hessian(small_siren(x), x)  # [N, out, d, d]

    def grad_fn(p):
        p = p.detach().requires_grad_()
        return jacobian(small_siren(p), p)[:, 0].detach()  # [N, d]

    fd = _fd_gradient(grad_fn, x.detach(), 1e-5)  # [N, d, d]
    assert_rel_close(hess[:, 0], fd, 1e-7, "hessian")
    assert_rel_close(hess[:, 0], hess[:, 0].transpose(-1, -2), 1e-12, "symmetry")


def test_initialisation_follows_the_paper(gen):
    torch.manual_seed(0)
    model = Siren(3, 512, 2, 1, outermost_linear=True, first_omega_0=30.0, hidden_omega_0=20.0)
    first, hidden = model.net[0].linear.weight, model.net[1].linear.weight
    final = model.net[3].weight
    assert first.abs().max() <= 1 / 3 and first.abs().max() > 0.99 / 3
    bound = math.sqrt(6 / 512) / 20.0
    for w in (hidden, final):
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
        # U(-a, a) has standard deviation a / sqrt(3); 262144 draws pin it to about 0.3%.
    assert abs(hidden.std().item() / (bound / math.sqrt(3)) - 1) < 0.01
    bias_bound = 1 / math.sqrt(512)
    assert model.net[1].linear.bias.abs().max() <= bias_bound


def test_omega_multiplies_the_bias():
    layer = Siren(1, 1, 0, 1, outermost_linear=False, first_omega_0=30.0).net[0]
    with torch.no_grad():
        layer.linear.weight.zero_()
        layer.linear.bias.fill_(0.01)
    assert torch.allclose(layer(torch.zeros(1, 1)), torch.sin(torch.tensor(0.3)))


def test_state_dict_layout_is_the_official_one():
    model = Siren(2, 8, 2, 1, outermost_linear=True)
    assert list(model.state_dict()) == [
        "net.0.linear.weight", "net.0.linear.bias",
        "net.1.linear.weight", "net.1.linear.bias",
        "net.2.linear.weight", "net.2.linear.bias",
        "net.3.weight", "net.3.bias",
    ]


@pytest.mark.parametrize("outermost_linear", [True, False])
def test_naive_jets_match_autograd(gen, outermost_linear):
    torch.manual_seed(2)
    model = Siren(3, 24, 2, 2, outermost_linear=outermost_linear).double()
    x = torch.rand(33, 3, generator=gen, dtype=torch.float64) * 2 - 1
    weights, biases, omegas = model.layer_parameters()
    naive = naive_jet(x, weights, biases, omegas, outermost_linear, order=2)
    truth = autograd_jet(model, x, 2)
    for name in ("value", "grad", "lap"):
        assert_rel_close(getattr(naive, name), getattr(truth, name), 1e-11, name)
