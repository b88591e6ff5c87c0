"""A trial of learned initialisation on the batched path: does a meta-learned start reach 30 dB on
held-out images in a third of the steps the standard SIREN init needs at its best learning rate?

    python bench/learned_init_trial.py [--size 32] [--outer-steps 150] [--json PATH]

Data: crops of the built-in photograph; training crops from its top half, held-out crops from
its bottom half (no pixel in both). Network 2 -> 64x3 -> 1, one network per image, all images
of a step in one ``BatchedSiren``-style batched jet (``fastsiren.modules.batched_siren_jet``).

Learned: an origin theta_0 (one network) and a per-parameter Adam step size s (same shape), so
that a fit is Adam with learning rate eta * s from theta_0. Meta-training, first order: each
outer step fits a batch of training crops for K Adam steps from theta_0 and takes

    d loss_K / d theta_0 ~= g_K,        d loss_K / d log s ~= g_K * (theta_K - theta_0)

(the adapted weights theta_K = theta_0 + s * U with the Adam directions U held fixed; g_K the
gradient of the crops' loss at theta_K), averaged over the crops, into an outer Adam step.

Reported: the mean PSNR of the held-out crops after 5, 10, 20, 50 and 100 Adam steps from the
standard init at each learning rate of ``--lrs`` and from the learned start at each step-size
multiplier of ``--etas``, and, for each, the first of those step counts at which the mean
reaches 30 dB.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastsiren.benchmark import machine_info
from fastsiren.io.image import read_image
from fastsiren.modules import Siren, batched_siren_jet
from fastsiren.tasks.common import pixel_grid, sample_image_path

STEPS_AT = (5, 10, 20, 50, 100)


def crops(n: int, size: int, half: str, seed: int) -> torch.Tensor:
    """n crops [n, size*size, 1] in [-1, 1] from the top or bottom half of the photograph."""
    photo = read_image(sample_image_path())[..., 0]
    rows = photo.shape[0] // 2
    rng = np.random.default_rng(seed)
    top = 0 if half == "top" else rows
    r = rng.integers(top, top + rows - size + 1, n)
    c = rng.integers(0, photo.shape[1] - size + 1, n)
    stack = np.stack([photo[i:i + size, j:j + size] for i, j in zip(r, c)])
    return torch.from_numpy(stack).reshape(n, -1, 1) * 2 - 1


def per_image_value(params, coords, omegas) -> torch.Tensor:
    n_layers = len(params) // 2
    return batched_siren_jet(coords, params[:n_layers], params[n_layers:], omegas,
                             order=0).value


def per_image_mse(params, coords, target, omegas) -> torch.Tensor:
    return (per_image_value(params, coords, omegas) - target).square().mean((1, 2))


def adam_fit(origin, step_size, coords, target, omegas, steps, record=STEPS_AT):
    """Adam (betas 0.9, 0.999) with per-element learning rates ``step_size`` from ``origin``
    for every image at once; returns the final weights and {step: mean held-out PSNR}."""
    batch = coords.shape[0]
    params = [t.unsqueeze(0).expand(batch, *t.shape).clone() for t in origin]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    curve = {}
    for t in range(1, steps + 1):
        params = [p.requires_grad_() for p in params]
        loss = per_image_mse(params, coords, target, omegas).sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for i, (p, g, lr) in enumerate(zip(params, grads, step_size)):
                m[i].mul_(0.9).add_(g, alpha=0.1)
                v[i].mul_(0.999).addcmul_(g, g, value=0.001)
                update = (m[i] / (1 - 0.9**t)) / ((v[i] / (1 - 0.999**t)).sqrt() + 1e-8)
                params[i] = p - lr * update
        if t in record:
            with torch.no_grad():
                value = ((per_image_value(params, coords, omegas) + 1) / 2).clamp(0, 1)
                mse = (value - (target + 1) / 2).square().mean((1, 2))
                curve[t] = float((10 * torch.log10(1 / mse.clamp_min(1e-20))).mean())
    return [p.detach() for p in params], curve


def meta_train(origin, omegas, train, args):
    origin = [t.clone().requires_grad_() for t in origin]
    log_step = [torch.full_like(t, math.log(args.initial_step)).requires_grad_()
                for t in origin]
    optimizer = torch.optim.Adam([{"params": origin, "lr": args.outer_lr},
                                  {"params": log_step, "lr": args.step_lr}])
    generator = torch.Generator().manual_seed(0)
    coords = pixel_grid(args.size, args.size).expand(args.meta_batch, -1, -1).contiguous()
    log = []
    for outer in range(args.outer_steps):
        target = train[torch.randint(0, len(train), (args.meta_batch,), generator=generator)]
        step_size = [s.detach().exp() for s in log_step]
        adapted, _ = adam_fit([t.detach() for t in origin], step_size, coords, target, omegas,
                              args.inner, record=())
        adapted = [p.requires_grad_() for p in adapted]
        loss = per_image_mse(adapted, coords, target, omegas)
        grads = torch.autograd.grad(loss.sum(), adapted)
        with torch.no_grad():
            for t, s, g, p in zip(origin, log_step, grads, adapted):
                t.grad = g.mean(0)
                s.grad = (g * (p - t)).mean(0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if outer % 25 == 0 or outer == args.outer_steps - 1:
            psnr = float((10 * torch.log10(4 / loss.detach())).mean())
            log.append({"outer_step": outer, f"train_psnr_after_{args.inner}": psnr})
            print(f"outer step {outer}: training crops after {args.inner} steps {psnr:.2f} dB",
                  flush=True)
    return [t.detach() for t in origin], [s.detach().exp() for s in log_step], log


def steps_to(curve: dict, target_db: float = 30.0):
    return next((step for step in STEPS_AT if curve[step] >= target_db), None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--held-out", type=int, default=24)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--outer-steps", type=int, default=150)
    parser.add_argument("--outer-lr", type=float, default=1e-5)
    parser.add_argument("--step-lr", type=float, default=2e-2)
    parser.add_argument("--initial-step", type=float, default=1e-3)
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    parser.add_argument("--etas", default="0.5,1,2")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    siren = Siren(2, args.width, 3, 1, outermost_linear=True)
    weights, biases, omegas = siren.layer_parameters()
    standard = [t.detach() for t in weights + biases]
    train = crops(args.train, args.size, "top", seed=1)
    held_out = crops(args.held_out, args.size, "bottom", seed=2)
    coords = pixel_grid(args.size, args.size).expand(args.held_out, -1, -1).contiguous()
    report = {"settings": vars(args) | {"json": str(args.json)}, "standard": {}, "learned": {}}
    for lr in args.lrs.split(","):
        _, curve = adam_fit(standard, [float(lr)] * len(standard), coords, held_out, omegas,
                            max(STEPS_AT))
        report["standard"][lr] = {"psnr": curve, "steps_to_30db": steps_to(curve)}
        print(f"standard init, lr {lr}: {curve}", flush=True)
    start = time.perf_counter()
    origin, step_size, log = meta_train(standard, omegas, train, args)
    report["meta_seconds"], report["meta_log"] = time.perf_counter() - start, log
    report["learned_step_size_mean_per_tensor"] = [float(s.mean()) for s in step_size]
    for eta in args.etas.split(","):
        _, curve = adam_fit(origin, [float(eta) * s for s in step_size], coords, held_out,
                            omegas, max(STEPS_AT))
        report["learned"][eta] = {"psnr": curve, "steps_to_30db": steps_to(curve)}
        print(f"learned start, step sizes x {eta}: {curve}", flush=True)
    text = json.dumps({"machine": machine_info(torch.device("cpu")), **report}, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
