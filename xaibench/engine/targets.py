"""The target of an explanation: which output the maps explain, exactly one per image.

Segmentation (binary or multi-class): the score explained is the sum of the class logit over a
target region, as pytorch-grad-cam's ``SemanticSegmentationTarget`` and Seg-Grad-CAM define it.
The region is the model's predicted mask of the class (default), the ground-truth mask, or a
given mask. Classifiers: the class logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from xaibench.errors import UserError


@dataclass(frozen=True)
class TargetSpec:
    """How to choose each image's target.

    region: ``predicted`` (default), ``ground_truth``; ignored for classifiers.
    class_id: the class explained; default 1 for segmentation (the first foreground class) and
    the predicted class for classifiers.
    """

    region: str = "predicted"
    class_id: int | None = None

    def __post_init__(self) -> None:
        if self.region not in ("predicted", "ground_truth"):
            raise UserError(f"target region {self.region!r} is not one of 'predicted', 'ground_truth'")

    def key(self) -> str:
        return f"{self.region}:{self.class_id}"


@dataclass(frozen=True)
class Target:
    """Resolved targets of a batch: the class channel and (segmentation) the region of each image."""

    channel: torch.Tensor  # long [B]: the logit channel explained
    region: torch.Tensor | None  # float [B, H, W] for segmentation, None for classifiers
    classes: torch.Tensor | None = None  # long [B]: the class explained (differs from channel for sigmoid models)

    @property
    def class_ids(self) -> torch.Tensor:
        return self.channel if self.classes is None else self.classes

    def __len__(self) -> int:
        return int(self.channel.shape[0])

    def select(self, idx: torch.Tensor) -> Target:
        idx = idx.to(self.channel.device)
        return Target(
            self.channel[idx],
            None if self.region is None else self.region[idx.to(self.region.device)],
            None if self.classes is None else self.classes[idx],
        )

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """Explained score per row of ``logits`` (rows matching this target's images)."""
        rows = torch.arange(logits.shape[0], device=logits.device)
        if self.region is None:
            ch = self.channel.to(logits.device)
            if logits.shape[1] == 1:
                return logits[:, 0]
            return logits[rows, ch]
        if logits.shape[0] != self.channel.shape[0]:
            raise ValueError("logits and targets differ in number")
        ch = self.channel.to(logits.device)
        return (logits[rows, ch] * self.region.to(logits.device)).sum(dim=(1, 2))


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities: a sigmoid for one channel (as channel 1 of 2), softmax otherwise."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """Predicted class per pixel [B, H, W] (segmentation) or per image [B] (classifier)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def resolve(
    spec: TargetSpec | int | torch.Tensor | Sequence[int] | None,
    logits: torch.Tensor,
    ground_truth: torch.Tensor | None = None,
) -> Target:
    """Targets for a batch from a spec, a class id, a list of class ids (one per image), or masks [B, H, W]."""
    batch = logits.shape[0]
    segmentation = logits.ndim == 4
    if spec is None:
        spec = TargetSpec()
    if isinstance(spec, torch.Tensor) and spec.ndim == 3:
        if spec.shape[0] != batch:
            raise UserError(f"got {spec.shape[0]} target masks for {batch} images; give exactly one per image")
        cls = 0 if logits.shape[1] == 1 else 1
        ids = torch.full((batch,), 1, dtype=torch.long)
        return Target(_channel(ids, logits), spec.float().to(logits.device), ids)
    if isinstance(spec, int):
        spec = TargetSpec(class_id=spec)
    if isinstance(spec, (list, tuple, torch.Tensor)):
        ids = torch.as_tensor(spec, dtype=torch.long).flatten()
        if ids.numel() != batch:
            raise UserError(f"got {ids.numel()} targets for {batch} images; give exactly one per image")
        return _from_class_ids(ids, logits)
    if not segmentation:
        if spec.class_id is not None:
            ids = torch.full((batch,), spec.class_id, dtype=torch.long)
        elif logits.shape[1] > 1:
            ids = predicted_classes(logits).cpu()
        else:  # a one-logit (sigmoid) classifier: its logit is the positive class, class 1
            ids = torch.ones(batch, dtype=torch.long)
        return Target(_channel(ids, logits), None, ids)
    cls = 1 if spec.class_id is None else spec.class_id
    _check_class(cls, logits)
    ids = torch.full((batch,), cls, dtype=torch.long)
    if spec.region == "ground_truth":
        if ground_truth is None:
            raise UserError("target region 'ground_truth' needs ground-truth masks")
        region = (ground_truth.to(logits.device) == cls).float()
    else:
        region = (predicted_classes(logits) == cls).float()
    return Target(_channel(ids, logits), region, ids)


def _check_class(cls: int, logits: torch.Tensor) -> None:
    n = 2 if logits.shape[1] == 1 else logits.shape[1]
    if not 0 <= cls < n:
        raise UserError(f"target class {cls} is out of range for a model with {n} classes")


def _channel(ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    # a one-channel (sigmoid) model explains its single logit, whichever class is asked
    return torch.zeros_like(ids) if logits.shape[1] == 1 else ids


def _from_class_ids(ids: torch.Tensor, logits: torch.Tensor) -> Target:
    if logits.ndim == 2:
        return Target(ids, None, ids)
    for c in ids.unique().tolist():
        _check_class(int(c), logits)
    pred = predicted_classes(logits)
    region = (pred == ids.to(pred.device)[:, None, None]).float()
    return Target(_channel(ids, logits), region, ids)
