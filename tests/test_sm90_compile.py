"""Tier sm90: every kernel compiles for the H100 (sm_90a) without a GPU, and nothing spills.

``fastsiren.kernels.compile_check`` replays the launchers on meta tensors over the dispatch
matrix (fp32 in each tl.dot input precision, bf16, fp16, fp64; the order-2 training step of a
3 -> 256 x 3 -> 1 network), specialises each recorded launch as Triton's runtime would, and
compiles every config the kernel's prune keeps for sm_90a with the ptxas in the triton wheel.
Here it runs in child processes without TRITON_INTERPRET (this process imported the kernels for
the interpreter) and in a fresh Triton cache (a cached kernel skips ptxas, whose log is read).
A failure here is a crash or a spill the GPU would have met; the fix is in the kernel or its
config table, never here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

pytest.importorskip("triton")

from fastsiren.kernels import compile_check  # noqa: E402

pytestmark = [pytest.mark.sm90, pytest.mark.slow]

KERNELS = sorted({v.base_fn.__name__ for fam in compile_check.FAMILIES for v in vars(fam).values()
                  if isinstance(v, compile_check.Autotuner)})


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, list[dict]]:
    """The compile check's results per kernel."""
    out = tmp_path_factory.mktemp("sm90") / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    jobs = str(min(os.cpu_count() or 1, 4))
    proc = subprocess.run(
        [sys.executable, "-m", "fastsiren.kernels.compile_check", "--jobs", jobs, "--json",
         str(out)], env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.exists(), f"the compile check crashed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    per_kernel = defaultdict(list)
    for r in json.loads(out.read_text())["results"]:
        per_kernel[r["kernel"]].append(r)
    return per_kernel


@pytest.mark.parametrize("kernel", KERNELS)
def test_compiles_without_spills(results, kernel):
    """Every kept config compiles, stores nothing to spill slots, and has no stack frame beyond
    fp64's sin/cos slow-path array."""
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
