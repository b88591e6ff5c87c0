r"""The torch backend's elementwise epilogues in a form ``torch.compile`` fuses: the compiled
variant of the torch backend (``compile_chunks=True``).

The math is ``fastsiren.sine_jet``'s (its docstring); only the form differs. The eager epilogues
(``fastsiren.sine_jet.EagerEpilogues``) write each slab into preallocated buffers and in place,
which is what eager ops do best and what a compiler cannot trace into one graph (``out=`` writes
into slab views split it). Here every slab is a value of the point's s = sin u and c = cos u,
and ``torch.stack`` joins them, so that ``fastsiren.jet_function`` can compile a whole chunk of
the network (its matmuls and these epilogues) into one graph: inductor evaluates sin and cos once
per point, writes every slab in the same loop, fuses the bias, and plans buffer reuse, so the
chunk's working set stays in cache as in a compiled naive jet.

Measured on the 2-core AMD EPYC with one torch thread (``fastsiren bench``, providers interleaved,
order-2 jet forward, 2->W x3->1, 4096 points): W = 64, eager 10.0-10.5 ms, compiled 6.0-6.1
ms, torch.compile of the naive jet 6.2-6.4 ms; W = 256, 83 / 67 / 73 ms (the full two-thread
preset is in bench/results). The forms compared on one
training-mode forward chunk (W = 64, one thread): this one 5.9 ms, ``torch.where`` over the slab
index 7.1 ms (sin and cos re-evaluated for every slab), slab-by-slab assignment into one buffer
8.2 ms. Run eagerly, this form is slower than the eager epilogues, hence two sets.
"""

from __future__ import annotations

import torch

from fastsiren.jet import JetLayout
from fastsiren.sine_jet import TorchJetOps


def _curvature(g: torch.Tensor, layout: JetLayout) -> list[torch.Tensor]:
    """The second-order slabs' sum_i g_i^2 (one) or g_i^2 (per axis), g [B, d, ...]."""
    if layout.hessian_diag:
        return [g[:, i] * g[:, i] for i in range(layout.d)]
    return [(g * g).sum(1)]


class FusedEpilogues:
    """The epilogue set of ``fastsiren.sine_jet.EagerEpilogues`` (same signatures and outputs),
    written as per-point expressions joined by ``torch.stack``; G keeps u for backward."""

    @staticmethod
    def first_forward(u, g, layout: JetLayout, for_backward: bool):
        """out_0 = s, out_i = c g_i, out_L = -s sum_i g_i^2 (per axis: -s g_i^2), g [B, d, M]."""
        s = torch.sin(u)
        if layout.order == 0:
            return s.unsqueeze(1), (torch.cos(u) if for_backward else u)
        c = torch.cos(u)
        g_pt = g.unsqueeze(2)  # [B, d, 1, M]: the same at every point
        slabs = [s] + [c * g_pt[:, i] for i in range(layout.d)]
        if layout.order == 2:
            slabs += [-s * curv for curv in _curvature(g_pt, layout)]
        return torch.stack(slabs, 1), c

    @staticmethod
    def sine_forward(G, layout: JetLayout, for_backward: bool):
        """out_0 = s, out_i = c g_i, out_L = c g_L - s sum_i g_i^2 (per axis: c g_Li - s g_i^2).
        G is left as it is, u in slab 0: backward takes the cosine again, which costs less
        than writing it over u (inductor copies a matmul output it must modify: 0.71 ms
        against 0.14 ms per layer at W = 64, 4096 points)."""
        u = G[:, 0]
        s = torch.sin(u)
        if layout.order == 0:
            return s.unsqueeze(1)
        c = torch.cos(u)
        g = G[:, layout.grad_slice]
        slabs = [s] + [c * g[:, i] for i in range(layout.d)]
        if layout.order == 2:
            g_l = G[:, layout.lap_slice]
            slabs += [c * g_l[:, k] - s * curv
                      for k, curv in enumerate(_curvature(g, layout))]
        return torch.stack(slabs, 1)

    @staticmethod
    def as_kept(G):
        """G as ``sine_forward`` keeps it: u in slab 0, unchanged."""
        return G

    @staticmethod
    def sine_backward(grad_out, G, s, layout: JetLayout):
        """Ḡ_0 = ū = c z̄ - s sum_i J̄_i g_i - sum_k L̄_k (s g_Lk + c g_k^2) (k over the
        second-order slabs; for the Laplacian L̄ pairs with sum_i g_i^2),
        Ḡ_i = c J̄_i - 2 s L̄_(i) g_i, Ḡ_L = c L̄; G holds u in slab 0."""
        c = torch.cos(G[:, 0])
        u_bar = c * grad_out[:, 0]
        if layout.order == 0:
            return u_bar.unsqueeze(1)
        g, j_bar = G[:, layout.grad_slice], grad_out[:, layout.grad_slice]
        u_bar = u_bar - s * (j_bar * g).sum(1)
        g_bars = [c * j_bar[:, i] for i in range(layout.d)]
        l_bars = []
        if layout.order == 2:
            g_l, l_bar = G[:, layout.lap_slice], grad_out[:, layout.lap_slice]
            for k, curv in enumerate(_curvature(g, layout)):
                u_bar = u_bar - l_bar[:, k] * (s * g_l[:, k] + c * curv)
            for i in range(layout.d):
                g_bars[i] = g_bars[i] - 2 * s * l_bar[:, i if layout.hessian_diag else 0] * g[:, i]
            l_bars = [c * l_bar[:, k] for k in range(layout.n_lap)]
        return torch.stack([u_bar, *g_bars, *l_bars], 1)

    @staticmethod
    def first_backward(grad_out, s, c, g, layout: JetLayout):
        """ū = c z̄ - s sum_i J̄_i g_i - c sum_k L̄_k g_k^2 and ḡ_i = sum_n (c J̄_i - 2 s L̄_(i) g_i)
        (g_i = omega W[:, i] is the same at every point, so its cotangent sums over them)."""
        u_bar = c * grad_out[:, 0]
        if layout.order == 0:
            return u_bar, None
        g_pt, j_bar = g.unsqueeze(2), grad_out[:, layout.grad_slice]
        u_bar = u_bar - s * (j_bar * g_pt).sum(1)
        g_bar = (j_bar * c.unsqueeze(1)).sum(2)
        if layout.order == 2:
            l_bar = grad_out[:, layout.lap_slice]
            for k, curv in enumerate(_curvature(g_pt, layout)):
                u_bar = u_bar - c * l_bar[:, k] * curv
            s_l_bar = (l_bar * s.unsqueeze(1)).sum(2)  # [B, 1 or d, M]
            g_bar = g_bar - 2 * g * s_l_bar
        return u_bar, g_bar


FUSED_OPS = TorchJetOps(FusedEpilogues)
