"""Hypernetworks that predict SIRENs from a few pixels of an image (the paper's neural-process
experiment), run as one batched ``fastsiren.siren_jet`` call per meta-batch."""

from .models import (
    Context,
    ConvEncoder,
    HypernetOutput,
    LowRankHeads,
    NeuralProcessHypernet,
    OfficialHeads,
    SetEncoder,
    SirenSpec,
    hypernetwork_loss,
)

__all__ = [
    "Context",
    "ConvEncoder",
    "HypernetOutput",
    "LowRankHeads",
    "NeuralProcessHypernet",
    "OfficialHeads",
    "SetEncoder",
    "SirenSpec",
    "hypernetwork_loss",
]
