"""Tiers b and c: the Triton backend (``fastsiren.kernels.sine_jet``) against the torch backend.

Tier b (``interpret``) runs the kernels under TRITON_INTERPRET=1 on the CPU (or compiled, with
"ieee" matmuls, when a GPU is present) on tiny odd shapes. The interpreter evaluates tl.dot in
numpy, exactly, and handles float64, so most checks run in float64 and demand agreement with the
torch backend to rounding (relative 1e-10): any indexing, masking or formula slip shows up as an
O(1) error. A few float32 runs check the kernels' fp32 path with tolerances that scale with
omega (see ``FP32_TOL``). Every fresh kernel output is NaN-poisoned (FASTSIREN_POISON=1), so a
tile a kernel forgot to write fails loudly.

Tier c (``gpu``) runs real shapes on CUDA in every matmul precision and in bf16/fp16, judged
against the torch backend in float64 with flash-attention's rule: the kernels' error may be at
most a small multiple of the torch backend's own error at the same precision.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import cotangents, excess_errors, make_params, rel_err

import fastsiren as fs
from fastsiren import env
from fastsiren.jet import JetLayout

triton = pytest.importorskip("triton")

from fastsiren.kernels import input_precision, precision, set_input_precision  # noqa: E402
from fastsiren.kernels import sine_jet as triton_ops  # noqa: E402

from fastsiren import sine_jet as torch_ops  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")

# float64: both backends compute the same sums in a different order; 1e-10 relative leaves
# four orders of magnitude over the observed ~1e-14 and is far below any real bug's O(1).
FP64_TOL = 1e-10


def fp32_tol(omega: float) -> dict[str, float]:
    """float32 tolerances (relative max error, ieee matmuls on both sides).

    Both backends round every GEMM and sine at ~1e-7 relative, summing in different orders. An
    error delta in a pre-activation u moves sin u and cos u by delta, and each derivative order
    multiplies by omega through the chain rule (g_i = omega Jh_i), so against an O(1) scale the
    value, gradient and Laplacian errors grow like omega^0, omega^1, omega^2; the Laplacian's two
    terms (c g_L and s sum_i g_i^2, each ~omega^2) also cancel partly, so relative to its own
    size it loses more. Parameter gradients collect every output's cotangent, the Laplacian's
    included. Calibrated at omega_0 = 30 (observed there: fields <= 3e-6, parameter gradients
    <= 2.4e-5, x gradient <= 3e-6) with a 4-10x margin, and grown by (omega_0 / 30)^k above it.
    """
    r = max(1.0, omega / 30.0)
    return {"value": 2e-5, "grad": 2e-5 * r, "lap": 4e-5 * r * r, "hess_diag": 4e-5 * r * r,
            "x": 4e-5 * r * r, "param": 1e-4 * r * r}


@pytest.fixture(autouse=True)
def _poison_and_exact(monkeypatch):
    """NaN-fill fresh kernel outputs; exact fp32 matmuls in the equivalence tests."""
    monkeypatch.setenv("FASTSIREN_POISON", "1")
    with input_precision("ieee"):
        yield


LAYOUTS = [
    pytest.param((0, False), id="order0"),
    pytest.param((1, False), id="order1"),
    pytest.param((2, False), id="order2"),
    pytest.param((2, True), id="hessdiag"),
]


def _rand(gen, *shape, dtype=torch.float64, scale=1.0):
    t = (torch.rand(*shape, generator=gen, dtype=dtype) * 2 - 1) * scale
    return t.to(DEVICE)


def _assert_grads_close(got, want, names, op):
    """An op's VJP outputs, float64: None exactly where the torch op gives None."""
    for g, r, name in zip(got, want, names):
        if r is None:
            assert g is None, f"{op} {name}: expected None"
        else:
            _assert_close(g, r, FP64_TOL, f"{op} grad {name}")


def _assert_close(actual, expected, tol, name):
    assert actual is not None and expected is not None, f"{name}: one side is None"
    assert not torch.isnan(actual).any(), f"{name}: NaN in the Triton result (unwritten output?)"
    err = rel_err(actual.float() if actual.dtype != expected.dtype else actual, expected)
    assert err <= tol, f"{name}: relative error {err:.3e} exceeds {tol:.1e}"  # False for NaN


# ----------------------------------------------------------------------------- per-op tests

# (B, N, d, K, M): K the layer's input width, M its output width
OP_SHAPES = [
    pytest.param((1, 37, 2, 16, 48), id="B1-N37-d2-16to48"),
    pytest.param((2, 130, 3, 48, 20), id="B2-N130-d3-48to20"),
    pytest.param((1, 1, 1, 100, 16), id="B1-N1-d1-100to16"),
]


def _stack(gen, B, layout, N, K):
    return _rand(gen, B, layout.rows, N, K)


@pytest.mark.interpret
@pytest.mark.parametrize("shape", OP_SHAPES)
@pytest.mark.parametrize("lay", LAYOUTS)
def test_first_layer_ops(gen, shape, lay):
    B, N, d, _, M = shape
    layout = JetLayout(lay[0], d, lay[1])
    x = _rand(gen, B, N, d)
    w, b = _rand(gen, B, M, d, scale=0.5), _rand(gen, B, M)
    omega = 30.0
    for name, fn in [("preact", lambda ops: ops.first_layer_preact(x, w, b, omega)),
                     ("preact_nobias", lambda ops: ops.first_layer_preact(x, w, None, omega))]:
        _assert_close(fn(triton_ops), fn(torch_ops), FP64_TOL, name)
    out_t, cos_t = triton_ops.first_layer_fwd(x, w, b, omega, layout)
    out_r, cos_r = torch_ops.first_layer_fwd(x, w, b, omega, layout)
    _assert_close(out_t, out_r, FP64_TOL, "first_layer_fwd out")
    _assert_close(cos_t, cos_r, FP64_TOL, "first_layer_fwd cos u")
    if layout.order == 0:  # inference: u instead of cos u
        for got, want, name in zip(triton_ops.first_layer_fwd(x, w, b, omega, layout, False),
                                   torch_ops.first_layer_fwd(x, w, b, omega, layout, False),
                                   ("out", "u")):
            _assert_close(got, want, FP64_TOL, f"first_layer_fwd for_backward=False {name}")

    grad_out = _rand(gen, B, layout.rows, N, M)
    s = out_r[:, 0]  # a strided view, as SirenJetFunction passes it
    for need_x, has_bias in [(True, True), (False, False)]:
        got = triton_ops.first_layer_bwd(grad_out, x, w, omega, layout, s, cos_r, need_x, has_bias)
        want = torch_ops.first_layer_bwd(grad_out, x, w, omega, layout, s, cos_r, need_x, has_bias)
        _assert_grads_close(got, want, ("x", "w", "b"), "first_layer_bwd")


@pytest.mark.interpret
@pytest.mark.parametrize("k", [5, 20])
def test_first_layer_many_inputs(gen, k):
    """A drop-in SineLayer has any number of inputs: K > FMA_MAX_K takes the tl.dot path."""
    B, N, M = 2, 37, 16
    layout = JetLayout(1, k)
    x, w, b = _rand(gen, B, N, k), _rand(gen, B, M, k, scale=0.3), _rand(gen, B, M)
    out_t, cos_t = triton_ops.first_layer_fwd(x, w, b, 3.0, layout)
    out_r, cos_r = torch_ops.first_layer_fwd(x, w, b, 3.0, layout)
    _assert_close(out_t, out_r, FP64_TOL, "out")
    _assert_close(cos_t, cos_r, FP64_TOL, "cos u")
    grad_out = _rand(gen, B, layout.rows, N, M)
    got = triton_ops.first_layer_bwd(grad_out, x, w, 3.0, layout, out_r[:, 0], cos_r, True)
    want = torch_ops.first_layer_bwd(grad_out, x, w, 3.0, layout, out_r[:, 0], cos_r, True)
    for g, r, name in zip(got, want, ("x", "w", "b")):
        _assert_close(g, r, FP64_TOL, f"grad {name}")


@pytest.mark.interpret
@pytest.mark.parametrize("shape", OP_SHAPES)
@pytest.mark.parametrize("lay", LAYOUTS)
def test_sine_layer_ops(gen, shape, lay):
    B, N, d, K, M = shape
    layout = JetLayout(lay[0], d, lay[1])
    stack = _stack(gen, B, layout, N, K)
    w, b = _rand(gen, B, M, K, scale=(6 / K) ** 0.5 / 30), _rand(gen, B, M)
    omega = 30.0
    _assert_close(triton_ops.sine_layer_preact(stack, w, b, omega),
                  torch_ops.sine_layer_preact(stack, w, b, omega), FP64_TOL, "preact")
    _assert_close(triton_ops.sine_layer_preact(stack, w, None, omega),
                  torch_ops.sine_layer_preact(stack, w, None, omega), FP64_TOL, "preact nobias")
    out_t, G_t = triton_ops.sine_layer_fwd(stack, w, b, omega, layout)
    out_r, G_r = torch_ops.sine_layer_fwd(stack, w, b, omega, layout)
    _assert_close(out_t, out_r, FP64_TOL, "sine_layer_fwd out")
    _assert_close(G_t, G_r, FP64_TOL, "sine_layer_fwd G (cos u in slab 0)")
    # inference: G keeps u at order 0 and is not computed above it
    for got, want, name in zip(triton_ops.sine_layer_fwd(stack, w, b, omega, layout, False),
                               torch_ops.sine_layer_fwd(stack, w, b, omega, layout, False),
                               ("out", "G")):
        if layout.order > 0 and name == "G":
            assert got is None, "G computed without a backward"
        else:
            _assert_close(got, want, FP64_TOL, f"sine_layer_fwd for_backward=False {name}")

    grad_out = _rand(gen, B, layout.rows, N, M)
    s = out_r[:, 0]
    for need, has_bias in [(True, True), (False, False)]:
        got = triton_ops.sine_layer_bwd(grad_out, stack, w, omega, layout, s, G_r, need, has_bias)
        want = torch_ops.sine_layer_bwd(grad_out, stack, w, omega, layout, s, G_r.clone(), need,
                                        has_bias)
        _assert_grads_close(got, want, ("stack", "w", "b"), "sine_layer_bwd")


@pytest.mark.interpret
@pytest.mark.parametrize("out_features", [1, 2, 20])  # 20: more than FEW_OUTPUTS, a GEMM
@pytest.mark.parametrize("shape", OP_SHAPES)
def test_linear_layer_ops(gen, shape, out_features):
    B, N, d, K, _ = shape
    layout = JetLayout(2, d)
    stack = _stack(gen, B, layout, N, K)
    w, b = _rand(gen, B, out_features, K), _rand(gen, B, out_features)
    for bias in (b, None):
        _assert_close(triton_ops.linear_layer_fwd(stack, w, bias),
                      torch_ops.linear_layer_fwd(stack, w, bias), FP64_TOL, "linear_layer_fwd")
    grad_out = _rand(gen, B, layout.rows, N, out_features)
    for need, has_bias in [(True, True), (False, False)]:
        got = triton_ops.linear_layer_bwd(grad_out, stack, w, need, has_bias)
        want = torch_ops.linear_layer_bwd(grad_out, stack, w, need, has_bias)
        _assert_grads_close(got, want, ("stack", "w", "b"), "linear_layer_bwd")


# ----------------------------------------------------------------------------- whole networks

# (batch, N, in, width, out, hidden_layers, outermost_linear, omega)
NET_CASES = [
    pytest.param((None, 1, 2, 16, 1, 1, True, 30.0), id="N1-d2-w16"),
    pytest.param((None, 37, 1, 48, 2, 1, True, 30.0), id="N37-d1-w48-out2"),
    pytest.param((None, 130, 3, 100, 1, 1, True, 30.0), id="N130-d3-w100"),
    pytest.param((None, 37, 2, 48, 2, 1, False, 30.0), id="N37-d2-w48-sine-out2"),
    pytest.param((3, 37, 2, 16, 1, 2, True, 30.0), id="B3-N37-d2-w16"),
    pytest.param((2, 130, 3, 48, 2, 1, False, 1.0), id="B2-N130-d3-w48-sine-omega1"),
]


def jet_fields(jet, order, hessian_diag):
    names = ["value", "grad", "lap"][: order + 1]
    if hessian_diag:
        names.append("hess_diag")
    return {n: getattr(jet, n) for n in names}


def run_network(backend, x, weights, biases, omegas, order, hessian_diag, linear, seed,
                recompute=False):
    """Fields and gradients of x, weights, biases through sum_f <field, random cotangent>."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, *weights, *biases)]
    n = len(weights)
    xs, ws, bs = leaves[0], leaves[1:1 + n], leaves[1 + n:]
    if backend == "reference":
        from fastsiren.reference import autograd_jet, siren_forward

        jet = autograd_jet(lambda c: siren_forward(c, ws, bs, omegas, linear), xs, order,
                           hessian_diag)
    else:
        jet = fs.siren_jet(xs, ws, bs, omegas, order, linear, backend,
                           hessian_diag=hessian_diag, recompute=recompute)
    fields = jet_fields(jet, order, hessian_diag)
    loss = sum((t * v).sum() for t, v in zip(fields.values(), cotangents(fields.values(), seed)))
    grads = torch.autograd.grad(loss, leaves)
    names = ["x"] + [f"w{l}" for l in range(n)] + [f"b{l}" for l in range(n)]
    return {k: v.detach() for k, v in fields.items()}, dict(zip(names, grads))


def _compare_networks(gen, case, lay, dtype, tol_of, other="torch", recompute=False):
    batch, n, d, width, out, hidden, linear, omega = case
    order, hd = lay
    weights, biases, omegas = make_params(gen, batch, d, width, out, hidden, omega, dtype, DEVICE)
    x = _rand(gen, *((n, d) if batch is None else (batch, n, d)), dtype=dtype)
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    got = run_network("triton", x, weights, biases, omegas, order, hd, linear, seed, recompute)
    want = run_network(other, x, weights, biases, omegas, order, hd, linear, seed)
    for name in want[0]:
        _assert_close(got[0][name], want[0][name], tol_of(name), name)
    for name in want[1]:
        kind = "x" if name == "x" else "param"
        _assert_close(got[1][name], want[1][name], tol_of(kind), f"d loss / d {name}")


@pytest.mark.interpret
@pytest.mark.parametrize("case", NET_CASES)
@pytest.mark.parametrize("lay", LAYOUTS)
def test_network_float64(gen, case, lay):
    """Every output and every gradient, float64, triton == torch to rounding."""
    _compare_networks(gen, case, lay, torch.float64, lambda _: FP64_TOL)


@pytest.mark.interpret
@pytest.mark.parametrize("lay", [LAYOUTS[2], LAYOUTS[3]])
def test_network_recompute(gen, lay):
    """recompute=True goes through first_layer_preact / sine_layer_preact in backward."""
    case = (2, 37, 2, 16, 1, 2, True, 30.0)
    _compare_networks(gen, case, lay, torch.float64, lambda _: FP64_TOL, recompute=True)


@pytest.mark.interpret
def test_network_against_reference(gen):
    """The chain ends at the truth: triton vs nested autograd, float64, order 2."""
    case = (None, 37, 2, 16, 1, 1, True, 30.0)
    _compare_networks(gen, case, (2, False), torch.float64, lambda _: 1e-9, other="reference")


@pytest.mark.interpret
@pytest.mark.parametrize("case", [NET_CASES[2], NET_CASES[4]])
@pytest.mark.parametrize("lay", [LAYOUTS[2], LAYOUTS[3]])
def test_network_float32(gen, case, lay):
    """The fp32 path (fp32 accumulators, fp32 sincos) within omega-scaled tolerances."""
    tol = fp32_tol(case[-1])
    _compare_networks(gen, case, lay, torch.float32, tol.__getitem__)


@pytest.mark.interpret
def test_modules_on_triton(gen):
    """fs.Siren(...).to(backend="triton") and the drop-in SineLayer run the kernels."""
    model = fs.Siren(in_features=2, hidden_features=16, hidden_layers=1, out_features=1,
                     outermost_linear=True).double().to(DEVICE)
    x = _rand(gen, 37, 2)
    want = model.to(backend="torch").jet(x, order=2)
    got = model.to(backend="triton").jet(x, order=2)
    for name in ("value", "grad", "lap"):
        _assert_close(getattr(got, name), getattr(want, name), FP64_TOL, name)
    layer = fs.SineLayer(20, 16, is_first=True).double().to(DEVICE)
    xin = _rand(gen, 37, 20)
    want = layer.to(backend="torch")(xin)
    _assert_close(layer.to(backend="triton")(xin), want, FP64_TOL, "SineLayer (K = 20)")


# ----------------------------------------------------------------------------- knobs and errors


@pytest.mark.interpret
def test_poison_fills_nan(monkeypatch):
    from fastsiren.kernels import _launch

    like = torch.zeros(1)
    assert torch.isnan(_launch.new_empty(3, like=like)).all()
    monkeypatch.setenv("FASTSIREN_POISON", "0")
    assert _launch.new_empty(3, like=like).shape == (3,)


def test_precision_knob(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv(env.INPUT_PRECISION, raising=False)
    set_input_precision(None)
    # torch's matmul flags are properties of a module object: save and restore them by hand
    # (monkeypatch's undo deletes what it considers instance attributes in recent pytest).
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for allow in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = allow
            assert precision.current_input_precision() == ("tf32" if allow else "tf32x3")
        monkeypatch.setenv(env.INPUT_PRECISION, "tf32x3")
        assert precision.current_input_precision() == "tf32x3"
        with input_precision("tf32"):
            assert precision.current_input_precision() == "tf32"
            with input_precision("ieee"):
                assert precision.current_input_precision() == "ieee"
            assert precision.current_input_precision() == "tf32"
        assert precision.current_input_precision() == "tf32x3"
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        with input_precision("tf32"):
            assert precision.current_input_precision() == "ieee"  # the interpreter is exact
        with pytest.raises(ValueError, match="unknown input precision"):
            set_input_precision("fp8")
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        monkeypatch.setenv(env.INPUT_PRECISION, "half")
        with pytest.raises(ValueError, match="FASTSIREN_INPUT_PRECISION"):
            precision.current_input_precision()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        set_input_precision(None)


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"),
                    reason="torch < 2.9 has no fp32_precision API")
def test_precision_knob_reads_the_new_torch_api(monkeypatch):
    """Once torch's fp32_precision API is used, reading the legacy allow_tf32 flag raises
    ("mix of the legacy and new APIs"): the knob must follow the new API without touching it."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv(env.INPUT_PRECISION, raising=False)
    set_input_precision(None)
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    try:
        for mode, want in (("tf32", "tf32"), ("ieee", "tf32x3")):
            matmul.fp32_precision = mode
            assert precision.current_input_precision() == want
    finally:
        matmul.fp32_precision = saved


@pytest.mark.interpret
def test_launches_pin_compile_options():
    """Every kernel launch of the dispatch matrix passes the compile options explicitly (FP
    fusion: Triton 3.10 flips its default), and every kernel is launched somewhere."""
    from fastsiren.kernels import _launch
    from fastsiren.kernels.sine_jet import autotuners

    from tools import compile_check

    launches = compile_check.record_launches()
    assert {ln.kernel for ln in launches} == set(autotuners())
    for ln in launches:
        for option, value in _launch.COMPILE_OPTIONS.items():
            assert ln.kwargs.get(option) == value, f"{ln.kernel} ({ln.label}) misses {option}"


@pytest.mark.interpret
def test_bad_inputs_raise(gen):
    layout = JetLayout(1, 2)
    x, w = _rand(gen, 1, 5, 2), _rand(gen, 1, 8, 2)
    with pytest.raises(TypeError, match="dtype"):
        triton_ops.first_layer_fwd(x, w.float(), None, 1.0, layout)
    with pytest.raises(ValueError, match="inputs"):
        triton_ops.first_layer_fwd(x, _rand(gen, 1, 8, 3), None, 1.0, layout)
    with pytest.raises(ValueError, match="slabs"):
        triton_ops.sine_layer_fwd(_rand(gen, 1, 2, 5, 8), _rand(gen, 1, 4, 8), None, 1.0, layout)
    with pytest.raises(ValueError, match="bias"):
        triton_ops.sine_layer_fwd(_rand(gen, 1, 3, 5, 8), _rand(gen, 1, 4, 8), _rand(gen, 1, 5),
                                  1.0, layout)
    with pytest.raises(TypeError, match="dtype"):
        triton_ops.linear_layer_fwd(_rand(gen, 1, 3, 5, 8).to(torch.int32), w, None)
    # Non-contiguous inputs are made contiguous, not rejected.
    xt = _rand(gen, 1, 2, 5).transpose(1, 2)
    _assert_close(triton_ops.first_layer_fwd(xt, w, None, 1.0, layout)[0],
                  torch_ops.first_layer_fwd(xt, w, None, 1.0, layout)[0], FP64_TOL, "strided x")


# ----------------------------------------------------------------------------- tier c: GPU

# (N, in, width, hidden_layers, out, order, hessian_diag)
GPU_CASES = [
    pytest.param((1 << 16, 2, 256, 3, 1, 2, False), id="N65536-d2-w256x3-lap"),
    pytest.param((1 << 16, 3, 256, 3, 1, 2, True), id="N65536-d3-w256x3-hessdiag"),
    # one hidden layer: the float64 truth alone holds ~45 GB at N = 2^20
    pytest.param((1 << 20, 2, 256, 1, 1, 1, False), id="N1M-d2-w256x1-grad"),
    pytest.param((4097, 1, 100, 2, 2, 2, False), id="N4097-d1-w100x2-out2"),
]


def precision_errors(x, weights, biases, omegas, order, hd, dtype, mode, torch_tf32, seed):
    """Relative errors of triton (at dtype / mode) and of the torch backend (at dtype, with
    torch's TF32 switch) against the torch backend in float64, per field and gradient, all three
    through one loss with the same cotangents (drawn in float64, cast)."""
    truth = run_network("torch", x, weights, biases, omegas, order, hd, True, seed)

    def errors(backend):
        cast = [t.to(dtype) for t in (x, *weights, *biases)]
        L = len(weights)
        fields, grads = run_network(backend, cast[0], cast[1:1 + L], cast[1 + L:], omegas, order,
                                    hd, True, seed)
        res = {k: rel_err(v.double(), truth[0][k]) for k, v in fields.items()}
        res.update({k: rel_err(v.double(), truth[1][k]) for k, v in grads.items()})
        return res

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch_tf32
    try:
        with input_precision(mode):
            ours = errors("triton")
        theirs = errors("torch")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return ours, theirs


def _gpu_errors(case, gen, dtype, mode, torch_tf32):
    n, d, width, hidden, out, order, hd = case
    weights, biases, omegas = make_params(
        gen, None, d, width, out, hidden, 30.0, torch.float64, DEVICE
    )
    x = _rand(gen, n, d)
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    return precision_errors(x, weights, biases, omegas, order, hd, dtype, mode, torch_tf32, seed)


# Multiples of the torch backend's own error allowed (flash-attention's rule), per mode. ieee and
# tf32x3 round like fp32 but sum in another order: 2x. tf32 truncates operands where cuBLAS
# rounds them (Triton's documented TF32 caveat): 4x. Half types: same storage, but we keep
# epilogues in fp32 where the torch backend rounds each elementwise op: 2x.
GPU_RULES = [
    pytest.param(torch.float32, "ieee", False, 2.0, id="fp32-ieee"),
    pytest.param(torch.float32, "tf32x3", False, 2.0, id="fp32-tf32x3"),
    pytest.param(torch.float32, "tf32", True, 4.0, id="fp32-tf32"),
    pytest.param(torch.bfloat16, "ieee", False, 2.0, id="bf16"),
    pytest.param(torch.float16, "ieee", False, 2.0, id="fp16"),
]

# The kernels a training step runs (a jet with a backward never takes the whole-network kernel;
# the matmul runs the backward GEMMs, the linear-layer kernels the <= 8 outputs).
TRAINING_KERNELS = {"_first_layer_fwd_kernel", "_first_layer_bwd_kernel", "_sine_layer_fwd_kernel",
                    "_sine_layer_bwd_kernel", "_matmul_kernel", "_linear_few_fwd_kernel",
                    "_linear_few_bwd_kernel"}


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("dtype,mode,torch_tf32,factor", GPU_RULES)
@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_precision(gen, kernel_launches, case, dtype, mode, torch_tf32, factor):
    """Real shapes: errors against float64 at most ``factor`` x the torch backend's own error
    (plus a floor at the storage dtype's resolution, for errors that are both near zero), and
    the Triton kernels did run (a dispatch that silently ran the torch backend would match)."""
    if dtype == torch.float16 and case[0] >= 1 << 20:
        pytest.skip("fp16 at N = 2^20: covered by bf16, halves the tier's run time")
    ours, theirs = _gpu_errors(case, gen, dtype, mode, torch_tf32)
    assert set(kernel_launches) == TRAINING_KERNELS, dict(kernel_launches)
    if dtype == torch.float16 and not all(math.isfinite(e) for e in theirs.values()):
        # Not a kernel fault: at omega_0 = 30 second derivatives can exceed fp16's range.
        pytest.skip(f"the torch backend itself leaves fp16's range here: {theirs}")
    floor = 4 * torch.finfo(dtype).eps
    bad = excess_errors(ours, theirs, factor, floor)
    assert not bad, f"errors (triton, torch) over {factor}x torch's: {bad}"


def test_cotangents_do_not_depend_on_the_dtype(gen):
    """The tiers' gradient checks compare runs in different dtypes through one loss: the
    cotangents must be the same numbers, else every gradient differs by O(1) whatever the
    kernels do and "at most 2x torch's own error" passes any backward (tier a: torch backend)."""
    weights, biases, omegas = make_params(gen, None, 2, 16, 1, 1, 30.0, torch.float64)
    x = _rand(gen, 37, 2).cpu()
    seed = 1234
    fields64, grads64 = run_network("torch", x, weights, biases, omegas, 2, False, True, seed)
    L = len(weights)
    cast = [t.float() for t in (x, *weights, *biases)]
    fields32, grads32 = run_network("torch", cast[0], cast[1:1 + L], cast[1 + L:], omegas, 2,
                                    False, True, seed)
    for name in grads64:
        err = rel_err(grads32[name].double(), grads64[name])
        assert err <= 1e-4, f"d loss / d {name}: float32 vs float64 {err:.2e}"


def test_excess_errors_counts_nan_as_over():
    """A NaN error (an unwritten tile) must fail the GPU rule, as must a plain excess."""
    theirs = {"value": 1e-6, "grad": 1e-6, "w0": 1e-6}
    ours = {"value": float("nan"), "grad": 1.5e-6, "w0": 5e-6}
    assert set(excess_errors(ours, theirs, 2.0, 0.0)) == {"value", "w0"}
    assert set(excess_errors({"value": 1e-6}, {"value": float("nan")}, 2.0, 0.0)) == {"value"}


# Large offsets: each kernel family on a tensor past 2^31 elements (B = 1: the batch offset,
# already int64, cannot hide it). Points outside the last few have zero cotangents, so the
# reductions over points (W̄, b̄) are the tail's alone and the torch backend checks them on the
# tail; NaN poisoning still catches a tile written at a wrapped address instead of its own.
BIG_N, BIG_M, BIG_K = 1 << 21, 256, 64  # [4, N, M]: 2^31 elements (bf16: 4 GiB)
TAIL = 7


def _needs_gpu_memory(gib: float):
    free = torch.cuda.mem_get_info()[0] / 2**30
    if free < gib:
        pytest.skip(f"needs {gib:.0f} GiB of free GPU memory, {free:.0f} GiB free")


@pytest.fixture
def big(gen):
    """Uniform bf16 tensors in [-scale, scale) drawn on the GPU (no float32 copy: 4 GiB would be
    8 GiB more), from a device generator seeded by ``gen``."""
    device_gen = torch.Generator(device=DEVICE).manual_seed(int(torch.randint(0, 2**31, (1,),
                                                                              generator=gen)))

    def draw(*shape, scale=1.0):
        t = torch.rand(*shape, generator=device_gen, device=DEVICE, dtype=torch.bfloat16)
        return t.mul_(2).sub_(1).mul_(scale)
    return draw


def _tail_only(t):
    """Zero every point but the last TAIL (dim 2 of [B, R, N, M])."""
    t[:, :, :-TAIL].zero_()
    return t


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_int64_offsets(big):
    """The hidden-layer forward: slab offsets reach 3 N M = 1.5 * 2^31, the int32 wrap point."""
    _needs_gpu_memory(12)
    layout = JetLayout(2, 2)
    stack = big(1, layout.rows, BIG_N, BIG_K)
    w = big(1, BIG_M, BIG_K, scale=0.05)
    out, _ = triton_ops.sine_layer_fwd(stack, w, None, 30.0, layout)
    tail = slice(BIG_N - TAIL, BIG_N)
    want, _ = torch_ops.sine_layer_fwd(stack[:, :, tail].float(), w.float(), None, 30.0, layout)
    _assert_close(out[:, :, tail].float(), want, 5e-2, "last points of the last slab")


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_int64_offsets_vjp(big):
    """The hidden layer's VJP past 2^31 elements: the elementwise kernel on [1, 4, N, M], W̄'s
    split GEMM over 4 N rows (row offsets up to 4 N M) and S̄'s GEMM."""
    _needs_gpu_memory(24)
    layout = JetLayout(2, 2)
    tail = slice(BIG_N - TAIL, BIG_N)
    stack = big(1, layout.rows, BIG_N, BIG_K)
    w = big(1, BIG_M, BIG_K, scale=0.05)
    G = big(1, layout.rows, BIG_N, BIG_M, scale=2.0)
    s = big(1, BIG_N, BIG_M)
    go = _tail_only(big(1, layout.rows, BIG_N, BIG_M))
    gs, gw, gb = triton_ops.sine_layer_bwd(go, stack, w, 30.0, layout, s, G)
    want = torch_ops.sine_layer_bwd(go[:, :, tail].float(), stack[:, :, tail].float(), w.float(),
                                    30.0, layout, s[:, tail].float(), G[:, :, tail].float())
    _assert_close(gs[:, :, tail].float(), want[0], 5e-2, "S̄ of the last points")
    _assert_close(gw.float(), want[1], 5e-2, "W̄")
    _assert_close(gb.float(), want[2], 5e-2, "b̄")
    assert not gs[:, :, :-TAIL].any(), "S̄ of zero cotangents is not zero: rows were mixed up"


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_int64_offsets_first_layer(big):
    """The first layer's forward writes [1, 4, N, M] (slab offsets to 3 N M) and its VJP reads
    a cotangent of that size; x̄ goes through the matmul."""
    _needs_gpu_memory(16)
    layout = JetLayout(2, 2)
    tail = slice(BIG_N - TAIL, BIG_N)
    x = big(1, BIG_N, 2)
    w, b = big(1, BIG_M, 2, scale=0.5), big(1, BIG_M)
    out, cos = triton_ops.first_layer_fwd(x, w, b, 30.0, layout)
    want, want_cos = torch_ops.first_layer_fwd(x[:, tail].float(), w.float(), b.float(), 30.0,
                                               layout)
    _assert_close(out[:, :, tail].float(), want, 5e-2, "first layer jet, last points")
    _assert_close(cos[:, tail].float(), want_cos, 5e-2, "cos u, last points")
    del out
    go = _tail_only(big(1, layout.rows, BIG_N, BIG_M))
    s = big(1, BIG_N, BIG_M)
    gx, gw, gb = triton_ops.first_layer_bwd(go, x, w, 30.0, layout, s, cos, True)
    want = torch_ops.first_layer_bwd(go[:, :, tail].float(), x[:, tail].float(), w.float(), 30.0,
                                     layout, s[:, tail].float(), cos[:, tail].float(), True)
    _assert_close(gx[:, tail].float(), want[0], 5e-2, "x̄ of the last points")
    _assert_close(gw.float(), want[1], 5e-2, "W̄")
    _assert_close(gb.float(), want[2], 5e-2, "b̄")


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_int64_offsets_matmul_and_linear_layer(big):
    """The matmul with a result past 2^31 elements ([1, 4 N, M] rows: a wide final layer), and
    the <= 8-output final layer reading [1, 4, N, M] and writing S̄ of that size."""
    _needs_gpu_memory(24)
    layout = JetLayout(2, 2)
    tail = slice(BIG_N - TAIL, BIG_N)
    stack = big(1, layout.rows, BIG_N, BIG_K)
    w = big(1, BIG_M, BIG_K, scale=0.1)
    out = triton_ops.linear_layer_fwd(stack, w, None)  # M = 256 > 8 outputs: the matmul
    want = torch_ops.linear_layer_fwd(stack[:, :, tail].float(), w.float(), None)
    _assert_close(out[:, :, tail].float(), want, 5e-2, "matmul rows past 2^31 elements")
    del out
    jet = big(1, layout.rows, BIG_N, BIG_M)
    w1, b1 = big(1, 1, BIG_M, scale=0.1), big(1, 1)
    y = triton_ops.linear_layer_fwd(jet, w1, b1)
    want = torch_ops.linear_layer_fwd(jet[:, :, tail].float(), w1.float(), b1.float())
    _assert_close(y[:, :, tail].float(), want, 5e-2, "linear layer, last points")
    go = _tail_only(big(1, layout.rows, BIG_N, 1))
    gs, gw, gb = triton_ops.linear_layer_bwd(go, jet, w1)
    want = torch_ops.linear_layer_bwd(go[:, :, tail].float(), jet[:, :, tail].float(), w1.float())
    _assert_close(gs[:, :, tail].float(), want[0], 5e-2, "S̄ of the last points")
    _assert_close(gw.float(), want[1], 5e-2, "W̄")
    _assert_close(gb.float(), want[2], 5e-2, "b̄")


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_int64_offsets_whole_network(big):
    """The whole-network kernel's output jet [1, 5, N, 1] past 2^31 elements (order 2, d = 3,
    N just over 2^31 / 5 points; width 16 keeps the arithmetic small)."""
    from fastsiren.kernels import network

    _needs_gpu_memory(16)
    layout = JetLayout(2, 3)
    n = (1 << 31) // layout.rows + 64
    shapes = [(16, 3), (16, 16), (1, 16)]
    x = big(1, n, 3)
    weights = [big(1, m, k, scale=1 / k if l == 0 else (6 / k) ** 0.5 / 30)
               for l, (m, k) in enumerate(shapes)]
    biases = [big(1, m, scale=0.1) for m, _ in shapes]
    omegas = (30.0,) * len(shapes)
    assert network.unsupported(x, weights, omegas, layout, True) is None
    out = network.siren_network_fwd(x, weights, biases, omegas, layout)
    tail = slice(n - TAIL, n)
    ws, bs = [w.float() for w in weights], [b.float() for b in biases]
    want, _ = torch_ops.first_layer_fwd(x[:, tail].float(), ws[0], bs[0], 30.0, layout)
    want, _ = torch_ops.sine_layer_fwd(want, ws[1], bs[1], 30.0, layout)
    want = torch_ops.linear_layer_fwd(want, ws[2], bs[2])
    _assert_close(out[:, :, tail].float(), want, 5e-2, "whole network, last points")
