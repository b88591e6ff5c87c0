r"""The whole SIREN in one kernel: its jet for inference at hidden widths <= 128.

The layerwise kernels pass every hidden layer's jet through DRAM: R W values written and read
back per point per hidden layer (order 2 at d = 3, W = 128, fp32: 5 KB per point per layer, and
G on top when a backward follows). Without a backward nothing between the layers is needed
again, so here one program owns BLOCK_N points of one network and carries their jet through
every layer in registers: only the coordinates come in and the output jet goes out.

Each slab is its own 2-D tile [BLOCK_N, W_PAD] (the value, d <= 3 gradient slabs, the
Laplacian): a hidden layer is one ``tl.dot`` per slab against the same whole weight tile
(W_PAD x W_PAD, loaded once per program and layer; all layers' weights together stay in L2),
and the epilogue is elementwise across tiles of one layout. (Stacking the value and gradient
rows into one operand, as the layerwise forward stacks its gradient slabs, needs reshapes
between the MMA and 3-D layouts and spilled 400-600 B at width 128; separate tiles compile
clean and pad no slab.)

Math, per sine layer (the layerwise kernels' jet, ``fastsiren.kernels.sine_jet``), for the
slab tiles z (value), g_i (gradient), g_L (Laplacian) of the layer's input::

    u = omega (z W^T + b),   g_i' = omega g_i W^T,   g_L' = omega g_L W^T
    s, c = sin u, cos u
    out: z = s,   g_i = c g_i',   g_L = c g_L' - s sum_i g_i'^2

The first layer's input jet is (x, I, 0): u = omega (x W^T + b) by FMAs over the few inputs,
g_i' = omega W[:, i] (one vector per feature, shared by every point) and g_L' = 0. The final
linear layer is a reduction over the width per output: with at most 8 outputs a ``tl.dot``
would pad them to 16 columns.

Eligible networks (``unsupported`` says why one is not): a linear last layer with at most
``MAX_OUTPUTS`` outputs after at least one sine layer, every hidden layer the same width
<= ``MAX_WIDTH`` and the same omega, a jet of order 0 (at most 16 inputs) or order 1-2 with
the Laplacian at d <= ``MAX_GRAD_D`` = 3, and a tile within ``MAX_JET_PER_THREAD`` for the
launch's register class. The dispatch (``fastsiren.dispatch.run_siren_jet``) sends every other
network, and every jet a backward will follow, through the layerwise kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fastsiren.kernels._jit_helpers import sincos, sine, wide
from fastsiren.kernels._launch import (
    COMPILE_OPTIONS,
    FMA_MAX_K,
    INTERPRET,
    acc_dtype,
    check_tensor,
    config,
    configs,
    dot_precision,
    new_empty,
    pow2,
    register_class,
    size_bucket,
    unaligned,
)
from fastsiren.kernels.precision import current_input_precision

from fastsiren.jet import JetLayout

__all__ = ["MAX_OUTPUTS", "MAX_WIDTH", "siren_network_fwd", "unsupported"]

MAX_WIDTH = 128  # the weight tile and a whole row of activations per program
MAX_OUTPUTS = 8  # the final layer as per-output reductions
MAX_GRAD_D = 3  # A_PAD <= 4 gradient-group slabs in registers

_GPU_CONFIGS = [config({"BLOCK_N": n}, warps, 1) for warps in (4, 8) for n in (16, 32, 64, 128)]
_NETWORK_CONFIGS = configs(_GPU_CONFIGS, config({"BLOCK_N": 16}, 4, 1))

# Jet values per thread, (1 + D + HAS_LAP) BLOCK_N W_PAD / (32 num_warps), that a program may
# carry, per register class and warp count; a config above it is dropped untimed, and a network
# no config fits runs layer by layer. From a sweep of every config in the sm90 compile check
# (triton 3.9: d -> 128 x 3 -> out at orders 0-2, 2 -> 64 x 3 -> 2 at order 2; kernels/README.md):
# the program holds each slab as an MMA operand and as a product, plus its share of the weight
# tile, so the budgets are far below the layerwise forward's. One pipeline stage: a second cost
# registers and spilled 20-40 B; 16 warps (at most 128 registers) spilled even at 4 values per
# thread; ieee, tf32x3 and fp64 keep operand fragments in registers and fit order 0 (and small
# widths) only. Known: bf16 / fp16 at 32 points x 64 wide, 8 warps (order 2, d = 2) spills 8 B.
MAX_JET_PER_THREAD = {
    "tf32": {4: 16, 8: 40},
    "half": {8: 80},
    "tf32x3": {8: 8},
    "ieee": {8: 8},
    "fp64": {8: 16},
}


def _jet_per_thread(cfg: triton.Config, slabs: int, w_pad: int) -> float:
    return slabs * cfg.kwargs["BLOCK_N"] * w_pad / (32 * cfg.num_warps)


def _fitting(candidates, register_cls: str, slabs: int, w_pad: int,
             aligned: bool = True) -> list[triton.Config]:
    """The candidates within the register budget (all of them under the interpreter); half of
    it for a width that is not a multiple of 16 (``_launch.unaligned``: at width 100 the tf32
    and half tiles at their full budget spilled 48-84 B)."""
    if INTERPRET:
        return list(candidates)
    share = 1.0 if aligned else 0.5
    budget = MAX_JET_PER_THREAD[register_cls]
    return [c for c in candidates
            if _jet_per_thread(c, slabs, w_pad) <= share * budget.get(c.num_warps, 0)]


def _prune_network(candidates, named_args, **constexprs):
    slabs = 1 + constexprs["D"] + int(constexprs["HAS_LAP"])
    kept = _fitting(candidates, register_class(named_args, constexprs), slabs,
                    constexprs["W_PAD"], not unaligned(named_args, ("W",)))
    if not kept:  # ``unsupported`` keeps such networks away from this kernel
        raise RuntimeError("no whole-network tile fits the register budget")
    return kept


@triton.jit
def _times_w(a, wt, scale, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """scale * (a @ wt) for one slab tile a [BLOCK_N, W_PAD] (cast to the weights' dtype)."""
    return scale * tl.dot(a.to(wt.dtype), wt, input_precision=INPUT_PRECISION,
                          out_dtype=ACC_DTYPE)


@triton.jit
def _store_output(out_ptr, slab, tile, w_o, b_o, offs_n, mask_n, stride_r, N_OUT: tl.constexpr):
    """Output column o of one slab: the reduction of tile [BLOCK_N, W_PAD] with w_o [W_PAD]."""
    y = tl.sum(tile * w_o[None, :], axis=1) + b_o
    tl.store(out_ptr + wide(stride_r) * slab + wide(offs_n) * N_OUT,
             y.to(out_ptr.dtype.element_ty), mask=mask_n)


@triton.autotune(configs=_NETWORK_CONFIGS,
                 key=["n_bucket", "D_IN", "D", "HAS_LAP", "W_PAD", "N_OUT", "INPUT_PRECISION"],
                 prune_configs_by={"early_config_prune": _prune_network})
@triton.jit(do_not_specialize=["N", "n_hidden"])
def _siren_network_fwd_kernel(
    # pointers (all contiguous)
    x_ptr,  # [B, N, D_IN] coordinates
    w0_ptr,  # [B, W, D_IN] first layer
    b0_ptr,  # [B, W]
    wh_ptr,  # [B, H, W, W] hidden layers
    bh_ptr,  # [B, H, W]
    wo_ptr,  # [B, N_OUT, W] final linear layer
    bo_ptr,  # [B, N_OUT]
    out_ptr,  # [B, R, N, N_OUT] stacked output jet (contiguous)
    # sizes
    N,
    W,
    n_hidden,
    n_bucket,  # log2 bucket of N: the autotune key
    omega_first,
    omega_hidden,
    stride_ob,
    stride_or,
    # meta-parameters
    D_IN: tl.constexpr,  # inputs of the first layer
    D: tl.constexpr,  # gradient slabs (d <= 3, or 0 at order 0)
    HAS_LAP: tl.constexpr,
    N_OUT: tl.constexpr,
    W_PAD: tl.constexpr,  # pow2 >= max(W, 16): tl.dot's smallest K and N
    ACC_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_w = tl.arange(0, W_PAD)
    mask_w = offs_w < W

    # First layer: u = omega (x W^T + b) by FMAs over the few inputs; its gradient rows are
    # g_i = omega W[:, i], one vector per feature, and g_L = 0.
    x_rows = x_ptr + (pid_b * N + wide(offs_n)) * D_IN
    w0_ptr += pid_b * W * D_IN
    u = tl.load(b0_ptr + pid_b * W + offs_w, mask=mask_w, other=0.0).to(ACC_DTYPE)[None, :]
    for i in tl.static_range(D_IN):
        xi = tl.load(x_rows + i, mask=mask_n, other=0.0).to(ACC_DTYPE)
        wi = tl.load(w0_ptr + offs_w * D_IN + i, mask=mask_w, other=0.0).to(ACC_DTYPE)
        u += xi[:, None] * wi[None, :]
    u *= omega_first
    if D == 0:
        v = sine(u)  # order 0: the value alone
    else:
        v, c = sincos(u)
        w_col = w0_ptr + offs_w * D_IN
        g_row = omega_first * tl.load(w_col, mask=mask_w, other=0.0).to(ACC_DTYPE)[None, :]
        sq_row = g_row * g_row
        g1 = c * g_row
        if D >= 2:
            g_row = omega_first * tl.load(w_col + 1, mask=mask_w, other=0.0).to(ACC_DTYPE)[None, :]
            sq_row += g_row * g_row
            g2 = c * g_row
        if D >= 3:
            g_row = omega_first * tl.load(w_col + 2, mask=mask_w, other=0.0).to(ACC_DTYPE)[None, :]
            sq_row += g_row * g_row
            g3 = c * g_row
        if HAS_LAP:
            lap = -v * sq_row

    # Hidden layers: every slab times the one weight tile wt[k, m] = W[m, k].
    wt_offs = offs_w[None, :] * W + offs_w[:, None]
    wt_mask = mask_w[None, :] & mask_w[:, None]
    for l in range(n_hidden):
        layer = pid_b * n_hidden + l
        wt = tl.load(wh_ptr + layer * W * W + wt_offs, mask=wt_mask, other=0.0)
        bias = tl.load(bh_ptr + layer * W + offs_w, mask=mask_w, other=0.0).to(ACC_DTYPE)
        u = _times_w(v, wt, omega_hidden, INPUT_PRECISION, ACC_DTYPE) \
            + omega_hidden * bias[None, :]
        if D == 0:
            v = sine(u)
        else:
            s, c = sincos(u)
            g = _times_w(g1, wt, omega_hidden, INPUT_PRECISION, ACC_DTYPE)
            sq = g * g
            g1 = c * g
            if D >= 2:
                g = _times_w(g2, wt, omega_hidden, INPUT_PRECISION, ACC_DTYPE)
                sq += g * g
                g2 = c * g
            if D >= 3:
                g = _times_w(g3, wt, omega_hidden, INPUT_PRECISION, ACC_DTYPE)
                sq += g * g
                g3 = c * g
            if HAS_LAP:
                lap = c * _times_w(lap, wt, omega_hidden, INPUT_PRECISION, ACC_DTYPE) - s * sq
            v = s

    # Final linear layer: one reduction over the width per output and slab.
    out_ptr += pid_b * stride_ob
    for o in tl.static_range(N_OUT):
        w_o = tl.load(wo_ptr + (pid_b * N_OUT + o) * W + offs_w, mask=mask_w,
                      other=0.0).to(ACC_DTYPE)
        b_o = tl.load(bo_ptr + pid_b * N_OUT + o).to(ACC_DTYPE)
        _store_output(out_ptr + o, 0, v, w_o, b_o, offs_n, mask_n, stride_or, N_OUT)
        if D >= 1:
            _store_output(out_ptr + o, 1, g1, w_o, 0.0, offs_n, mask_n, stride_or, N_OUT)
        if D >= 2:
            _store_output(out_ptr + o, 2, g2, w_o, 0.0, offs_n, mask_n, stride_or, N_OUT)
        if D >= 3:
            _store_output(out_ptr + o, 3, g3, w_o, 0.0, offs_n, mask_n, stride_or, N_OUT)
        if HAS_LAP:
            _store_output(out_ptr + o, 1 + D, lap, w_o, 0.0, offs_n, mask_n, stride_or, N_OUT)


def unsupported(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    omegas: tuple[float, ...],
    layout: JetLayout,
    outermost_linear: bool,
) -> str | None:
    """Why this network's jet cannot run as one kernel, or None when it can (canonical
    arguments: x [B, N, d], weights [B, M, K])."""
    if not outermost_linear or len(weights) < 2:
        return "the whole-network kernel needs a linear last layer after a sine layer"
    width, n_out = weights[0].shape[1], weights[-1].shape[1]
    if width > MAX_WIDTH:
        return f"hidden width {width} > {MAX_WIDTH}"
    if any(tuple(w.shape[1:]) != (width, width) for w in weights[1:-1]):
        return "hidden layers of different widths"
    if len(set(omegas[1:-1])) > 1:
        return "hidden layers with different omegas"
    if n_out > MAX_OUTPUTS:
        return f"{n_out} outputs > {MAX_OUTPUTS}"
    if layout.hessian_diag:
        return "the Hessian diagonal (per-axis second-order slabs)"
    if layout.order == 0 and x.shape[-1] > FMA_MAX_K:
        return f"{x.shape[-1]} inputs > {FMA_MAX_K}"
    if layout.order > 0 and layout.d > MAX_GRAD_D:
        return f"a gradient over d = {layout.d} > {MAX_GRAD_D} coordinates"
    precision = dot_precision(x.dtype, current_input_precision())
    cls = register_class({"x": x}, {"INPUT_PRECISION": precision})
    if not _fitting(_GPU_CONFIGS, cls, layout.rows, _w_pad(width), width % 16 == 0):
        return (f"{layout.rows} slabs of width {width} exceed the register budget in "
                f"{cls} ({MAX_JET_PER_THREAD[cls]} values per thread by warps, half of it "
                "where the width is not a multiple of 16)")
    return None


def _w_pad(width: int) -> int:
    """The padded width: a power of two >= 16 (tl.dot's smallest K and N)."""
    return max(16, pow2(width))


def siren_network_fwd(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor | None],
    omegas: tuple[float, ...],
    layout: JetLayout,
) -> torch.Tensor:
    """The stacked output jet [B, R, N, out] of a SIREN with a linear last layer, in one launch.

    x [B, N, d]; weights [B, M, K] (nn.Linear layout) and biases [B, M] or None per layer. The
    caller checks ``unsupported(...)`` first; this raises ValueError where it would not be None.
    """
    reason = unsupported(x, weights, omegas, layout, True)
    if reason is not None:
        raise ValueError(f"siren_network_fwd: {reason}")
    x = check_tensor(x, "x", 3)
    weights = [check_tensor(w, f"weight {l}", 3, x) for l, w in enumerate(weights)]
    biases = [torch.zeros(w.shape[:2], dtype=x.dtype, device=x.device) if b is None
              else check_tensor(b, f"bias {l}", 2, x) for l, (w, b) in enumerate(zip(weights,
                                                                                     biases))]
    B, N, d_in = x.shape
    for l, (w, b) in enumerate(zip(weights, biases)):
        if w.shape[0] != B or tuple(b.shape) != tuple(w.shape[:2]):
            raise ValueError(f"layer {l}: weight {tuple(w.shape)} and bias {tuple(b.shape)} do "
                             f"not match {B} networks")
    if weights[0].shape[2] != d_in:
        raise ValueError(f"the first layer takes {weights[0].shape[2]} inputs, x has {d_in}")
    width, n_out = weights[0].shape[1], weights[-1].shape[1]
    if weights[-1].shape[2] != width:
        raise ValueError(f"the last layer takes {weights[-1].shape[2]} inputs, the hidden "
                         f"width is {width}")
    n_hidden = len(weights) - 2
    # The hidden layers in one tensor each (a few hundred KB: the copy is not the cost).
    wh = torch.stack(weights[1:-1], 1) if n_hidden else weights[0].new_empty(B, 0, width, width)
    bh = torch.stack(biases[1:-1], 1) if n_hidden else biases[0].new_empty(B, 0, width)
    out = new_empty(B, layout.rows, N, n_out, like=x)
    if N == 0:
        return out
    D = layout.n_grad
    omega_hidden = omegas[1] if n_hidden else 1.0
    _siren_network_fwd_kernel[lambda meta: (triton.cdiv(N, meta["BLOCK_N"]), B)](
        x, weights[0], biases[0], wh, bh, weights[-1], biases[-1], out,
        N, width, n_hidden, size_bucket(N), float(omegas[0]), float(omega_hidden),
        out.stride(0), out.stride(1),
        D_IN=d_in, D=D, HAS_LAP=layout.n_lap > 0, N_OUT=n_out,
        W_PAD=_w_pad(width), ACC_DTYPE=acc_dtype(x.dtype),
        INPUT_PRECISION=dot_precision(x.dtype, current_input_precision()),
        **COMPILE_OPTIONS,
    )
    return out
