"""The one vocabulary of names a config, a plugin and a report share: perturbation modes, splits,
fills, targets, devices, score directions, the pixel-attribution layer and the sanity metric.

The config checks against these tuples, the engine implements them, the leaderboard, the plots
and the closing table label them; nothing else spells them. No torch here, so that reading a
config stays fast.
"""

from __future__ import annotations

from typing import Any

#: perturbation mode names, in the order of the WHU study (M1, M2, M3)
BACKGROUND_ONLY, HIGHLIGHTED_ONLY, HIGHLIGHTED_PLUS_TARGET = "background_only", "highlighted_only", "highlighted_plus_target"
MODES = (BACKGROUND_ONLY, HIGHLIGHTED_ONLY, HIGHLIGHTED_PLUS_TARGET)
#: mode -> long label (leaderboard section titles, plot titles)
MODE_LABELS = {
    BACKGROUND_ONLY: "M1 background only",
    HIGHLIGHTED_ONLY: "M2 highlighted only",
    HIGHLIGHTED_PLUS_TARGET: "M3 highlighted + target",
}
#: mode -> short label (table cells, the closing table)
MODE_SHORT = {mode: label.split()[0] for mode, label in MODE_LABELS.items()}

#: the dataset splits a plugin serves (``Dataset.split(name)``)
SPLITS = ("train", "val", "test")
#: what replaces the removed pixels of a perturbed image (``[run] fill``)
FILLS = ("zero", "mean", "blur")
#: which output a map explains (``[run] target``)
TARGETS = ("predicted", "ground_truth")
DEVICES = ("cpu", "cuda")

#: a metric's ``direction``: which way is better
HIGHER, LOWER = "higher", "lower"
DIRECTIONS = (HIGHER, LOWER)

#: the layer name of a map computed on the input (pixel attributions): one cell, not one per layer
INPUT_LAYER = "input"
#: the metric name of the model-randomisation sanity check (:mod:`xaibench.engine.sanity`), and
#: the mean rank correlation above which a method is flagged as insensitive to the model
SANITY_METRIC = "sanity_rank_correlation"
SANITY_FLAG_ABOVE = 0.5
#: the WHU study's three faithfulness metrics (:mod:`xaibench.metrics.faithfulness`), which the
#: leaderboard's first analyses are made of
CONFIDENCE, ENTROPY, IOU_DROP = "confidence", "entropy", "iou_drop"
#: the IoU drop as a fraction of the clean IoU (comparable across images and models)
IOU_DROP_RELATIVE = "iou_drop_relative"
#: the area-controlled IoU drop: the top k % of pixels by the map removed, k on a fixed grid
IOU_DROP_TOPK = "iou_drop_topk"
#: the model-quality metrics every run adds (:mod:`xaibench.metrics.model_quality`), in the order
#: the leaderboard's Models section shows them; the segmenters' first, then the classifiers'
MODEL_POOLED_IOU, MODEL_IOU, MODEL_POOLED_F1, MODEL_F1, MODEL_TRIVIAL_IOU = (
    "model_pooled_iou", "model_iou", "model_pooled_f1", "model_f1", "model_trivial_iou",
)
MODEL_ACCURACY, MODEL_LABEL_F1, MODEL_AUROC, MODEL_MAJORITY_RATE = "model_accuracy", "model_label_f1", "model_auroc", "model_majority_rate"
MODEL_QUALITY = (
    MODEL_POOLED_IOU, MODEL_IOU, MODEL_POOLED_F1, MODEL_F1, MODEL_TRIVIAL_IOU,
    MODEL_ACCURACY, MODEL_LABEL_F1, MODEL_AUROC, MODEL_MAJORITY_RATE,
)

#: the background-inclusive mIoU metrics (:mod:`xaibench.metrics.localization`), and the reference
#: each is shown with: the value the empty mask (no object anywhere) scores on the same images,
#: a model-level metric the runner adds beside them (:mod:`xaibench.metrics.model_quality`); an
#: mIoU counts the background, so on a small object the empty mask scores about one half
LOCALIZATION_MIOU, POOLED_MIOU = "localization_miou", "pooled_miou"
EMPTY_MASK_MIOU, EMPTY_MASK_POOLED_MIOU = "empty_mask_miou", "empty_mask_pooled_miou"
EMPTY_MASK_REFERENCE = {LOCALIZATION_MIOU: EMPTY_MASK_MIOU, POOLED_MIOU: EMPTY_MASK_POOLED_MIOU}
#: the model-level metrics that rank no explanation: the model's quality and the references
NOT_RANKED = MODEL_QUALITY + tuple(EMPTY_MASK_REFERENCE.values())


#: the trivial baseline explainers every committed benchmark runs beside its methods, and each
#: method is compared with (:mod:`xaibench.report.methods`): a random map and a centred Gaussian
RANDOM, CENTER_PRIOR = "random", "center_prior"
TRIVIAL_BASELINES = (RANDOM, CENTER_PRIOR)


def higher_is_better(direction: str) -> bool:
    """Whether a larger value is better under ``direction`` (``"higher"`` or ``"lower"``)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {DIRECTIONS}")
    return direction == HIGHER


def best_label(values: Any, direction: str) -> Any:
    """The label of the best value of a pandas Series under ``direction`` (NaN skipped)."""
    return values.idxmax() if higher_is_better(direction) else values.idxmin()
