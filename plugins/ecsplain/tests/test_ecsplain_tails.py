"""Ablation-CAM on the ECSPLAIN classifier runs on the rest of the network only (a tail derived
by replaying the forward), at every layer alias: no full forward per ablated channel (the
baseline segmenters: test_ecsplain_baselines.py)."""

from __future__ import annotations

import pytest
import torch
from xaibench_ecsplain.model import ALIASES, Ecsplain

from xaibench.plugin import LoadedModel
from xaibench.testing import check_tail


@pytest.mark.parametrize("model_type", ["resnet18", "resnet50"])
def test_every_ecsplain_classifier_alias_has_a_tail(model_type):
    torch.manual_seed(0)
    model = LoadedModel(Ecsplain(model_type=model_type, width=4).build(2).eval(), "classifier", layers=dict(ALIASES))
    images = torch.rand(3, 2, 32, 32)
    for alias in ALIASES:
        check_tail(model, alias, images)
