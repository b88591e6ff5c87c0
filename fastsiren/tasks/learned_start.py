"""Learned initialisations: what ``fastsiren fit init`` learns and ``fit image --init`` uses.

A learned start (``fastsiren.modules.LearnedStart``) is a starting network theta_0 and a positive
step size s per weight. A fit from it takes K = ``inner_steps`` plain gradient steps with those
step sizes, then continues with Adam:

    theta_{k+1} = theta_k - s * grad L(theta_k)     for k < K  (s elementwise)
    theta_{k+1} = Adam(theta_k, lr)                  afterwards (moments from step K + 1 on)

(``LearnedStepsThenAdam``). Meta-training (Meta-SGD: MAML with learned per-parameter inner step
sizes, second order) minimises the images' loss after the K steps, L(theta_K), over theta_0 and
s, differentiating through the K steps, second derivatives included: ``adapted_values`` runs them
on a plain-torch batched SIREN (``fastsiren.reference.siren_forward``) with
``create_graph=True``, because the engine's hand-derived backward has no second derivative. The
learned start is only weights, so the fits that use it run on the engine's batched path.

``read_learned_start`` reads an init run back, with its Adam rate after the K steps: the rate of
``CURVE_LRS`` whose held-out curve (``held_out_curves``, measured at the end of the init run)
reached ``TARGET_DB`` first (``best_rate``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..errors import InputError
from ..modules import BatchedSiren, LearnedStart, Siren
from ..reference import siren_forward
from .common import psnr_tensor

__all__ = [
    "CURVE_LRS", "CURVE_STEPS", "INIT_TASK", "LearnedStepsThenAdam", "StartRecord", "TARGET_DB",
    "adapted_values", "best_rate", "check_start", "fit_optimizer", "held_out_curves",
    "initial_model", "read_learned_start", "settings_from_start", "stacked_values", "steps_to",
]

INIT_TASK = "init"  # the task name of an init run
# Adam rates tried on the held-out images, from the standard init and after the learned steps.
CURVE_LRS = (1e-4, 3e-4, 1e-3, 3e-3)
# The PSNR (dB) whose first step ranks the Adam rates of the held-out curves.
TARGET_DB = 30.0
# Steps at which the held-out curves are reported.
CURVE_STEPS = (1, 2, 3, 5, 10, 20, 50, 100)


# -- meta-training: the K steps, differentiable twice ----------------------------------------------
def stacked_values(params: list[torch.Tensor], coords: torch.Tensor, omegas: list[float],
                   outermost_linear: bool = True) -> torch.Tensor:
    """B SIRENs at once in plain torch (the reference's ``siren_forward``, which autograd can
    differentiate twice): params = weights [B, out, in] of every layer, then the biases
    [B, out]; coords [B, N, d] -> values [B, N, out]."""
    n_layers = len(params) // 2
    return siren_forward(coords, params[:n_layers], params[n_layers:], omegas, outermost_linear)


def adapted_values(start: LearnedStart, coords: torch.Tensor, target: torch.Tensor,
                   create_graph: bool = True) -> torch.Tensor:
    """The values [B, N, C] of B networks after the start's K learned steps, each on its own
    image (coords [B, N, d], target [B, N, C]; the loss of image b is its mean squared error).
    With ``create_graph`` the result is differentiable in the start and its step sizes,
    through the K steps."""
    _, _, omegas = start.siren.layer_parameters()
    batch = coords.shape[0]
    linear = start.siren.outermost_linear
    with torch.enable_grad():  # the inner steps need gradients, even under no_grad
        params = [p.unsqueeze(0).expand(batch, *p.shape) for p in start.start_parameters()]
        if not create_graph:
            params = [p.detach().requires_grad_() for p in params]
        step_sizes = start.step_sizes()
        for _ in range(start.inner_steps):
            values = stacked_values(params, coords, omegas, linear)
            loss = (values - target).square().mean((1, 2)).sum()
            grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            params = [p - s * g for p, s, g in zip(params, step_sizes, grads)]
            if not create_graph:
                params = [p.detach().requires_grad_() for p in params]
    return stacked_values(params, coords, omegas, linear)


# -- fitting from a learned start ----------------------------------------------------------------
class LearnedStepsThenAdam(torch.optim.Optimizer):
    """Per-element gradient steps p <- p - s * grad for the first ``learned_steps`` steps, then
    Adam (``lr``, ``betas``, ``eps``; bias correction counted from the first Adam step).

    ``step_sizes``: one tensor per parameter, broadcastable to it (a ``LearnedStart``'s step
    sizes fit a ``Siren``'s parameters and every network of a ``BatchedSiren``'s). They are kept
    in the optimizer's state, so a checkpoint holds them.
    """

    def __init__(self, params, step_sizes: list[torch.Tensor], learned_steps: int, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        params = list(params)
        if len(params) != len(step_sizes):
            raise ValueError(f"{len(step_sizes)} step sizes for {len(params)} parameters")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "learned_steps": learned_steps})
        for p, size in zip(params, step_sizes):
            self.state[p]["step_size"] = size.detach().to(p.device, p.dtype).clone()
            self.state[p]["step"] = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                adam_step = state["step"] - group["learned_steps"]
                if adam_step <= 0:
                    p.sub_(state["step_size"] * p.grad)
                    continue
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (v / (1 - beta2**adam_step)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1**adam_step))
        return loss


@dataclass(frozen=True)
class StartRecord:
    """An init run read back: its learned start, and the Adam rate that was best after the
    learned steps on its held-out images."""

    start: LearnedStart
    adam_lr: float
    run: Path

    @property
    def architecture(self) -> dict[str, Any]:
        return self.start.kwargs

    def check_matches(self, model_kwargs: dict[str, Any]) -> None:
        """An InputError naming the difference when a fit's ``Siren`` arguments are not the
        start's (channels, width, depth, frequencies)."""
        differ = [f"{name} {model_kwargs.get(name)!r} (the start has {value!r})"
                  for name, value in self.architecture.items()
                  if model_kwargs.get(name) != value]
        if differ:
            raise InputError(f"--init {self.run}: the learned start is for another network: "
                             + "; ".join(differ))

    def siren(self) -> Siren:
        """A copy of the starting network."""
        model = Siren(**self.architecture)
        model.load_state_dict(self.start.siren.state_dict())
        return model

    def batched(self, n_networks: int) -> BatchedSiren:
        """``n_networks`` copies of the starting network as one ``BatchedSiren``."""
        return BatchedSiren.from_sirens([self.siren()] * n_networks)


def read_learned_start(run: str | Path) -> StartRecord:
    """The learned start of a finished ``fastsiren fit init`` run (its folder or checkpoint);
    a one-line InputError for anything else."""
    run = Path(run)
    state = load_checkpoint(run)
    if state.get("task") != INIT_TASK or state.get("model_class") != "LearnedStart":
        raise InputError(f"--init {run}: a run of task {state.get('task')!r}, not a learned "
                         f"initialisation (expected a run of `fastsiren fit {INIT_TASK}`)")
    metrics_file = (run if run.is_dir() else run.parent) / "metrics.json"
    try:
        adam_lr = float(json.loads(metrics_file.read_text())["metrics"]["adam_lr"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"--init {run}: the init run has not finished (no held-out curve in "
                         f"{metrics_file}); let it finish or resume it") from None
    start = LearnedStart(**state["model_kwargs"])
    start.load_state_dict(state["model"])
    return StartRecord(start.eval(), adam_lr, run)


# -- the hooks of the image tasks (--init RUN) ----------------------------------------------------
def settings_from_start(run: str | Path, lr: float | None, width: int | None) -> dict[str, Any]:
    """What ``--init RUN`` fills in before a fit: ``init_steps``, the steps taken with the learned
    step sizes (the start's K; none when ``lr`` is given: Adam at ``lr`` from the start), the
    Adam rate the init run measured best after them (when ``lr`` is None) and the start's width
    (when ``width`` is None)."""
    record = read_learned_start(run)
    changes: dict[str, Any] = {"init_steps": record.start.inner_steps if lr is None else 0}
    if lr is None:
        changes["lr"] = record.adam_lr
    if width is None:
        changes["width"] = record.architecture["hidden_features"]
    return changes


def check_start(settings, siren_kwargs: dict[str, Any]) -> None:
    """With ``settings.init``: an InputError, before any work, when the fit's ``Siren``
    arguments are not the learned start's."""
    if settings.init is not None:
        read_learned_start(settings.init).check_matches(siren_kwargs)


def initial_model(settings, siren_kwargs: dict[str, Any], n_networks: int | None = None
                  ) -> Siren | BatchedSiren:
    """The start of ``settings.init`` as the fit's model: a ``Siren``, or ``n_networks`` copies
    as one ``BatchedSiren``; an InputError when the fit's network is not the start's."""
    record = read_learned_start(settings.init)
    record.check_matches(siren_kwargs)
    model = record.siren() if n_networks is None else record.batched(n_networks)
    model.compile_chunks = settings.compile_chunks
    return model.to(backend=settings.backend)


def fit_optimizer(settings, model: Siren | BatchedSiren) -> torch.optim.Optimizer:
    """Adam at ``settings.lr``; from a learned start (``settings.init``), its
    ``settings.init_steps`` learned steps first (``LearnedStepsThenAdam``)."""
    if settings.init is None or not settings.init_steps:
        return torch.optim.Adam(model.parameters(), lr=settings.lr)
    start = read_learned_start(settings.init).start
    return LearnedStepsThenAdam(_weights_then_biases(model), _step_sizes(start),
                                settings.init_steps, settings.lr)


# -- held-out curves -----------------------------------------------------------------------------
def _fit_curve(model: BatchedSiren, optimizer: torch.optim.Optimizer, coords: torch.Tensor,
               target: torch.Tensor, steps: int) -> dict[int, float]:
    """Fit every network of ``model`` to its image for ``steps`` steps; {k: the images' mean
    PSNR after k steps} for k = 0 ... steps (on [0, 1], values clipped; the PSNR after k steps
    is read from the forward of step k + 1, so the curve costs one extra forward)."""

    def mean_psnr(value: torch.Tensor) -> float:
        error = (value.detach().clamp(-1, 1) - target).square().mean((1, 2))
        return float(psnr_tensor(error, peak=2.0).mean())

    curve = {}
    for step in range(steps):
        value = model.jet(coords, order=0).value
        curve[step] = mean_psnr(value)
        if not math.isfinite(curve[step]):
            return curve
        loss = (value - target).square().mean((1, 2)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        curve[steps] = mean_psnr(model.jet(coords, order=0).value)
    return curve


def held_out_curves(start: LearnedStart, coords: torch.Tensor, target: torch.Tensor,
                    steps: int, seed: int = 0, lrs: tuple[float, ...] = CURVE_LRS,
                    backend: str = "auto") -> dict[str, Any]:
    """Held-out PSNR against fit steps, learned start against the standard SIREN init, each at
    every Adam rate of ``lrs`` (the learned one after its learned steps), on the engine's
    batched path. Returns {"standard": {lr: curve}, "learned": {lr: curve}, "best_standard_lr",
    "best_learned_lr"}, a curve being {k: mean PSNR after k steps} for k = 0 ... ``steps``; the
    best rate is the one that reaches ``TARGET_DB`` first (``best_rate``)."""
    batch = coords.shape[0]
    kwargs = start.kwargs
    curves: dict[str, Any] = {"standard": {}, "learned": {}}
    for lr in lrs:
        torch.manual_seed(seed)  # every network the draw of a single fit with this seed
        standard = BatchedSiren.from_sirens([Siren(**kwargs)] * batch).to(
            coords.device, backend=backend)
        curves["standard"][lr] = _fit_curve(
            standard, torch.optim.Adam(standard.parameters(), lr=lr), coords, target, steps)
        learned = BatchedSiren.from_sirens([_copy(start)] * batch).to(coords.device,
                                                                      backend=backend)
        optimizer = LearnedStepsThenAdam(_weights_then_biases(learned), _step_sizes(start),
                                         start.inner_steps, lr)
        curves["learned"][lr] = _fit_curve(learned, optimizer, coords, target, steps)
    for kind in ("standard", "learned"):
        curves[f"best_{kind}_lr"] = best_rate(curves[kind], steps)
    return curves


def best_rate(curves: dict, steps: int, target_db: float = TARGET_DB):
    """The key (rate) of ``curves`` ({rate: {k: PSNR after k steps}}) whose curve reaches
    ``target_db`` first; among ties, or when none reaches it, the one with the highest mean PSNR
    at ``CURVE_STEPS`` up to ``steps`` (a diverged curve ranks last)."""
    def rank(rate):
        reach = steps_to(curves[rate], target_db)
        return (math.inf if reach is None else reach, -_curve_score(curves[rate], steps))
    return min(curves, key=rank)


def steps_to(curve: dict[int, float], target_db: float) -> int | None:
    """The first recorded step at which ``curve`` reaches ``target_db`` (None: never)."""
    return next((step for step, db in sorted(curve.items()) if db >= target_db), None)


def _curve_score(curve: dict[int, float], steps: int) -> float:
    values = [curve.get(step, -math.inf) for step in CURVE_STEPS if step <= steps]
    return sum(values) / len(values) if values and all(map(math.isfinite, values)) else -math.inf


def _copy(start: LearnedStart) -> Siren:
    model = Siren(**start.kwargs)
    model.load_state_dict(start.siren.state_dict())
    return model


def _step_sizes(start: LearnedStart) -> list[torch.Tensor]:
    return [s.detach() for s in start.step_sizes()]


def _weights_then_biases(model: Siren | BatchedSiren) -> list[torch.Tensor]:
    """The parameters of a fit in the order of ``LearnedStart.start_parameters`` (and of its
    step sizes): every layer's weights, then every layer's biases."""
    if isinstance(model, BatchedSiren):
        return [*model.weights, *model.biases]
    weights, biases, _ = model.layer_parameters()
    return weights + biases
