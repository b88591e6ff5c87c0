"""Audio task: the time-grid equivalence with the official code, the loss against its float64
twin, the normalisation and SNR."""

import fastsiren.reference as ref
import numpy as np
import pytest
import torch
from helpers import assert_rel_close

import fastsiren as fs
from fastsiren.errors import InputError
from fastsiren.tasks.audio import (
    normalise_waveform,
    official_to_unit_time,
    snr_db,
    time_grid,
    waveform_loss,
)


def test_unit_time_with_omega_3000_is_the_official_grid_with_omega_30(gen):
    # The official audio network: linspace(-100, 100), omega_0 = 30 in every layer.
    torch.manual_seed(0)
    official = ref.Siren(1, 32, 2, 1, outermost_linear=True, first_omega_0=30.0).double()
    ours = fs.Siren(1, 32, 2, 1, outermost_linear=True, first_omega_0=3000.0,
                    backend="torch").double()
    ours.load_state_dict(official_to_unit_time(official.state_dict()))
    t = time_grid(101, torch.float64)
    t_official = t * 100.0
    assert torch.allclose(t_official, torch.linspace(-100, 100, 101, dtype=torch.float64)[:, None])
    jet = ours.jet(t, order=2)
    tr = t_official.clone().requires_grad_()
    value = official(tr)
    # Same values; derivatives by the chain rule: d/dt = 100 d/dt', d2/dt2 = 1e4 d2/dt'2.
    assert_rel_close(jet.value, value, 1e-12, "value")
    assert_rel_close(jet.grad[..., 0], 100 * ref.gradient(value, tr), 1e-11, "gradient")
    assert_rel_close(jet.lap, 1e4 * ref.laplace(value, tr), 1e-10, "Laplacian")


def test_waveform_loss_matches_reference_twin(gen):
    torch.manual_seed(1)
    fast = fs.Siren(1, 24, 2, 1, outermost_linear=True, first_omega_0=3000.0,
                    backend="torch").double()
    slow = ref.Siren(1, 24, 2, 1, outermost_linear=True, first_omega_0=3000.0).double()
    slow.load_state_dict(fast.state_dict())
    t = time_grid(37, torch.float64)
    target = torch.rand(37, 1, generator=gen, dtype=torch.float64) * 2 - 1
    loss = waveform_loss(fast.jet(t, order=0), target)
    twin = ((slow(t) - target) ** 2).mean()  # the official function_mse
    assert_rel_close(loss, twin, 1e-13, "loss")
    grads = torch.autograd.grad(loss, list(fast.parameters()))
    twins = torch.autograd.grad(twin, list(slow.parameters()))
    for g, t_ in zip(grads, twins):
        assert_rel_close(g, t_, 1e-11, "parameter gradient")


def test_normalise_and_snr():
    samples = np.array([0.1, -0.4, 0.2], np.float32)
    scaled, peak = normalise_waveform(samples)
    assert peak == pytest.approx(0.4) and scaled.tolist() == pytest.approx([0.25, -1.0, 0.5])
    truth = np.array([1.0, -1.0, 1.0, -1.0])
    assert snr_db(truth + [0.1, 0, 0, 0], truth) == pytest.approx(10 * np.log10(4 / 0.01))


@pytest.mark.parametrize(
    "samples, message",
    [([], "0 samples"), ([0.3], "1 sample:"), ([0.0, 0.0], "silent"), ([0.1, np.nan], "NaN")],
    ids=["empty", "one-sample", "silent", "nan"],
)
def test_unfittable_waveforms(samples, message):
    with pytest.raises(InputError, match=message):
        normalise_waveform(np.array(samples))
