"""The error of the Triton kernels' fp32 matmul modes on SIREN jets, emulated on the CPU.

On a GPU, fp32 ``tl.dot`` runs as "ieee" (fp32 FMAs), "tf32x3" or "tf32" (``fastsiren.kernels
.precision``). This script puts numbers on the difference without a GPU: it runs the torch
backend's jets (the executable specification the kernels match) with every GEMM the kernels do
on tensor cores replaced by a bit-level emulation of that mode, and compares value, gradient,
Laplacian and the parameter gradients of a training step with the float64 jets of the same
weights. The GPU run (tier c, ``test_gpu_precision``) measures the real thing.

The emulation (``emulated_matmul``), after Triton's lowering of ``input_precision``:

- tf32: the MMA reads the top 19 bits of each fp32 operand (the low 13 mantissa bits are
  ignored: truncation);
- tf32x3: a_big = round-to-nearest-away tf32(a) (``cvt.rna.tf32.f32``), a_small = a - a_big
  (then truncated by the MMA like any operand), the same for b, and per K tile
  small = a_small b_big + a_big b_small, then the big product a_big b_big on top;
- the MMA: products exact, each K = 8 step summed exactly and rounded once into the fp32
  accumulator (round to nearest; ``--rounding rz`` rounds toward zero instead, the pessimistic
  model of the tensor cores' accumulator).

Only the GEMMs the kernels give to ``tl.dot`` are emulated: both matmul dimensions >= 16
(hidden layers forward and backward); the first layer (few inputs: FMAs) and a final layer
with few outputs (a reduction) stay fp32, as on the GPU. "ieee" is plain fp32 torch.

    python bench/measure_input_precision.py [--n 8192] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

TF32_DROPPED_BITS = 13  # fp32 has 23 mantissa bits, tf32 10
TF32_MASK = ~((1 << TF32_DROPPED_BITS) - 1)
MMA_K = 8  # one tf32 MMA step sums 8 products
K_TILE = 32  # the kernels' BLOCK_K: tf32x3 splits per K tile


def tf32_truncate(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> fp32 with the low 13 mantissa bits cleared (what the MMA reads)."""
    return (x.float().view(torch.int32) & TF32_MASK).view(torch.float32)


def tf32_round(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> the nearest tf32 value, ties away from zero (``cvt.rna.tf32.f32``); inf and nan
    pass through."""
    bits = x.float().view(torch.int32)
    half = 1 << (TF32_DROPPED_BITS - 1)
    # Adding half an ulp to the magnitude bits rounds ties away (the sign bit is separate);
    # a carry into the exponent is the correct next binade.
    rounded = ((bits + half) & TF32_MASK).view(torch.float32)
    return torch.where(torch.isfinite(x), rounded, x.float())


def _to_fp32(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """float64 -> float32, to nearest or toward zero."""
    near = x.float()
    if rounding == "rn":
        return near
    over = near.double().abs() > x.abs()
    toward_zero = torch.nextafter(near, torch.zeros_like(near))
    return torch.where(over, toward_zero, near)


def _mma(a: torch.Tensor, b: torch.Tensor, acc: torch.Tensor, rounding: str) -> torch.Tensor:
    """acc + a b in K = 8 steps: each step's 8 products summed exactly, rounded once into acc.
    a [P, K] and b [K, M] hold tf32 values (their products are exact in float64)."""
    for k0 in range(0, a.shape[1], MMA_K):
        step = a[:, k0:k0 + MMA_K].double() @ b[k0:k0 + MMA_K].double()
        acc = _to_fp32(acc.double() + step, rounding)
    return acc


def emulated_matmul(a: torch.Tensor, b: torch.Tensor, mode: str, rounding: str = "rn"):
    """a [P, K] @ b [K, M] in fp32 as ``tl.dot(input_precision=mode)`` computes it."""
    a, b = a.float(), b.float()
    acc = torch.zeros(a.shape[0], b.shape[1], dtype=torch.float32)
    if mode == "tf32":
        return _mma(tf32_truncate(a), tf32_truncate(b), acc, rounding)
    if mode != "tf32x3":
        raise ValueError(f"mode must be tf32 or tf32x3, got {mode!r}")
    a_big, b_big = tf32_round(a), tf32_round(b)
    a_small, b_small = tf32_truncate(a - a_big), tf32_truncate(b - b_big)
    for k0 in range(0, a.shape[1], K_TILE):
        k = slice(k0, k0 + K_TILE)
        small = _mma(a_small[:, k], b_big[k], torch.zeros_like(acc), rounding)
        small = _mma(a_big[:, k], b_small[k], small, rounding)
        acc = _mma(a_big[:, k], b_big[k], _to_fp32(acc.double() + small.double(), rounding),
                   rounding)
    return acc


# ----------------------------------------------------------------------------- measurement


def _swapped_rows_matmul(mode: str, rounding: str):
    """A stand-in for ``fastsiren.sine_jet.rows_matmul`` ([B, P, K] @ [B, K, M]) that emulates
    ``mode`` where the kernels use tl.dot (K and M both >= 16)."""
    from fastsiren import sine_jet

    exact = sine_jet.rows_matmul

    def rows_matmul(a, b):
        if min(a.shape[-1], b.shape[-1]) < 16:
            return exact(a, b)
        out = [emulated_matmul(a[i], b[i], mode, rounding) for i in range(a.shape[0])]
        return torch.stack(out).to(a.dtype)

    return rows_matmul


def _jet_and_grads(model, x, order, cotangent_seed):
    """Fields of the jet and the parameter gradients of sum_f <field, random cotangent>."""
    jet = model.jet(x, order=order)
    fields = {k: v for k, v in jet.fields().items()}
    gen = torch.Generator().manual_seed(cotangent_seed)
    # the same cotangents in every precision: drawn in float64, then cast
    loss = sum((v * torch.randn(v.shape, generator=gen, dtype=torch.float64).to(v.dtype)).sum()
               for v in fields.values())
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(loss, list(model.parameters()))
    out = {k: v.detach() for k, v in fields.items()}
    out.update({f"d/d {n}": g for n, g in zip(names, grads)})
    return out


def measure(d, width, order, n_out, n, rounding, seed=0):
    """Max and RMS error of each output, relative to the float64 truth's max and RMS."""
    import fastsiren as fs
    from fastsiren import sine_jet

    torch.manual_seed(seed)
    # fp32 weights and points, and the truth from exactly those values in float64
    model32 = fs.Siren(d, width, 3, n_out, outermost_linear=True).to(backend="torch")
    x32 = torch.rand(n, d) * 2 - 1
    truth = _jet_and_grads(copy.deepcopy(model32).double(), x32.double(), order, seed)
    rows = {}
    for mode in ("ieee", "tf32x3", "tf32"):
        original = sine_jet.rows_matmul
        if mode != "ieee":
            sine_jet.rows_matmul = _swapped_rows_matmul(mode, rounding)
        try:
            t0 = time.perf_counter()
            got = _jet_and_grads(model32, x32, order, seed)
        finally:
            sine_jet.rows_matmul = original
        rows[mode] = {}
        for name, want in truth.items():
            err = got[name].double() - want
            rows[mode][name] = {
                "max": (err.abs().max() / want.abs().max()).item(),
                "rms": (err.pow(2).mean().sqrt() / want.pow(2).mean().sqrt()).item(),
            }
        rows[mode]["seconds"] = time.perf_counter() - t0
    return rows


def _markdown(results, header):
    lines = [header, ""]
    for case in results:
        lines += [f"### {case['label']}", "",
                  "| output | ieee max / rms | tf32x3 max / rms | tf32 max / rms "
                  "| tf32x3 / ieee (max) |",
                  "|---|---|---|---|---|"]
        modes = case["errors"]
        for name in modes["ieee"]:
            if name == "seconds":
                continue
            cells = [f"{modes[m][name]['max']:.1e} / {modes[m][name]['rms']:.1e}"
                     for m in ("ieee", "tf32x3", "tf32")]
            ratio = modes["tf32x3"][name]["max"] / max(modes["ieee"][name]["max"], 1e-300)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio:.1f} |")
        lines.append("")
    return "\n".join(lines)


# (label, d, width, order, outputs). Order 1 with fewer outputs than coordinates would take the
# torch backend's adjoint sweep, which the kernels do not implement: the image case has 3.
CASES = [
    ("SDF / Poisson jet: 3 -> 256 x 3 -> 1, order 2 (value, gradient, Laplacian)", 3, 256, 2, 1),
    ("RGB image gradient: 2 -> 256 x 3 -> 3, order 1", 2, 256, 1, 3),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8192, help="points per case")
    parser.add_argument("--rounding", choices=("rn", "rz"), default="rn",
                        help="the MMA accumulator's rounding: to nearest, or toward zero")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write a markdown table here")
    args = parser.parse_args(argv)
    from fastsiren.benchmark import machine_info, machine_line

    torch.set_num_threads(1)
    machine = machine_line(machine_info(torch.device("cpu")))
    header = (f"Emulated fp32 matmul modes against float64, N = {args.n}, omega 30, official "
              f"init, accumulator rounding {args.rounding}; {machine}, torch "
              f"{torch.__version__}, 1 thread. Errors relative to the float64 output's max "
              "(max) and RMS (rms).")
    results = []
    for label, d, width, order, n_out in CASES:
        errors = measure(d, width, order, n_out, args.n, args.rounding)
        results.append({"label": label, "d": d, "width": width, "order": order,
                        "outputs": n_out, "errors": errors})
        print(f"{label}: " + ", ".join(f"{m} {errors[m]['seconds']:.0f} s" for m in errors))
    text = _markdown(results, header)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "n": args.n, "rounding": args.rounding,
                       "results": results}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
