"""The built-in models' hook implementation (entry point ``models`` of the xaibench distribution)."""

from __future__ import annotations

from xaibench.models.own_model import TorchModel
from xaibench.models.smp_unet import SmpUnet
from xaibench.models.timm_classifier import TimmClassifier
from xaibench.registry.hookspecs import hookimpl


@hookimpl
def register_models(register):
    register(SmpUnet)
    register(TimmClassifier)
    register(TorchModel)
