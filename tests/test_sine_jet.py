"""Tier a: the torch backend against the autograd reference.

Float64 checks exactness: the analytic jets and hand VJP must agree with nested autograd to
rounding (target: relative error below 1e-10 on every output and every gradient). Float32 checks
that the formulation is numerically sound: every layer's rounding (~1e-7 relative) is amplified by
omega_0 per derivative order through the chain rule, so the tolerance for a derivative of order k
is about 1e-5 * max(1, omega_0)^k / omega_0^k on the already-scaled outputs -- we use a relative
tolerance of 2e-4 for value and gradient and 2e-3 for the Laplacian, which carries omega_0^2
(relative to its own scale) on top of cancellation between its two terms.
"""

from __future__ import annotations

import pytest
import torch
from fastsiren.reference import autograd_jet, siren_forward
from helpers import assert_rel_close, make_params

import fastsiren as fs

# (batch, N, in, width, out, hidden_layers, outermost_linear, omega)
CASES = [
    pytest.param((None, 1, 2, 16, 1, 1, True, 30.0), id="N1-d2-w16"),
    pytest.param((None, 37, 1, 16, 1, 2, True, 30.0), id="N37-d1-w16"),
    pytest.param((None, 37, 3, 100, 2, 2, True, 30.0), id="N37-d3-w100-out2"),
    pytest.param((None, 1000, 2, 256, 1, 3, True, 30.0), id="N1000-d2-w256"),
    pytest.param((None, 37, 2, 100, 3, 1, False, 30.0), id="N37-d2-sine-out3"),
    pytest.param((None, 37, 3, 16, 1, 2, True, 1.0), id="N37-d3-omega1"),
    pytest.param((None, 37, 2, 16, 2, 1, False, 1.0), id="N37-d2-omega1-sine"),
    pytest.param((3, 37, 2, 16, 1, 2, True, 30.0), id="B3-N37-d2-w16"),
    pytest.param((2, 37, 3, 100, 2, 1, False, 30.0), id="B2-N37-d3-sine-out2"),
]


def combined_loss(fields, gen):
    """sum_f <field, random cotangent>: exercises every output's cotangent at once."""
    total = 0
    for t in fields.values():
        cot = torch.randn(t.shape, generator=gen, dtype=t.dtype)
        total = total + (t * cot).sum()
    return total


def run_both(gen, case, order, hessian_diag, dtype, backend="torch", recompute=False):
    batch, n, d, width, out, hidden, linear, omega = case
    weights, biases, omegas = make_params(gen, batch, d, width, out, hidden, omega, dtype)
    shape = (n, d) if batch is None else (batch, n, d)
    x = (torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1).requires_grad_()
    params = [x, *weights, *biases]
    loss_seed = int(torch.randint(0, 2**31, (1,), generator=gen))

    results = []
    for which in ("ours", "reference"):
        if which == "ours":
            jet = fs.siren_jet(x, weights, biases, omegas, order, linear, backend,
                               hessian_diag=hessian_diag, recompute=recompute)
        else:
            def fn(coords):
                return siren_forward(coords, weights, biases, omegas, linear)

            jet = autograd_jet(fn, x, order, hessian_diag)
        fields = jet.fields()
        loss = combined_loss(fields, torch.Generator().manual_seed(loss_seed))
        grads = torch.autograd.grad(loss, params)
        results.append((fields, grads))
    return results


def check(results, tol_by_field, tol_grads):
    (ours, our_grads), (ref, ref_grads) = results
    for name, expected in ref.items():
        assert_rel_close(ours[name], expected, tol_by_field[name], name)
    names = ["x"] + [f"param{i}" for i in range(len(our_grads) - 1)]
    for name, a, e in zip(names, our_grads, ref_grads):
        assert_rel_close(a, e, tol_grads, f"d loss / d {name}")


F64_TOL = {"value": 1e-12, "grad": 1e-11, "lap": 1e-10, "hess_diag": 1e-10}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("order", [0, 1, 2])
def test_float64_matches_reference(gen, case, order):
    check(run_both(gen, case, order, False, torch.float64), F64_TOL, 1e-10)


@pytest.mark.parametrize("case", CASES[:5] + CASES[7:8])
def test_float64_hessian_diagonal(gen, case):
    check(run_both(gen, case, 2, True, torch.float64), F64_TOL, 1e-10)


@pytest.mark.parametrize("case", [CASES[3], CASES[7]])
def test_float64_recompute_matches(gen, case):
    check(run_both(gen, case, 2, False, torch.float64, recompute=True), F64_TOL, 1e-10)


F32_TOL = {"value": 2e-4, "grad": 2e-4, "lap": 2e-3, "hess_diag": 2e-3}


@pytest.mark.parametrize("case", [CASES[2], CASES[3], CASES[5], CASES[8]])
def test_float32_within_precision(gen, case):
    check(run_both(gen, case, 2, False, torch.float32), F32_TOL, 2e-3)


def test_modules_agree_with_reference_modules(gen):
    torch.manual_seed(0)
    fast = fs.Siren(3, 64, 2, 2, outermost_linear=True).double()
    ref = fs.reference.Siren(3, 64, 2, 2, outermost_linear=True).double()
    ref.load_state_dict(fast.state_dict())
    x = torch.rand(50, 3, generator=gen, dtype=torch.float64) * 2 - 1
    assert_rel_close(fast(x), ref(x), 1e-13, "forward")
    jet, ref_jet = fast.jet(x, 2), autograd_jet(ref, x, 2)
    for name in ("value", "grad", "lap"):
        assert_rel_close(getattr(jet, name), getattr(ref_jet, name), 1e-10, name)


def test_leading_dims_flatten_for_unbatched_weights(gen):
    weights, biases, omegas = make_params(gen, None, 2, 16, 1, 1, 30.0, torch.float64)
    x = torch.rand(4, 5, 2, generator=gen, dtype=torch.float64)
    jet = fs.siren_jet(x, weights, biases, omegas, 2, backend="torch")
    flat = fs.siren_jet(x.reshape(20, 2), weights, biases, omegas, 2, backend="torch")
    assert jet.value.shape == (4, 5, 1) and jet.grad.shape == (4, 5, 1, 2)
    assert jet.lap.shape == (4, 5, 1)
    torch.testing.assert_close(jet.lap.reshape(20, 1), flat.lap, rtol=0, atol=0)


def test_shared_coordinates_with_batched_weights(gen):
    weights, biases, omegas = make_params(gen, 3, 2, 16, 1, 1, 30.0, torch.float64)
    x = torch.rand(10, 2, generator=gen, dtype=torch.float64)
    shared = fs.siren_jet(x, weights, biases, omegas, 2, backend="torch")
    for b in range(3):
        single = fs.siren_jet(x, [w[b] for w in weights], [v[b] for v in biases], omegas, 2,
                              backend="torch")
        assert_rel_close(shared.lap[b], single.lap, 1e-14, f"network {b}")


def test_non_contiguous_coordinates(gen):
    weights, biases, omegas = make_params(gen, None, 2, 16, 1, 1, 30.0, torch.float64)
    wide = torch.rand(37, 5, generator=gen, dtype=torch.float64)
    x = wide[:, 1:5:2]
    assert not x.is_contiguous()
    a = fs.siren_jet(x, weights, biases, omegas, 2, backend="torch")
    b = fs.siren_jet(x.contiguous(), weights, biases, omegas, 2, backend="torch")
    torch.testing.assert_close(a.lap, b.lap, rtol=0, atol=0)


def test_empty_batch_returns_empty_outputs(gen):
    weights, biases, omegas = make_params(gen, None, 3, 16, 2, 1, 30.0, torch.float64)
    x = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    jet = fs.siren_jet(x, weights, biases, omegas, 2, backend="torch")
    assert jet.value.shape == (0, 2) and jet.grad.shape == (0, 2, 3) and jet.lap.shape == (0, 2)
    (jet.value.sum() + jet.lap.sum()).backward()
    assert weights[1].grad is not None and torch.all(weights[1].grad == 0)


def test_no_grad_saves_nothing(gen):
    weights, biases, omegas = make_params(gen, None, 2, 16, 1, 1, 30.0, torch.float64)
    x = torch.rand(8, 2, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        jet = fs.siren_jet(x, weights, biases, omegas, 2, backend="torch")
    assert jet.lap.grad_fn is None and not jet.lap.requires_grad


def test_frozen_parameters_get_no_gradient(gen):
    weights, biases, omegas = make_params(gen, None, 2, 16, 1, 1, 30.0, torch.float64)
    weights[0].requires_grad_(False)
    x = torch.rand(8, 2, generator=gen, dtype=torch.float64)
    fs.siren_jet(x, weights, biases, omegas, 2, backend="torch").lap.sum().backward()
    assert weights[0].grad is None and weights[1].grad is not None and x.grad is None


def test_chunked_points_match_one_pass(gen, monkeypatch):
    """Many small chunks (the CPU path) give the same jets and gradients as a single pass."""
    from fastsiren import sine_jet

    case = (2, 200, 3, 16, 2, 1, True, 30.0)
    monkeypatch.setattr(sine_jet, "CHUNK_BYTES", 1 << 30)
    (one_pass, one_grads), _ = run_both(torch.Generator().manual_seed(5), case, 2, True,
                                        torch.float64)
    monkeypatch.setattr(sine_jet, "CHUNK_BYTES", 1)  # 64 points per chunk: 4 chunks, one short
    (chunked, chunked_grads), _ = run_both(torch.Generator().manual_seed(5), case, 2, True,
                                           torch.float64)
    for name in one_pass:
        assert_rel_close(chunked[name], one_pass[name], 1e-13, name)
    for a, b in zip(chunked_grads, one_grads):
        assert_rel_close(a, b, 1e-12, "gradient")


@pytest.mark.parametrize("case", [CASES[3], CASES[8]])
def test_forward_mode_order1_where_the_adjoint_is_preferred(gen, case, monkeypatch):
    """Order 1 with fewer outputs than coordinates normally takes the adjoint sweep; the
    forward-mode jet must stay exact there too (it is the Triton path's specification)."""
    from fastsiren import dispatch

    monkeypatch.setattr(dispatch, "prefers_adjoint", lambda *args: False)
    check(run_both(gen, case, 1, False, torch.float64), F64_TOL, 1e-10)


@pytest.mark.parametrize("case", [CASES[3], CASES[8]])
def test_adjoint_path_is_taken_for_fewer_outputs_than_inputs(gen, case):
    batch, n, d, width, out, hidden, linear, omega = case
    weights, biases, omegas = make_params(gen, batch, d, width, out, hidden, omega, torch.float64)
    x = torch.rand((n, d) if batch is None else (batch, n, d), generator=gen, dtype=torch.float64)
    jet = fs.siren_jet(x, weights, biases, omegas, 1, linear, "torch")
    node, names = jet.grad.grad_fn, []
    while node is not None:  # the grad field is a view chain over the Function's output
        names.append(type(node).__name__)
        node = node.next_functions[0][0] if node.next_functions else None
    assert "SirenGradFunctionBackward" in names, names
