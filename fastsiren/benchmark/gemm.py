"""The bare-GEMM lower bound: the plain matmuls an algorithm cannot avoid, timed on their own.

Two algorithms compute a jet, and they need different matmuls:

- ``forward``: the forward-mode jet of the design (every jet slab pushed through every layer),
  what the naive jets, the Triton kernels and the torch backend at orders 0 and 2 do.
- ``adjoint``: for order 1, one value sweep forward and O adjoint slabs backward to the input
  (reverse mode), what nested autograd and the torch backend's order-1 path with fewer outputs
  than coordinates do (``fastsiren.adjoint``): 3 (1 + O) instead of 3 (1 + d) slab-matmuls per
  layer in a training step.

Each provider row is compared with the bound of its own algorithm (``Provider.algorithm``), so
"fraction of the bound" stays at or below 100 % when the measurement is sound.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .cases import DEPTH, Case

# Bound rows (not providers), and the algorithm each one bounds.
BOUND = "gemm"
ADJOINT_BOUND = "gemm-adjoint"
BOUNDS = {BOUND: "forward", ADJOINT_BOUND: "adjoint"}


def bound_applies(name: str, case: Case) -> bool:
    """The adjoint sweep serves order 1 only; the forward-mode bound every workload."""
    return BOUNDS[name] == "forward" or case.spec.order == 1


def gemm_shapes(case: Case, algorithm: str = "forward") -> list[tuple[int, int, int, int]]:
    """(batch, m, k, n) of the plain matmuls [m, k] x [k, n] an algorithm cannot avoid.

    forward: the first layer's value matmul [N, d] x [d, W] (its jets need no matmul: the input
    jet is the identity), then per later layer one matmul of all R slabs [R*N, K] x [K, M],
    R = 1 + d + 1 at order 2: the (d + 2) matmuls of the design, stacked. A training step adds
    per later layer the input gradient [R*N, M] x [M, K] and the weight gradient
    [K, R*N] x [R*N, M], and the first layer's weight gradient [W, N] x [N, d].

    adjoint (order 1): the value sweep [N, K] x [K, M] per layer, then the adjoint p_{l-1} =
    q_l W_l on O slabs [O*N, M] x [M, K] per sine layer. A training step adds per sine layer the
    adjoint's weight gradient [M, O*N] x [O*N, K] and its input gradient [O*N, K] x [K, M], the
    value sweep's weight gradient [M, N] x [N, K] and (above the first layer) its input gradient
    [N, M] x [M, K]; the final layer adds [O, N] x [N, W] and [N, O] x [O, W].
    """
    spec, d, w, n = case.spec, case.d, case.width, case.n
    b = case.batch if spec.batched else 1
    dims = [d] + [w] * (DEPTH + 1) + [spec.out_features]  # layer l maps dims[l] -> dims[l + 1]
    layers = list(zip(dims[:-1], dims[1:]))
    if algorithm == "adjoint":
        if spec.order != 1:
            raise ValueError(f"the adjoint sweep computes order 1, not {spec.order}")
        o = spec.out_features
        shapes = [(b, n, k, m) for k, m in layers]  # values
        shapes += [(b, o * n, m, k) for k, m in layers[:-1]]  # adjoints down to the input
        if spec.train:
            for l, (k, m) in enumerate(layers[:-1]):
                shapes += [(b, m, o * n, k), (b, o * n, k, m), (b, m, n, k)]
                if l > 0:
                    shapes.append((b, n, m, k))
            shapes += [(b, o, n, w), (b, n, o, w)]
        return shapes
    if algorithm != "forward":
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of "
                         f"{sorted(set(BOUNDS.values()))}")
    rn = spec.rows(d) * n
    shapes = [(b, n, d, w)]
    for k, m in layers[1:]:
        shapes.append((b, rn, k, m))
        if spec.train:
            shapes.append((b, rn, m, k))
            shapes.append((b, k, rn, m))
    if spec.train:
        shapes.append((b, w, n, d))
    return shapes


def gemm_flops(case: Case, algorithm: str = "forward") -> int:
    """2 m k n per matmul (a multiply and an add per term), summed: the FLOPs of the bound."""
    return sum(2 * b * m * k * n for b, m, k, n in gemm_shapes(case, algorithm))


def gemm_bound_fn(
    case: Case, device, dtype=torch.float32, algorithm: str = "forward"
) -> Callable[[], None]:
    """The bound's matmuls on preallocated operands and outputs (no allocation in the loop)."""
    gen = torch.Generator().manual_seed(0)
    ops = []
    for b, m, k, n in gemm_shapes(case, algorithm):
        a = torch.randn(b, m, k, generator=gen).to(device, dtype)
        bb = torch.randn(b, k, n, generator=gen).to(device, dtype)
        if b == 1:
            a, bb = a[0], bb[0]
        ops.append((a, bb, torch.empty(*a.shape[:-1], n, device=device, dtype=dtype)))

    def run():
        for a, bb, c in ops:
            torch.matmul(a, bb, out=c)

    return run
