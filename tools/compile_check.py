"""Offline compile check for the H100 (sm_90a): every launch of the dispatch, with no GPU.

The launchers are replayed on ``meta`` tensors (shapes only, nothing allocated) over the dispatch
matrix below, and each kernel launch is recorded instead of run. Every recorded launch is then
specialised exactly as Triton's runtime would specialise it (its own binder: dtypes, 16-byte
divisibility, integers equal to 1), its autotune configs are pruned by the kernel's own prune,
and each kept config is compiled for ``GPUTarget("cuda", 90, 32)``; the ``ptxas -v`` log that
Triton's own ptxas call writes gives registers, spill stores and loads and the stack frame.

A config passes when it compiles, its shared memory fits one H100 block (``SHARED_LIMIT``: a
launch asking for more fails at run time), ptxas reports no spill stores, its registers stay
below the ceiling of its warp count (``register_ceiling``: at the ceiling ptxas had no register
to spare and another ptxas version spills, as triton 3.6's did for tiles 3.9 compiled clean),
and the stack frame is at most ``STACK_ALLOWANCE``: none in fp32 and the half types (the
kernels' own ``sincos`` has no slow path); in fp64, libdevice's sine and cosine keep a small
local array for their rare Payne-Hanek slow path (huge arguments), which ptxas places on the
stack; that is not a spill.

The dispatch matrix: storage dtypes float32 (in each of the three ``tl.dot`` input precisions),
bfloat16, float16 and float64, times the representative workloads ``WORKLOADS`` (the SDF and
Poisson order-2 jets at d = 3 in the Laplacian and Hessian-diagonal layouts, the order-1
gradient at d = 2, order-0 inference, a network of width 100 at N = 4097, whose sizes and
strides are not multiples of 16, which Triton specialises on, and a drop-in first layer with
many inputs), forward and backward, training (G kept) and inference. A developer tool of the
repository, not installed; from the repository root::

    python tools/compile_check.py [--full] [--jobs N] [--filter SUBSTRING] [--json PATH]

(or ``python -m tools.compile_check``), with ``TRITON_INTERPRET`` unset (Triton decides at
import time whether kernels are compiled), triton >= 3.4 (``triton.knobs``). It prints one line
per (launch, config) with an estimate of the bytes each moves per point (``traffic_per_point``:
a model, not a measurement) and exits 1 if any config fails. The sm90 test tier runs the
workloads marked for it (``tests/test_sm90_compile.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
import triton
from fastsiren.kernels import (
    _launch,
    first_layer,
    linear_layer,
    network,
    precision,
    sine_layer,
    sine_vjp,
)
from fastsiren.kernels.sine_jet import autotuners
from triton.backends.compiler import GPUTarget
from triton.runtime.autotuner import Autotuner

from fastsiren.jet import JetLayout

TARGET = GPUTarget("cuda", 90, 32)

# Shared memory one block may use on sm_90 (227 KB, opt-in above 48 KB: Triton opts in).
SHARED_LIMIT = 232448
# Stack frame (bytes) tolerated per storage dtype: fp64's libdevice sin/cos slow-path array (40
# with triton 3.9's ptxas, 48 with 3.6's, measured with a kernel that only computes sin), never
# a spill; the fp32 sincos needs none.
STACK_ALLOWANCE = {"fp32": 0, "bf16": 0, "fp16": 0, "fp64": 48}
# Registers one SM holds (65536 on sm_90) and the most one thread may use (255).
REGISTER_FILE, MAX_THREAD_REGISTERS = 65536, 255


def register_ceiling(num_warps: int) -> int:
    """The register count at which ptxas ran out of room for a program of ``num_warps`` warps:
    the 255 a thread may address, or the register file's share per thread when one program
    fills it (16 warps: 128). A config must stay below it."""
    return min(MAX_THREAD_REGISTERS, REGISTER_FILE // (32 * num_warps))

# The representative workloads: (label, d, width, order, hessian_diag, points, training), each
# a d -> width x 3 -> 1 network. The first TIER_WORKLOADS are the test tier's (the Laplacian and
# Hessian-diagonal training steps, order 1, order-0 inference, and width 100 at N = 4097:
# Triton specialises sizes and strides on divisibility by 16); --full adds the rest and a
# drop-in first layer with 32 inputs (the first layer's tl.dot path).
WORKLOADS = [
    ("lap-d3 train", 3, 256, 2, False, 1 << 20, True),
    ("hess-d3 train", 3, 256, 2, True, 1 << 20, True),
    ("grad-d2 train", 2, 256, 1, False, 1 << 20, True),
    ("value-d2 infer", 2, 256, 0, False, 1 << 20, False),
    ("lap-d3 w100 N4097 train", 3, 100, 2, False, 4097, True),
    ("value-d2 train", 2, 256, 0, False, 1 << 20, True),
    ("lap-d3 infer", 3, 256, 2, False, 1 << 20, False),
]
TIER_WORKLOADS = 5
# The whole-network inference kernel (``network.py``, widths <= 128): (label, d, width, order,
# outputs, points), each a d -> width x 3 -> outputs network; the tier runs the first three. A
# workload the dispatch declines for a mode (``network.unsupported``: over the register budget)
# records nothing there, as it launches nothing.
NETWORK_WORKLOADS = [
    ("net lap-d3 infer", 3, 128, 2, 1, 1 << 20),
    ("net value-d2 infer", 2, 128, 0, 3, 1 << 20),
    ("net lap-d3 w100 N4097 infer", 3, 100, 2, 1, 4097),
    ("net grad-d3 infer", 3, 128, 1, 1, 1 << 20),
    ("net lap-d2 infer", 2, 64, 2, 2, 1 << 20),
]
TIER_NETWORK_WORKLOADS = 3
# (label, storage dtype, tl.dot input precision for fp32)
MODES = [
    ("fp32-ieee", torch.float32, "ieee"),
    ("fp32-tf32x3", torch.float32, "tf32x3"),
    ("fp32-tf32", torch.float32, "tf32"),
    ("bf16", torch.bfloat16, "ieee"),
    ("fp16", torch.float16, "ieee"),
    ("fp64", torch.float64, "ieee"),
]


@dataclass
class Launch:
    """One recorded kernel launch: the kernel's autotuner and the arguments it was called with."""

    label: str
    points: int  # the workload's point count, to express traffic per point
    tuner: Autotuner
    args: tuple
    kwargs: dict

    @property
    def kernel(self) -> str:
        return self.tuner.base_fn.__name__

    @property
    def named_args(self) -> dict:
        return dict(zip(self.tuner.arg_names, self.args))

    def kept_configs(self) -> list[triton.Config]:
        """The configs the kernel's own prune keeps for these arguments (what autotuning times)."""
        if self.tuner.early_config_prune is None:
            return list(self.tuner.configs)
        return list(self.tuner.early_config_prune(self.tuner.configs, self.named_args,
                                                  **self.kwargs))


@dataclass
class Result:
    label: str
    kernel: str
    config: str
    ok: bool = False
    error: str = ""
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack: int | None = None
    stack_allowance: int = 0
    register_ceiling: int = MAX_THREAD_REGISTERS
    shared: int | None = None
    traffic_per_point: float | None = None
    features: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (self.ok and self.spill_stores == 0
                and (self.registers or 0) < self.register_ceiling
                and (self.stack or 0) <= self.stack_allowance
                and (self.shared or 0) <= SHARED_LIMIT)


# ----------------------------------------------------------------------------- recording


@contextlib.contextmanager
def _recording(into: list[Launch], label: str, points: int):
    """Record kernel launches instead of running them, and let the launchers take meta tensors."""
    tuners = list(autotuners().values())

    def recorder(tuner):
        def run(*args, grid=None, warmup=False, **kwargs):
            into.append(Launch(label, points, tuner, args, kwargs))
        return run

    for t in tuners:
        t.run = recorder(t)
    _launch.ALLOW_META = True
    try:
        yield
    finally:
        _launch.ALLOW_META = False
        for t in tuners:
            del t.run


def _meta(*shape, dtype):
    return torch.empty(*shape, dtype=dtype, device="meta")


def _replay_network(d, width, order, hess, n, dtype, train):
    """The ops one 3-hidden-layer network (d -> width x 3 -> 1) runs, forward and backward."""
    layout = JetLayout(order, d, hess)
    R, H = layout.rows, 3
    x = _meta(1, n, d, dtype=dtype)
    w0, b0 = _meta(1, width, d, dtype=dtype), _meta(1, width, dtype=dtype)
    wh, bh = _meta(1, width, width, dtype=dtype), _meta(1, width, dtype=dtype)
    wl, bl = _meta(1, 1, width, dtype=dtype), _meta(1, 1, dtype=dtype)
    out, cos0 = first_layer.first_layer_fwd(x, w0, b0, 30.0, layout, for_backward=train)
    stack = out
    for _ in range(H - 1):
        nxt, G = sine_layer.sine_layer_fwd(stack, wh, bh, 30.0, layout, for_backward=train)
        if train:
            sine_vjp.sine_layer_bwd(_meta(1, R, n, width, dtype=dtype), stack, wh, 30.0, layout,
                                    nxt[:, 0], G)
        stack = nxt
    linear_layer.linear_layer_fwd(stack, wl, bl)
    if train:
        linear_layer.linear_layer_bwd(_meta(1, R, n, 1, dtype=dtype), stack, wl)
        first_layer.first_layer_bwd(_meta(1, R, n, width, dtype=dtype), x, w0, 30.0, layout,
                                    out[:, 0], cos0, need_x_grad=False)
    if order == 0 and train:  # the recompute path's GEMM-only forward
        first_layer.first_layer_preact(x, w0, b0, 30.0)
        sine_layer.sine_layer_preact(stack, wh, bh, 30.0)


def _replay_whole_network(d, width, order, n_out, n, dtype):
    """The one launch of the whole-network kernel for d -> width x 3 -> n_out."""
    layout = JetLayout(order, d)
    shapes = [(width, d), (width, width), (width, width), (n_out, width)]
    weights = [_meta(1, *s, dtype=dtype) for s in shapes]
    biases = [_meta(1, s[0], dtype=dtype) for s in shapes]
    x, omegas = _meta(1, n, d, dtype=dtype), (30.0,) * 4
    if network.unsupported(x, weights, omegas, layout, True) is None:
        network.siren_network_fwd(x, weights, biases, omegas, layout)


def _replay_many_inputs(dtype):
    """A drop-in first ``SineLayer`` with 32 inputs: the tl.dot path of the first layer."""
    layout = JetLayout(0, 32)
    x, w, b = _meta(1, 4096, 32, dtype=dtype), _meta(1, 256, 32, dtype=dtype), _meta(1, 256,
                                                                                    dtype=dtype)
    out, c = first_layer.first_layer_fwd(x, w, b, 30.0, layout)
    first_layer.first_layer_bwd(_meta(1, 1, 4096, 256, dtype=dtype), x, w, 30.0, layout, None, c,
                                need_x_grad=True)


def record_launches(full: bool = False) -> list[Launch]:
    """Every launch of the dispatch matrix: MODES x the tier's WORKLOADS (or all of them)."""
    launches: list[Launch] = []
    for mode_label, dtype, mode in MODES:
        with precision.input_precision(mode):
            for label, d, width, order, hess, n, train in WORKLOADS[:None if full else
                                                                     TIER_WORKLOADS]:
                with _recording(launches, f"{mode_label} {label}", n):
                    _replay_network(d, width, order, hess, n, dtype, train)
            for label, d, width, order, n_out, n in NETWORK_WORKLOADS[
                    :None if full else TIER_NETWORK_WORKLOADS]:
                with _recording(launches, f"{mode_label} {label}", n):
                    _replay_whole_network(d, width, order, n_out, n, dtype)
            if full:
                with _recording(launches, f"{mode_label} first-layer-K32 train", 4096):
                    _replay_many_inputs(dtype)
    return launches


# ----------------------------------------------------------------------------- compiling


def _specialise(launch: Launch, cfg: triton.Config):
    """What Triton's runtime would compile for this launch and config: (source, options)."""
    from triton.compiler.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    jitfn = launch.tuner.fn
    kwargs = {**launch.kwargs, **cfg.all_kwargs()}
    backend = make_backend(TARGET)
    binder = create_function_from_signature(jitfn.signature, jitfn.params, backend)
    bound, spec, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = jitfn._pack_args(backend, kwargs, bound, spec, options)
    return ASTSource(jitfn, signature, constexprs, attrs), options


def _ptxas_figures(log: str, kernel: str) -> dict:
    """Registers, spills and stack frame of the entry function from a ``ptxas -v`` log."""
    props = re.search(rf"Function properties for {re.escape(kernel)}\s*\n\s*(\d+) bytes stack "
                      r"frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    regs = re.search(r"Used (\d+) registers", log)
    spills = [int(s) for s in re.findall(r"(\d+) bytes spill stores", log)]
    if not (props and regs):
        raise RuntimeError(f"no ptxas figures for {kernel} in the log:\n{log[:2000]}")
    return dict(registers=int(regs.group(1)), stack=int(props.group(1)),
                spill_stores=max(spills), spill_loads=int(props.group(3)))


def _features(ptx: str) -> dict:
    pats = {"wgmma": r"wgmma\.mma_async", "mma.sync": r"\bmma\.sync", "call": r"\bcall"}
    return {k: n for k, p in pats.items() if (n := len(re.findall(p, ptx)))}


def compile_config(launch: Launch, cfg: triton.Config) -> Result:
    from triton import knobs

    res = Result(launch.label, launch.kernel, _launch.config_tag(cfg))
    dtype = launch.args[0].dtype
    res.stack_allowance = STACK_ALLOWANCE[_DTYPE_NAMES[dtype]]
    res.register_ceiling = register_ceiling(cfg.num_warps)
    res.traffic_per_point = traffic_per_point(launch, cfg)
    t0 = time.perf_counter()
    log = io.StringIO()
    try:
        src, options = _specialise(launch, cfg)
        dump = knobs.nvidia.dump_ptxas_log
        knobs.nvidia.dump_ptxas_log = True
        try:
            with contextlib.redirect_stdout(log):
                ck = triton.compile(src, target=TARGET, options=options.__dict__)
        finally:
            knobs.nvidia.dump_ptxas_log = dump
        res.__dict__.update(_ptxas_figures(log.getvalue(), ck.metadata.name))
        res.features = _features(ck.asm["ptx"])
        res.shared = ck.metadata.shared
        res.ok = True
    except Exception as e:  # noqa: BLE001 - every failure is a result to report
        lines = str(e).strip().splitlines() or [""]
        res.error = f"{type(e).__name__}: {' | '.join(lines[:4])[:600]}"
    res.seconds = time.perf_counter() - t0
    return res


_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
                torch.float64: "fp64"}


def _specialisation_key(launch: Launch, cfg: triton.Config) -> tuple:
    src, options = _specialise(launch, cfg)
    return (launch.kernel, str(src.signature), str(src.constants), str(src.attrs),
            str(sorted(options.__dict__.items())))


# ----------------------------------------------------------------------------- traffic model


def traffic_per_point(launch: Launch, cfg: triton.Config) -> float:
    """Estimated DRAM bytes per point of the workload: every tensor the kernel reads or writes
    once, plus the re-reads its grid implies (programs that share rows each load them). Weights
    and biases are left out (a few hundred KB: they stay in L2). A model, to compare versions."""
    a, kw, c = launch.named_args, launch.kwargs, cfg.kwargs
    name = launch.kernel

    def size(t):
        return t.element_size()

    if name == "_matmul_kernel":
        # A [P, Q] is read once per column tile, B [Q, T] once per row tile; C written per split.
        P, T, Q = a["P"], a["T"], a["Q"]
        n_p, n_t = triton.cdiv(P, c["BLOCK_P"]), triton.cdiv(T, c["BLOCK_T"])
        splits = triton.cdiv(max(Q, 1), a["q_per_split"])
        moved = (size(a["a_ptr"]) * P * Q * n_t + size(a["b_ptr"]) * Q * T * n_p
                 + size(a["c_ptr"]) * P * T * splits)
        return moved / launch.points
    if name == "_siren_network_fwd_kernel":  # the coordinates in, the output jet out
        rows = 1 + kw["D"] + int(kw["HAS_LAP"])
        return size(a["x_ptr"]) * (kw["D_IN"] + rows * kw["N_OUT"])
    if name == "_linear_few_fwd_kernel":
        rows, e = a["rows"], size(a["s_ptr"])
        return e * rows * (a["K"] + a["M"]) / launch.points
    if name == "_linear_few_bwd_kernel":
        rows, e = a["rows"], size(a["s_ptr"])
        n_k = triton.cdiv(a["K"], c["BLOCK_K"])
        return e * rows * (a["K"] * (2 if kw["STORE_SBAR"] else 1) + a["M"] * n_k) / launch.points
    # The forward kernels run the column tiles of a row block side by side (row_major_tile):
    # their input rows come from DRAM once.
    M = a["M"]
    if name == "_sine_layer_fwd_kernel":
        R, K = 1 + kw["D"] + kw["N_LAP"], a["K"]
        e = size(a["s_ptr"])
        if kw["PREACT_ONLY"]:
            writes = R * M
        else:
            writes = R * M + (R * M if kw["FOR_BACKWARD"] else M if kw["D"] == 0 else 0)
        return e * (R * K + writes)
    if name == "_first_layer_fwd_kernel":
        K, e = a["K"], size(a["x_ptr"])
        R = 1 if kw["PREACT_ONLY"] else _first_rows(kw, K)
        cos = M if (kw["FOR_BACKWARD"] or kw["ORDER"] == 0) and not kw["PREACT_ONLY"] else 0
        return e * (K + R * M + cos)
    n_m = triton.cdiv(M, c["BLOCK_M"])
    if name == "_sine_layer_bwd_kernel":
        R = 1 + kw["D"] + kw["N_LAP"]
        return size(a["go_ptr"]) * (3 * R * M + M)
    if name == "_first_layer_bwd_kernel":
        K = a["K"]
        R = _first_rows(kw, K)
        e = size(a["go_ptr"])
        return e * (R * M + (2 if kw["ORDER"] >= 1 else 1) * M + K * n_m
                    + (M if kw["STORE_UBAR"] else 0))
    raise KeyError(f"no traffic model for {name}")


def _first_rows(kw, K):
    order = kw["ORDER"]
    return 1 + (K if order >= 1 else 0) + ((K if kw["HESS_DIAG"] else 1) if order == 2 else 0)


# ----------------------------------------------------------------------------- report


def jobs(full: bool = False, filter_: str = "") -> list[tuple[Launch, triton.Config]]:
    """Every (launch, kept config) to compile, each distinct specialisation once."""
    todo, seen = [], set()
    for launch in record_launches(full):
        if filter_ and filter_ not in f"{launch.label} {launch.kernel}":
            continue
        for cfg in launch.kept_configs():
            key = _specialisation_key(launch, cfg)
            if key not in seen:
                seen.add(key)
                todo.append((launch, cfg))
    return todo


def check(full: bool = False, filter_: str = "", shard: tuple[int, int] = (0, 1)) -> list[Result]:
    """Compile the jobs of one shard (job i goes to shard i mod count) in a fresh Triton cache:
    a cached kernel would skip ptxas, whose log is the point."""
    if not hasattr(triton, "knobs"):
        raise RuntimeError(f"triton {triton.__version__} has no triton.knobs (3.4 and later): "
                           "its ptxas log cannot be read here")
    if _launch.INTERPRET:
        raise RuntimeError("TRITON_INTERPRET is set: the kernels were decorated for the "
                           "interpreter, so there is nothing to compile; unset it")
    index, count = shard
    with tempfile.TemporaryDirectory(prefix="fastsiren-sm90-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        return [compile_config(launch, cfg)
                for i, (launch, cfg) in enumerate(jobs(full, filter_)) if i % count == index]


def _check_in_parallel(args) -> list[dict]:
    """Run ``args.jobs`` shards as child processes (Triton compiles in one thread) and merge."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(args.jobs):
            cmd = [sys.executable, os.path.abspath(__file__), "--shard",
                   f"{i}/{args.jobs}", "--json", os.path.join(tmp, f"{i}.json"),
                   "--filter", args.filter] + (["--full"] if args.full else [])
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        if any(p.wait() not in (0, 1) for p in procs):
            raise RuntimeError("a compile shard crashed")
        merged = []
        for i in range(args.jobs):
            with open(os.path.join(tmp, f"{i}.json")) as f:
                merged += json.load(f)["results"]
    return merged


def format_result(r: Result) -> str:
    status = "ok  " if r.passed else "FAIL"
    if not r.ok:
        return f"{status} {r.label:32s} {r.kernel:24s} {r.config:18s} {r.error}"
    feats = " ".join(f"{k}x{v}" for k, v in r.features.items())
    return (f"{status} {r.label:32s} {r.kernel:24s} {r.config:18s} regs={r.registers:3d} "
            f"spill_st={r.spill_stores} spill_ld={r.spill_loads} stack={r.stack} "
            f"smem={(r.shared or 0) // 1024:3d}K "
            f"B/pt={r.traffic_per_point:7.0f} {r.seconds:5.1f}s {feats}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--filter", default="", help="only launches whose label or kernel "
                        "contains this")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--full", action="store_true", help="every workload, not only the "
                        "test tier's")
    parser.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.jobs > 1:
        results = [Result(**r) for r in _check_in_parallel(args)]
    else:
        index, count = (int(v) for v in args.shard.split("/"))
        results = check(args.full, args.filter, (index, count))
    print(f"triton {triton.__version__}, target sm_{TARGET.arch}a")
    for r in results:
        print(format_result(r))
    failed = [r for r in results if not r.passed]
    print(f"{len(results)} configs compiled in {time.perf_counter() - t0:.0f} s, "
          f"{len(failed)} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"triton": triton.__version__, "results": [asdict(r) for r in results]},
                      f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
