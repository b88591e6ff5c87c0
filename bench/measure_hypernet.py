"""Hypernetwork measurements: the batched call against a per-image loop, and the two head types.

    python bench/measure_hypernet.py [--device cpu|cuda] [--batch 16] [--json out.json]

1. The B predicted SIRENs (2 -> 256x3 -> 3 on a 32x32 grid) as ONE ``siren_jet`` call with
   W [B, M, K] against B calls with one image's weights each, forward + backward to the
   predicted parameters (what a training step does with them); same engine, same backend.
2. Per head type (official, lowrank) with the set encoder: parameters, the Adam state, one
   training step's time (encoder, heads, batched SIRENs, loss, backward, Adam) and its peak
   memory above the model and optimizer (``fastsiren.benchmark.measure.peak_memory_bytes``).
Median wall times after warm-up (CUDA-synchronised on a GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import fastsiren as fs
from fastsiren.benchmark.measure import peak_memory_bytes
from fastsiren.hypernet import NeuralProcessHypernet, hypernetwork_loss
from fastsiren.hypernet.data import sample_context, train_counts
from fastsiren.tasks.common import pixel_grid


def median_ms(fn, device, reps=7, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def batched_vs_loop(batch, device, resolution=32):
    gen = torch.Generator().manual_seed(0)
    model = NeuralProcessHypernet(3, (resolution, resolution), heads="official").to(device)
    coords = pixel_grid(resolution, resolution).to(device)
    with torch.no_grad():
        latent = torch.randn(batch, 256, generator=gen).to(device) * 0.1
        params = {k: v.detach().requires_grad_() for k, v in
                  model.predict_parameters(latent).items()}
    weights, biases, omegas = model.spec.layer_parameters(params)
    target = torch.rand(batch, coords.shape[0], 3, generator=gen).to(device)

    def batched():
        value = fs.siren_jet(coords, weights, biases, omegas, order=0).value
        (value - target).square().mean().backward()

    def loop():
        total = 0
        for i in range(batch):
            value = fs.siren_jet(coords, [w[i] for w in weights], [b[i] for b in biases],
                                 omegas, order=0).value
            total = total + (value - target[i]).square().mean()
        (total / batch).backward()

    t_batched, t_loop = median_ms(batched, device), median_ms(loop, device)
    return {"batch": batch, "grid": f"{resolution}x{resolution}", "siren": "2->256x3->3",
            "batched_ms": t_batched, "loop_ms": t_loop, "speedup": t_loop / t_batched}


def head_type(heads, batch, device, encoder="set", resolution=32):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = NeuralProcessHypernet(3, (resolution, resolution), encoder=encoder,
                                  heads=heads).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)
    coords = pixel_grid(resolution, resolution).to(device)
    pixels = (torch.rand(batch, coords.shape[0], 3, generator=gen) * 2 - 1).to(device)
    context = sample_context(batch, coords.shape[0], train_counts(batch, gen), gen, device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        terms = hypernetwork_loss(model(pixels, coords, context), pixels)
        terms["loss"].backward()
        optimizer.step()

    step()  # creates Adam's state
    n_params = sum(p.numel() for p in model.parameters())
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                      for t in s.values() if torch.is_tensor(t))
    peak, _ = peak_memory_bytes(step, device)
    return {"heads": heads, "encoder": encoder, "batch": batch, "parameters": n_params,
            "hypernet_parameters": sum(p.numel() for p in model.hypernet.parameters()),
            "model_mib": n_params * 4 / 2**20, "adam_state_mib": state_bytes / 2**20,
            "step_ms": median_ms(step, device, reps=5), "step_peak_mib": peak / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    results = {
        "machine": {"device": name or platform.machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "batched_vs_loop": batched_vs_loop(args.batch, device),
        "heads": [head_type(h, args.batch, device) for h in ("official", "lowrank")],
    }
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
