r"""The Triton kernels' one-time self-check: what ``backend="auto"`` runs before trusting them.

``auto`` picks the Triton kernels for CUDA tensors, and kernels that no GPU of this kind has run
could give a wrong answer or fail to compile or launch. So before ``auto`` sends a call to them
(``fastsiren.dispatch.run_siren_jet``), the kernel families that call will use run once on a
few points of a small network with the call's layer sizes and jet layout, and are compared op
by op with the torch backend in float64 on the same (rounded) inputs:

- ``forward``: the first sine layer, each hidden layer, the last layer (``for_backward`` as the
  call has it: the kernels write what a backward needs, or skip it);
- ``VJP``: the same layers' backward (the elementwise VJP kernels and the GEMMs of the matmul);
- ``whole network``: the one-kernel inference jet (``fastsiren.kernels.network``).

Each op's error is max |triton - torch| over max |torch|, per output slab and per gradient, and
must stay within ``TOLERANCE`` for the call's precision (storage dtype, and for fp32 the
``tl.dot`` input precision). A mismatch, a compile error or a launch failure makes ``auto`` run
the torch backend instead and warns once, in one line naming the kernel and how to force
Triton. Verdicts are cached per process, device, precision, package version, family and
layout, so each is paid once, at the first call that needs it, on the compilation that call
needs anyway (same widths and flags; ``CHECK_POINTS`` points, a multiple of 16 so that strides
specialise as a real call's usually do). A backend named by the caller (``backend="triton"`` or
``FASTSIREN_BACKEND=triton``) is never checked.

``fastsiren check`` reports the same measurements for every family and precision mode
(``measure``).
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass

import torch

from fastsiren import sine_jet as torch_ops
from fastsiren._version import __version__
from fastsiren.jet import JetLayout
from fastsiren.jet_ops import ops_for, whole_network_kernel
from fastsiren.reference.siren import sine_init_bound

FAMILIES = ("forward", "VJP", "whole network")

# Points per check: a multiple of 16 (strides N M specialise as most real calls' do) and more
# than one 16-row tile.
CHECK_POINTS = 64

# Largest relative error (per slab and per gradient, against the torch backend in float64 on the
# same rounded inputs) per precision: a few times each precision's own rounding on one layer,
# far below the O(1) of a wrong tile or formula; 1e-4 also catches a 1.001 scale in fp32.
TOLERANCE = {
    "fp64": 1e-9,
    "fp32-ieee": 1e-4,
    "fp32-tf32x3": 1e-4,
    "fp32-tf32": 3e-2,  # 10-bit operands
    "bf16": 3e-2,  # 8-bit storage of every output
    "fp16": 1e-2,
}


@dataclass
class Measurement:
    """One family's check: its largest error (or the failure that stopped it)."""

    family: str
    precision: str
    kernel: str  # the kernel with the largest error, or the one that failed
    error: float  # largest relative error (inf on a failure)
    limit: float
    seconds: float
    failure: str = ""  # the exception that stopped the check, one line

    @property
    def passed(self) -> bool:
        return not self.failure and self.error <= self.limit  # False for NaN


def precision_class(dtype: torch.dtype) -> str:
    """The precision a call runs in: "fp64", "bf16", "fp16", or "fp32-<tl.dot input precision>"."""
    if dtype == torch.float64:
        return "fp64"
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    from fastsiren.kernels.precision import current_input_precision

    return f"fp32-{current_input_precision()}"


def _network(shapes, dtype, device, seed=0):
    """SIREN-initialised weights and biases of the given [M, K] shapes (float64, B = 1)."""
    gen = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for l, (m, k) in enumerate(shapes):
        bound = sine_init_bound(k, 30.0, is_first=l == 0)
        weights.append((torch.rand(1, m, k, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        biases.append((torch.rand(1, m, generator=gen, dtype=torch.float64) * 2 - 1) / k**0.5)
    x = torch.rand(1, CHECK_POINTS, shapes[0][1], generator=gen, dtype=torch.float64) * 2 - 1
    cot = torch.Generator().manual_seed(seed + 1)

    def rounded(t):  # the call's storage precision, then float64 for the torch backend
        t = t.to(dtype=dtype, device=device)
        return t, t.double()
    return rounded, x, weights, biases, cot


class _Errors:
    """The largest relative error seen, and which kernel had it."""

    def __init__(self):
        self.error, self.kernel = 0.0, ""
        self.running = ""  # the kernel being checked: the one to name if it raises

    def add(self, kernel: str, got: torch.Tensor | None, want: torch.Tensor | None,
            slabs: bool = False) -> None:
        if got is None and want is None:
            return
        if got is None or want is None:
            raise RuntimeError(f"{kernel}: returned {'None' if got is None else 'a tensor'} "
                               "where the torch backend does not")
        got, want = got.detach().double(), want.detach()
        pairs = zip(got.unbind(1), want.unbind(1)) if slabs else [(got, want)]
        for g, w in pairs:
            scale = w.abs().max().clamp_min(1e-30) if w.numel() else 1.0
            err = float((g - w).abs().max() / scale) if w.numel() else 0.0
            if not err <= self.error:  # NaN replaces any number
                self.error, self.kernel = err, kernel


def _check_layers(family, layout, shapes, omegas, linear, for_backward, dtype, device, errors):
    """The layerwise ops of one network, each against the torch backend on the same inputs."""
    ops = ops_for("triton")
    rounded, x64, weights, biases, cot = _network(shapes, dtype, device)
    n_layers = len(shapes)
    x, x_ref = rounded(x64)
    keep = for_backward or family == "VJP"  # what the forward writes for a backward
    stack = stack_ref = None
    for l in range(n_layers):
        w, w_ref = rounded(weights[l])
        b, b_ref = rounded(biases[l])
        last = l == n_layers - 1
        omega = omegas[l]
        if l == 0:
            want = torch_ops.first_layer_fwd(x_ref, w_ref, b_ref, omega, layout, keep)
            kernel = "_first_layer_fwd_kernel"
        elif last and linear:
            want = (torch_ops.linear_layer_fwd(stack_ref, w_ref, b_ref), None)
            kernel = "_linear_few_fwd_kernel" if shapes[l][0] <= 8 else "_matmul_kernel"
        else:
            want = torch_ops.sine_layer_fwd(stack_ref, w_ref, b_ref, omega, layout, keep)
            kernel = "_sine_layer_fwd_kernel"
        errors.running = kernel if family == "forward" else kernel.replace("fwd", "bwd")
        if family == "forward":
            if l == 0:
                got = ops.first_layer_fwd(x, w, b, omega, layout, keep)
            elif last and linear:
                got = (ops.linear_layer_fwd(stack, w, b), None)
            else:
                got = ops.sine_layer_fwd(stack, w, b, omega, layout, keep)
            errors.add(kernel, got[0], want[0], slabs=True)
            if keep or layout.order == 0:
                errors.add(kernel, got[1], want[1], slabs=got[1] is not None and got[1].dim() == 4)
        else:  # the VJP on the torch backend's forward, rounded as the call would store it
            out_ref, saved_ref = want
            grad_ref = torch.randn(out_ref.shape, generator=cot, dtype=torch.float64)
            grad, grad_ref = rounded(grad_ref)
            if l == 0:
                s_ref = out_ref[:, 0]
                args = (x, w, omega, layout)
                args_ref = (x_ref, w_ref, omega, layout)
                got = ops.first_layer_bwd(grad, *args, _rounded(s_ref, dtype, device),
                                          _rounded(saved_ref, dtype, device), True)
                ref = torch_ops.first_layer_bwd(grad_ref, *args_ref, s_ref, saved_ref, True)
                kernel = "_first_layer_bwd_kernel"
            elif last and linear:
                got = ops.linear_layer_bwd(grad, stack, w)
                ref = torch_ops.linear_layer_bwd(grad_ref, stack_ref, w_ref)
                kernel = "_linear_few_bwd_kernel" if shapes[l][0] <= 8 else "_matmul_kernel"
            else:
                s_ref = out_ref[:, 0]
                got = ops.sine_layer_bwd(grad, stack, w, omega, layout,
                                         _rounded(s_ref, dtype, device),
                                         _rounded(saved_ref, dtype, device))
                ref = torch_ops.sine_layer_bwd(grad_ref, stack_ref, w_ref, omega, layout, s_ref,
                                               saved_ref.clone())
                kernel = "_sine_layer_bwd_kernel"
            for g, r in zip(got, ref):
                errors.add(kernel, g, r, slabs=g is not None and g.dim() == 4)
        stack, stack_ref = rounded(want[0])


def _rounded(t, dtype, device):
    return None if t is None else t.to(dtype=dtype, device=device)


def _check_whole_network(layout, shapes, omegas, dtype, device, errors):
    network = whole_network_kernel("triton")
    rounded, x64, weights, biases, _ = _network(shapes, dtype, device)
    cast = [rounded(t) for t in (x64, *weights, *biases)]
    n = len(shapes)
    x, x_ref = cast[0]
    ws, ws_ref = [c[0] for c in cast[1:1 + n]], [c[1] for c in cast[1:1 + n]]
    bs, bs_ref = [c[0] for c in cast[1 + n:]], [c[1] for c in cast[1 + n:]]
    errors.running = "_siren_network_fwd_kernel"
    reason = network.unsupported(x, ws, tuple(omegas), layout, True)
    if reason is not None:
        raise RuntimeError(f"the whole-network kernel declines this network ({reason})")
    got = network.siren_network_fwd(x, ws, bs, tuple(omegas), layout)
    stack = x_ref
    ref_layout = layout
    for l in range(n):  # the torch backend's layerwise jet in float64
        if l == 0:
            stack, _ = torch_ops.first_layer_fwd(stack, ws_ref[0], bs_ref[0], omegas[0],
                                                 ref_layout, True)
        elif l == n - 1:
            stack = torch_ops.linear_layer_fwd(stack, ws_ref[l], bs_ref[l])
        else:
            stack, _ = torch_ops.sine_layer_fwd(stack, ws_ref[l], bs_ref[l], omegas[l],
                                                ref_layout, True)
    errors.add("_siren_network_fwd_kernel", got, stack, slabs=True)


def measure(family: str, device: torch.device, dtype: torch.dtype, layout: JetLayout,
            shapes: list[tuple[int, int]], omegas: tuple[float, ...], outermost_linear: bool,
            for_backward: bool = True) -> Measurement:
    """Run one family's check (uncached) on a network of layer ``shapes`` ([M, K] per layer,
    B = 1) and return its largest error; a raised exception becomes the measurement's
    failure."""
    precision = precision_class(dtype)
    errors = _Errors()
    t0 = time.perf_counter()
    failure = ""
    try:
        from fastsiren.kernels._launch import poisoned

        with torch.no_grad(), poisoned():
            if family == "whole network":
                _check_whole_network(layout, shapes, omegas, dtype, device, errors)
            elif family in ("forward", "VJP"):
                _check_layers(family, layout, shapes, omegas, outermost_linear, for_backward,
                              dtype, device, errors)
            else:
                raise ValueError(f"unknown kernel family {family!r}, expected one of {FAMILIES}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001 - a compile or launch failure is the verdict
        lines = str(exc).strip().splitlines() or [""]
        failure = f"{type(exc).__name__}: {lines[0][:200]}"
        errors.error, errors.kernel = float("inf"), errors.running
    return Measurement(family, precision, errors.kernel, errors.error, TOLERANCE[precision],
                       time.perf_counter() - t0, failure)


# ----------------------------------------------------------------------------- the verdict cache

_verdicts: dict[tuple, Measurement] = {}
_lock = threading.Lock()
_warned: set[tuple] = set()


def families_for(for_backward: bool, whole_network: bool) -> tuple[str, ...]:
    """The kernel families a call runs: the whole-network kernel alone, or the layerwise
    forward, and the VJP when a backward will follow."""
    if whole_network:
        return ("whole network",)
    return ("forward", "VJP") if for_backward else ("forward",)


def failure(x: torch.Tensor, weights, omegas, layout: JetLayout, outermost_linear: bool,
            for_backward: bool, whole_network: bool) -> Measurement | None:
    """The first failed check among the families this call uses (canonical arguments: x
    [B, N, d], weights [B, M, K]), or None when every one passed; each verdict is computed once
    per process, device, precision, package version, family and layout."""
    device, dtype = x.device, x.dtype
    shapes = [tuple(w.shape[-2:]) for w in weights]
    precision = precision_class(dtype)
    for family in families_for(for_backward, whole_network):
        key = (str(device), precision, __version__, family, layout.order, layout.d,
               layout.hessian_diag, for_backward or family == "VJP")
        with _lock:
            verdict = _verdicts.get(key)
            if verdict is None:
                verdict = measure(family, device, dtype, layout, shapes, tuple(omegas),
                                  outermost_linear, for_backward or family == "VJP")
                _verdicts[key] = verdict
        if not verdict.passed:
            return verdict
    return None


def warn_once(verdict: Measurement, device: torch.device) -> None:
    """One line, once per device, precision and kernel: what failed and how to force Triton."""
    key = (str(device), verdict.precision, verdict.kernel)
    if key in _warned:
        return
    _warned.add(key)
    what = verdict.failure or f"error {verdict.error:.1e} > {verdict.limit:.0e} against torch"
    warnings.warn(
        f"fastsiren: the Triton self-check failed on {device} ({verdict.precision}, "
        f"{verdict.family}: {verdict.kernel or 'kernel'}: {what}); running the torch backend. "
        "Force Triton with backend=\"triton\" or FASTSIREN_BACKEND=triton.",
        RuntimeWarning, stacklevel=4)


def clear() -> None:
    """Forget every verdict and warning (tests; a process normally keeps them)."""
    with _lock:
        _verdicts.clear()
        _warned.clear()
