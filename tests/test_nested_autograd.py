"""Nested autograd through fastsiren gives the reference's gradients (tier a, float64).

The official scripts differentiate the model's output with ``diff_operators`` (autograd with
``create_graph=True``) and train on a loss of those derivatives. The same code on an ``fs.Siren``
must give the weight gradients that the reference SIREN gives: relative error <= 1e-10 in float64
(rounding only; a dropped term shows up as O(1)).
"""

from __future__ import annotations

import pytest
import torch
from fastsiren.reference import diff_operators
from helpers import assert_rel_close, make_params

import fastsiren as fs
from fastsiren import reference

TOL = 1e-10


def _twins(gen, d, width, hidden, out, outermost_linear, backend="torch", device="cpu"):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    ours = fs.Siren(d, width, hidden, out, outermost_linear=outermost_linear,
                    backend=backend).double().to(device)
    ref = reference.Siren(d, width, hidden, out, outermost_linear=outermost_linear).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref.to(device)


def _points(gen, *shape, device="cpu"):
    x = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1
    return x.to(device).requires_grad_()


def _grads(loss, inputs, create_graph=False):
    """Gradients with zeros for inputs the loss does not reach (a final bias under a loss on
    derivatives): the reference reports those as unused, fastsiren as zero."""
    return torch.autograd.grad(loss, inputs, create_graph=create_graph, allow_unused=True,
                               materialize_grads=True)


def eikonal_loss(model, x):
    """The SDF script's terms: |grad| = 1 and the value itself."""
    y = model(x)
    g = diff_operators.gradient(y, x)
    return (g.norm(dim=-1) - 1).square().mean() + y.abs().mean()


def laplacian_loss(model, x):
    """The Poisson script's term: the Laplacian by divergence of the gradient."""
    y = model(x)
    return diff_operators.laplace(y, x).square().mean()


def _compare(loss_fn, ours, ref, x):
    grads = []
    for model in (ours, ref):
        xm = x.detach().clone().requires_grad_()
        grads.append(_grads(loss_fn(model, xm), [xm, *model.parameters()]))
    names = ["x"] + [name for name, _ in ours.named_parameters()]
    for name, a, b in zip(names, *grads):
        assert_rel_close(a, b, TOL, f"d loss / d {name}")


@pytest.mark.parametrize("loss_fn", [eikonal_loss, laplacian_loss], ids=["eikonal", "laplacian"])
@pytest.mark.parametrize(
    "d,width,hidden,out,linear",
    [(3, 16, 1, 1, True), (2, 17, 1, 1, False)],
    ids=["sdf-3d", "sine-final-2d"],
)
def test_official_operators_on_the_model_output(gen, loss_fn, d, width, hidden, out, linear):
    ours, ref = _twins(gen, d, width, hidden, out, linear)
    _compare(loss_fn, ours, ref, _points(gen, 17, d))


def test_gradient_of_the_adjoint_path(gen):
    """Order 1 with fewer outputs than coordinates runs the adjoint sweep; a loss on the
    divergence of its gradient field differentiates that sweep's backward."""
    ours, ref = _twins(gen, 3, 20, 1, 1, True)

    def loss(model, x):
        if isinstance(model, fs.Siren):
            g = model.jet(x, order=1).grad[..., 0, :]
        else:
            g = diff_operators.gradient(model(x), x)
        return diff_operators.divergence(g, x).square().mean() + g.square().mean()

    _compare(loss, ours, ref, _points(gen, 23, 3))


def test_hessian_vector_product_on_the_weights(gen):
    """grad(loss on the jet, W, create_graph=True), then a loss on that gradient (what
    meta-learning does): second derivatives with respect to the weights."""
    ours, ref = _twins(gen, 2, 16, 1, 1, True)
    x = _points(gen, 19, 2)
    grads = []
    for model in (ours, ref):
        if isinstance(model, fs.Siren):
            jet = model.jet(x, order=2)
        else:
            jet = reference.autograd_jet(model, x, order=2)
        loss = jet.lap.square().mean() + jet.grad.square().mean()
        first = _grads(loss, list(model.parameters()), create_graph=True)
        outer = sum(g.square().sum() for g in first)
        grads.append(_grads(outer, list(model.parameters())))
    for a, b in zip(*grads):
        assert_rel_close(a, b, TOL, "d |dL/dθ|² / dθ")


def test_batched_weights(gen):
    """fs.siren_jet with B independent networks, value differentiated by the official
    operators, against the reference's batched forward."""
    weights, biases, omegas = make_params(gen, 3, 2, 16, 1, 1, 30.0, torch.float64)
    x = _points(gen, 3, 13, 2)
    params = [*weights, *biases]
    grads = []
    for which in ("ours", "reference"):
        xm = x.detach().clone().requires_grad_()
        if which == "ours":
            y = fs.siren(xm, weights, biases, omegas, backend="torch")
        else:
            y = reference.siren_forward(xm, weights, biases, omegas)
        lap = diff_operators.laplace(y, xm)
        g = diff_operators.gradient(y, xm)
        loss = lap.square().mean() + (g.norm(dim=-1) - 1).square().mean()
        grads.append(_grads(loss, [xm, *params]))
    for i, (a, b) in enumerate(zip(*grads)):
        assert_rel_close(a, b, TOL, f"gradient {i}")


@pytest.mark.interpret
def test_triton_backend_falls_back_to_torch_ops(gen, device):
    """The Triton backend under create_graph: the compatible path in torch ops. The model and
    points are on the tier's device (CUDA when compiled: the kernels take no CPU tensors)."""
    pytest.importorskip("triton")
    ours, ref = _twins(gen, 2, 16, 1, 1, True, backend="triton", device=device)
    _compare(eikonal_loss, ours, ref, _points(gen, 11, 2, device=device))


def test_first_order_backward_stays_the_hand_vjp(gen):
    """Without create_graph the fast backward runs: its result carries no graph."""
    ours, _ = _twins(gen, 2, 16, 1, 1, True)
    x = _points(gen, 7, 2)
    (g,) = torch.autograd.grad(ours(x).sum(), [x])
    assert g.grad_fn is None and not g.requires_grad
