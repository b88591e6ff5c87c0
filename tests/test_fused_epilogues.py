"""Tier a: the torch backend's compiled variant (``FASTSIREN_COMPILE=1``: chunk functions
compiled whole over the traceable epilogues of ``fastsiren.fused_epilogues``).

The epilogues' math is checked without compiling: run eagerly, each must equal the eager
in-place one (``fastsiren.sine_jet.EagerEpilogues``) in float64 to rounding, for every layout.
Compiled, whole networks must match the autograd reference with the eager path's float64
tolerances: compilation may reorder elementwise work, which in float64 moves results by
rounding only."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import assert_rel_close
from test_sine_jet import F64_TOL, check, run_both

from fastsiren import env
from fastsiren.errors import InputError
from fastsiren.fused_epilogues import FusedEpilogues
from fastsiren.jet import JetLayout
from fastsiren.sine_jet import EagerEpilogues

LAYOUTS = [
    pytest.param(JetLayout(0, 2), id="order0"),
    pytest.param(JetLayout(1, 3), id="order1-d3"),
    pytest.param(JetLayout(2, 2), id="lap-d2"),
    pytest.param(JetLayout(2, 3), id="lap-d3"),
    pytest.param(JetLayout(2, 3, hessian_diag=True), id="hessdiag-d3"),
]
B, N, M = 2, 9, 5
FUSED_EAGERLY = FusedEpilogues  # the fused forms run eagerly


def _rand(gen, *shape):
    return torch.randn(shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("for_backward", [True, False])
def test_fused_forward_epilogues_equal_eager(gen, layout, for_backward):
    u, g = _rand(gen, B, N, M) * 3, _rand(gen, B, layout.d, M) * 3
    out, second = FUSED_EAGERLY.first_forward(u.clone(), g, layout, for_backward)
    out_e, second_e = EagerEpilogues.first_forward(u.clone(), g, layout, for_backward)
    assert_rel_close(out, out_e, 1e-14, "first layer out")
    assert_rel_close(second, second_e, 1e-14, "first layer cos u (or u)")

    G = _rand(gen, B, layout.rows, N, M) * 3
    out = FUSED_EAGERLY.sine_forward(G.clone(), layout, for_backward)
    out_e = EagerEpilogues.sine_forward(G.clone(), layout, for_backward)
    assert out.shape == out_e.shape == G.shape
    assert_rel_close(out, out_e, 1e-14, "sine layer out")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_backward_epilogues_equal_eager(gen, layout):
    grad_out = _rand(gen, B, layout.rows, N, M)
    G, s = _rand(gen, B, layout.rows, N, M) * 3, _rand(gen, B, N, M)
    # each set's backward reads G as its own forward keeps it (as_kept)
    assert_rel_close(
        FUSED_EAGERLY.sine_backward(grad_out, FUSED_EAGERLY.as_kept(G.clone()), s, layout),
        EagerEpilogues.sine_backward(grad_out, EagerEpilogues.as_kept(G.clone()), s, layout),
        1e-13, "G bar")

    c, g = _rand(gen, B, N, M), _rand(gen, B, layout.d, M)
    u_bar, g_bar = FUSED_EAGERLY.first_backward(grad_out, s, c, g, layout)
    u_bar_e, g_bar_e = EagerEpilogues.first_backward(grad_out, s, c, g, layout)
    assert_rel_close(u_bar, u_bar_e, 1e-13, "u bar")
    if layout.order == 0:
        assert g_bar is None and g_bar_e is None
    else:
        assert_rel_close(g_bar, g_bar_e, 1e-13, "g bar")


def has_cpp_compiler() -> bool:
    """Whether torch.compile's CPU code generation finds a C++ compiler (its own search)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:  # noqa: BLE001 - any failure of the search means no compiler to use
        return False
    return True


@pytest.fixture(params=["as found", "no compiler"])
def cpp_compiler(request):
    """The machine's C++ compiler, and a machine without one (inductor pointed at a name that
    does not exist): there the chunks must run eagerly, with the fallback warning."""
    if request.param == "as found":
        yield has_cpp_compiler()
        return
    from torch._inductor import config

    # inductor's own patch context: monkeypatch's undo on its config proxy removes the option
    # instead of restoring it, which broke the next case.
    with config.patch({"cpp.cxx": ("fastsiren-test-no-such-compiler",)}):
        yield has_cpp_compiler()


@pytest.mark.slow  # two chunk graphs compiled per case: about half a minute on 2 cores
@pytest.mark.parametrize("case, hessian_diag", [
    pytest.param((None, 37, 2, 16, 1, 2, True, 30.0), False, id="laplacian"),
    pytest.param((2, 19, 3, 8, 1, 1, True, 30.0), True, id="hessdiag-batched"),
])
def test_compiled_jets_match_reference_float64(gen, monkeypatch, cpp_compiler, case,
                                               hessian_diag):
    """With a C++ compiler: compiled, no fallback warning, one graph per chunk function.
    Without one: the same jets from the eager path, and the fallback said so (never silent)."""
    from fastsiren import jet_function

    monkeypatch.setenv(env.COMPILE, "1")
    monkeypatch.setattr(jet_function, "_COMPILED", {})
    jet_function._warn_compile_failed.cache_clear()
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check(run_both(gen, case, 2, hessian_diag, torch.float64), F64_TOL, 1e-10)
    fallbacks = [str(w.message) for w in caught
                 if str(w.message).startswith("fastsiren: torch.compile")]
    torch._dynamo.reset()  # no graph compiled without a compiler outlives this test
    if cpp_compiler:
        assert not fallbacks, fallbacks
        # the forward and the backward chunk, each one graph (a graph break would add more)
        assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    else:
        assert fallbacks and all("running it eagerly" in m for m in fallbacks), fallbacks


def test_compile_switch_is_validated(monkeypatch):
    monkeypatch.setenv(env.COMPILE, "yes")
    with pytest.raises(InputError, match="FASTSIREN_COMPILE must be 0 or 1"):
        env.compile_jets()
    monkeypatch.setenv(env.COMPILE, "0")
    assert env.compile_jets() is False

    monkeypatch.delenv(env.COMPILE)
    assert env.compile_jets() is False  # eager by default


def test_explicit_argument_wins_over_the_environment(gen, monkeypatch):
    import fastsiren as fs

    monkeypatch.setenv(env.COMPILE, "1")
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    model = fs.Siren(2, 8, 1, 1, compile_chunks=False)
    model.jet(torch.rand(5, 2, generator=gen), order=2).lap.sum().backward()
    assert counters["stats"]["unique_graphs"] == 0
    assert "compile_chunks=False" in repr(model)
