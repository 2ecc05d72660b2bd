"""Mask composites: the pixelwise AND (``mask_and``) or OR (``mask_or``) of other explainers' binarised maps.

Each base explainer's map ``M_i`` as the grid sees it (taken from the engine, so computed once
and shared with the grid) is binarised at its own threshold, ``M_i >= t_i`` (the grid's rule),
where ``t_i`` is a number in [0, 1] or ``"otsu"``: per image, Otsu's threshold of ``M_i``
(:func:`xaibench.engine.evaluation.threshold_values`, the grid's own; it reads no labels). The masks
are then intersected or united. The result is a {0, 1} map with ``normalize = False``: the
engine only resizes it, and any grid threshold in (0, 1] binarises it to the same mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

from xaibench.engine.evaluation import threshold_values
from xaibench.errors import UserError
from xaibench.explainers.base import ExplainContext
from xaibench.registry.passes import Pass

THRESHOLD_RULE = "a threshold is a number in [0, 1] or 'otsu'"


def check_bases(name: str, bases: object) -> tuple[str, ...]:
    """``bases`` as a tuple of 1+ distinct explainer names, none of them ``name`` itself (one base:
    that base's map binarised at its threshold, e.g. the thesis's "CAM mask" at 0.4)."""
    if isinstance(bases, str) or not isinstance(bases, (list, tuple)) or len(bases) < 1:
        raise UserError(f"{name}: bases must be a list of 1 or more explainer names, got {bases!r}")
    for b in bases:
        if not isinstance(b, str) or not b:
            raise UserError(f"{name}: bases must be explainer names (strings), got {b!r} in {list(bases)!r}")
    if name in bases:
        raise UserError(f"{name}: bases cannot contain {name!r} itself")
    twice = sorted({b for b in bases if bases.count(b) > 1})
    if twice:
        raise UserError(f"{name}: bases lists {twice[0]!r} more than once; give each explainer once")
    return tuple(bases)


def check_thresholds(name: str, thresholds: object, n: int) -> tuple[float | str, ...]:
    """``thresholds`` as one value per base (a single value applies to every base): floats in
    [0, 1] or ``"otsu"``."""
    values = list(thresholds) if isinstance(thresholds, (list, tuple)) else [thresholds] * n
    if len(values) != n:
        raise UserError(f"{name}: thresholds has {len(values)} values for {n} bases; give one per base, in the order of bases, or a single value for all")
    out: list[float | str] = []
    for t in values:
        if isinstance(t, str) and t == "otsu":
            out.append(t)
        elif isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1:
            out.append(float(t))  # 1 and 1.0 give the same cache key
        else:
            raise UserError(f"{name}: thresholds: {t!r} is not allowed; {THRESHOLD_RULE}")
    return tuple(out)


class _MaskCombination:
    """The bases' maps, each binarised at its threshold, combined pixelwise by ``combine``."""

    name: ClassVar[str]
    combine: ClassVar[Callable[[torch.Tensor], torch.Tensor]]  # bool [N, B, H, W] -> [B, H, W]
    needs = Pass.NONE
    normalize = False  # a {0, 1} mask: resized only, never min-max scaled

    def __init__(self, bases: Sequence[str] = ("score_cam", "grad_cam"), thresholds: Sequence[float | str] | float | str = 0.5):
        self.bases = check_bases(self.name, bases)
        self.thresholds = check_thresholds(self.name, thresholds, len(self.bases))

    @property
    def composes(self) -> tuple[str, ...]:
        return self.bases

    def masks(self, ctx: ExplainContext) -> torch.Tensor:
        """The binarised base maps, bool [N, B, H, W] in the order of ``bases``."""
        out = []
        for base, t in zip(self.bases, self.thresholds):
            heat = ctx.explain(base)
            out.append(heat >= threshold_values(heat, t if t == "otsu" else str(t))[:, None, None])
        return torch.stack(out)

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        return self.combine(self.masks(ctx)).float()


class MaskAnd(_MaskCombination):
    """Intersection of 1+ explainers' binarised maps, (M_1 >= t_1) AND (M_2 >= t_2) ...: a {0, 1} mask."""

    name = "mask_and"

    @staticmethod
    def combine(masks: torch.Tensor) -> torch.Tensor:
        return masks.all(dim=0)


class MaskOr(_MaskCombination):
    """Union of 1+ explainers' binarised maps, (M_1 >= t_1) OR (M_2 >= t_2) ...: a {0, 1} mask."""

    name = "mask_or"

    @staticmethod
    def combine(masks: torch.Tensor) -> torch.Tensor:
        return masks.any(dim=0)
