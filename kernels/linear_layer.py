r"""The final linear layer on a stacked jet (no activation: every slab maps linearly)."""

from __future__ import annotations

import torch
from fastsiren.kernels._launch import (
    acc_torch_dtype,
    check_shape,
    check_tensor,
    check_weights,
)
from fastsiren.kernels.matmul import matmul

__all__ = ["linear_layer_bwd", "linear_layer_fwd"]


def linear_layer_fwd(stack: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Linear map of every slab; the bias only shifts the value slab (the first N rows)."""
    stack = check_tensor(stack, "input stack", 4)
    w, b = check_weights(w, b, stack, "linear layer")
    B, R, N, K = stack.shape
    if w.shape[2] != K:
        raise ValueError(f"linear layer weight takes {w.shape[2]} inputs, the stack has {K}")
    out = matmul(stack.view(B, R * N, K), w.transpose(1, 2), bias=b, bias_rows=N)
    return out.view(B, R, N, w.shape[1])


def linear_layer_bwd(
    grad_out: torch.Tensor,
    stack: torch.Tensor,
    w: torch.Tensor,
    need_input_grad: bool = True,
    has_bias: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """VJP of ``linear_layer_fwd``: (S̄ or None, W̄, b̄ or None)."""
    stack = check_tensor(stack, "input stack", 4)
    w, _ = check_weights(w, None, stack, "linear layer")
    B, R, N, K = stack.shape
    M = w.shape[1]
    grad_out = check_tensor(grad_out, "grad_out", 4, stack)
    check_shape(grad_out, "grad_out", (B, R, N, M))
    rows_bar = grad_out.view(B, R * N, M)
    gw = matmul(rows_bar.transpose(1, 2), stack.view(B, R * N, K), split=True)
    gb = grad_out[:, 0].sum(1, dtype=acc_torch_dtype(stack.dtype)).to(stack.dtype) \
        if has_bias else None
    gs = matmul(rows_bar, w).view(B, R, N, K) if need_input_grad else None
    return gs, gw, gb
