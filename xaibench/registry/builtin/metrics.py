"""The built-in metrics' hook implementation (entry point ``metrics`` of the xaibench distribution)."""

from __future__ import annotations

from xaibench.metrics.faithfulness import Confidence, Entropy, IoUDrop, RelativeIoUDrop, TopKIoUDrop
from xaibench.metrics.localization import (
    AUROC,
    MAE,
    DeletionAUC,
    EnergyPointingGame,
    Hausdorff,
    InsertionAUC,
    LocalizationF1,
    LocalizationIoU,
    LocalizationMIoU,
    LocalizationPrecision,
    LocalizationRecall,
    PointingGame,
    PooledIoU,
    PooledMIoU,
    PooledPrecision,
    PooledRecall,
)
from xaibench.metrics.model_quality import QUALITY_METRICS, REFERENCE_METRICS
from xaibench.registry.hookspecs import hookimpl

BUILTIN = (
    Confidence,
    Entropy,
    IoUDrop,
    RelativeIoUDrop,
    TopKIoUDrop,
    LocalizationIoU,
    LocalizationPrecision,
    LocalizationRecall,
    LocalizationF1,
    LocalizationMIoU,
    PooledPrecision,
    PooledRecall,
    PooledIoU,
    PooledMIoU,
    Hausdorff,
    AUROC,
    MAE,
    PointingGame,
    EnergyPointingGame,
    DeletionAUC,
    InsertionAUC,
    *QUALITY_METRICS,
    *REFERENCE_METRICS,
)


@hookimpl
def register_metrics(register):
    for cls in BUILTIN:
        register(cls)
