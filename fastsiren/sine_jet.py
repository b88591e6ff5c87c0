r"""Jet recurrences of SIREN layers and their hand-derived VJPs, in torch ops.

This is the CPU fast path (the ``torch`` backend) and the executable specification for the
Triton kernels in ``fastsiren.kernels.sine_jet``: both expose the same functions with the same
shapes (``{first,sine}_layer_{preact,fwd,bwd}``, ``linear_layer_{fwd,bwd}`` and
``points_per_chunk``: the contract ``fastsiren.jet_ops.JetOps``), and
``fastsiren.jet_function.SirenJetFunction`` chains either set layer by layer.

Shapes (B independent networks; unbatched weights arrive with B = 1):
  S   [B, R, N, K]  stacked input jet (see ``fastsiren.jet``), contiguous
  x   [B, N, d]     coordinates, input of the first layer
  w   [B, M, K]     weights in nn.Linear layout;  b [B, M] or None
  out [B, R, N, M]  stacked output jet

Math. Folding omega into the weights, a sine layer's matmul gives for every slab at once
``G = S (omega W)^T`` with ``omega b`` added to the value slab, i.e. u = G_0 = omega h,
g_i = G_i = omega Jh_i, g_L = omega Lh. Then with s = sin u, c = cos u::

    z' = s        J'_i = c g_i        L' = c g_L - s sum_i g_i^2
                                      (per axis: L'_i = c g_Li - s g_i^2)

and the VJP, given cotangents (z̄', J̄'_i, L̄')::

    ū    = c z̄' - s sum_i J̄'_i g_i - L̄' (s g_L + c sum_i g_i^2)
    ḡ_i  = c J̄'_i - 2 s L̄' g_i
    ḡ_L  = c L̄'
    W̄ = omega Ḡ^T S (one matmul over the stacked slabs)   b̄ = omega sum_n ū   S̄ = Ḡ (omega W)

Per-axis second derivatives replace L̄' sum_i by the sum over the per-axis pairs. The first
layer's input is x itself (J = I, L = 0), so g_i = omega W[:, i] is a vector, g_L = 0, and no
matmul is needed for its jets. The final linear layer is the same matmul without the sine.

What backward needs: s is the next layer's input value slab (passed in, never stored twice);
cos u overwrites u in slab 0 of G, so saving G costs nothing beyond the matmul's output.
"""

from __future__ import annotations

import torch

from fastsiren import env
from fastsiren.jet import JetLayout


def points_per_chunk(n_points: int, rows: int, width: int, like: torch.Tensor) -> int:
    """How many points to push through the whole network at a time.

    On the CPU, chunks keep each stacked activation near CHUNK_BYTES: small enough to stay in
    cache between the matmul and its elementwise epilogue, and below glibc's mmap threshold
    (32 MiB at most), so freed buffers are reused instead of page-faulted in afresh. On CUDA the
    caching allocator makes large buffers free and one launch per layer is best.
    """
    if like.device.type != "cpu":
        return max(n_points, 1)
    per_point = rows * width * like.element_size()
    return max(64, env.chunk_bytes(CHUNK_BYTES) // per_point)


# Measured on a 2-core AMD EPYC (2 threads), Laplacian training step, best of 3x7 runs:
#   2->256x3->1, N = 8192:   1 MiB 358 ms, 4 MiB 318 ms, 16 MiB 357 ms, unchunked 446 ms
#   2->64x3->1,  N = 16384:  1 MiB  93 ms, 4 MiB  82 ms, 16 MiB 102 ms, unchunked 105 ms
# (a fresh 64 MiB buffer alone cost 65 ms of page faults there, as much as the matmul filling it).
# FASTSIREN_CHUNK_BYTES overrides it.
CHUNK_BYTES = 4 << 20


# ----------------------------------------------------------------------------- batched matmuls
# The matmuls of the torch backend, public for the other torch-op algorithms (the adjoint sweep of
# ``fastsiren.adjoint``): B independent networks, B = 1 for unbatched weights.


def rows_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` per network: [B, P, K] @ [B, K, M] -> [B, P, M]. B = 1 goes to a plain
    ``torch.mm`` (one GEMM, no batched-kernel overhead)."""
    if a.shape[0] == 1:
        return torch.mm(a[0], b[0]).unsqueeze(0)
    return torch.bmm(a, b)


def stack_matmul(stack: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    """Every slab of a stacked jet times the same matrix, as one matmul over R N rows:
    stack [B, R, N, K] @ w_t [B, K, M] -> [B, R, N, M]."""
    B, R, N, K = stack.shape
    return rows_matmul(stack.reshape(B, R * N, K), w_t).view(B, R, N, w_t.shape[-1])


def stack_weight_grad(grad: torch.Tensor, stack: torch.Tensor) -> torch.Tensor:
    """W̄ of ``stack_matmul(stack, W^T)`` given its cotangent ``grad``, summed over slabs and
    points in one matmul: sum_{r, n} grad[:, r, n]^T stack[:, r, n], with grad [B, R, N, M] and
    stack [B, R, N, K] -> [B, M, K]."""
    B, R, N, M = grad.shape
    K = stack.shape[-1]
    return rows_matmul(grad.reshape(B, R * N, M).transpose(1, 2), stack.reshape(B, R * N, K))


def _sum_of_squares(g: torch.Tensor) -> torch.Tensor:
    """sum_i g_i^2 over dim 1 of [B, d, ...], one fused multiply-add per axis."""
    acc = g[:, 0] * g[:, 0]
    for i in range(1, g.shape[1]):
        acc.addcmul_(g[:, i], g[:, i])
    return acc


def _axis_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_i a_i * b_i over dim 1 of broadcastable [B, d, ...] tensors."""
    acc = a[:, 0] * b[:, 0]
    for i in range(1, a.shape[1]):
        acc.addcmul_(a[:, i], b[:, i])
    return acc


# ----------------------------------------------------------------------------- layer matmuls


def first_layer_preact(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, omega: float
) -> torch.Tensor:
    """u = omega (x W^T + b): [B, N, M]."""
    w_t = (omega * w).transpose(1, 2)
    if b is None:
        return rows_matmul(x, w_t)
    return torch.baddbmm((omega * b).unsqueeze(1), x, w_t)


def sine_layer_preact(
    stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, omega: float
) -> torch.Tensor:
    """G = stack (omega W)^T with omega b on the value slab: [B, R, N, M]."""
    G = stack_matmul(stack, (omega * w).transpose(1, 2))
    if b is not None:
        G[:, 0].add_((omega * b).unsqueeze(1))
    return G


def linear_layer_fwd(stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Linear map of every slab; the bias only shifts the value slab."""
    out = stack_matmul(stack, w.transpose(1, 2))
    if b is not None:
        out[:, 0].add_(b.unsqueeze(1))
    return out


def linear_layer_bwd(
    grad_out: torch.Tensor,
    stack: torch.Tensor,
    w: torch.Tensor,
    need_input_grad: bool = True,
    has_bias: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """VJP of ``linear_layer_fwd``: (S̄ or None, W̄, b̄ or None)."""
    gw = stack_weight_grad(grad_out, stack)
    gb = grad_out[:, 0].sum(1) if has_bias else None
    gs = stack_matmul(grad_out, w) if need_input_grad else None
    return gs, gw, gb


def _first_layer_grad(w: torch.Tensor, omega: float) -> torch.Tensor:
    """g = d u / d x = (omega W)^T [B, d, M], the same at every point: the first layer's
    matmul applied to the identity (its input jet J = I). A matmul's output is a contiguous
    buffer of its own; the transposed weight read in place, or copied inside a compiled chunk,
    made inductor's first-layer loop gather strided weights (2.3 ms against 0.14 ms per chunk
    at W = 64, 4096 points)."""
    eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device).expand(w.shape[0], -1, -1)
    return first_layer_preact(eye, w, None, omega)


# ----------------------------------------------------------------------------- eager epilogues


class EagerEpilogues:
    """The elementwise half of each sine layer as eager torch ops, written into preallocated
    slabs and in place, so that each pass touches as little memory as eager ops allow.

    An epilogue set provides four functions (``fastsiren.fused_epilogues.FusedEpilogues`` is
    the other set, one fused loop each under ``torch.compile``):

    - ``first_forward(u, g, layout, for_backward) -> (out, cos u)``, u [B, N, M], g = (omega W)^T
      [B, d, M]; at order 0 with ``for_backward=False`` the second value is u itself.
    - ``sine_forward(G, layout, for_backward) -> out``, leaving in G what ``sine_backward`` reads
      (here cos u over u in slab 0, at order 0 only when ``for_backward``).
    - ``as_kept(G) -> G``: a fresh matmul output made into what ``sine_forward`` keeps in G.
    - ``sine_backward(grad_out, G, s, layout) -> Ḡ`` [B, R, N, M].
    - ``first_backward(grad_out, s, c, g, layout) -> (ū [B, N, M], ḡ [B, d, M] or None)``,
      ḡ = d loss / d g summed over the points.
    """

    @staticmethod
    def first_forward(u, g, layout: JetLayout, for_backward: bool):
        B, N, M = u.shape
        out = u.new_empty(B, layout.rows, N, M)
        s = torch.sin(u, out=out[:, 0])
        if layout.order == 0 and not for_backward:
            return out, u
        c = torch.cos(u, out=u)
        if layout.order >= 1:
            torch.mul(c.unsqueeze(1), g.unsqueeze(2), out=out[:, layout.grad_slice])
        if layout.order == 2:
            g2 = g * g
            if layout.hessian_diag:
                torch.mul(s.unsqueeze(1), g2.unsqueeze(2), out=out[:, layout.lap_slice]).neg_()
            else:
                torch.mul(s, g2.sum(1, keepdim=True), out=out[:, layout.lap_slice.start]).neg_()
        return out, c

    @staticmethod
    def sine_forward(G, layout: JetLayout, for_backward: bool):
        out = torch.empty_like(G)
        u = G[:, 0]
        s = torch.sin(u, out=out[:, 0])
        if layout.order == 0 and not for_backward:
            return out
        c = torch.cos(u, out=u)
        if layout.order >= 1:
            gj = G[:, layout.grad_slice]
            torch.mul(gj, c.unsqueeze(1), out=out[:, layout.grad_slice])
        if layout.order == 2:
            ol = out[:, layout.lap_slice]
            torch.mul(G[:, layout.lap_slice], c.unsqueeze(1), out=ol)
            if layout.hessian_diag:
                ol.addcmul_(gj * gj, s.unsqueeze(1), value=-1.0)
            else:
                ol[:, 0].addcmul_(s, _sum_of_squares(gj), value=-1.0)
        return out

    @staticmethod
    def as_kept(G):
        """What ``sine_forward`` leaves in G for backward: cos u over u in slab 0."""
        G[:, 0].cos_()
        return G

    @staticmethod
    def sine_backward(grad_out, G, s, layout: JetLayout):
        c = G[:, 0]
        g_bar = torch.empty_like(G)
        gu = torch.mul(grad_out[:, 0], c, out=g_bar[:, 0])
        if layout.order >= 1:
            gj, oj = G[:, layout.grad_slice], grad_out[:, layout.grad_slice]
            gu.addcmul_(s, _axis_dot(oj, gj), value=-1.0)
            gj_bar = torch.mul(oj, c.unsqueeze(1), out=g_bar[:, layout.grad_slice])
        if layout.order == 2:
            gl, ol = G[:, layout.lap_slice], grad_out[:, layout.lap_slice]
            torch.mul(ol, c.unsqueeze(1), out=g_bar[:, layout.lap_slice])
            if layout.hessian_diag:
                curv = (gl * s.unsqueeze(1)).addcmul_(gj * gj, c.unsqueeze(1))  # s g_Li + c g_i^2
                gu.sub_(_axis_dot(ol, curv))
                gj_bar.addcmul_(gj, ol * s.unsqueeze(1), value=-2.0)
            else:
                curv = (gl[:, 0] * s).addcmul_(c, _sum_of_squares(gj))  # s g_L + c sum_i g_i^2
                gu.addcmul_(ol[:, 0], curv, value=-1.0)
                gj_bar.addcmul_(gj, (ol[:, 0] * s).unsqueeze(1), value=-2.0)
        return g_bar

    @staticmethod
    def first_backward(grad_out, s, c, g, layout: JetLayout):
        gu = grad_out[:, 0] * c
        g_bar = None  # d loss / d g, [B, d, M], summed over points
        if layout.order >= 1:
            oj = grad_out[:, layout.grad_slice]
            gu.addcmul_(s, _axis_dot(oj, g.unsqueeze(2)), value=-1.0)
            g_bar = (oj * c.unsqueeze(1)).sum(2)
        if layout.order == 2:
            ol = grad_out[:, layout.lap_slice]
            g2 = g * g
            if layout.hessian_diag:
                gu.addcmul_(c, _axis_dot(ol, g2.unsqueeze(2)), value=-1.0)
                s_ol = (ol * s.unsqueeze(1)).sum(2)  # [B, d, M]
            else:
                gu.addcmul_(c * ol[:, 0], g2.sum(1, keepdim=True), value=-1.0)
                s_ol = (ol[:, 0] * s).sum(1, keepdim=True)  # [B, 1, M]
            g_bar.addcmul_(g, s_ol, value=-2.0)
        return gu, g_bar


# ----------------------------------------------------------------------------- the ops


class TorchJetOps:
    """``fastsiren.jet_ops.JetOps`` in torch ops: the matmuls above around one set of epilogues
    (``EagerEpilogues`` here; ``fastsiren.fused_epilogues`` builds the compiled set)."""

    points_per_chunk = staticmethod(points_per_chunk)
    first_layer_preact = staticmethod(first_layer_preact)
    sine_layer_preact = staticmethod(sine_layer_preact)
    linear_layer_fwd = staticmethod(linear_layer_fwd)
    linear_layer_bwd = staticmethod(linear_layer_bwd)

    def __init__(self, epilogues):
        self.epilogues = epilogues

    def first_layer_fwd(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        omega: float,
        layout: JetLayout,
        for_backward: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sine layer on the coordinates themselves. Returns (out [B, R, N, M], cos u [B, N, M]).

        With ``for_backward=False`` at order 0 (inference: nothing needs cos u) the second return
        value is u itself and the cosine is skipped.
        """
        u = first_layer_preact(x, w, b, omega)
        return self.epilogues.first_forward(u, _first_layer_grad(w, omega), layout, for_backward)

    def first_layer_bwd(
        self,
        grad_out: torch.Tensor,
        x: torch.Tensor,
        w: torch.Tensor,
        omega: float,
        layout: JetLayout,
        s: torch.Tensor | None,
        c: torch.Tensor,
        need_x_grad: bool,
        has_bias: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """VJP of ``first_layer_fwd``: (x̄ or None, W̄, b̄ or None). s is needed for order >= 1."""
        w_scaled = omega * w
        gu, g_bar = self.epilogues.first_backward(grad_out, s, c, _first_layer_grad(w, omega),
                                                  layout)
        gw = rows_matmul(gu.transpose(1, 2), x)  # d loss / d (omega W), [B, M, d]
        if g_bar is not None:
            gw.add_(g_bar.transpose(1, 2))
        gw.mul_(omega)
        gb = gu.sum(1).mul_(omega) if has_bias else None
        gx = rows_matmul(gu, w_scaled) if need_x_grad else None
        return gx, gw, gb

    def sine_layer_fwd(
        self,
        stack: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        omega: float,
        layout: JetLayout,
        for_backward: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sine layer on a stacked jet. Returns (out, G) with cos u written over u in G's slab 0
        (left as u when ``for_backward=False`` at order 0, where nothing else needs the cosine)."""
        G = sine_layer_preact(stack, w, b, omega)
        return self.epilogues.sine_forward(G, layout, for_backward), G

    def sine_layer_saved(
        self, stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, omega: float
    ) -> torch.Tensor:
        """G as ``sine_layer_fwd`` keeps it for backward, recomputed (``recompute=True``)."""
        return self.epilogues.as_kept(sine_layer_preact(stack, w, b, omega))

    def sine_layer_bwd(
        self,
        grad_out: torch.Tensor,
        stack: torch.Tensor,
        w: torch.Tensor,
        omega: float,
        layout: JetLayout,
        s: torch.Tensor,
        G: torch.Tensor,
        need_input_grad: bool = True,
        has_bias: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """VJP of ``sine_layer_fwd``: (S̄ or None, W̄, b̄ or None). G holds cos u in slab 0."""
        g_bar = self.epilogues.sine_backward(grad_out, G, s, layout)
        gw = stack_weight_grad(g_bar, stack).mul_(omega)
        gb = g_bar[:, 0].sum(1).mul_(omega) if has_bias else None
        gs = stack_matmul(g_bar, omega * w) if need_input_grad else None
        return gs, gw, gb


EAGER_OPS = TorchJetOps(EagerEpilogues)

# The module itself is the torch backend's JetOps (eager epilogues), as
# ``fastsiren.jet_ops.ops_for`` loads it.
first_layer_fwd = EAGER_OPS.first_layer_fwd
first_layer_bwd = EAGER_OPS.first_layer_bwd
sine_layer_fwd = EAGER_OPS.sine_layer_fwd
sine_layer_saved = EAGER_OPS.sine_layer_saved
sine_layer_bwd = EAGER_OPS.sine_layer_bwd
