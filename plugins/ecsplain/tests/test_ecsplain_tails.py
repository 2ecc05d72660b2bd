"""Ablation-CAM on ECSPLAIN's networks runs on the rest of the network only (a tail derived by
replaying the forward), at every layer alias: no full forward per ablated channel."""

from __future__ import annotations

import pytest
import torch
from xaibench_ecsplain.baselines import BASELINES
from xaibench_ecsplain.model import ALIASES, Ecsplain

from xaibench.plugin import LoadedModel
from xaibench.testing import check_tail

TINY = {
    "unet": {"channels": [4, 8, 16]},
    "resunet": {"channels": [4, 8, 16]},
    "sepunet": {"channels": [4, 8, 16]},
    "fcn": {"width": 4},
    "deeplabv3": {"width": 4, "aspp_channels": 8},
}


@pytest.mark.parametrize("cls", BASELINES, ids=lambda c: c.name)
def test_every_baseline_segmenter_layer_has_a_tail(cls):
    torch.manual_seed(0)
    model = LoadedModel(cls(**TINY[cls.name]).build(2).eval(), "binary", layers=dict(cls.layers))
    images = torch.rand(3, 2, 32, 32)
    for alias in cls.layers:
        check_tail(model, alias, images)


@pytest.mark.parametrize("model_type", ["resnet18", "resnet50"])
def test_every_ecsplain_classifier_alias_has_a_tail(model_type):
    torch.manual_seed(0)
    model = LoadedModel(Ecsplain(model_type=model_type, width=4).build(2).eval(), "classifier", layers=dict(ALIASES))
    images = torch.rand(3, 2, 32, 32)
    for alias in ALIASES:
        check_tail(model, alias, images)
