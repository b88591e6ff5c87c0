"""Tier sm90: every kernel compiles for the H100 (sm_90a) without a GPU, nothing spills, and no
config sits at its register ceiling.

``tools/compile_check.py`` replays the launchers on meta tensors over the dispatch matrix (fp32
in each tl.dot input precision, bf16, fp16, fp64; the workloads marked for the tier: the
Laplacian and Hessian-diagonal training steps and order 1 of a 3 -> 256 x 3 -> 1 network,
order-0 inference, width 100 at N = 4097, and the whole-network kernel at widths 128 and 100),
specialises each recorded launch as Triton's runtime would, and compiles every config the
kernel's prune keeps for sm_90a with the ptxas in the triton wheel. Here it runs in child
processes without TRITON_INTERPRET (this process imported the kernels for the interpreter) and
in a fresh Triton cache (a cached kernel skips ptxas, whose log is read). A failure here is a
crash, a spill or a register count the GPU would have met; the fix is in the kernel or its
config table, never here. Needs triton >= 3.4 (``triton.knobs``, which sets ptxas's log).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

triton = pytest.importorskip("triton")
if not hasattr(triton, "knobs"):
    pytest.skip(f"triton {triton.__version__}: the compile check needs triton.knobs (3.4 and "
                "later) to read ptxas's log", allow_module_level=True)

from fastsiren.kernels.sine_jet import autotuners  # noqa: E402

from tools import compile_check  # noqa: E402

pytestmark = [pytest.mark.sm90, pytest.mark.slow]

KERNELS = sorted(autotuners())


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, list[dict]]:
    """The compile check's results per kernel."""
    out = tmp_path_factory.mktemp("sm90") / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    jobs = str(min(os.cpu_count() or 1, 4))
    proc = subprocess.run(
        [sys.executable, compile_check.__file__, "--jobs", jobs, "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.exists(), f"the compile check crashed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    per_kernel = defaultdict(list)
    for r in json.loads(out.read_text())["results"]:
        per_kernel[r["kernel"]].append(r)
    return per_kernel


@pytest.mark.parametrize("kernel", KERNELS)
def test_compiles_without_spills(results, kernel):
    """Every kept config compiles, stores nothing to spill slots, stays below its register
    ceiling, and has no stack frame beyond fp64's sin/cos slow-path array."""
    got = results[kernel]
    assert got, f"{kernel}: no launch recorded: the dispatch matrix misses it"
    modes = {r["label"].split()[0] for r in got}
    bad = [compile_check.format_result(compile_check.Result(**r)) for r in got
           if not compile_check.Result(**r).passed]
    assert not bad, f"{len(bad)} of {len(got)} configs fail:\n" + "\n".join(bad)
    assert "fp64" in modes and ("bf16" in modes or "fp16" in modes), modes


def test_every_mode_compiles_the_dot_kernels(results):
    """The kernels with tl.dot compile in each of the three fp32 input precisions."""
    for kernel in ("_sine_layer_fwd_kernel", "_matmul_kernel"):
        modes = {r["label"].split()[0] for r in results[kernel]}
        assert {m for m, _, _ in compile_check.MODES} <= modes, (kernel, modes)


def test_the_tier_covers_the_workloads(results):
    """Hessian diagonal, order 1, inference and sizes that are not multiples of 16 are in the
    tier, for the layerwise kernels and the whole-network kernel."""
    labels = {r["label"].split(" ", 1)[1] for rs in results.values() for r in rs}
    assert {"lap-d3 train", "hess-d3 train", "grad-d2 train", "value-d2 infer",
            "lap-d3 w100 N4097 train", "net lap-d3 w100 N4097 infer"} <= labels, labels


def test_register_ceiling_fails_a_config():
    """A config at its warp count's register ceiling fails like a spill does."""
    clean = compile_check.Result("fp32-tf32 x", "k", "16x64 w8 s2", ok=True, registers=200,
                                 spill_stores=0, spill_loads=0, stack=0, shared=0,
                                 register_ceiling=compile_check.register_ceiling(8))
    assert clean.passed
    assert compile_check.register_ceiling(8) == 255 and compile_check.register_ceiling(16) == 128
    for registers in (255, 300):
        clean.registers = registers
        assert not clean.passed
