"""Workloads, cases and presets: what the benchmark measures (plain data, no torch)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

DEPTH = 3  # hidden layers, as the SIREN paper's image and SDF fits
OUT_FEATURES = 1
OMEGA = 30.0
DEFAULT_BATCH = 8  # networks in the batched-weights workloads
HELMHOLTZ_OFFICIAL_BATCH = 230**2  # points per step of the official Helmholtz experiment


# ---------------------------------------------------------------------------------------------
# Workloads and cases


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    order: int
    hessian_diag: bool = False
    # None: forward only; "value", "grad", "lap" or "helmholtz": a training step
    loss: str | None = None
    batched: bool = False
    out_features: int = OUT_FEATURES
    only_d: int | None = None  # a workload defined for one input dimension (None: any)

    def accepts(self, d: int) -> bool:
        return self.only_d is None or d == self.only_d

    @property
    def train(self) -> bool:
        return self.loss is not None

    def rows(self, d: int) -> int:
        """Slabs of the jet (value, d gradients, Laplacian or d second derivatives): the
        number of row blocks every hidden-layer matmul multiplies."""
        if self.order == 0:
            return 1
        if self.order == 1:
            return 1 + d
        return 1 + d + (d if self.hessian_diag else 1)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("value", "value forward", 0),
        Workload("jet1", "jet forward, order 1 (value, gradient)", 1),
        Workload("jet2", "jet forward, order 2 (value, gradient, Laplacian)", 2),
        Workload("hessdiag", "jet forward, Hessian diagonal", 2, hessian_diag=True),
        Workload("step_value", "training step, value loss", 0, loss="value"),
        Workload("step_grad", "training step, gradient (eikonal) loss", 1, loss="grad"),
        Workload("step_lap", "training step, Laplacian loss", 2, loss="lap"),
        Workload("batched_jet2", "batched weights: jet forward, order 2", 2, batched=True),
        Workload(
            "batched_step_lap", "batched weights: training step, Laplacian loss", 2,
            loss="lap", batched=True,
        ),
        # The Helmholtz task's step (fastsiren.physics): the PML residual of a complex field (two
        # outputs) from the value, gradient and per-axis second derivatives on [-1, 1]².
        Workload(
            "step_helmholtz", "training step, Helmholtz PML residual (2 outputs)", 2,
            hessian_diag=True, loss="helmholtz", out_features=2, only_d=2,
        ),
    ]
}


@dataclass(frozen=True)
class Case:
    """One measured configuration: workload and shapes (N points per network, B networks)."""

    workload: str
    d: int
    width: int
    n: int
    batch: int = 1

    @property
    def spec(self) -> Workload:
        return WORKLOADS[self.workload]

    @property
    def points(self) -> int:
        return self.batch * self.n

    def label(self) -> str:
        b = f" B={self.batch}" if self.spec.batched else ""
        return f"d={self.d} W={self.width}{b} N={self.n}"


@dataclass(frozen=True)
class Sweep:
    workloads: tuple[str, ...]
    ds: tuple[int, ...]
    widths: tuple[int, ...]
    ns: tuple[int, ...]
    batch: int = DEFAULT_BATCH

    def cases(self) -> list[Case]:
        return [
            Case(w, d, width, n, self.batch if WORKLOADS[w].batched else 1)
            for w, d, width, n in itertools.product(self.workloads, self.ds, self.widths, self.ns)
            if WORKLOADS[w].accepts(d)
        ]


ALL = tuple(WORKLOADS)
UNBATCHED = tuple(w for w in WORKLOADS if not WORKLOADS[w].batched)
BATCHED = tuple(w for w in WORKLOADS if WORKLOADS[w].batched)

# Presets: the case lists, how long to time each measurement, which precisions.
PRESETS: dict[str, dict] = {
    # For tests and the pytest smoke run: tiny shapes, every workload.
    "smoke": dict(
        sweeps=[Sweep(ALL, (2,), (16,), (64,), batch=2)], min_time=0.0, min_reps=2, warmup=1
    ),
    # `fastsiren bench --quick`: the headline workloads at one size, < 1 min on 2 CPU cores.
    "quick": dict(
        sweeps=[
            Sweep(("value", "jet2", "step_lap"), (2,), (128,), (4096,)),
            Sweep(("step_helmholtz",), (2,), (64,), (1024,)),
        ],
        min_time=0.1, min_reps=3, warmup=1,
    ),
    # The checked-in CPU set (7-10 min on 2 cores, compile times included): an N sweep of the
    # headline workloads at widths 64 and 256, every workload at d = 2 and 3, the batched case.
    # A W = 256, N = 4096 Laplacian step case costs ~25 s here (7 providers, 4-5 calls each).
    "cpu": dict(
        sweeps=[
            Sweep(("jet2", "step_lap"), (2,), (64,), (4096, 8192, 16384)),
            Sweep(("jet2", "step_lap"), (2,), (256,), (2048, 4096, 8192)),
            Sweep(UNBATCHED, (2, 3), (256,), (2048,)),
            Sweep(BATCHED, (2,), (64, 256), (512,), batch=8),
            # The Helmholtz step at the official width (~50 s for this case with every provider,
            # one thread); its official batch of 52900 points is in the gpu preset: here one
            # eager-autograd step at 8192 points already takes 3.8 s.
            Sweep(("step_helmholtz",), (2,), (256,), (8192,)),
        ],
        min_time=0.4, min_reps=3, warmup=0,
    ),
    # The headline workloads at one size per width, and the order-1 adjoint against its own
    # bound: for a CPU shared with other work, where compile times and every call run several
    # times slower than on a quiet machine and the full cpu set does not fit in half an hour.
    "cpu-short": dict(
        sweeps=[
            Sweep(("jet2", "step_lap"), (2,), (64, 256), (4096,)),
            Sweep(("step_grad",), (3,), (64,), (4096,)),
        ],
        min_time=0.4, min_reps=3, warmup=0,
    ),
    # A GPU: N up to 2^20 (capped by memory: out-of-memory cases are reported as such).
    "gpu": dict(
        sweeps=[
            Sweep(("jet2", "step_lap"), (2,), (64, 128, 256), tuple(4**k for k in range(6, 11))),
            Sweep(UNBATCHED, (1, 2, 3), (64, 256), (2**16, 2**20)),
            Sweep(BATCHED, (2,), (64, 256), (2**14,), batch=32),
            Sweep(("step_helmholtz",), (2,), (256,), (HELMHOLTZ_OFFICIAL_BATCH,)),
        ],
        min_time=0.0, min_reps=0, warmup=1,
    ),
    # The whole grid of the issue: in_features 1-3, widths 64-256, N 2^12..2^20 (hours on CPU).
    "full": dict(
        sweeps=[
            Sweep(UNBATCHED, (1, 2, 3), (64, 128, 256), tuple(2**k for k in range(12, 21, 2))),
            Sweep(BATCHED, (1, 2, 3), (64, 128, 256), (2**12, 2**14, 2**16), batch=16),
        ],
        min_time=0.3, min_reps=3, warmup=1,
    ),
}


def cases_for_preset(name: str) -> list[Case]:
    """The preset's cases, without duplicates, in sweep order."""
    seen: dict[Case, None] = {}
    for sweep in PRESETS[name]["sweeps"]:
        for case in sweep.cases():
            seen.setdefault(case)
    return list(seen)
