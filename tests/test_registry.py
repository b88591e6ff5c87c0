"""Models back from checkpoints: today's files, the class names they may carry, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fastsiren as fs
from fastsiren.checkpoint import load_checkpoint, save_checkpoint
from fastsiren.errors import InputError
from fastsiren.hypernet import NeuralProcessHypernet
from fastsiren.modules import BatchedSiren
from fastsiren.registry import ALIASES, MODEL_CLASSES, build_model, model_from_checkpoint

DATA = Path(__file__).parent / "data"
# Written by `fastsiren fit image` on one 6x5 image and on a folder of two (width 8, depth 1,
# 2 steps), checkpoint format 1, with the fitted models' values at 5 points beside them.
SIREN_RUN, BATCHED_RUN = DATA / "checkpoint_siren_v1.pt", DATA / "checkpoint_batched_v1.pt"
VALUES = DATA / "checkpoint_v1_values.pt"


def test_format_1_checkpoints_load_to_the_same_models():
    expected = torch.load(VALUES, weights_only=True)
    x = expected["x"]
    one, many = fs.load_model(SIREN_RUN), fs.load_model(BATCHED_RUN)
    assert type(one) is fs.Siren and type(many) is BatchedSiren
    assert not one.training and not many.training
    with torch.no_grad():
        torch.testing.assert_close(one(x), expected["siren"], rtol=0, atol=0)
        torch.testing.assert_close(many(x), expected["batched"], rtol=0, atol=0)
        torch.testing.assert_close(fs.load_model(BATCHED_RUN, index=1)(x),
                                   expected["batched_1"], rtol=0, atol=0)


def test_run_folder_and_file_give_the_same_model(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", load_checkpoint(SIREN_RUN))
    a, b = fs.load_model(tmp_path), fs.load_model(SIREN_RUN)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


SIREN_ALIASES = sorted(n for n, c in ALIASES.items() if c != "NeuralProcessHypernet")
HYPERNET_NAMES = ["NeuralProcessHypernet",
                  *sorted(n for n, c in ALIASES.items() if c == "NeuralProcessHypernet")]


@pytest.mark.parametrize("name", SIREN_ALIASES)
def test_every_alias_names_a_registered_class(name, tmp_path):
    state = load_checkpoint(BATCHED_RUN if "Batched" in name else SIREN_RUN)
    state["model_class"] = name
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    assert type(fs.load_model(tmp_path)) is MODEL_CLASSES[ALIASES[name]]


@pytest.mark.parametrize("name", HYPERNET_NAMES)
def test_hypernetwork_checkpoint_rebuilds_its_model(name):
    kwargs = {"channels": 1, "resolution": (4, 4), "latent_dim": 8, "hyper_hidden_features": 8,
              "siren_hidden_features": 8, "siren_hidden_layers": 1}
    torch.manual_seed(0)
    model = NeuralProcessHypernet(**kwargs)
    state = {"model_class": name, "model_kwargs": kwargs,
             "model": model.state_dict()}
    rebuilt = model_from_checkpoint(state)
    assert isinstance(rebuilt, NeuralProcessHypernet)
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)


def test_options_reach_the_constructor():
    model = build_model("BatchedSiren", {"n_networks": 2, "in_features": 2,
                                         "hidden_features": 4, "hidden_layers": 0,
                                         "out_features": 1},
                        backend="torch", compile_chunks=False)
    assert model.backend == "torch" and model.compile_chunks is False


def test_bad_requests_name_what_was_expected(tmp_path):
    state = load_checkpoint(SIREN_RUN)
    with pytest.raises(InputError, match="single signal"):
        fs.load_model(SIREN_RUN, index=0)
    state["model_class"] = "Transformer"
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(InputError, match="'Transformer' cannot be rebuilt; expected one of"):
        fs.load_model(tmp_path)
    with pytest.raises(InputError, match="no checkpoint"):
        fs.load_model(tmp_path / "missing")
