"""The helpers every task shares (fastsiren.tasks.common): chunked grid evaluation gives the jet
of one call, the chunk policy, batch sampling, HxW parsing, PSNR."""

from __future__ import annotations

import math

import pytest
import torch

from fastsiren.errors import InputError
from fastsiren.modules import BatchedSiren, Siren
from fastsiren.tasks.common import (
    eval_chunk,
    evaluate_on_grid,
    parse_hxw,
    psnr,
    psnr_tensor,
    random_subset,
)


def _assert_same_jet(chunked, whole):
    for name, value in whole.fields().items():
        torch.testing.assert_close(getattr(chunked, name), value.detach(), msg=name)


@pytest.mark.parametrize("order, hessian_diag", [(0, False), (1, False), (2, False), (2, True)],
                         ids=["value", "gradient", "laplacian", "hessian-diagonal"])
def test_chunked_grid_evaluation_is_the_jet_of_one_call(order, hessian_diag):
    torch.manual_seed(0)
    model = Siren(2, 16, 1, 3, outermost_linear=True, backend="torch").double()
    coords = torch.rand(37, 2, dtype=torch.float64) * 2 - 1
    chunked = evaluate_on_grid(model, coords, order, hessian_diag, chunk=8)
    _assert_same_jet(chunked, model.jet(coords, order=order, hessian_diag=hessian_diag))


@pytest.mark.parametrize("shared", [False, True], ids=["own-grids", "one-shared-grid"])
def test_chunked_grid_evaluation_of_a_batched_model(shared):
    """Points are concatenated along the point axis, also when B networks share one grid."""
    torch.manual_seed(0)
    model = BatchedSiren(3, 2, 16, 1, 1, backend="torch").double()
    coords = torch.rand(37, 2, dtype=torch.float64) * 2 - 1
    if not shared:
        coords = coords.expand(3, -1, -1) + torch.linspace(0, 0.1, 3, dtype=torch.float64)[
            :, None, None]
    chunked = evaluate_on_grid(model, coords, order=2, chunk=8)
    assert chunked.value.shape == (3, 37, 1) and chunked.grad.shape == (3, 37, 1, 2)
    _assert_same_jet(chunked, model.jet(coords, order=2))


def test_chunk_policy_shares_one_budget_over_slabs_and_networks():
    assert eval_chunk(0, 2) == 65536
    assert eval_chunk(2, 2) == 16384  # value, 2 gradients, Laplacian
    assert eval_chunk(2, 2, hessian_diag=True) == 65536 // 5
    assert eval_chunk(2, 2, networks=4) == 4096


def test_random_subset_draws_distinct_points():
    generator = torch.Generator().manual_seed(0)
    assert random_subset(40, 1.0, generator, "cpu") is None
    pick = random_subset(40, 0.25, generator, "cpu")
    assert len(pick) == 10 and len(set(pick.tolist())) == 10
    assert 0 <= int(pick.min()) and int(pick.max()) < 40
    assert len(random_subset(40, 1e-6, generator, "cpu")) == 1  # never an empty batch


def test_hxw_parser_and_its_one_line_error():
    assert parse_hxw("24x40", "--render-size") == (24, 40)
    assert parse_hxw("7", "--resolution") == (7, 7)
    assert parse_hxw(32, "--resolution") == (32, 32)
    for bad in ("big", "1x5", "2x3x4"):
        with pytest.raises(InputError, match="--render-size: expected S or HxW"):
            parse_hxw(bad, "--render-size")


def test_psnr_on_floats_and_logged_tensors():
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(0.0) == math.inf
    # values on [-1, 1] span 2: the same error as 0.01 on [0, 1]
    assert float(psnr_tensor(torch.tensor(0.04), peak=2.0)) == pytest.approx(20.0)
