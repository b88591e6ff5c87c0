r"""Value and input-gradient of a SIREN by an analytic adjoint sweep, with a hand-derived backward.

For order 1 the forward-mode jet carries 1 + d slabs through every layer, so a training step
costs 3 (1 + d) slab-matmuls per layer. When the network has fewer outputs O than input
coordinates d (an SDF: O = 1, d = 3), the reverse sweep is cheaper: one value slab forward, then
O adjoint slabs backward to the input, 3 (1 + O) slab-matmuls per layer in all, which is also
what nested autograd does (measured on a 2-core CPU, 3->256x3->1, eikonal step: see the
benchmark results). ``fastsiren.dispatch.run_siren_jet`` picks it for order 1 when O < d on the
torch backend.

Math, per sine layer l with h_l = z_{l-1} W_l^T + b_l, u_l = omega_l h_l, z_l = sin u_l
(z_{-1} = x), and a final linear layer y = z_L W_f^T + b_f::

    forward   z_l = s_l = sin u_l,  c_l = cos u_l
    adjoint   p_L = W_f (for every point),   q_l = omega_l c_l * p_l,   p_{l-1} = q_l W_l
              dy/dx = p_{-1}                         (p, q carry one slab per output o)

Backward, given cotangents ȳ of y and P̄ of dy/dx (= p̄_{-1}):

    up the adjoint (l = 0 .. L):   W̄_l += q_l^T p̄_{l-1}     q̄_l = p̄_{l-1} W_l^T
                                   p̄_l = omega_l c_l * q̄_l   ū_l = -s_l * omega_l sum_o q̄_l p_l
                                   (top: W̄_f += sum_n p̄_L)
    down the values (l = L .. 0):  z̄_L = ȳ W_f,  W̄_f += ȳ^T z_L,  b̄_f = sum_n ȳ
                                   ū_l += c_l z̄_l,   h̄_l = omega_l ū_l
                                   W̄_l += h̄_l^T z_{l-1},  b̄_l = sum_n h̄_l,  z̄_{l-1} = h̄_l W_l

A final sine layer is handled as one more sine layer whose adjoint seed is the identity.
"""

from __future__ import annotations

import torch

from fastsiren.jet_function import ChunkGradients, SirenJetSettings, point_chunks
from fastsiren.nested_autograd import graph_vjp, jet_stack
from fastsiren.sine_jet import points_per_chunk, rows_matmul, stack_matmul, stack_weight_grad


def _forward_chunk(x, weights, biases, omegas, outermost_linear):
    """Values and adjoints of one chunk. Returns (y, grad [B, O, N, d], saved per layer)."""
    n_sine = len(omegas) - 1 if outermost_linear else len(omegas)
    z, sines, cosines = x, [], []
    for l in range(n_sine):
        w, b, omega = weights[l], biases[l], omegas[l]
        w_t = (omega * w).transpose(1, 2)
        u = rows_matmul(z, w_t) if b is None else torch.baddbmm((omega * b).unsqueeze(1), z, w_t)
        z = torch.sin(u)
        sines.append(z)
        cosines.append(u.cos_())
    if outermost_linear:
        w_f, b_f = weights[-1], biases[-1]
        y = rows_matmul(z, w_f.transpose(1, 2))
        if b_f is not None:
            y += b_f.unsqueeze(1)
        B, N, O = y.shape
        # p_L: row o of W_f at every point; expand is free, the first matmul materialises.
        p = w_f.unsqueeze(2).expand(B, O, N, w_f.shape[-1])
    else:
        y = sines[-1]
        B, N, O = y.shape
        p = torch.diag_embed(torch.ones_like(y)).permute(0, 2, 1, 3)  # dy_o/dz_L = e_o
    adjoints = [None] * n_sine  # p_l, the adjoint arriving at each sine layer's output
    for l in range(n_sine - 1, -1, -1):
        adjoints[l] = p
        q = p * cosines[l].unsqueeze(1) * omegas[l]
        p = stack_matmul(q, weights[l])
    return y, p, (sines, cosines, adjoints)


def _backward_chunk(grad_y, grad_p, x, weights, biases, omegas, outermost_linear, saved, need_x):
    """VJP of ``_forward_chunk`` for one chunk: (x̄, [W̄ per layer], [b̄ per layer])."""
    sines, cosines, adjoints = saved
    n_sine = len(sines)
    n_layers = len(weights)
    grad_w = [None] * n_layers
    grad_b = [None] * n_layers
    inputs = [x, *sines[:-1]]  # z_{l-1} for every sine layer

    # Up the adjoint sweep: p_{l-1} = q_l W_l and q_l = omega_l c_l p_l.
    grad_u = [None] * n_sine
    p_bar = grad_p
    for l in range(n_sine):
        c, omega, p = cosines[l], omegas[l], adjoints[l]
        q = p * c.unsqueeze(1) * omega
        grad_w[l] = stack_weight_grad(q, p_bar)
        q_bar = stack_matmul(p_bar, weights[l].transpose(1, 2))
        grad_u[l] = (q_bar * p).sum(1).mul_(sines[l]).mul_(-omega)
        p_bar = q_bar.mul_(c.unsqueeze(1)).mul_(omega)
    if outermost_linear:
        grad_w[-1] = p_bar.sum(2)  # p_L = W_f at every point
    # (a final sine layer's seed e_o is constant: nothing to add)

    # Down the value sweep.
    if outermost_linear:
        w_f = weights[-1]
        grad_w[-1] = grad_w[-1] + rows_matmul(grad_y.transpose(1, 2), sines[-1])
        grad_b[-1] = grad_y.sum(1) if biases[-1] is not None else None
        grad_z = rows_matmul(grad_y, w_f)
    else:
        grad_z = grad_y
    grad_x = None
    for l in range(n_sine - 1, -1, -1):
        omega = omegas[l]
        grad_h = grad_u[l].addcmul_(cosines[l], grad_z).mul_(omega)
        grad_w[l] = torch.baddbmm(grad_w[l], grad_h.transpose(1, 2), inputs[l])
        grad_b[l] = grad_h.sum(1) if biases[l] is not None else None
        if l > 0 or need_x:
            grad_z = rows_matmul(grad_h, weights[l])
        if l == 0 and need_x:
            grad_x = grad_z
    return grad_x, grad_w, grad_b


class SirenGradFunction(torch.autograd.Function):
    """(y [B, N, O], dy/dx [B, O, N, d]) of a SIREN at x [B, N, d] by the adjoint sweep.

    ``params``: the L weights [B, M, K] then the L biases [B, M] (None allowed); of the settings
    only ``omegas`` and ``outermost_linear`` apply.
    """

    @staticmethod
    def forward(ctx, x, settings: SirenJetSettings, *params):
        omegas, outermost_linear = settings.omegas, settings.outermost_linear
        n_layers = len(omegas)
        weights, biases = params[:n_layers], params[n_layers:]
        B, N, d = x.shape
        O = weights[-1].shape[1]
        chunk = points_per_chunk(N, 2 + 2 * O, max(w.shape[1] for w in weights), x)
        ctx.chunks = point_chunks(N, chunk)
        ctx.settings = settings
        y = x.new_empty(B, N, O)
        grad = x.new_empty(B, O, N, d)
        saved = []
        for_backward = any(ctx.needs_input_grad)
        for points in ctx.chunks:
            y[:, points], grad[:, :, points], chunk_saved = _forward_chunk(
                x[:, points], weights, biases, omegas, outermost_linear
            )
            if for_backward:  # otherwise each chunk's intermediates are freed right away
                saved.append(chunk_saved)
        if for_backward:
            ctx.save_for_backward(x, *weights, *biases)
            ctx.saved_chunks = saved
        return y, grad

    @staticmethod
    def backward(ctx, grad_y, grad_grad):
        settings = ctx.settings
        n_layers = len(settings.omegas)
        x, *params = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a backward autograd can differentiate

            def recompute(x, weights, biases):
                stack = jet_stack(x, weights, biases, settings.omegas, settings.layout,
                                  settings.outermost_linear)
                return stack[:, 0], stack[:, 1:].permute(0, 3, 2, 1)  # y, dy/dx [B, O, N, d]

            return graph_vjp(ctx, x, params, recompute, (grad_y, grad_grad))

        # The hand VJP, chunk by chunk as the forward ran (grad mode is off here).
        weights, biases = params[:n_layers], params[n_layers:]
        need_x = ctx.needs_input_grad[0]
        grads = ChunkGradients(x, n_layers, need_x)
        for points, saved in zip(ctx.chunks, ctx.saved_chunks):
            grads.add(points, *_backward_chunk(
                grad_y[:, points].contiguous(), grad_grad[:, :, points].contiguous(),
                x[:, points], weights, biases, settings.omegas, settings.outermost_linear, saved,
                need_x,
            ))
        return grads.result(ctx.needs_input_grad)
