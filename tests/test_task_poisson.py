"""Poisson task: the finite-difference targets against analytic derivatives, the losses against
their float64 autograd twins on the reference, the gain-and-offset PSNR and the PSNR up to a
harmonic function."""

import json

import fastsiren.reference as ref
import numpy as np
import pytest
import torch
from helpers import assert_labelled, assert_rel_close
from PIL import Image

import fastsiren as fs
from fastsiren.cli import main
from fastsiren.errors import InputError
from fastsiren.tasks.common import pixel_grid
from fastsiren.tasks.poisson import (
    composite_gradient,
    discrete_laplacian,
    gradient_loss,
    harmonic_basis,
    laplacian_loss,
    psnr_after_gain_offset,
    psnr_up_to_harmonic,
    sobel_gradient,
)


def _grid(height, width):
    """Row and column coordinates of linspace(-1, 1) grids, [H, W] each."""
    return np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")


def test_sobel_is_exact_on_quadratics_in_grid_units():
    # A central difference is exact on quadratics and [1, 2, 1] smoothing on linear functions,
    # so away from the reflected border the Sobel estimate equals the analytic gradient.
    r, c = _grid(7, 10)
    image = (r**2 + 0.5 * r * c - 2 * c**2 + 0.3 * r)[..., None]
    grad = sobel_gradient(image)
    assert grad.shape == (7, 10, 1, 2)
    np.testing.assert_allclose(grad[1:-1, 1:-1, 0, 0], (2 * r + 0.5 * c + 0.3)[1:-1, 1:-1])
    np.testing.assert_allclose(grad[1:-1, 1:-1, 0, 1], (0.5 * r - 4 * c)[1:-1, 1:-1])


def test_laplacian_is_exact_on_cubics_in_grid_units():
    r, c = _grid(9, 6)  # unequal spacings per axis
    image = np.stack([r**3 + 2 * r**2 * c - c**3 + r * c, r**2], axis=-1)
    lap = discrete_laplacian(image)
    assert lap.shape == (9, 6, 2)
    np.testing.assert_allclose(lap[1:-1, 1:-1, 0], (6 * r + 4 * c - 6 * c)[1:-1, 1:-1], atol=1e-9)
    np.testing.assert_allclose(lap[1:-1, 1:-1, 1], 2.0, atol=1e-9)


def test_composite_is_the_gradient_of_the_blend():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 6, 3)), rng.random((5, 6, 3))
    blended = composite_gradient(sobel_gradient(a), sobel_gradient(b), weight=0.3)
    np.testing.assert_allclose(blended, sobel_gradient(0.7 * a + 0.3 * b), atol=1e-12)
    with pytest.raises(InputError, match="differ in shape"):
        composite_gradient(sobel_gradient(a), sobel_gradient(b[:4]))


def test_too_small_to_differentiate():
    with pytest.raises(InputError, match="too small to differentiate: 2x5"):
        sobel_gradient(np.zeros((2, 5, 1)))
    with pytest.raises(InputError, match="too small"):
        discrete_laplacian(np.zeros((5, 1, 1)))


def test_psnr_after_gain_offset():
    rng = np.random.default_rng(1)
    truth = rng.uniform(-1, 1, (400, 2))
    # A gain and an offset per channel cost nothing.
    assert psnr_after_gain_offset(3 * truth + [0.2, -1.0], truth)[0] > 150
    # Noise n orthogonal to span(1, truth): regressing truth t on t + n leaves, per channel,
    # the residual variance var(t) var(n) / (var(t) + var(n)); PSNR is on [0, 1] (halved).
    noise = rng.normal(0, 0.02, truth.shape)
    for c in range(2):  # remove its projection on span(1, truth)
        design = np.stack([truth[:, c], np.ones(len(truth))], axis=1)
        noise[:, c] -= design @ np.linalg.lstsq(design, noise[:, c], rcond=None)[0]
    psnr, gains, offsets = psnr_after_gain_offset(truth + noise, truth)
    var_t, var_n = truth.var(0), (noise**2).mean(0)
    expected = 10 * np.log10(1 / np.mean(var_t * var_n / (var_t + var_n) / 4))
    assert psnr == pytest.approx(expected, abs=1e-9)
    assert gains == pytest.approx(var_t / (var_t + var_n), rel=1e-9)
    assert offsets == pytest.approx((1 - np.array(gains)) * truth.mean(0), abs=1e-9)


def test_harmonic_basis_has_no_laplacian():
    # Re and Im of (x + iy)^k: the 5-point Laplacian of each column on a fine grid is ~0
    # (exactly 0 up to degree 3, O(h^2) beyond), while x^2 + y^2 has Laplacian 4.
    n = 101
    coords = np.stack(_grid(n, n), -1).reshape(-1, 2)  # float64: no rounding in the stencil
    basis = harmonic_basis(coords, degree=6).reshape(n, n, -1)
    assert basis.shape[-1] == 13
    lap = discrete_laplacian(basis)[2:-2, 2:-2]  # away from the reflected border
    assert np.abs(lap).max() < 0.5  # each term of the Laplacian of z^6 reaches 30
    bowl = (coords**2).sum(-1).reshape(n, n, 1)
    assert discrete_laplacian(bowl)[2:-2, 2:-2] == pytest.approx(4.0)


def test_psnr_up_to_harmonic_ignores_exactly_what_a_laplacian_cannot_see():
    n = 48
    coords = pixel_grid(n, n).numpy()
    x, y = coords[:, :1], coords[:, 1:]
    truth = 0.5 * np.sin(3 * x) * np.cos(2 * y) + 0.3 * x * y**2  # not harmonic
    # A harmonic polynomial of degree <= 6 and a gain: invisible to the metric, not to PSNR.
    harmonic = 0.4 * (x**3 - 3 * x * y**2) + 0.2 * x * y - 0.1
    fit = 0.8 * (truth + harmonic)
    assert psnr_up_to_harmonic(fit, truth, coords) > 120
    assert psnr_after_gain_offset(fit, truth)[0] < 30
    # A bowl x^2 + y^2 has Laplacian 4, not 0: it counts. The error left is the truth's
    # distance to span(fit, harmonic polynomials), here from an orthonormal basis (QR) of that
    # span; on [0, 1] (halved): finite, well below the harmonic case.
    bowl = 0.2 * (x**2 + y**2)
    span, _ = np.linalg.qr(np.concatenate([truth + bowl, harmonic_basis(coords)], axis=1))
    residual = truth - span @ (span.T @ truth)
    expected = 10 * np.log10(1 / np.mean((residual / 2) ** 2))
    assert psnr_up_to_harmonic(truth + bowl, truth, coords) == pytest.approx(expected, abs=1e-6)
    assert 20 < expected < 60
    # Pixel-scale noise (a checkerboard, amplitude 0.025 on [0, 1]) is what the Laplacian sees
    # most: nearly all of it counts (the gain can only trade a little of it for the truth).
    checker = 0.05 * (-1.0) ** np.indices((n, n)).sum(0).reshape(-1, 1)
    noisy = psnr_up_to_harmonic(truth + checker, truth, coords)
    assert 10 * np.log10(1 / 0.025**2) <= noisy < 10 * np.log10(1 / 0.025**2) + 0.5


def _twin_models(gen, out_features):
    """A fast-path Siren and the reference with the same float64 weights."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    fast = fs.Siren(2, 24, 2, out_features, outermost_linear=True, backend="torch").double()
    slow = ref.Siren(2, 24, 2, out_features, outermost_linear=True).double()
    slow.load_state_dict(fast.state_dict())
    return fast, slow


def _param_grads(loss, model):
    # The final bias does not reach a derivative: its gradient is zero.
    params = list(model.parameters())
    return torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)


def test_gradient_loss_matches_autograd_twin(gen):
    fast, slow = _twin_models(gen, out_features=3)
    x = torch.rand(37, 2, generator=gen, dtype=torch.float64) * 2 - 1
    target = torch.randn(37, 3, 2, generator=gen, dtype=torch.float64)
    loss = gradient_loss(fast.jet(x, order=1), target)
    # The twin: per-channel gradients by nested autograd (the official gradients_mse on each
    # channel), the same reduction.
    xr = x.clone().requires_grad_()
    twin = (ref.jacobian(slow(xr), xr) - target).pow(2).sum(-1).mean()
    assert_rel_close(loss, twin, 1e-12, "loss")
    for g, t in zip(_param_grads(loss, fast), _param_grads(twin, slow)):
        assert_rel_close(g, t, 1e-10, "parameter gradient")


def test_laplacian_loss_matches_autograd_twin(gen):
    fast, slow = _twin_models(gen, out_features=1)
    x = torch.rand(37, 2, generator=gen, dtype=torch.float64) * 2 - 1
    target = 100 * torch.randn(37, 1, generator=gen, dtype=torch.float64)
    loss = laplacian_loss(fast.jet(x, order=2), target)
    xr = x.clone().requires_grad_()
    twin = (ref.laplace(slow(xr), xr) - target).pow(2).mean()  # the official laplace_mse
    assert_rel_close(loss, twin, 1e-12, "loss")
    for g, t in zip(_param_grads(loss, fast), _param_grads(twin, slow)):
        assert_rel_close(g, t, 1e-10, "parameter gradient")


# -- the task end to end ---------------------------------------------------------------------------
TINY = ["--width", "16", "--depth", "1", "--device", "cpu", "--quiet"]


def _smooth_png(path, height, width, channels, seed=0):
    rng = np.random.default_rng(seed)
    r, c = _grid(height, width)
    planes = [0.5 + 0.4 * np.sin(rng.uniform(1, 3) * r + rng.uniform(1, 3) * c + rng.uniform(0, 6))
              for _ in range(channels)]
    image = np.stack(planes, -1) if channels > 1 else planes[0]
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("supervise", ["grad", "lap"])
def test_fit_poisson_end_to_end(tmp_path, capsys, supervise):
    png = _smooth_png(tmp_path / "img.png", 10, 14, 1)
    out = tmp_path / "run"
    assert main(["fit", "poisson", str(png), "--supervise", supervise, "--out", str(out),
                 "--steps", "40", "--lr", "3e-3", "--log-every", "5", *TINY]) == 0
    assert "psnr" in capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["final_logged_loss"] < 0.5 * summary["first_logged_loss"]
    metrics = summary["metrics"]
    assert "gain and offset" in metrics["psnr_note"]
    assert ("harmonic" in metrics["psnr_note"]) == (supervise == "lap")
    assert summary["data"]["jet_order"] == (1 if supervise == "grad" else 2)
    # The written reconstruction is the aligned fit whose PSNR is reported (8-bit rounding).
    recon = np.asarray(Image.open(out / "reconstruction.png"), np.float64) / 255
    truth = np.asarray(Image.open(png), np.float64) / 255
    psnr_file = 10 * np.log10(1 / np.mean((recon - truth) ** 2))
    assert psnr_file == pytest.approx(metrics["psnr"], abs=0.2)
    fields = "Δf" if supervise == "lap" else "|∇f|"
    assert_labelled(out / "supervised_vs_fitted.png", f"supervised {fields}",
                    f"fitted {fields}", colorbars=2)
    labels = assert_labelled(out / "comparison.png", "target (10x14)",
                             f"fit + offset: {metrics['psnr']:.1f} dB", colorbars=2)
    assert f"{metrics['psnr']:.1f} dB" in labels["title"]
    # The progress bar, the log and the summary name the field's error alike.
    name = f"{supervise}_rel_err"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(name in entry for entry in log) and name in metrics
    if supervise == "lap":
        assert metrics["psnr_up_to_harmonic"] >= metrics["psnr"] - 1e-9
        assert f"fit + harmonic: {metrics['psnr_up_to_harmonic']:.1f} dB" in " ".join(
            a["title"] for a in labels["axes"])


def test_composite_fits_the_blend(tmp_path):
    first = _smooth_png(tmp_path / "a.png", 10, 14, 3, seed=1)
    second = _smooth_png(tmp_path / "b.png", 20, 28, 1, seed=2)  # resized, gray -> RGB
    result = fs.fit("poisson", first, out=tmp_path / "run", composite=str(second),
                    composite_weight=0.25, steps=5, width=8, depth=1, device="cpu",
                    progress=False)
    task = result.task
    assert task.out_features == 3 and task.shape == (10, 14)
    a = np.asarray(Image.open(first), np.float64) / 255
    b = np.asarray(Image.open(second).resize((14, 10), Image.BILINEAR), np.float64) / 255
    # The ground truth is the blended image, up to the resampling filter.
    assert np.abs(task.pixels - (0.75 * a + 0.25 * b[..., None])).max() < 0.05


def test_bad_poisson_input_fails_in_one_line(tmp_path, capsys):
    small = _smooth_png(tmp_path / "small.png", 2, 9, 1)
    ok = _smooth_png(tmp_path / "ok.png", 5, 5, 1)
    run = ["--out", str(tmp_path / "run"), *TINY]
    cases = {
        "too small to differentiate: 2x9": ["fit", "poisson", str(small)],
        "use it with --supervise grad": ["fit", "poisson", str(ok), "--supervise", "lap",
                                         "--composite", str(ok)],
        "no such file": ["fit", "poisson", str(ok), "--composite", str(tmp_path / "no.png")],
    }
    for expected, argv in cases.items():
        assert main([*argv, *run]) == 2, expected
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err
    with pytest.raises(SystemExit):
        main(["fit", "poisson", "--supervise", "div", *run])
    assert not (tmp_path / "run").exists()
