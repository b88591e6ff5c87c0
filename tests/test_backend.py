"""The backend contract (``fastsiren.jet_ops``) and the one dispatch place (``fastsiren.dispatch``).

Both ops modules must implement ``fastsiren.jet_ops.JetOps`` with the contract's exact signatures
(names, order, defaults), so ``fastsiren.jet_function`` can chain either. The Triton module is
checked under TRITON_INTERPRET=1 on the CPU (set by conftest.py).
"""

from __future__ import annotations

import inspect

import pytest
import torch

from fastsiren import jet_ops


def _signature_without_self(fn) -> list[tuple[str, object, object]]:
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize("name", [*sorted(jet_ops.OPS_MODULES), "torch, compiled chunks"])
def test_ops_modules_implement_the_contract(name):
    if name == "triton":
        pytest.importorskip("triton")
    if name == "torch, compiled chunks":
        from fastsiren.fused_epilogues import FUSED_OPS as ops
    else:
        ops = jet_ops.ops_for(name)
    assert isinstance(ops, jet_ops.JetOps)
    members = [n for n, v in vars(jet_ops.JetOps).items()
               if callable(v) and not n.startswith("_")]
    assert len(members) == 10, members
    for member in members:
        assert _signature_without_self(getattr(ops, member)) == _signature_without_self(
            getattr(jet_ops.JetOps, member)
        ), f"{jet_ops.OPS_MODULES[name]}.{member} differs from JetOps.{member}"


def test_a_module_missing_an_op_does_not_pass():
    import types

    partial = types.ModuleType("partial_ops")
    partial.first_layer_fwd = lambda *args: None
    assert not isinstance(partial, jet_ops.JetOps)


def test_availability_is_public(monkeypatch):
    assert jet_ops.unavailable("torch", "cpu") is None
    assert jet_ops.unavailable("reference", "cpu") is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = jet_ops.unavailable("triton", "cpu")
    assert reason is not None and ("CUDA" in reason or "Triton" in reason), reason


def test_reference_branch_returns_an_engine_jet(gen):
    """The dispatch converts the reference's own Jet into fastsiren.Jet."""
    import fastsiren as fs

    model = fs.Siren(2, 8, 1, 1, outermost_linear=True, backend="reference").double()
    jet = model.jet(torch.rand(5, 2, generator=gen, dtype=torch.float64), order=2)
    assert isinstance(jet, fs.Jet) and set(jet.fields()) == {"value", "grad", "lap"}


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_inference_keeps_nothing_for_backward(monkeypatch, grad_enabled):
    # Trainable weights under torch.no_grad: the forward must not keep intermediates (or
    # compute the backward-only cosines) for a backward that cannot come.
    import fastsiren as fs
    from fastsiren import jet_function

    seen = []
    original = jet_function._forward_chunk

    def recording(x, weights, biases, settings, for_backward):
        seen.append(for_backward)
        return original(x, weights, biases, settings, for_backward)

    monkeypatch.setattr(jet_function, "_forward_chunk", recording)
    model = fs.Siren(2, 8, 1, 1)
    with torch.set_grad_enabled(grad_enabled):
        jet = model.jet(torch.rand(5, 2), order=2)
    assert seen == [grad_enabled]
    assert (jet.lap.grad_fn is not None) == grad_enabled
