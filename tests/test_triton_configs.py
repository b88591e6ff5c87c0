"""Every autotune config of every kernel, once, against the torch backend.

Autotuning runs only the config it picks, and the interpreter runs one config per kernel, so a
tile size whose masks or index arithmetic are wrong would pass every other test. Here each
kernel launch is forced onto one config (``forced_configs``): pass i gives every launch the
i-th config its kernel allows for it (modulo their number), and the passes repeat until every
allowed config of every launch has run; each pass is compared with the torch backend.

- Tier b (interpreter, always): every GPU candidate of each kernel (the interpreter has no
  registers, so the register-class prunes do not apply), float64, to rounding (``FP64_TOL``),
  on a training step (every layerwise kernel, reductions split into several partial sums) and
  an inference jet (the whole-network kernel).
- Tier c (GPU, ``FASTSIREN_ALL_CONFIGS=1``): the configs each kernel's prune keeps, in every
  register class (fp32 in ieee, tf32x3 and tf32; bf16; fp64), at N = 8237 (several splits in
  every reduction over points, a last tile that is not full), errors at most the torch
  backend's own times the tier's factors; fp64 to rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from helpers import excess_errors, make_params, rel_err

import fastsiren as fs
from fastsiren import env

pytest.importorskip("triton")

from fastsiren.kernels import _launch, input_precision  # noqa: E402
from fastsiren.kernels.sine_jet import autotuners  # noqa: E402
from test_triton_sine_jet import (  # noqa: E402
    DEVICE,
    FP64_TOL,
    _assert_close,
    precision_errors,
    run_network,
)

HAS_CUDA = torch.cuda.is_available()


@contextmanager
def forced_configs(index: int, use_prune: bool, seen: dict):
    """Run every kernel launch on one config: the ``index``-th (modulo their number) of its GPU
    candidates, pruned by the kernel's own prune when ``use_prune``. Records, per kernel, the
    configs run and how many there were to run: ``seen[kernel] = (set of tags, count)``."""
    tuners = autotuners()
    replaced = {}
    for name, tuner in tuners.items():
        def run(*args, _tuner=tuner, _name=name, _run=tuner.run, **kwargs):
            candidates = _launch.candidate_configs(_tuner)
            prune = _tuner.early_config_prune
            if use_prune and prune is not None:
                named = dict(zip(_tuner.arg_names, args))
                candidates = list(prune(candidates, named, **kwargs))
            cfg = candidates[index % len(candidates)]
            tags, count = seen.get(_name, (set(), 0))
            seen[_name] = (tags | {_launch.config_tag(cfg)}, max(count, len(candidates)))
            saved = _tuner.configs
            _tuner.configs = [cfg]  # a single config: no pruning, no timing
            try:
                return _run(*args, **kwargs)
            finally:
                _tuner.configs = saved

        replaced[name] = tuner.__dict__.get("run")
        tuner.run = run
    try:
        yield
    finally:
        for name, tuner in tuners.items():
            if replaced[name] is None:
                del tuner.run
            else:
                tuner.run = replaced[name]


def _every_config(workload, use_prune: bool) -> dict:
    """Run ``workload(index)`` with forced configs until every config of every launch has run;
    returns what ``forced_configs`` recorded."""
    seen: dict = {}
    index = 0
    while True:
        with forced_configs(index, use_prune, seen):
            workload(index)
        index += 1
        if index >= max(count for _, count in seen.values()):
            return seen


def _params(seed, d, width, out, dtype):
    gen = torch.Generator().manual_seed(seed)
    weights, biases, omegas = make_params(gen, None, d, width, out, 1, 30.0, dtype, DEVICE)
    x = (torch.rand(N_POINTS, d, generator=gen, dtype=dtype) * 2 - 1).to(DEVICE)
    return x, weights, biases, omegas


# Under the interpreter reductions over points split every 64 rows, so 131 points (x 4 slabs)
# give several partial sums; on a GPU every 4096 rows (8237 points: two to eight splits).
N_POINTS = 8237 if HAS_CUDA else 131
WIDTH = 100 if HAS_CUDA else 48  # partial column tiles at every BLOCK_M


def _inference_fields(x, weights, biases, omegas, order, backend):
    with torch.no_grad():
        jet = fs.siren_jet(x, weights, biases, omegas, order, True, backend)
    return jet.fields()


@pytest.mark.interpret
@pytest.mark.slow
def test_every_candidate_config_under_the_interpreter(monkeypatch):
    """float64, every GPU candidate of every kernel: a Laplacian training step and a Laplacian
    inference jet, each to rounding against the torch backend."""
    if HAS_CUDA:
        pytest.skip("compiled: the GPU tier's every-config test runs the pruned configs")
    monkeypatch.setenv(env.POISON, "1")
    x, weights, biases, omegas = _params(7, 2, WIDTH, 2, torch.float64)
    want_train = run_network("torch", x, weights, biases, omegas, 2, False, True, 11)
    want_infer = _inference_fields(x, weights, biases, omegas, 2, "torch")

    def workload(index):
        fields, grads = run_network("triton", x, weights, biases, omegas, 2, False, True, 11)
        for name, value in want_train[0].items():
            _assert_close(fields[name], value, FP64_TOL, f"pass {index}: {name}")
        for name, value in want_train[1].items():
            _assert_close(grads[name], value, FP64_TOL, f"pass {index}: d loss / d {name}")
        for name, value in _inference_fields(x, weights, biases, omegas, 2, "triton").items():
            _assert_close(value, want_infer[name], FP64_TOL, f"pass {index}: inference {name}")

    with input_precision("ieee"):
        seen = _every_config(workload, use_prune=False)
    assert set(seen) == set(autotuners()), f"never launched: {set(autotuners()) - set(seen)}"
    for name, (tags, count) in seen.items():
        assert len(tags) == count == len(_launch.candidate_configs(autotuners()[name])), name


# (label, storage dtype, mode, torch's TF32 switch, factor over the torch backend's own error)
GPU_CONFIG_RULES = [
    pytest.param(torch.float32, "ieee", False, 2.0, id="fp32-ieee"),
    pytest.param(torch.float32, "tf32x3", False, 2.0, id="fp32-tf32x3"),
    pytest.param(torch.float32, "tf32", True, 4.0, id="fp32-tf32"),
    pytest.param(torch.bfloat16, "ieee", False, 2.0, id="bf16"),
    pytest.param(torch.float64, "ieee", False, None, id="fp64"),
]


# Inference jets against float64 per storage class: wide enough for each class's rounding
# (tf32: 10-bit operands; bf16: 8-bit storage), far below the O(1) of a tile gone wrong.
INFERENCE_LIMIT = {"ieee": 1e-3, "tf32x3": 1e-3, "tf32": 5e-2, str(torch.bfloat16): 5e-2,
                   str(torch.float64): FP64_TOL}


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("dtype,mode,torch_tf32,factor", GPU_CONFIG_RULES)
@pytest.mark.parametrize("order,d", [(2, 3), (0, 2)], ids=["lap-d3", "value-d2"])
def test_gpu_every_kept_config(monkeypatch, order, d, dtype, mode, torch_tf32, factor):
    """Each kept config of each kernel, compiled, in one register class: a training step and an
    inference jet (the whole-network kernel where its budget takes the network), each pass
    within the tier's rule."""
    if not env.all_configs():
        pytest.skip(f"set {env.ALL_CONFIGS}=1 to run every kept config (minutes of compiling)")
    monkeypatch.setenv(env.POISON, "1")
    x64, weights64, biases64, omegas = _params(7, d, WIDTH, 1, torch.float64)
    truth = _inference_fields(x64, weights64, biases64, omegas, order, "torch")
    cast = [t.detach().to(dtype) for t in (x64, *weights64, *biases64)]
    L = len(weights64)

    def workload(index):
        if factor is None:  # fp64: both backends to rounding
            got = run_network("triton", x64, weights64, biases64, omegas, order, False, True, 11)
            want = run_network("torch", x64, weights64, biases64, omegas, order, False, True, 11)
            for part_got, part_want in zip(got, want):
                for name, value in part_want.items():
                    _assert_close(part_got[name], value, FP64_TOL, f"pass {index}: {name}")
        else:
            ours, theirs = precision_errors(x64, weights64, biases64, omegas, order, False,
                                            dtype, mode, torch_tf32, 11)
            floor = 4 * torch.finfo(dtype).eps
            bad = excess_errors(ours, theirs, factor, floor)
            assert not bad, f"pass {index}: errors (triton, torch) over {factor}x: {bad}"
        with input_precision(mode):
            got = _inference_fields(cast[0], cast[1:1 + L], cast[1 + L:], omegas, order, "triton")
        for name, value in got.items():
            err = rel_err(value.double(), truth[name])
            limit = INFERENCE_LIMIT[mode if dtype == torch.float32 else str(dtype)]
            assert err <= limit, f"pass {index}: inference {name}: {err:.2e} > {limit:.0e}"

    with input_precision(mode):
        seen = _every_config(workload, use_prune=True)
    assert {"_sine_layer_fwd_kernel", "_sine_layer_bwd_kernel", "_matmul_kernel"} <= set(seen)


@pytest.mark.interpret
def test_unaligned_launches_keep_small_tiles():
    """A width that is not a multiple of 16 (addresses cost registers: the sm90 tier saw tiles
    spill at width 100 that compile clean at 64-256) keeps only the smallest tiles."""
    tuners = autotuners()

    def kept(kernel, **named):
        tuner = tuners[kernel]
        args = {"x": torch.empty(1, dtype=torch.float32), **named}
        return {_launch.config_tag(c) for c in tuner.early_config_prune(
            _launch.candidate_configs(tuner), args, INPUT_PRECISION="ieee", D_PAD=4, L_PAD=1)}

    assert kept("_matmul_kernel", T=100) == {"64x64x32 w4 s2"}
    assert kept("_matmul_kernel", T=256) == {"64x64x32 w4 s2", "64x64x64 w4 s3"}
    assert kept("_sine_layer_bwd_kernel", M=100) == {"16x64 w4 s2", "32x32 w4 s2"}
    assert len(kept("_sine_layer_bwd_kernel", M=256)) == 3
    # ieee, 6 accumulator slabs: 16x32 (24 values per thread) within 36; unaligned, within 18
    # no tile fits and the smallest (16x16) is kept
    assert kept("_sine_layer_fwd_kernel", M=256, K=256) == {"16x32x32 w4 s2"}
    assert kept("_sine_layer_fwd_kernel", M=100, K=100) == {"16x16x32 w4 s2"}
