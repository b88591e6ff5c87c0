"""Providers: the ways of computing a workload's jet that the benchmark puts side by side."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import env, reference
from ..functional import siren_jet
from .cases import Case
from .measure import environ
from .problem import Problem, jet_dict, workload_loss

JetFn = Callable[[torch.Tensor, list], dict]


class Unsupported(Exception):
    """A provider cannot run this workload (by construction, not by a bug)."""


class Unavailable(Exception):
    """A provider cannot run on this machine (a package that does not import here)."""


@dataclass
class Provider:
    """A way of computing a workload's jet.

    ``make(problem)`` returns ``jet(x, params) -> dict`` (see ``jet_dict``) or raises
    ``Unsupported``. ``compiled`` providers are wrapped in ``torch.compile`` (jet and loss
    together for training steps); their first call is timed apart as the compile time.
    ``self_compiling`` providers compile inside (fastsiren's compiled chunks): not wrapped, but
    their first call is timed apart as the compile time too.
    ``algorithm(case)`` names the bare-GEMM bound the provider is held to (see ``gemm``).
    Providers are pickled into the CPU memory-measuring child process, so ``make`` and
    ``algorithm`` are module-level functions (or partials of them).
    """

    name: str
    label: str
    make: Callable[[Problem], JetFn]
    compiled: bool = False
    self_compiling: bool = False
    needs_cuda: bool = False
    kernel_precision: bool = False  # takes the TF32 / ieee setting as an argument
    # The official code makes the coordinates a grad-requiring leaf once, in its data loader,
    # and differentiates the model's output with respect to them.
    coords_require_grad: bool = False
    algorithm: Callable[[Case], str] | None = None  # None: forward mode
    # Outputs the provider does not compute at all (verified on the others, noted in the row).
    omits: tuple[str, ...] = ()

    @property
    def compiles(self) -> bool:
        """Its first call compiles (graphs are reset per case, compile time reported apart)."""
        return self.compiled or self.self_compiling


def _autograd_jet_fn(prob: Problem) -> JetFn:
    spec, omegas = prob.spec, prob.omegas
    n_layers = len(omegas)

    def jet(x, params):
        if prob.model is not None:
            fn = prob.model  # the module, as the official code differentiates it
        else:
            def fn(c):
                return reference.siren_forward(c, params[:n_layers], params[n_layers:], omegas)
        if spec.order == 0:
            return {"value": fn(x)}
        return jet_dict(reference.autograd_jet(fn, x, spec.order, spec.hessian_diag), spec)

    return jet


def _torch_func_fn(prob: Problem) -> JetFn:
    from torch.func import jacfwd, jacrev, vmap

    spec, omegas = prob.spec, prob.omegas
    n_layers = len(omegas)

    def point(xp, weights, biases):  # one coordinate [d] -> ([out], [out])
        y = reference.siren_forward(xp, weights, biases, omegas)
        return y, y

    def point_jac(xp, weights, biases):
        jac, y = jacrev(point, has_aux=True)(xp, weights, biases)
        return jac, (jac, y)

    def point_jet(xp, weights, biases):
        if spec.order == 0:
            return (point(xp, weights, biases)[0],)
        if spec.order == 1:
            jac, y = jacrev(point, has_aux=True)(xp, weights, biases)
            return y, jac
        hess, (jac, y) = jacfwd(point_jac, has_aux=True)(xp, weights, biases)
        return y, jac, hess.diagonal(dim1=-2, dim2=-1)  # [out, d]

    over_points = vmap(point_jet, in_dims=(0, None, None))
    batched = vmap(over_points, in_dims=(0, 0, 0)) if spec.batched else over_points

    def jet(x, params):
        outs = batched(x, params[:n_layers], params[n_layers:])
        result = {"value": outs[0]}
        if spec.order >= 1:
            result["grad"] = outs[1]
        if spec.order == 2:
            result["lap"] = outs[2].sum(-1)
            if spec.hessian_diag:
                result["hess_diag"] = outs[2]
        return result

    return jet


def _naive_fn(prob: Problem) -> JetFn:
    spec, omegas = prob.spec, prob.omegas
    n_layers = len(omegas)
    if spec.hessian_diag:
        raise Unsupported("naive_jet has no Hessian-diagonal mode")

    def one(x, weights, biases):
        j = reference.naive_jet(x, weights, biases, omegas, True, spec.order)
        return tuple(t for t in (j.value, j.grad, j.lap) if t is not None)

    fn = torch.func.vmap(one, in_dims=(0, 0, 0)) if spec.batched else one

    def jet(x, params):
        outs = fn(x, params[:n_layers], params[n_layers:])
        return dict(zip(("value", "grad", "lap"), outs))

    return jet


def _fastsiren_fn(backend: str, prob: Problem, compile_chunks: bool = False,
                  fused_network: bool = True) -> JetFn:
    """fastsiren's own dispatch; ``fused_network=False`` keeps triton inference layer by layer
    (``FASTSIREN_FUSED_NETWORK=0`` around each call), to time the whole-network kernel."""
    spec, omegas = prob.spec, prob.omegas
    n_layers = len(omegas)
    kwargs = _precision_kwargs(prob) if backend == "triton" else {}

    def jet(x, params):
        with environ(env.FUSED_NETWORK, None if fused_network else "0"):
            return _jet(x, params)

    def _jet(x, params):
        j = siren_jet(
            x, params[:n_layers], params[n_layers:], omegas, spec.order,
            outermost_linear=True, backend=backend, hessian_diag=spec.hessian_diag,
            compile_chunks=compile_chunks, **kwargs,
        )
        return jet_dict(j, spec)

    return jet


# Collapsed Taylor mode (Dangel et al., NeurIPS 2025; PyPI ``jet-for-pytorch``, imported as
# ``jet``): the Laplacian by propagating the summed second-order Taylor coefficient through an
# fx-traced graph. Its documented API: ``jet.laplacian.Laplacian(f, dummy_x)`` is a module whose
# call at one point x [d] returns (f(x), the collapsed first-order coefficient, the Laplacian);
# ``jet.simplify.simplify(module, pull_sum_vmapped=True)`` collapses the graph; batches go
# through ``torch.func.vmap``. It needs Python >= 3.12.
COLLAPSED_TAYLOR_PYTHON = (3, 12)


def _import_collapsed_taylor():
    """(Laplacian, simplify) from jet-for-pytorch, or Unavailable with the reason."""
    if sys.version_info < COLLAPSED_TAYLOR_PYTHON:
        raise Unavailable(
            "jet-for-pytorch needs Python >= 3.12, this is "
            f"{sys.version_info.major}.{sys.version_info.minor}"
        )
    try:
        from jet.laplacian import Laplacian
        from jet.simplify import simplify
    except ImportError as exc:
        raise Unavailable(f"jet-for-pytorch does not import ({exc}); pip install "
                          "jet-for-pytorch") from exc
    return Laplacian, simplify


def _collapsed_taylor_fn(prob: Problem) -> JetFn:
    spec, omegas = prob.spec, prob.omegas
    if spec.order != 2 or spec.hessian_diag:
        raise Unsupported("collapsed Taylor mode computes the Laplacian (order 2) only")
    if spec.batched:
        raise Unsupported("collapsed Taylor mode takes one network's weights at a time")
    Laplacian, simplify = _import_collapsed_taylor()
    n_layers = len(omegas)

    def jet(x, params):
        weights, biases = params[:n_layers], params[n_layers:]

        def f(xp):  # one point [d] -> [out]; the weights are closed over, as the package expects
            return reference.siren_forward(xp, weights, biases, omegas)

        dummy = x.reshape(-1, x.shape[-1])[0]
        lap_module = simplify(Laplacian(f, dummy), pull_sum_vmapped=True)
        value, _, lap = torch.func.vmap(lap_module)(x)
        return {"value": value, "lap": lap}

    return jet


def _reverse_at_order_1(case: Case) -> str:
    """Nested autograd and jacrev differentiate in reverse mode: order 1 is an adjoint sweep."""
    return "adjoint" if case.spec.order == 1 else "forward"


def _fastsiren_torch_algorithm(case: Case) -> str:
    """The torch backend's own dispatch (``fastsiren.dispatch``): the adjoint sweep at order 1
    when the network has fewer outputs than coordinates."""
    from ..dispatch import prefers_adjoint

    adjoint = prefers_adjoint("torch", case.spec.order, case.d, case.spec.out_features)
    return "adjoint" if adjoint else "forward"


def _precision_kwargs(prob: Problem) -> dict:
    """The kernels' matmul precision ("ieee" with TF32 off, "tf32" with it on), when
    ``siren_jet`` takes it; otherwise the backend's default (noted in the results)."""
    precision = prob.precision
    params = inspect.signature(siren_jet).parameters
    for name in ("precision", "input_precision"):
        if name in params:
            return {name: "tf32" if precision == "tf32" else "ieee"}
    return {}


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in [
        Provider("autograd", "eager autograd (reference)", _autograd_jet_fn,
                 coords_require_grad=True, algorithm=_reverse_at_order_1),
        Provider("torch.func", "torch.func (vmap jacrev/jacfwd)", _torch_func_fn,
                 algorithm=_reverse_at_order_1),
        Provider("compile-autograd", "torch.compile(reference)", _autograd_jet_fn, compiled=True,
                 coords_require_grad=True, algorithm=_reverse_at_order_1),
        Provider("naive", "naive jets (eager)", _naive_fn),
        Provider("compile-naive", "torch.compile(naive jets)", _naive_fn, compiled=True),
        Provider("collapsed-taylor", "collapsed Taylor mode (jet-for-pytorch)",
                 _collapsed_taylor_fn, omits=("grad",)),
        Provider("fastsiren-torch", "fastsiren torch", functools.partial(_fastsiren_fn, "torch"),
                 algorithm=_fastsiren_torch_algorithm),
        Provider("fastsiren-torch-compiled", "fastsiren torch, compiled chunks",
                 functools.partial(_fastsiren_fn, "torch", compile_chunks=True),
                 self_compiling=True, algorithm=_fastsiren_torch_algorithm),
        Provider(
            "fastsiren-triton", "fastsiren triton", functools.partial(_fastsiren_fn, "triton"),
            needs_cuda=True, kernel_precision=True,
        ),
        Provider(
            "fastsiren-triton-layerwise", "fastsiren triton, layer by layer",
            functools.partial(_fastsiren_fn, "triton", fused_network=False),
            needs_cuda=True, kernel_precision=True,
        ),
    ]
}
REFERENCE = "autograd"


def workload_fn(provider: Provider, prob: Problem) -> Callable[[], dict]:
    """The zero-argument callable that runs the provider on the case's workload and returns
    what is verified: the jet's outputs, or for a training step the loss and every parameter
    gradient. ``compiled`` providers are compiled here (lazily, on the first call)."""
    jet = provider.make(prob)
    spec = prob.spec
    x, params, target = prob.x, prob.params, prob.target
    if provider.coords_require_grad:
        x = x.detach().requires_grad_(True)
    if spec.train:
        def loss_fn(x, params):
            return workload_loss(spec, jet(x, params), target)

        run_loss = compile_static(loss_fn) if provider.compiled else loss_fn

        def step():
            loss = run_loss(x, params)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            # A parameter the loss does not depend on (the final bias under a Laplacian
            # loss) has a zero gradient; autograd says None.
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
            return {"loss": loss.detach(), "grads": grads}

        return step
    run_jet = compile_static(jet) if provider.compiled else jet
    return lambda: run_jet(x, params)


def provider_algorithm(provider: Provider, case: Case) -> str:
    return "forward" if provider.algorithm is None else provider.algorithm(case)


def compile_static(fn):
    # Static shapes: every case is compiled for its own shapes (the cache is reset per case).
    return torch.compile(fn, dynamic=False)
