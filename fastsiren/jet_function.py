"""The autograd Function that runs a whole SIREN as a jet with the hand-derived backward.

One Function for the whole network, not one per layer: the backward of layer l needs sin u of
layer l, which is the value slab of layer l+1's input, so a network-level Function shares it
instead of storing it twice, and autograd records one node instead of a graph over every
elementwise op. The per-layer math comes from a backend's ops (``fastsiren.jet_ops.JetOps``:
``fastsiren.sine_jet`` for torch, ``fastsiren.kernels.sine_jet`` for Triton).

Saved for backward, per layer: its input stack (the previous layer's output, which exists anyway)
and, unless ``recompute=True``, its matmul output G (with cos u in slab 0 on the eager and Triton
backends; ``JetOps.sine_layer_saved`` says what each keeps). ``recompute=True`` keeps
only the inputs and redoes each layer's matmul and cosine during backward: about half the saved
memory, one more matmul per layer.

Backward under ``create_graph=True`` (nested autograd through the model) cannot use the hand VJP,
whose inputs were saved without a graph; it goes through ``fastsiren.nested_autograd`` instead.

Compiled chunks (torch backend, ``compile_chunks=True``): the per-chunk forward and backward
are plain tensor functions, so with the ops' epilogues in their traceable form
(``fastsiren.fused_epilogues``) ``torch.compile`` turns each into one graph, matmuls and fused
elementwise loops with planned buffers; the Function, its chunking and its saved tensors stay
the same. Graphs are compiled per chunk shape (a fit has one or two), cached by torch for the
process and by inductor on disk; the eager functions stay the default because a first compile
costs seconds to a minute, which only a fit of many steps amortises.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch

from fastsiren.jet import JetLayout
from fastsiren.jet_ops import JetOps
from fastsiren.nested_autograd import graph_vjp, jet_stack


@dataclass(frozen=True)
class SirenJetSettings:
    """Everything about a SIREN jet that is not a tensor, passed to the autograd Functions as
    their one non-tensor argument (``Function.apply(x, settings, *weights, *biases)``)."""

    omegas: tuple[float, ...]  # per layer; a final linear layer's is ignored
    outermost_linear: bool  # the last layer is linear (else a sine layer)
    layout: JetLayout  # which slabs the jet holds
    recompute: bool = False  # redo each layer's matmul in backward instead of saving it
    ops: JetOps | None = None  # the backend's per-layer ops (the adjoint sweep needs none)
    compiled: bool = False  # run the chunk functions through torch.compile (traceable ops)


def point_chunks(n_points: int, chunk: int) -> list[slice]:
    """Slices of at most ``chunk`` points covering 0..n_points (one empty slice for none)."""
    return [slice(n, min(n + chunk, n_points)) for n in range(0, n_points, chunk)] or [slice(0, 0)]


class ChunkGradients:
    """Gradients of a chunked backward: x̄ filled chunk by chunk, W̄ and b̄ summed over chunks."""

    def __init__(self, x: torch.Tensor, n_layers: int, need_x: bool):
        self.grad_x = torch.empty_like(x) if need_x else None
        self.grad_w: list = [None] * n_layers
        self.grad_b: list = [None] * n_layers

    def add(self, points: slice, grad_x, grad_w: list, grad_b: list) -> None:
        if self.grad_x is not None:
            self.grad_x[:, points] = grad_x
        for l, (gw, gb) in enumerate(zip(grad_w, grad_b)):
            self.grad_w[l] = gw if self.grad_w[l] is None else self.grad_w[l].add_(gw)
            if gb is not None:
                self.grad_b[l] = gb if self.grad_b[l] is None else self.grad_b[l].add_(gb)

    def result(self, needs_input_grad: tuple) -> tuple:
        """backward's return for ``apply(x, settings, *weights, *biases)``: x̄, None for the
        settings, then W̄s and b̄s (None where not needed)."""
        n_layers = len(self.grad_w)
        need = needs_input_grad[2:]
        grad_w = [g if n else None for g, n in zip(self.grad_w, need[:n_layers])]
        grad_b = [g if n else None for g, n in zip(self.grad_b, need[n_layers:])]
        return (self.grad_x, None, *grad_w, *grad_b)


class SirenJetFunction(torch.autograd.Function):
    """Stacked jet [B, R, N, out] of a SIREN at coordinates x [B, N, d].

    ``params`` are the L weights [B, M, K] followed by the L biases [B, M] (None allowed).
    Layer 0 is a sine layer on x; the last layer is linear when ``outermost_linear``.
    Points are processed in chunks of ``ops.points_per_chunk(...)`` (all at once on GPU).
    """

    @staticmethod
    def forward(ctx, x, settings: SirenJetSettings, *params):
        layout, omegas, ops = settings.layout, settings.omegas, settings.ops
        n_layers = len(omegas)
        weights, biases = params[:n_layers], params[n_layers:]
        ctx.settings = settings

        B, N, _ = x.shape
        widths = [w.shape[1] for w in weights]
        ctx.chunks = point_chunks(N, ops.points_per_chunk(N, layout.rows, max(widths), x))
        # one chunk (all points on GPU; up to ~4 MiB of jet on CPU): its output is the output
        out = x.new_empty(B, layout.rows, N, widths[-1]) if len(ctx.chunks) > 1 else None
        saved = []
        for_backward = any(ctx.needs_input_grad)
        forward_chunk = _compiled(_forward_chunk) if settings.compiled else _forward_chunk
        for points in ctx.chunks:
            chunk_out, stacks, kept = forward_chunk(x[:, points], weights, biases, settings,
                                                    for_backward)
            if out is None:
                out = chunk_out.contiguous()
            else:
                out[:, :, points] = chunk_out
            if for_backward:  # otherwise each chunk's intermediates are freed right away
                saved.append((stacks, None if settings.recompute else kept))

        if for_backward:
            # The output and inputs go through save_for_backward (version-checked, no cycle);
            # intermediates live on ctx, which is how autograd.Function keeps them.
            ctx.save_for_backward(x, out, *weights, *biases)
            ctx.saved_chunks = saved
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, out, *params = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a backward autograd can differentiate
            settings = ctx.settings

            def recompute(x, weights, biases):
                return (jet_stack(x, weights, biases, settings.omegas, settings.layout,
                                  settings.outermost_linear),)

            return graph_vjp(ctx, x, params, recompute, (grad_out,))

        # The hand VJP, chunk by chunk as the forward ran (grad mode is off here).
        n_layers = len(ctx.settings.omegas)
        weights, biases = params[:n_layers], params[n_layers:]
        need_x = ctx.needs_input_grad[0]
        grads = ChunkGradients(x, n_layers, need_x)
        backward_chunk = _compiled(_backward_chunk) if ctx.settings.compiled else _backward_chunk
        for points, (stacks, kept) in zip(ctx.chunks, ctx.saved_chunks):
            grads.add(points, *backward_chunk(
                grad_out[:, :, points], x[:, points], out[:, :, points], stacks, kept,
                weights, biases, ctx.settings, need_x,
            ))
        return grads.result(ctx.needs_input_grad)


_COMPILED: dict = {}  # chunk function -> its torch.compile wrapper, made once per process


def _compiled(chunk_fn):
    """``torch.compile`` of a chunk function. Where compilation fails (no C++ compiler, say)
    the call runs eagerly, with one warning per kind of failure."""
    if chunk_fn not in _COMPILED:
        graph = torch.compile(chunk_fn)

        @functools.wraps(chunk_fn)
        def run(*args):
            # Detached inputs: the hand VJP does the differentiating, so the graphs are
            # inference graphs (AOTAutograd would otherwise trace a joint graph).
            args = [_detached(a) for a in args]
            try:
                return graph(*args)
            except torch._dynamo.exc.BackendCompilerFailed as exc:
                _warn_compile_failed(chunk_fn.__name__, " ".join(str(exc).splitlines()[:1]))
                return chunk_fn(*args)

        _COMPILED[chunk_fn] = run
    return _COMPILED[chunk_fn]


def _detached(arg):
    if isinstance(arg, torch.Tensor):
        return arg.detach()
    if isinstance(arg, (list, tuple)):
        return type(arg)(_detached(a) for a in arg)
    return arg


@functools.cache
def _warn_compile_failed(name: str, reason: str) -> None:
    warnings.warn(f"fastsiren: torch.compile of {name} failed, running it eagerly ({reason})",
                  stacklevel=4)


def _forward_chunk(x, weights, biases, settings, for_backward):
    """Run the layers on one chunk of points; return (out, layer inputs, what each sine layer
    keeps for its backward).

    Without ``for_backward`` nothing is kept: each layer's buffers are freed as the next one
    runs, and the cosines are skipped where only backward would read them."""
    omegas, layout, ops = settings.omegas, settings.layout, settings.ops
    n_layers = len(omegas)
    stack, cos_u = ops.first_layer_fwd(x, weights[0], biases[0], omegas[0], layout, for_backward)
    stacks = [stack]  # stacks[l - 1] is the input of layer l
    # What each sine layer keeps for its backward: cos u (first layer), else its G with cos u
    # in slab 0 (``JetOps.sine_layer_saved``).
    kept = [cos_u]
    for l in range(1, n_layers):
        w, b = weights[l], biases[l]
        if l == n_layers - 1 and settings.outermost_linear:
            stack = ops.linear_layer_fwd(stack, w, b)
        else:
            stack, G = ops.sine_layer_fwd(stack, w, b, omegas[l], layout, for_backward)
            kept.append(G)
        stacks.append(stack)
        if not for_backward:
            stacks, kept = [stack], []
    return stacks.pop(), stacks, kept


def _backward_chunk(grad, x, out, stacks, kept, weights, biases, settings, need_x):
    """VJP of ``_forward_chunk``, last layer first: (x̄, [W̄ per layer], [b̄ per layer])."""
    layout, omegas, ops = settings.layout, settings.omegas, settings.ops
    n_layers = len(omegas)
    grad_w: list = [None] * n_layers
    grad_b: list = [None] * n_layers
    grad = grad.contiguous()
    for l in range(n_layers - 1, -1, -1):
        w, b, omega = weights[l], biases[l], omegas[l]
        has_bias = b is not None
        if l == n_layers - 1 and settings.outermost_linear:
            grad, grad_w[l], grad_b[l] = ops.linear_layer_bwd(
                grad, stacks[l - 1], w, has_bias=has_bias
            )
            continue
        s = (stacks[l] if l < n_layers - 1 else out)[:, 0]  # sin u: the next input's value
        if l == 0:
            recomputed = settings.recompute
            cos_u = ops.first_layer_preact(x, w, b, omega).cos_() if recomputed else kept[0]
            grad_x, grad_w[0], grad_b[0] = ops.first_layer_bwd(
                grad, x, w, omega, layout, s, cos_u, need_x_grad=need_x, has_bias=has_bias
            )
        else:
            G = ops.sine_layer_saved(stacks[l - 1], w, b, omega) if settings.recompute else (
                kept[l])
            grad, grad_w[l], grad_b[l] = ops.sine_layer_bwd(
                grad, stacks[l - 1], w, omega, layout, s, G, has_bias=has_bias
            )
    return grad_x, grad_w, grad_b

