"""``backend="auto"`` on CUDA trusts the Triton kernels only after their self-check
(``fastsiren.selfcheck``); checked here under the interpreter.

``auto`` picks torch for CPU tensors, so these tests add "cpu" to the device types on which
``auto`` picks Triton (``dispatch.AUTO_TRITON_DEVICE_TYPES``: the documented way to run the CUDA
path of ``auto`` without a GPU) and inject failures by replacing a kernel's op with one that
returns wrong values or raises, as a miscompiled kernel or a failed launch would.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import fastsiren as fs
from fastsiren import dispatch, env, selfcheck
from fastsiren.jet import JetLayout

pytest.importorskip("triton")

from fastsiren.kernels import network  # noqa: E402
from fastsiren.kernels import sine_jet as triton_ops  # noqa: E402

pytestmark = [pytest.mark.interpret, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(autouse=True)
def auto_picks_triton_on_the_cpu(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("with CUDA, auto on CPU tensors stays torch; the GPU tier runs auto itself")
    monkeypatch.setattr(dispatch, "AUTO_TRITON_DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.delenv(env.BACKEND, raising=False)
    selfcheck.clear()
    yield
    selfcheck.clear()


def _model(gen):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    return fs.Siren(2, 16, 1, 1, outermost_linear=True).double()


def _points(gen, n=19):
    return torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1


def _fields(model, x, backend):
    model.to(backend=backend)
    return model.jet(x, order=2).fields()


def _same(got, want, tol=1e-12):
    got = {k: v.detach() for k, v in got.items()}
    return all(float((got[k] - want[k]).abs().max()) <= tol * float(want[k].detach().abs().max())
               for k in want)


def test_auto_runs_triton_once_the_check_passes(gen, kernel_launches):
    model, x = _model(gen), _points(gen)
    want = _fields(model, x, "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _fields(model, x, "auto")
    assert _same(got, want)
    assert kernel_launches["_sine_layer_fwd_kernel"] >= 2  # the check's and the call's
    assert kernel_launches["_sine_layer_bwd_kernel"] >= 1  # a backward follows: VJP checked


def test_a_wrong_kernel_falls_back_to_torch_with_one_warning(gen, monkeypatch):
    """A hidden-layer forward 0.1% off: auto warns once, naming the kernel and how to force
    Triton, and every call gives the torch backend's answer."""
    real = triton_ops.sine_layer_fwd

    def off_by_a_little(*args, **kwargs):
        out, G = real(*args, **kwargs)
        return out * 1.001, G

    monkeypatch.setattr(triton_ops, "sine_layer_fwd", off_by_a_little)
    model, x = _model(gen), _points(gen)
    want = _fields(model, x, "torch")
    with pytest.warns(RuntimeWarning) as caught:
        first = _fields(model, x, "auto")
        second = _fields(model, x, "auto")
    lines = [str(w.message) for w in caught if "self-check" in str(w.message)]
    assert len(lines) == 1, lines
    assert "_sine_layer_fwd_kernel" in lines[0] and 'backend="triton"' in lines[0]
    assert "FASTSIREN_BACKEND=triton" in lines[0] and "\n" not in lines[0]
    assert _same(first, want) and _same(second, want)


def test_a_kernel_that_raises_falls_back(gen, monkeypatch, kernel_launches):
    """A compile error or failed launch in the whole-network kernel (inference): the torch
    backend answers, the warning names the kernel."""
    def fails(*args, **kwargs):
        raise RuntimeError("PTX assembly aborted")

    monkeypatch.setattr(network, "siren_network_fwd", fails)
    model, x = _model(gen), _points(gen)
    model.to(backend="torch")
    with torch.no_grad():
        want = model.jet(x, order=2).fields()
    model.to(backend="auto")
    with pytest.warns(RuntimeWarning, match="_siren_network_fwd_kernel.*PTX assembly aborted"):
        with torch.no_grad():
            got = model.jet(x, order=2).fields()
    assert _same(got, want)
    assert not kernel_launches  # torch answered; the check itself raised before any launch


def test_a_named_backend_is_not_checked(gen, monkeypatch):
    """backend="triton" and FASTSIREN_BACKEND=triton run the kernels as asked, unchecked."""
    measured = []
    monkeypatch.setattr(selfcheck, "measure", lambda *a, **k: measured.append(a))
    model, x = _model(gen), _points(gen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fields(model, x, "triton")
        monkeypatch.setenv(env.BACKEND, "triton")
        _fields(model, x, "auto")
    assert not measured
    assert not dispatch.chosen_by_auto("triton") and not dispatch.chosen_by_auto(None)
    monkeypatch.delenv(env.BACKEND)
    assert dispatch.chosen_by_auto(None) and dispatch.chosen_by_auto("auto")


def test_verdicts_are_cached_per_family(gen, monkeypatch):
    """The first training call checks the forward and the VJP; later calls check nothing new,
    an inference call adds the whole-network kernel only."""
    calls = []
    real = selfcheck.measure

    def counting(family, *args, **kwargs):
        calls.append(family)
        return real(family, *args, **kwargs)

    monkeypatch.setattr(selfcheck, "measure", counting)
    model, x = _model(gen), _points(gen)
    for _ in range(2):
        _fields(model, x, "auto")
    assert calls == ["forward", "VJP"]
    with torch.no_grad():
        model.jet(x, order=2)
    assert calls == ["forward", "VJP", "whole network"]


@pytest.mark.parametrize("family", selfcheck.FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_measure_reports_small_errors(family, dtype):
    """Each family's measured error is the precision's rounding, far under its limit."""
    m = selfcheck.measure(family, torch.device("cpu"), dtype, JetLayout(2, 2),
                          [(16, 2), (16, 16), (1, 16)], (30.0, 30.0, 30.0), True)
    assert m.passed and m.kernel and m.error <= m.limit / 10, m
    assert m.precision == ("fp64" if dtype == torch.float64 else "fp32-ieee")
