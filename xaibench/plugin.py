"""The public plugin API: the one module a plugin package imports from.

Everything a plugin of any kind needs is here; the rest of xaibench is internal and may move::

    from xaibench.plugin import ExplainContext, Pass, hookimpl

    class MyCAM:
        name = "my_cam"
        needs = Pass.ACTIVATIONS | Pass.GRADIENTS

        def explain(self, ctx: ExplainContext):
            w = ctx.gradients.mean(dim=(2, 3), keepdim=True)
            return (w * ctx.activations).sum(1).relu()

    @hookimpl
    def register_explainers(register):
        register(MyCAM)

Contract checks for a plugin package's own tests are in :mod:`xaibench.testing`.
"""

from __future__ import annotations

from xaibench.config.params import check_bool, check_float, check_int
from xaibench.config.vocabulary import SPLITS
from xaibench.datasets.base import Dataset, LazySplit, Sample
from xaibench.engine.targets import Target, predicted_classes, probabilities
from xaibench.errors import UserError, did_you_mean
from xaibench.explainers.base import ExplainContext, Explainer
from xaibench.explainers.fitting import FitContext
from xaibench.metrics.base import Metric, MetricContext
from xaibench.models.base import LoadedModel, Tail, fused_parts, infer_task, weights_hash
from xaibench.models.training import LoadContext, batches, config_hash, load_checkpoint, save_atomic, train_or_load
from xaibench.registry.hookspecs import hookimpl
from xaibench.registry.passes import Pass
from xaibench.util.progress import progress_bar, warn

__all__ = [
    # hooks
    "hookimpl",
    # explainers
    "Explainer", "ExplainContext", "FitContext", "Pass", "Target",
    # metrics
    "Metric", "MetricContext", "probabilities", "predicted_classes",
    # datasets
    "Dataset", "Sample", "LazySplit", "SPLITS",
    # parameter checks (types are checked against the constructor's annotations already)
    "check_int", "check_float", "check_bool",
    # models
    "LoadedModel", "LoadContext", "Tail", "fused_parts", "infer_task", "weights_hash",
    "train_or_load", "load_checkpoint", "save_atomic", "config_hash", "batches",
    # errors and progress
    "UserError", "did_you_mean", "progress_bar", "warn",
]
