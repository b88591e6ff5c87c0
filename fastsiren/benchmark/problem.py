"""The inputs of one case, shared by every provider, and the workloads' outputs and losses."""

from __future__ import annotations

import torch

from .. import physics, reference
from ..jet import Jet
from .cases import DEPTH, OMEGA, Case, Workload


class Problem:
    """Coordinates, weights (the same tensors for every provider) and loss targets of a case.

    Unbatched cases build a ``reference.Siren`` and use its parameters directly, so the module
    path (eager autograd, torch.compile of the reference) and the functional paths see the very
    same tensors. Batched cases stack B reference SIRENs' weights into [B, out, in].
    The Helmholtz step's target is its batch (``helmholtz_batch``) instead of random values.
    """

    def __init__(self, case: Case, device: torch.device, dtype=torch.float32, seed: int = 0,
                 precision: str = "fp32"):
        self.case, self.spec = case, case.spec
        self.precision = precision  # "fp32" or "tf32": the matmul precision of this run
        d, width = case.d, case.width
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets = [
                reference.Siren(d, width, DEPTH, self.spec.out_features, outermost_linear=True,
                                first_omega_0=OMEGA, hidden_omega_0=OMEGA)
                for _ in range(case.batch if self.spec.batched else 1)
            ]
            gen = torch.Generator().manual_seed(seed + 1)
            lead = (case.batch, case.n) if self.spec.batched else (case.n,)
            x = torch.rand(*lead, d, generator=gen) * 2 - 1
            target = torch.randn(*lead, self.spec.out_features, generator=gen)
            if self.spec.loss == "helmholtz":
                x, target = helmholtz_batch(case.n, gen)
        self.omegas = tuple(nets[0].layer_parameters()[2])
        train = self.spec.train
        if self.spec.batched:
            self.model = None
            per_net = [net.layer_parameters() for net in nets]
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
            self.weights, self.biases, _ = self.model.layer_parameters()
        self.x = x.to(device, dtype)
        if self.spec.loss == "helmholtz":
            self.target = {name: t.to(device) for name, t in target.items()}
            return
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
    if spec.loss == "helmholtz":
        jet = Jet(outs["value"], outs["grad"], outs.get("lap"), outs["hess_diag"])
        residual = physics.helmholtz_residual(
            jet, target["coords"], physics.HELMHOLTZ_WAVENUMBER, target["slowness2"],
            physics.Pml(),
        )
        terms = physics.helmholtz_loss(residual, target["source"])
        return terms["source"] + terms["pde"]
    raise ValueError(f"workload has no loss: {spec.loss!r}")


def helmholtz_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """The Helmholtz task's batch for n points (uniform medium, source at the origin):
    coordinates [n, 2] and the loss's inputs. The official batch draws 100 of its 52900 points
    near the source; a small benchmark batch draws n // 8 of them (at least one)."""
    n_source = max(1, min(physics.HELMHOLTZ_SOURCE_POINTS, n // 8))
    xy = physics.sample_helmholtz_points(n, (0.0, 0.0), generator, n_source)
    source = physics.HELMHOLTZ_AMPLITUDE * physics.gaussian_source(
        xy, (0.0, 0.0), physics.HELMHOLTZ_SIGMA
    )
    return xy, {"coords": xy, "source": source, "slowness2": torch.ones(n)}
