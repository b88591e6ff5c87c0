"""Launch helpers shared by the kernel modules: interpreter flag, allocation, tuning configs,
splits of reductions over points, and the input checks every launcher runs."""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from fastsiren import env
from fastsiren.jet import JetLayout

# Triton decides at decoration time whether a kernel is compiled or interpreted, so the flag is
# read once, when the kernel modules are imported, not per call.
INTERPRET = env.interpreting()

# Options every launch passes to the compiler, so that no default decides for us.
# enable_fp_fusion: a * b + c as one FMA (one rounding), what the kernels were validated with;
# Triton 3.9 warns that its default flips to no fusion in 3.10.
COMPILE_OPTIONS = {"enable_fp_fusion": True}

# The offline compile check (tools/compile_check.py) replays the launchers on meta tensors,
# recording the launches instead of running them; only while it does, the meta device is accepted.
ALLOW_META = False

# Storage dtypes the kernels accept. fp64 is for exactness checks (the interpreter runs it; on
# GPU tl.dot in fp64 is slow but correct); half types are loaded as such, computed in fp32.
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# Reductions over points (W̄, first-layer W̄ and b̄) are split into partial sums so that enough
# programs run at once: at least this many rows per split keeps each program's loop long enough
# to amortise its partial tile (small under the interpreter so the tests exercise splitting).
MIN_ROWS_PER_SPLIT = 64 if INTERPRET else 4096
# Split sizes are multiples of this, so every config's BLOCK_Q / BLOCK_N tiles a split exactly.
SPLIT_ALIGN = 128

# First layers with at most this many input features accumulate u with unrolled FMAs: a tl.dot
# needs a K tile of at least 16, so below that most of the tensor-core work would be padding.
FMA_MAX_K = 16


# Poisoning forced on for a while (``poisoned``): the self-check runs the kernels this way.
_poison_forced = False


def poison_enabled() -> bool:
    """``FASTSIREN_POISON=1``: every fresh kernel output is filled with NaN, so a tile a kernel
    forgot to write fails a comparison loudly instead of passing with stale memory."""
    return _poison_forced or env.poison()


@contextlib.contextmanager
def poisoned():
    """NaN-fill fresh kernel outputs inside the block, whatever ``FASTSIREN_POISON`` says (the
    self-check: a reused buffer could otherwise still hold a right answer)."""
    global _poison_forced
    previous, _poison_forced = _poison_forced, True
    try:
        yield
    finally:
        _poison_forced = previous


def new_empty(*shape: int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.empty`` for a kernel output, NaN-filled when poisoning is on."""
    t = torch.empty(shape, dtype=dtype or like.dtype, device=like.device)
    if poison_enabled():
        t.fill_(float("nan"))
    return t


def acc_dtype(dtype: torch.dtype):
    """The accumulator / epilogue dtype for a storage dtype: fp64 stays fp64, the rest fp32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def acc_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    """``acc_dtype`` as a torch dtype, for partial-sum buffers and torch reductions."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_precision(dtype: torch.dtype, mode: str) -> str:
    """``tl.dot``'s input_precision: the knob for fp32, "ieee" for fp64 (no TF32 there)."""
    return mode if dtype == torch.float32 else "ieee"


def pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1): tl.arange extents must be powers of two."""
    return triton.next_power_of_2(max(int(n), 1))


def size_bucket(n: int) -> int:
    """log2 bucket of a size, for autotune keys (never key on the raw point count: every new N
    would re-run the tuning)."""
    return max(int(n), 1).bit_length()


def row_major_programs(n: int, block_n: int, m: int, block_m: int) -> int:
    """Programs of a 1-D grid over [n / block_n, m / block_m] tiles (see ``row_major_tile``)."""
    return triton.cdiv(n, block_n) * triton.cdiv(m, block_m)


def config(kw: dict, warps: int = 4, stages: int = 2) -> triton.Config:
    return triton.Config(kw, num_warps=warps, num_stages=stages)


class ConfigList(list):
    """A kernel's autotune list with its GPU candidates beside it (``gpu``): under the
    interpreter the list itself holds the one interpreter config, but the tests still run the
    GPU tiles there one at a time (``candidate_configs``)."""

    gpu: list[triton.Config]


def configs(gpu: list[triton.Config], interpret: triton.Config) -> ConfigList:
    """The autotune list: the GPU configs, or the single interpreter config (multi-config
    autotuning needs a GPU to time on)."""
    chosen = ConfigList([interpret] if INTERPRET else gpu)
    chosen.gpu = list(gpu)
    return chosen


def candidate_configs(tuner) -> list[triton.Config]:
    """Every GPU config of an autotuned kernel (before its prune), also under the interpreter."""
    return list(getattr(tuner.configs, "gpu", tuner.configs))


# How tl.dot runs decides what a tile costs in registers, so configs are pruned per register
# class; the sm90 compile tier (tools/compile_check.py) proves that every kept config has no
# spills.
#   "tf32"    fp32 storage, one TF32 tensor-core pass
#   "half"    bf16 / fp16 storage on the tensor cores
#   "tf32x3"  three TF32 passes on split operands: more operand registers than "tf32"
#   "ieee"    fp32 FMAs on the CUDA cores: the operand tiles live in registers
#   "fp64"    fp64 accumulators and operands: two registers per value
REGISTER_CLASSES = ("tf32", "half", "tf32x3", "ieee", "fp64")
ANY_CLASS = frozenset(REGISTER_CLASSES)
NOT_FP64 = ANY_CLASS - {"fp64"}


def register_class(named_args: dict, constexprs: dict) -> str:
    """The register class of a launch, from its first tensor's dtype and INPUT_PRECISION."""
    dtype = next(v.dtype for v in named_args.values() if isinstance(v, torch.Tensor))
    if dtype == torch.float64:
        return "fp64"
    if dtype in (torch.float16, torch.bfloat16):
        return "half"
    return constexprs.get("INPUT_PRECISION", "ieee")


def unaligned(named_args: dict, names: tuple[str, ...]) -> bool:
    """Whether any of these size or stride arguments is not a multiple of 16 (1 excepted, which
    Triton specialises apart). Triton then cannot prove rows aligned, addresses cost registers,
    and tiles that compile clean at widths 64-256 spill: at width 100 (the sm90 tier, sm_90a,
    triton 3.9) the hidden forward spilled 48-820 B, its VJP 124-148 B, the matmul at 64x64x64
    8-572 B, the first layer at 64x128 72 B, all at 255 registers."""
    return any(isinstance(v := named_args.get(n), int) and v != 1 and v % 16 for n in names)


def tile_area(cfg: triton.Config) -> int:
    """The product of a config's block sizes."""
    area = 1
    for key, value in cfg.kwargs.items():
        if key.startswith("BLOCK_"):
            area *= value
    return area


def prune_by_class(table: list[tuple[triton.Config, frozenset[str]]],
                   alignment: tuple[str, ...] = ()):
    """An autotune prune keeping the configs of ``table`` allowed for the launch's register
    class (kernels without tl.dot: fp32 is "ieee"); for a launch whose ``alignment`` arguments
    are ``unaligned``, only the smallest of those tiles."""
    allowed = {config_tag(cfg): classes for cfg, classes in table}

    def prune(candidates, named_args, **constexprs):
        cls = register_class(named_args, constexprs)
        kept = [c for c in candidates if cls in allowed[config_tag(c)]]
        if not kept:
            raise RuntimeError(f"no config allowed for register class {cls!r}")
        if unaligned(named_args, alignment):
            smallest = min(tile_area(c) for c in kept)
            kept = [c for c in kept if tile_area(c) == smallest]
        return kept
    return prune


def config_tag(cfg: triton.Config) -> str:
    """A config's tiles, warps and stages, e.g. "64x64x32 w4 s3"."""
    tiles = "x".join(str(v) for v in cfg.kwargs.values())
    return f"{tiles} w{cfg.num_warps} s{cfg.num_stages}"


def _target_programs(device: torch.device) -> int:
    """How many programs keep the device busy, for splitting reductions over points."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def n_splits(rows: int, tiles: int, device: torch.device) -> int:
    """Splits of a reduction over ``rows`` points for ``tiles`` output tiles."""
    want = triton.cdiv(_target_programs(device), max(tiles, 1))
    return max(1, min(want, rows // MIN_ROWS_PER_SPLIT))


def check_tensor(t: torch.Tensor, name: str, dims: int, like: torch.Tensor | None = None,
                 contiguous: bool = True):
    """Validate rank, dtype and device; return ``t`` made contiguous (or as is)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name} must have {dims} dims, got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} has dtype {t.dtype}; the Triton kernels support {SUPPORTED_DTYPES}"
        )
    if like is not None:
        if t.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, expected {like.dtype}")
        if t.device != like.device:
            raise RuntimeError(f"{name} is on {t.device}, expected {like.device}")
    if t.device.type != "cuda" and not INTERPRET and not (ALLOW_META and t.device.type == "meta"):
        raise RuntimeError(
            f"{name} is on {t.device}: the Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 "
            "set before importing fastsiren to run them on the CPU"
        )
    return t.contiguous() if contiguous else t


def row_strided(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when its last dim is unit-stride (kernels take the other strides), else a
    contiguous copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def check_shape(t: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def check_weights(w, b, like, name):
    w = check_tensor(w, f"{name} weight", 3, like)
    if w.shape[0] != like.shape[0]:
        raise ValueError(f"{name} weight has batch {w.shape[0]}, the input has {like.shape[0]}")
    if b is not None:
        b = check_tensor(b, f"{name} bias", 2, like)
        check_shape(b, f"{name} bias", tuple(w.shape[:2]))
    return w, b


def check_stack(stack, layout, name):
    stack = check_tensor(stack, name, 4)
    if stack.shape[1] != layout.rows:
        raise ValueError(f"{name} has {stack.shape[1]} slabs; the jet layout {layout} needs "
                         f"{layout.rows}")
    return stack


def check_value(t, name, shape, like):
    """A [B, N, M] tensor that may be a strided view (s: the next layer's value slab)."""
    if t is None:
        raise ValueError(f"{name} is required at this jet order")
    check_tensor(t, name, 3, like, contiguous=False)
    check_shape(t, name, shape)
    return row_strided(t)


def slab_counts(layout: JetLayout) -> dict:
    """The slab-count constexprs of the stacked-jet kernels."""
    return dict(D=layout.n_grad, N_LAP=layout.n_lap, D_PAD=pow2(layout.n_grad),
                L_PAD=pow2(layout.n_lap))


def _squeeze_interpreter_index() -> None:
    """Triton 3.6's interpreter turns a scalar argument used as a loop bound into an int with
    ``int()`` of a one-element array, which numpy >= 2.4 rejects (later Triton squeezes it
    first): do as later Triton does. Only under the interpreter, only where that code is."""
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "squeezes_index", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.squeezes_index = True
    interpreter._patch_lang_tensor = patch_lang_tensor


if INTERPRET and tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 7):
    _squeeze_interpreter_index()
