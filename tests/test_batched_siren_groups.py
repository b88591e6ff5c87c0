"""BatchedSiren on the CPU runs its networks in groups that fit the chunk budget of one
network's step; the grouping changes neither the jets nor the gradients."""

from __future__ import annotations

import pytest
import torch

from fastsiren.modules import BatchedSiren, network_group

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

WIDTH, POINTS = 16, 40


@pytest.mark.parametrize("shared_coords", [False, True])
@pytest.mark.parametrize("order", [0, 2])
def test_grouped_jet_equals_one_call(monkeypatch, shared_coords, order):
    torch.manual_seed(0)
    model = BatchedSiren(5, 2, WIDTH, 1, 1, backend="torch").double()
    x = torch.rand(POINTS, 2, dtype=torch.float64) * 2 - 1
    if not shared_coords:  # each network its own points
        x = x + 0.01 * torch.arange(5.0, dtype=torch.float64)[:, None, None]

    def run():
        fields = model.jet(x, order=order).fields()
        weights = {name: torch.linspace(0.5, 1.5, t.numel(), dtype=t.dtype).view(t.shape)
                   for name, t in fields.items()}
        loss = sum((t * weights[name]).sum() for name, t in fields.items())
        return fields, torch.autograd.grad(loss, list(model.parameters()))

    monkeypatch.setenv("FASTSIREN_CHUNK_BYTES", str(1 << 30))
    assert network_group(x, 5, WIDTH, order) >= 5  # one call
    whole, whole_grads = run()
    rows = 1 if order == 0 else 4  # value; value, 2 gradients, Laplacian
    monkeypatch.setenv("FASTSIREN_CHUNK_BYTES", str(2 * POINTS * rows * WIDTH * 8))
    assert network_group(x, 5, WIDTH, order) == 2  # three calls: 2, 2 and 1 networks
    grouped, grouped_grads = run()
    assert set(grouped) == set(whole)
    for name in whole:
        torch.testing.assert_close(grouped[name], whole[name], rtol=1e-10, atol=1e-12)
    for g, w in zip(grouped_grads, whole_grads):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_a_network_larger_than_the_budget_goes_alone(monkeypatch):
    monkeypatch.setenv("FASTSIREN_CHUNK_BYTES", "1")
    assert network_group(torch.zeros(3, 1000, 2), 3, WIDTH) == 1


def test_groups_hold_the_budget_of_one_network_chunk():
    # 64 images of 64x64 pixels at width 64, value loss: 4 networks of 1 MiB activations per call
    # under the default 4 MiB budget; 16x16 pixels: 64 networks per call.
    x = torch.zeros(64, 64 * 64, 2)
    assert network_group(x, 64, 64) == 4
    assert network_group(torch.zeros(512, 256, 2), 512, 64) == 64
