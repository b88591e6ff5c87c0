"""Throughput of many-signal fitting: images per second to a target PSNR.

A dataset of small grayscale images (crops of the built-in photograph) is fitted three ways,
same architecture, initialisation (network b starts from the draw of a single fit with seed
``seed + b``), optimizer (Adam, one per network) and learning rate:

- ``loop``: one ``fs.Siren`` after another, each trained until it reaches the target;
- ``vmap``: what a PyTorch user writes for many networks: the reference SIREN's parameters
  stacked along a leading dimension, ``vmap(functional_call(...))`` for the loss of all images,
  autograd for the gradient;
- ``fastsiren``: ``BatchedSiren``'s jet (``batched_siren_jet``) on the stacked parameters: one
  batched call per group of networks per step.

Each fit checks every image's PSNR every ``check_every`` steps (from the step's own loss, values
unclipped, so the check costs no extra forward) and stops a network once it reaches
``target_psnr`` (the loop moves to the next image; the batched providers drop the network from
the batch, weights and Adam state, so a finished network costs nothing). Images per second is
images / seconds of training; the mean PSNR is each image's at its stop. The providers' fits run
interleaved, one optimizer step of each in turn (the order reversed every turn), each timed on
its own: a machine whose load changes during the measurement slows all of them alike. Each
provider's fastest of ``rounds`` such runs counts.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, vmap

from ..io.image import read_image
from ..modules import Siren, batched_siren_jet
from ..reference.siren import Siren as ReferenceSiren
from ..tasks.common import pixel_grid, psnr_tensor, sample_image_path
from .machine import machine_info

__all__ = ["PRESETS", "PROVIDERS", "ThroughputCase", "finish", "main", "markdown", "measure"]

PROVIDERS = ("loop", "vmap", "fastsiren")


@dataclass(frozen=True)
class ThroughputCase:
    """One dataset and fit: ``images`` crops of ``size`` px, 2 -> width x depth -> 1."""

    size: int
    images: int
    width: int = 64
    depth: int = 3
    lr: float = 1e-3
    target_psnr: float = 30.0
    max_steps: int = 500
    check_every: int = 5

    @property
    def label(self) -> str:
        return f"{self.images} x {self.size}px, 2->{self.width}x{self.depth}->1"


# CPU: datasets a two-core machine fits in about a minute per provider; GPU: large batches,
# where one small image leaves the device idle and batching pays most.
PRESETS: dict[str, list[ThroughputCase]] = {
    "cpu": [ThroughputCase(16, 128), ThroughputCase(64, 16), ThroughputCase(128, 4)],
    "gpu": [ThroughputCase(16, 4096), ThroughputCase(64, 1024), ThroughputCase(128, 256),
            ThroughputCase(256, 64, width=128)],
}


def crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """n random size x size crops of the built-in photograph: [n, size*size, 1] in [-1, 1]."""

    photo = read_image(sample_image_path())[..., 0]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, photo.shape[0] - size + 1, n)
    cols = rng.integers(0, photo.shape[1] - size + 1, n)
    stack = np.stack([photo[r:r + size, c:c + size] for r, c in zip(rows, cols)])
    return torch.from_numpy(stack).reshape(n, -1, 1) * 2 - 1


def initial_parameters(case: ThroughputCase, seed: int) -> tuple[list, list, list[float]]:
    """Stacked weights [B, out, in] and biases [B, out]: network b is ``fs.Siren``'s draw with
    seed ``seed + b``."""
    weights, biases = [], []
    for b in range(case.images):
        torch.manual_seed(seed + b)
        siren = Siren(2, case.width, case.depth, 1, outermost_linear=True)
        w, bias, omegas = siren.layer_parameters()
        weights.append([t.detach() for t in w])
        biases.append([t.detach() for t in bias])
    stack = [torch.stack(layer) for layer in zip(*weights)]
    return stack, [torch.stack(layer) for layer in zip(*biases)], list(omegas)


def _psnr(per_image_mse: torch.Tensor) -> torch.Tensor:
    """PSNR on [0, 1] from the mean squared error of values on [-1, 1] (peak-to-peak 2)."""
    return psnr_tensor(per_image_mse, peak=2.0)


class _StackedAdam:
    """torch.optim.Adam over stacked parameters that can drop networks (rows) mid-fit."""

    def __init__(self, params: list[torch.Tensor], lr: float):
        self.lr = lr
        self.params = [p.detach().clone().requires_grad_() for p in params]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the networks at ``rows``: their weights and Adam moments carry on as they were."""
        old_state = self.optimizer.state
        new_params = [p.detach()[rows].clone().requires_grad_() for p in self.params]
        optimizer = torch.optim.Adam(new_params, lr=self.lr)
        for old, new in zip(self.params, new_params):
            state = old_state.get(old)
            if state:
                optimizer.state[new] = {
                    "step": state["step"].clone(),
                    "exp_avg": state["exp_avg"][rows].clone(),
                    "exp_avg_sq": state["exp_avg_sq"][rows].clone(),
                }
        self.params, self.optimizer = new_params, optimizer

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def finish(fit: Iterator) -> tuple[np.ndarray, np.ndarray]:
    """Run a fit (a generator that yields after each optimizer step) to its end; its result."""
    while True:
        try:
            next(fit)
        except StopIteration as done:
            return done.value


def _fit_stacked(per_image_mse, params: list[torch.Tensor], coords: torch.Tensor,
                 target: torch.Tensor, case: ThroughputCase) -> Iterator:
    """Fit stacked networks until each reaches the target (or max_steps); finished networks
    leave the batch. ``per_image_mse(params, coords, target) -> [B]``. Yields after each step;
    returns each image's PSNR at its stop and the steps it took."""
    n = coords.shape[0]
    adam = _StackedAdam(params, case.lr)
    active = torch.arange(n, device=coords.device)
    final_psnr, steps = np.zeros(n), np.full(n, case.max_steps)
    for step in range(case.max_steps):
        mse = per_image_mse(adam.params, coords[active], target[active])
        adam.step(mse.sum())
        yield
        if step % case.check_every == 0:
            psnr = _psnr(mse.detach()).cpu()  # of the weights before this step
            done = psnr >= case.target_psnr
            if done.any():
                index = active.cpu()[done].numpy()
                final_psnr[index], steps[index] = psnr[done].numpy(), step
                keep = (~done).nonzero().squeeze(1).to(coords.device)
                if len(keep) == 0:
                    return final_psnr, steps
                active = active[keep]
                adam.keep(keep)
    final = _psnr(per_image_mse(adam.params, coords[active], target[active]).detach()).cpu()
    final_psnr[active.cpu().numpy()] = final.numpy()
    return final_psnr, steps


def _fastsiren_mse(omegas: list[float], backend: str):
    """BatchedSiren's jet (``batched_siren_jet``) on the stacked parameters."""

    def per_image_mse(params, coords, target):
        n_layers = len(params) // 2
        value = batched_siren_jet(coords, params[:n_layers], params[n_layers:], omegas,
                                  order=0, backend=backend).value
        return (value - target).square().mean((1, 2))

    return per_image_mse


def _vmap_mse(case: ThroughputCase):
    """The torch.func peer: the reference SIREN as a stateless module, vmapped over stacked
    parameters; autograd differentiates it."""
    skeleton = copy.deepcopy(ReferenceSiren(2, case.width, case.depth, 1,
                                            outermost_linear=True)).to("meta")
    names = [name for name, _ in skeleton.named_parameters()]  # weight, bias per layer

    def one_image(params, coords, target):
        return (functional_call(skeleton, params, (coords,)) - target).square().mean()

    batched = vmap(one_image)

    def per_image_mse(params, coords, target):
        n_layers = len(params) // 2
        ordered = [t for pair in zip(params[:n_layers], params[n_layers:]) for t in pair]
        return batched(dict(zip(names, ordered)), coords, target)

    return per_image_mse


def _fit_loop(params: list[torch.Tensor], coords: torch.Tensor, target: torch.Tensor,
              case: ThroughputCase, backend: str) -> Iterator:
    """One ``fs.Siren`` and one Adam per image, one image after another; yields after each
    step."""
    n_layers = len(params) // 2
    final_psnr, steps = np.zeros(coords.shape[0]), np.full(coords.shape[0], case.max_steps)
    for b in range(coords.shape[0]):
        model = Siren(2, case.width, case.depth, 1, outermost_linear=True, backend=backend)
        model = model.to(coords.device, coords.dtype)
        weights, biases, _ = model.layer_parameters()
        with torch.no_grad():
            for l in range(n_layers):
                weights[l].copy_(params[l][b])
                biases[l].copy_(params[n_layers + l][b])
        optimizer = torch.optim.Adam(model.parameters(), lr=case.lr)
        for step in range(case.max_steps):
            mse = (model.jet(coords[b], order=0).value - target[b]).square().mean()
            optimizer.zero_grad(set_to_none=True)
            mse.backward()
            optimizer.step()
            yield
            if step % case.check_every == 0:
                psnr = float(_psnr(mse.detach()))
                if psnr >= case.target_psnr:
                    final_psnr[b], steps[b] = psnr, step
                    break
        else:
            final_psnr[b] = float(_psnr((model.jet(coords[b], order=0).value - target[b])
                                        .square().mean().detach()))
    return final_psnr, steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(case: ThroughputCase, providers=PROVIDERS, device: torch.device | str = "cpu",
            rounds: int = 2, seed: int = 0, backend: str = "auto") -> dict:
    """Images per second to ``case.target_psnr`` and the PSNRs reached, per provider: their
    fits interleaved step by step, each step timed apart; each provider's fastest round counts."""
    device = torch.device(device)
    target = crops(case.images, case.size, seed).to(device)
    coords = pixel_grid(case.size, case.size, device=device).expand(case.images, -1, -1)
    coords = coords.contiguous()
    weights, biases, omegas = initial_parameters(case, seed)
    params = [t.to(device) for t in weights + biases]
    fits = {
        "loop": lambda: _fit_loop(params, coords, target, case, backend),
        "vmap": lambda: _fit_stacked(_vmap_mse(case), params, coords, target, case),
        "fastsiren": lambda: _fit_stacked(_fastsiren_mse(omegas, backend), params, coords,
                                          target, case),
    }
    results: dict[str, dict] = {}
    for _ in range(rounds):
        running = {name: fits[name]() for name in providers}
        seconds = dict.fromkeys(providers, 0.0)
        turn = 0
        while running:
            order = list(running) if turn % 2 == 0 else list(reversed(running))
            turn += 1
            for name in order:
                _sync(device)
                start = time.perf_counter()
                try:
                    next(running[name])
                    _sync(device)
                    seconds[name] += time.perf_counter() - start
                    continue
                except StopIteration as done:
                    seconds[name] += time.perf_counter() - start
                    psnr, steps = done.value
                del running[name]
                if name not in results or seconds[name] < results[name]["seconds"]:
                    results[name] = {
                        "seconds": seconds[name],
                        "images_per_second": case.images / seconds[name],
                        "mean_psnr": float(np.mean(psnr)), "min_psnr": float(np.min(psnr)),
                        "mean_steps": float(np.mean(steps)), "max_steps": int(np.max(steps)),
                        "reached": int(np.sum(psnr >= case.target_psnr)),
                    }
    return {"case": asdict(case), "label": case.label,
            "providers": {name: results[name] for name in providers}}


def markdown(results: list[dict]) -> str:
    """One table: images per second (and the speed-up over the loop), mean PSNR, mean steps."""
    lines = ["| dataset | provider | images/s | vs loop | mean PSNR (dB) | mean steps |",
             "|---|---|---:|---:|---:|---:|"]
    for result in results:
        rows = result["providers"]
        loop = rows.get("loop", {}).get("images_per_second")
        for name, row in rows.items():
            ratio = f"{row['images_per_second'] / loop:.2f}x" if loop else "-"
            lines.append(f"| {result['label']} | {name} | {row['images_per_second']:.3g} | "
                         f"{ratio} | {row['mean_psnr']:.1f} | {row['mean_steps']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:

    parser = argparse.ArgumentParser(
        prog="python -m fastsiren.benchmark.throughput",
        description="Images per second to a target PSNR: one-at-a-time loop, torch.func vmap "
                    "peer and fastsiren's batched fit, side by side.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="the cases of a preset (default: cpu, or gpu on CUDA)")
    parser.add_argument("--size", type=int, help="one case: image size in pixels")
    parser.add_argument("--images", type=int, help="one case: number of images")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--target-psnr", type=float, default=30.0)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    providers = tuple(args.providers.split(","))
    unknown = sorted(set(providers) - set(PROVIDERS))
    if unknown:
        parser.error(f"--providers: unknown {unknown}; expected some of {PROVIDERS}")
    if (args.size is None) != (args.images is None):
        parser.error("--size and --images go together (one case)")
    if args.size is not None:
        cases = [ThroughputCase(args.size, args.images, args.width, lr=args.lr,
                                target_psnr=args.target_psnr, max_steps=args.max_steps)]
    else:
        preset = args.preset or ("gpu" if args.device == "cuda" else "cpu")
        cases = PRESETS[preset]
    device = torch.device(args.device)
    results = []
    for case in cases:
        results.append(measure(case, providers, device, rounds=args.rounds))
        print(markdown(results[-1:]), flush=True)
    doc = {"machine": machine_info(device), "threads": torch.get_num_threads(),
           "results": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
