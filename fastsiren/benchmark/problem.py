"""The inputs of one case, shared by every provider, and the workloads' outputs and losses."""

from __future__ import annotations

import torch

from .. import reference
from .cases import DEPTH, OMEGA, OUT_FEATURES, Case, Workload


class Problem:
    """Coordinates, weights (the same tensors for every provider) and loss targets of a case.

    Unbatched cases build a ``reference.Siren`` and use its parameters directly, so the module
    path (eager autograd, torch.compile of the reference) and the functional paths see the very
    same tensors. Batched cases stack B reference SIRENs' weights into [B, out, in].
    """

    def __init__(self, case: Case, device: torch.device, dtype=torch.float32, seed: int = 0,
                 precision: str = "fp32"):
        self.case, self.spec = case, case.spec
        self.precision = precision  # "fp32" or "tf32": the matmul precision of this run
        d, width = case.d, case.width
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets = [
                reference.Siren(d, width, DEPTH, OUT_FEATURES, outermost_linear=True,
                                first_omega_0=OMEGA, hidden_omega_0=OMEGA)
                for _ in range(case.batch if self.spec.batched else 1)
            ]
            gen = torch.Generator().manual_seed(seed + 1)
            lead = (case.batch, case.n) if self.spec.batched else (case.n,)
            x = torch.rand(*lead, d, generator=gen) * 2 - 1
            target = torch.randn(*lead, OUT_FEATURES, generator=gen)
        self.omegas = tuple(nets[0].parameters_by_layer()[2])
        train = self.spec.train
        if self.spec.batched:
            self.model = None
            per_net = [net.parameters_by_layer() for net in nets]
            n_layers = len(self.omegas)
            self.weights = [
                torch.stack([p[0][l].detach() for p in per_net]).to(device, dtype)
                .requires_grad_(train) for l in range(n_layers)
            ]
            self.biases = [
                torch.stack([p[1][l].detach() for p in per_net]).to(device, dtype)
                .requires_grad_(train) for l in range(n_layers)
            ]
        else:
            self.model = nets[0].to(device, dtype)
            self.model.requires_grad_(train)
            self.weights, self.biases, _ = self.model.parameters_by_layer()
        self.x = x.to(device, dtype)
        # Laplacians of a width-W SIREN are O(omega^2); scale the target so the loss is not
        # dominated by it (the timing does not care, the gradient check's conditioning does).
        self.target = target.to(device, dtype) * (OMEGA**2 if self.spec.loss == "lap" else 1.0)

    @property
    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]


def jet_dict(jet, spec: Workload) -> dict[str, torch.Tensor]:
    """The outputs a workload compares: value, grad [.., N, out, d], lap, hess_diag."""
    out = {"value": jet.value}
    if spec.order >= 1:
        out["grad"] = jet.grad
    if spec.order == 2:
        out["lap"] = jet.lap
        if spec.hessian_diag:
            out["hess_diag"] = jet.hess_diag
    return out


def workload_loss(spec: Workload, outs: dict[str, torch.Tensor], target: torch.Tensor):
    """The training losses: value regression, eikonal |grad| = 1, Laplacian regression."""
    if spec.loss == "value":
        return ((outs["value"] - target) ** 2).mean()
    if spec.loss == "grad":
        return ((outs["grad"].norm(dim=-1) - 1) ** 2).mean()
    if spec.loss == "lap":
        return ((outs["lap"] - target) ** 2).mean()
    raise ValueError(f"workload has no loss: {spec.loss!r}")
