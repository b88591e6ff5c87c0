"""The whole-network inference kernel (``fastsiren.kernels.network``) against the torch backend.

Tier b (``interpret``): float64 agreement to rounding (FP64_TOL, as the layerwise kernels'
tests) on tiny odd shapes: widths below, at and between powers of two (the padded weight tile),
no hidden layer and three, d = 1..3 at orders 0-2, several outputs, batched networks, and points
that do not fill the last tile. Outputs are NaN-poisoned, so an unwritten slab fails. The
dispatch tests check that inference (and only inference) takes the kernel, and that every
network it declines still gets the right jet layer by layer. On a GPU the same tests run
compiled, in "ieee"; tier c (``gpu``) adds real shapes in every precision the kernel takes,
judged as the layerwise kernels are: error at most a small multiple of the torch backend's own.
"""

from __future__ import annotations

import pytest
import torch
from helpers import excess_errors, make_params, rel_err

import fastsiren as fs
from fastsiren.jet import Jet, JetLayout

pytest.importorskip("triton")

from fastsiren.kernels import current_input_precision, input_precision, network  # noqa: E402
from test_triton_sine_jet import DEVICE, FP64_TOL, _assert_close, fp32_tol  # noqa: E402

pytestmark = pytest.mark.interpret


@pytest.fixture(autouse=True)
def _poison_and_exact(monkeypatch):
    monkeypatch.setenv("FASTSIREN_POISON", "1")
    with input_precision("ieee"):
        yield


def _network(gen, batch, d, width, out, hidden, dtype=torch.float64, omega=30.0):
    weights, biases, omegas = make_params(gen, batch, d, width, out, hidden, omega, dtype, DEVICE)
    lead = (1,) if batch is None else ()
    weights = [w.detach().reshape(*lead, *w.shape) for w in weights]
    biases = [b.detach().reshape(*lead, *b.shape) for b in biases]
    return weights, biases, tuple(omegas)


def _points(gen, batch, n, d, dtype=torch.float64):
    return (torch.rand(batch or 1, n, d, generator=gen, dtype=dtype) * 2 - 1).to(DEVICE)


def _torch_jet(x, weights, biases, omegas, layout):
    return fs.siren_jet(x, weights, biases, omegas, layout.order, True, "torch",
                        hessian_diag=layout.hessian_diag)


# (batch, N, d, width, outputs, hidden layers of make_params, order), and whether the compiled
# kernel takes it in fp64 (16 jet values per thread at 8 warps: slabs x padded width <= 256;
# the interpreter has no registers and takes every case)
CASES = [
    pytest.param((None, 37, 2, 24, 3, 1, 0), True, id="order0-d2-w24-rgb"),
    pytest.param((None, 19, 5, 16, 2, 2, 0), True, id="order0-5inputs"),
    pytest.param((2, 37, 1, 40, 2, 0, 1), True, id="order1-d1-w40-nohidden-B2"),
    pytest.param((None, 19, 3, 16, 1, 1, 1), True, id="order1-d3-w16"),
    pytest.param((None, 37, 2, 8, 2, 2, 2), True, id="order2-d2-w8"),
    pytest.param((2, 19, 3, 100, 1, 3, 2), False, id="order2-d3-w100-B2"),  # 5 slabs x 128
]


@pytest.mark.parametrize("case,fits_compiled", CASES)
def test_whole_network_float64(gen, case, fits_compiled):
    """Every slab of the output jet equals the layerwise torch backend's to rounding. Compiled,
    a network over the fp64 register budget must be declined by name instead (the dispatch then
    runs it layer by layer: ``test_declined_networks_run_layer_by_layer``)."""
    batch, n, d, width, out, hidden, order = case
    layout = JetLayout(order, d)
    weights, biases, omegas = _network(gen, batch, d, width, out, hidden)
    x = _points(gen, batch, n, d)
    reason = network.unsupported(x, weights, omegas, layout, True)
    if not (network.INTERPRET or fits_compiled):
        assert reason is not None and "register budget in fp64" in reason, reason
        with pytest.raises(ValueError, match="register budget"):
            network.siren_network_fwd(x, weights, biases, omegas, layout)
        return
    assert reason is None, reason
    got = Jet.from_stack(network.siren_network_fwd(x, weights, biases, omegas, layout), layout)
    want = _torch_jet(x, weights, biases, omegas, layout)
    for name, value in want.fields().items():
        _assert_close(getattr(got, name), value, FP64_TOL, name)


def test_whole_network_against_reference(gen):
    """The chain ends at nested autograd (float64, order 2, d = 2)."""
    layout = JetLayout(2, 2)
    weights, biases, omegas = _network(gen, None, 2, 24, 2, 1)
    x = _points(gen, None, 37, 2)
    got = Jet.from_stack(network.siren_network_fwd(x, weights, biases, omegas, layout), layout)
    want = fs.siren_jet(x, weights, biases, omegas, 2, True, "reference")
    for name, value in want.fields().items():
        _assert_close(getattr(got, name), value, 1e-9, name)


# tf32 operands keep 10 mantissa bits: errors of a few 1e-3 against float64 (the emulated
# 3 -> 256 x 3 -> 1 jet: 1.5e-3 value to 4.3e-3 Laplacian; kernels/sine_jet.py), 4x margin.
TF32_TOL = 2e-2


@pytest.mark.parametrize("width,mode", [(16, "ieee"), (64, "tf32")], ids=["w16-ieee", "w64-tf32"])
def test_whole_network_float32(gen, width, mode):
    """The fp32 path (fp32 accumulators and sincos) within the layerwise fp32 tolerances, order 2
    at d = 3. Each (width, mode) fits the compiled kernel's register budget (ieee: 8 values per
    thread, 5 slabs x 16 wide; tf32: 40, 5 slabs x 64 takes 20); under the interpreter every
    mode runs as exact fp32 ("ieee")."""
    layout = JetLayout(2, 3)
    weights, biases, omegas = _network(gen, None, 3, width, 1, 2, dtype=torch.float32)
    x = _points(gen, None, 37, 3, dtype=torch.float32)
    with input_precision(mode):
        assert network.unsupported(x, weights, omegas, layout, True) is None
        got = Jet.from_stack(network.siren_network_fwd(x, weights, biases, omegas, layout), layout)
        exact = current_input_precision() in ("ieee", "tf32x3")
    want = _torch_jet(x.double(), [w.double() for w in weights], [b.double() for b in biases],
                      omegas, layout)
    tol = fp32_tol(30.0)
    for name, value in want.fields().items():
        _assert_close(getattr(got, name).double(), value, tol[name] if exact else TF32_TOL, name)


def test_whole_network_without_biases_and_points(gen):
    """Bias-free layers count as zero biases; no points gives an empty jet, no launch."""
    layout = JetLayout(1, 2)
    weights, biases, omegas = _network(gen, None, 2, 16, 1, 1)
    x = _points(gen, None, 19, 2)
    none = [None] * len(biases)
    got = Jet.from_stack(network.siren_network_fwd(x, weights, none, omegas, layout), layout)
    want = _torch_jet(x, weights, none, omegas, layout)
    for name, value in want.fields().items():
        _assert_close(getattr(got, name), value, FP64_TOL, name)
    empty = network.siren_network_fwd(x[:, :0], weights, biases, omegas, layout)
    assert empty.shape == (1, layout.rows, 0, 1)


# ----------------------------------------------------------------------------- dispatch


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts launches of the whole-network kernel through the dispatch."""
    calls = []
    real = network.siren_network_fwd

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(network, "siren_network_fwd", spy)
    return calls


def test_inference_takes_the_kernel(gen, kernel_calls, monkeypatch):
    """A jet under no_grad (or of detached inputs) runs as one kernel; one autograd may
    differentiate runs layer by layer (the kernel keeps nothing for a backward); the
    environment switch turns the kernel off. All three give the same jet."""
    model = fs.Siren(2, 24, 1, 2, outermost_linear=True).double().to(DEVICE)
    x = _points(gen, None, 37, 2)[0]
    want = model.to(backend="torch").jet(x, order=2)
    model.to(backend="triton")
    with torch.no_grad():
        fused = model.jet(x, order=2)
    assert len(kernel_calls) == 1
    layered = model.jet(x, order=2)
    assert len(kernel_calls) == 1 and layered.value.requires_grad
    monkeypatch.setenv("FASTSIREN_FUSED_NETWORK", "0")
    with torch.no_grad():
        switched_off = model.jet(x, order=2)
    assert len(kernel_calls) == 1
    for jet in (fused, layered, switched_off):
        for name, value in want.fields().items():
            _assert_close(getattr(jet, name).detach(), value.detach(), FP64_TOL, name)


@pytest.mark.parametrize("change", ["sine-last", "hessian-diag", "many-outputs", "omegas"])
def test_declined_networks_run_layer_by_layer(gen, kernel_calls, change):
    """Networks the kernel does not cover never reach it, and still get their exact jet."""
    d, width, out, hidden = 2, 16, 9 if change == "many-outputs" else 1, 2
    weights, biases, omegas = _network(gen, None, d, width, out, hidden)
    if change == "omegas":
        omegas = (30.0, 20.0, 30.0, 30.0)
    linear = change != "sine-last"
    hess = change == "hessian-diag"
    x = _points(gen, None, 19, d)
    with torch.no_grad():
        got = fs.siren_jet(x, weights, biases, omegas, 2, linear, "triton", hessian_diag=hess)
        want = fs.siren_jet(x, weights, biases, omegas, 2, linear, "torch", hessian_diag=hess)
    assert not kernel_calls
    for name, value in want.fields().items():
        _assert_close(getattr(got, name), value, FP64_TOL, name)


def test_unsupported_names_the_reason(monkeypatch):
    """``unsupported`` says why, and applies the compiled kernel's register budget (off under
    the interpreter, which has no registers)."""
    def reason(width=128, out=1, order=2, d=3, dtype=torch.float32, hess=False, linear=True,
               omegas=(30.0,) * 5):
        x = torch.empty(1, 8, d, dtype=dtype)
        shapes = [(width, d)] + [(width, width)] * 3 + [(out, width)]
        weights = [torch.empty(1, *s, dtype=dtype) for s in shapes]
        return network.unsupported(x, weights, omegas, JetLayout(order, d, hess), linear)

    assert reason() is None
    assert "linear last layer" in reason(linear=False)
    assert "width 256" in reason(width=256)
    assert "9 outputs" in reason(out=9)
    assert "Hessian diagonal" in reason(hess=True)
    assert "d = 4" in reason(d=4)
    assert "different omegas" in reason(omegas=(30.0, 30.0, 20.0, 30.0, 30.0))
    monkeypatch.setattr(network, "INTERPRET", False)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the precision knob: "ieee" under it
    with input_precision("tf32"):
        assert reason() is None  # 5 slabs x 128 fit in tf32 (8 warps, 16 points)
    with input_precision("ieee"):
        assert "register budget in ieee" in reason()
        assert reason(order=0, d=2) is None  # the value alone fits
    assert "register budget in fp64" in reason(dtype=torch.float64)
    assert reason(dtype=torch.bfloat16) is None


def test_bad_inputs_raise(gen):
    layout = JetLayout(1, 2)
    weights, biases, omegas = _network(gen, None, 2, 16, 1, 1)
    x = _points(gen, None, 5, 2)
    with pytest.raises(ValueError, match="first layer takes 2 inputs, x has 3"):
        network.siren_network_fwd(_points(gen, None, 5, 3), weights, biases, omegas,
                                  JetLayout(0, 3))
    with pytest.raises(ValueError, match="bias"):
        network.siren_network_fwd(x, weights, [biases[0][:, :3]] + biases[1:], omegas, layout)
    with pytest.raises(TypeError, match="dtype"):
        network.siren_network_fwd(x.float(), weights, biases, omegas, layout)
    with pytest.raises(ValueError, match="linear last layer"):
        network.siren_network_fwd(x, weights[:1], biases[:1], omegas[:1], layout)


# ----------------------------------------------------------------------------- tier c (GPU)

# (N, d, width, outputs, order), each d -> width x 3 -> outputs, and the modes in which the
# compiled kernel declines it (over the register budget: ieee and tf32x3 hold 8 jet values per
# thread, so order 1-2 at width 64-128 runs layer by layer there)
GPU_NETWORK_CASES = [
    pytest.param((1 << 18, 3, 128, 1, 2), {"fp32-ieee", "fp32-tf32x3"}, id="N2^18-d3-w128-lap"),
    pytest.param((1 << 18, 2, 128, 3, 0), set(), id="N2^18-d2-w128-rgb"),
    pytest.param((1 << 16, 2, 64, 2, 2), {"fp32-ieee", "fp32-tf32x3"}, id="N2^16-d2-w64-out2-lap"),
]
# (label, dtype, mode, torch's TF32 switch, factor): as the layerwise kernels' GPU_RULES
GPU_NETWORK_RULES = [
    pytest.param("fp32-ieee", torch.float32, "ieee", False, 2.0, id="fp32-ieee"),
    pytest.param("fp32-tf32x3", torch.float32, "tf32x3", False, 2.0, id="fp32-tf32x3"),
    pytest.param("fp32-tf32", torch.float32, "tf32", True, 4.0, id="fp32-tf32"),
    pytest.param("bf16", torch.bfloat16, "ieee", False, 2.0, id="bf16"),
]


def test_gpu_network_paths_follow_the_register_budget(monkeypatch):
    """The paths tier c expects (``GPU_NETWORK_CASES``) are the compiled kernel's own verdicts:
    ``unsupported`` under the compiled register budgets, checked here on meta tensors. A change
    that declines (or takes) more networks fails here before it reaches a GPU."""
    monkeypatch.setattr(network, "INTERPRET", False)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the precision knob: "ieee" under it
    for case_param in GPU_NETWORK_CASES:
        (n, d, width, out, order), layerwise_in = case_param.values
        for rule in GPU_NETWORK_RULES:
            label, dtype, mode = rule.values[:3]
            shapes = [(width, d), (width, width), (width, width), (out, width)]
            weights = [torch.empty(1, *sh, dtype=dtype, device="meta") for sh in shapes]
            x = torch.empty(1, n, d, dtype=dtype, device="meta")
            with input_precision(mode):
                reason = network.unsupported(x, weights, (30.0,) * 4, JetLayout(order, d), True)
            assert (reason is not None) == (label in layerwise_in), (case_param.id, label, reason)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("label,dtype,mode,torch_tf32,factor", GPU_NETWORK_RULES)
@pytest.mark.parametrize("case,layerwise_in", GPU_NETWORK_CASES)
def test_gpu_whole_network_precision(gen, kernel_calls, kernel_launches, case, layerwise_in,
                                     label, dtype, mode, torch_tf32, factor):
    """Real shapes through the dispatch under no_grad: the kernel where it fits the registers
    (else the layerwise kernels: which one ran is asserted), against the float64 torch backend,
    at most ``factor`` x the torch backend's own error at the same precision."""
    n, d, width, out, order = case
    layout = JetLayout(order, d)
    weights, biases, omegas = _network(gen, None, d, width, out, 2)
    x = _points(gen, None, n, d)
    truth = _torch_jet(x, weights, biases, omegas, layout).fields()

    def errors(backend):
        cast = [t.to(dtype) for t in (x, *weights, *biases)]
        with torch.no_grad():
            jet = fs.siren_jet(cast[0], cast[1:5], cast[5:], omegas, order, True, backend)
        return {k: rel_err(v.double(), truth[k]) for k, v in jet.fields().items()}

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch_tf32
    try:
        with input_precision(mode):
            ours = errors("triton")
        theirs = errors("torch")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    if label in layerwise_in:
        assert not kernel_calls and "_siren_network_fwd_kernel" not in kernel_launches
        assert kernel_launches["_sine_layer_fwd_kernel"] == 2, dict(kernel_launches)
    else:
        assert len(kernel_calls) == 1 and set(kernel_launches) == {"_siren_network_fwd_kernel"}
    floor = 4 * torch.finfo(dtype).eps
    bad = excess_errors(ours, theirs, factor, floor)
    assert not bad, f"errors (triton, torch) over {factor}x torch's: {bad}"
