"""Tier a: the torch backend's compiled chunk functions (``FASTSIREN_COMPILE=1``) against the
autograd reference, in float64 with the same tolerances as the eager path: compilation may fuse
and reorder elementwise work, which in float64 moves results by rounding only."""

from __future__ import annotations

import pytest
import torch
from test_sine_jet import F64_TOL, check, run_both

from fastsiren import env, jet_function
from fastsiren.errors import InputError


@pytest.mark.slow  # forward and backward graphs compiled: seconds to a minute
@pytest.mark.filterwarnings("error:fastsiren. torch.compile")  # no silent eager fallback
def test_compiled_chunks_match_reference_float64(gen, monkeypatch):
    monkeypatch.setenv(env.COMPILE, "1")
    case = (None, 37, 2, 16, 1, 2, True, 30.0)  # order 2, x needs a gradient
    check(run_both(gen, case, 2, False, torch.float64), F64_TOL, 1e-10)
    compiled = {fn.__name__ for fn in jet_function._compiled_chunk_fns()}
    assert compiled == {"_forward_chunk", "_backward_chunk"}  # both ran compiled


def test_compile_switch_is_validated(monkeypatch):
    monkeypatch.setenv(env.COMPILE, "yes")
    with pytest.raises(InputError, match="FASTSIREN_COMPILE must be 0 or 1"):
        env.compile_jets()
    monkeypatch.setenv(env.COMPILE, "0")
    assert env.compile_jets() is False

    monkeypatch.delenv(env.COMPILE)
    assert env.compile_jets() is False  # eager by default


def test_compile_switch_runs_batched_weights_eagerly_and_exactly(gen, monkeypatch):
    # Batched weights (B > 1) break dynamo's backward graph (an IndexError inside the resumed
    # graph, torch 2.13), so with the switch on they take the eager chunk functions.
    monkeypatch.setenv(env.COMPILE, "1")
    jet_function._COMPILED.clear()
    case = (2, 19, 2, 8, 1, 1, True, 30.0)  # B = 2, order 2
    check(run_both(gen, case, 2, False, torch.float64), F64_TOL, 1e-10)
    assert jet_function._compiled_chunk_fns() == []  # nothing went through torch.compile
