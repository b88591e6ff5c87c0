"""Hypernetworks: the batched fast path of the predicted SIRENs against a per-image loop of the
reference, the encoders, the heads' sizes and initialisation, the loss, context sampling."""

import math

import fastsiren.reference as ref
import pytest
import torch
from helpers import assert_rel_close

from fastsiren.hypernet import (
    Context,
    ConvEncoder,
    LowRankHeads,
    NeuralProcessHypernet,
    OfficialHeads,
    SetEncoder,
    SirenSpec,
    hypernetwork_loss,
)
from fastsiren.hypernet.data import half_context, sample_context, train_counts
from fastsiren.tasks.common import pixel_grid

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# float64 exactness: the engine's own tier-a bound (1e-10) with room for the omega^2 = 900 the
# Laplacian carries through two more layers of predicted weights
TOL64 = 1e-9

TINY = dict(latent_dim=16, hyper_hidden_features=16, siren_hidden_features=12,
            siren_hidden_layers=2, rank=2)


def tiny_model(encoder, heads, resolution=(5, 7), channels=3, gen=None):
    torch.manual_seed(0 if gen is None else int(torch.randint(1 << 30, (1,), generator=gen)))
    return NeuralProcessHypernet(channels, resolution, encoder=encoder, heads=heads,
                                 backend="torch", **TINY).double()


@pytest.mark.parametrize("heads", ["official", "lowrank"])
@pytest.mark.parametrize("encoder", ["set", "conv"])
def test_batched_sirens_match_reference_loop(gen, encoder, heads):
    """One batched siren_jet call (order 2) equals each image's SIREN run alone through the
    reference with nested autograd, in every output and in every hypernetwork gradient."""
    resolution, batch = (5, 7), 3
    model = tiny_model(encoder, heads, resolution, gen=gen)
    coords = pixel_grid(*resolution).double()
    pixels = torch.rand(batch, coords.shape[0], 3, generator=gen, dtype=torch.float64) * 2 - 1
    context = sample_context(batch, coords.shape[0], [4, 9, 1], generator=gen)
    cotangents = None

    def combined(jets):
        nonlocal cotangents
        if cotangents is None:
            cotangents = [torch.randn(t.shape, generator=gen, dtype=t.dtype)
                          for t in (jets.value, jets.grad, jets.lap)]
        return sum((t * c).sum() for t, c in zip((jets.value, jets.grad, jets.lap), cotangents))

    out = model(pixels, coords, context, order=2)
    combined(out.jet).backward()
    fast = {"value": out.jet.value, "grad": out.jet.grad, "lap": out.jet.lap}
    fast_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    params = model.predict_parameters(model.encode(pixels, coords, context))
    weights, biases, omegas = model.spec.layer_parameters(params)
    per_image = []
    for i in range(batch):
        def siren_i(x, i=i):
            return ref.siren_forward(x, [w[i] for w in weights], [b[i] for b in biases], omegas)
        per_image.append(ref.autograd_jet(siren_i, coords, order=2))
    slow = {name: torch.stack([getattr(j, name) for j in per_image])
            for name in ("value", "grad", "lap")}
    combined(type(out.jet)(slow["value"], slow["grad"], slow["lap"])).backward()

    for name in fast:
        assert_rel_close(fast[name], slow[name], TOL64, name)
    for name, p in model.named_parameters():
        assert_rel_close(fast_grads[name], p.grad, TOL64, f"d loss / d {name}")


def test_predicted_parameters_load_as_siren(gen):
    """The predicted dict is a state dict of fs.Siren and of the reference SIREN."""
    model = tiny_model("set", "official", gen=gen)
    coords = pixel_grid(5, 7).double()
    pixels = torch.rand(2, 35, 3, generator=gen, dtype=torch.float64)
    out = model(pixels, coords, sample_context(2, 35, 5, generator=gen))
    siren = ref.Siren(2, 12, 2, 3, outermost_linear=True).double()
    siren.load_state_dict({k: v[1] for k, v in out.params.items()})
    assert_rel_close(out.value[1], siren(coords), TOL64, "value")
    fast = model.spec.build().double()
    fast.load_state_dict({k: v[0] for k, v in out.params.items()})
    assert_rel_close(out.value[0], fast(coords), TOL64, "value")


def test_official_heads_size_and_init():
    """52.4M parameters for the paper's 2->256x3->3 SIREN (the issue's "about 52M"): per
    parameter tensor a 256->256->256->numel ReLU MLP."""
    spec = SirenSpec()
    assert spec.numel() == 2 * 256 + 256 + 3 * (256 * 256 + 256) + 3 * 256 + 3 == 198_915
    with torch.device("meta"):
        heads = OfficialHeads(spec)
    trunk = 2 * (256 * 256 + 256)
    expected = len(spec.parameter_shapes()) * trunk + 257 * spec.numel()
    assert expected == 52_436_995
    assert sum(p.numel() for p in heads.parameters()) == expected


def test_official_heads_init(gen):
    """Kaiming-normal heads with the last layer 100x smaller; the last layer's bias about the
    SIREN init: U(-1/K, 1/K) for a weight of fan-in K, U(-1/256, 1/256) for a bias."""
    torch.manual_seed(1)
    spec = SirenSpec(hidden_features=64, hidden_layers=1, out_features=1)
    heads = OfficialHeads(spec, latent_dim=16, hidden_features=64)
    params = heads(torch.randn(4, 16, generator=gen))
    for (name, shape), head in zip(spec.parameter_shapes(), heads.heads):
        assert params[name].shape == (4, *shape)
        last = head[-1]
        bound = 1 / shape[-1] if name.endswith("weight") else 1 / 64
        assert 0 < last.bias.abs().max() <= bound, name
        kaiming_std = math.sqrt(2 / 64)
        assert 0.008 * kaiming_std < last.weight.std() < 0.012 * kaiming_std, name
        first_std = math.sqrt(2 / 16)  # fan-in: the latent
        assert 0.8 * first_std < head[0].weight.std() < 1.2 * first_std, name


def test_lowrank_heads_size_and_start(gen):
    """Low-rank offsets: r (M + K) outputs for a 256x256 weight, full offsets elsewhere; 4.1M
    parameters for the paper's SIREN at rank 8 (13x fewer); the first predictions are the
    shared SIREN up to offsets below its own parameter scale."""
    spec = SirenSpec()
    with torch.device("meta"):
        heads = LowRankHeads(spec, rank=8)
    outputs = 512 + 256 + 3 * (8 * 512 + 256) + 768 + 3
    expected = 2 * (256 * 256 + 256) + 257 * outputs + spec.numel()
    assert sum(p.numel() for p in heads.parameters()) == expected == 4_081_414
    torch.manual_seed(2)
    small = LowRankHeads(SirenSpec(hidden_features=32, hidden_layers=1, out_features=1),
                         latent_dim=16, hidden_features=32, rank=2)
    params = small(torch.randn(3, 16, generator=gen))
    for name, base in small.base.named_parameters():
        assert params[name].shape == (3, *base.shape)
        assert (params[name] - base).abs().max() < 0.3 * base.abs().max(), name


def test_set_encoder_ignores_padding_and_order(gen):
    encoder = SetEncoder(channels=2, latent_dim=8).double()
    coords = pixel_grid(4, 4).double()
    pixels = torch.rand(2, 16, 2, generator=gen, dtype=torch.float64)
    index = torch.tensor([[3, 7, 1, 0], [5, 2, 9, 11]])
    z = encoder(pixels, coords, Context(index, torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1.0]])))
    assert z.shape == (2, 8)
    alone = encoder(pixels[:1], coords, Context(index[:1, [2, 0, 1]], torch.ones(1, 3)))
    assert_rel_close(z[:1], alone, 1e-12, "padding / order")


def test_conv_encoder_sees_only_the_context(gen):
    torch.manual_seed(3)
    encoder = ConvEncoder(channels=3, resolution=(6, 5), latent_dim=16, width=8, res_blocks=1)
    encoder = encoder.double()
    coords = pixel_grid(6, 5).double()
    pixels = torch.rand(2, 30, 3, generator=gen, dtype=torch.float64) * 2 - 1
    context = sample_context(2, 30, [5, 12], generator=gen)
    z = encoder(pixels, coords, context)
    assert z.shape == (2, 16)
    outside = torch.ones(2, 30, dtype=torch.bool)
    for i in range(2):
        outside[i, context.index[i, context.mask[i] > 0]] = False
    changed = torch.where(outside.unsqueeze(-1), -pixels, pixels)
    assert_rel_close(encoder(changed, coords, context), z, 1e-12, "non-context pixels")
    assert (encoder(pixels.flip(1), coords, context) - z).abs().max() > 1e-3  # not dead


def test_hypernetwork_loss_is_the_official_sum(gen):
    model = tiny_model("set", "official", gen=gen)
    coords = pixel_grid(5, 7).double()
    pixels = torch.rand(2, 35, 3, generator=gen, dtype=torch.float64)
    out = model(pixels, coords, sample_context(2, 35, 6, generator=gen))
    terms = hypernetwork_loss(out, pixels, latent_weight=0.1, param_weight=100.0)
    flat = torch.cat([p.flatten() for p in out.params.values()])
    assert flat.numel() == 2 * model.spec.numel()
    expected = ((out.value - pixels) ** 2).mean() + 0.1 * (out.latent**2).mean() \
        + 100 * (flat**2).mean()
    assert_rel_close(terms["loss"], expected, 1e-13, "loss")


def test_context_sampling(gen):
    context = sample_context(3, 50, torch.tensor([5, 50, 1]), generator=gen)
    assert context.index.shape == (3, 50) and context.counts().tolist() == [5, 50, 1]
    for row in context.index:
        assert len(set(row.tolist())) == 50  # distinct pixels
    counts = train_counts(1000, generator=gen)
    assert counts.min() >= 10 and counts.max() <= 200
    half = half_context(2, (4, 3))
    assert half.index[0].tolist() == list(range(6)) and half.mask.sum() == 12
    assert torch.equal(pixel_grid(2, 3)[:3], torch.tensor([[-1.0, -1], [-1, 0], [-1, 1]]))
    with pytest.raises(ValueError, match="between 1 and the image's 50 pixels, got 51"):
        sample_context(2, 50, 51)


def test_bad_model_options():
    with pytest.raises(ValueError, match="encoder must be 'set' or 'conv'"):
        NeuralProcessHypernet(encoder="transformer")
    with pytest.raises(ValueError, match="heads must be 'official' or 'lowrank'"):
        NeuralProcessHypernet(heads="full")
    assert math.isclose(SirenSpec().omega_0, 30.0)
