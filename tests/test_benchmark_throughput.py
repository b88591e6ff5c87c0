"""The throughput workload: the loop, the torch.func vmap peer and fastsiren's batched fit start
from the same networks and take the same Adam steps, so each image stops at the same step with
the same PSNR whichever provider fitted it, also after finished networks left the batch."""

from __future__ import annotations

import numpy as np
import pytest

from fastsiren.benchmark import throughput
from fastsiren.tasks.common import pixel_grid

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_providers_agree_image_by_image():
    case = throughput.ThroughputCase(8, 5, width=16, depth=1, lr=3e-3, target_psnr=28.0,
                                     max_steps=150, check_every=1)
    target = throughput.crops(case.images, case.size, seed=1).double()
    coords = pixel_grid(case.size, case.size).double().expand(case.images, -1, -1)
    weights, biases, omegas = throughput.initial_parameters(case, seed=1)
    params = [t.double() for t in weights + biases]
    loop = throughput.finish(throughput._fit_loop(params, coords, target, case, "torch"))
    batched = throughput.finish(throughput._fit_stacked(
        throughput._fastsiren_mse(omegas, "torch"), params, coords, target, case))
    vmapped = throughput.finish(throughput._fit_stacked(
        throughput._vmap_mse(case), params, coords, target, case))
    psnr, steps = loop
    assert (psnr >= case.target_psnr).all() and len(set(steps.tolist())) > 1  # stops differ
    for other_psnr, other_steps in (batched, vmapped):
        np.testing.assert_array_equal(other_steps, steps)
        np.testing.assert_allclose(other_psnr, psnr, rtol=0, atol=1e-6)


def test_measure_reports_every_provider():
    case = throughput.ThroughputCase(8, 2, width=16, depth=1, lr=3e-3, target_psnr=25.0,
                                     max_steps=150)
    result = throughput.measure(case, rounds=1, backend="torch")
    assert set(result["providers"]) == set(throughput.PROVIDERS)
    for row in result["providers"].values():
        assert row["images_per_second"] > 0 and row["reached"] == 2
    assert "| 2 x 8px" in throughput.markdown([result])
