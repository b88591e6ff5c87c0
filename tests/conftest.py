"""Test configuration shared by the three tiers.

Triton decides at decoration time whether a kernel is compiled or interpreted, so
TRITON_INTERPRET must be set before anything imports fastsiren.kernels: without CUDA the Triton
tier runs on the CPU under the interpreter. The device comes from torch, never from Triton's driver
object (which raises without a GPU).
"""

import os
import sys
from pathlib import Path

import pytest
import torch

# tools/ (developer tools that are not installed, such as the sm_90a compile check) imports as
# the package ``tools`` from the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def gen():
    """A seeded generator per test: no global RNG state in test bodies."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def one_thread():
    """Tiny shapes run on one thread: a second adds only synchronisation (on a loaded 2-core
    machine, tens of milliseconds per small matmul). Modules that want it for every test say
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def float64():
    """float64 as torch's default dtype for the test, restored after it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def device():
    return torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture
def kernel_launches(monkeypatch):
    """Counts the Triton backend's kernel launches by kernel name (``_sine_layer_fwd_kernel``:
    3, ...), so a test can assert which path ran: a result that matches because the dispatch
    took another path would otherwise pass."""
    from collections import Counter

    from fastsiren.kernels.sine_jet import autotuners

    launches = Counter()
    for name, tuner in autotuners().items():
        def counted(*args, _name=name, _run=tuner.run, **kwargs):
            launches[_name] += 1
            return _run(*args, **kwargs)

        monkeypatch.setattr(tuner, "run", counted)
    return launches


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA (tier c)")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
