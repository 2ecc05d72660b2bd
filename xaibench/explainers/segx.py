"""SegX-style refinement (Zhang, Zhu and Luo 2025): a base explainer's map restricted to a segmentation mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xaibench.errors import UserError
from xaibench.explainers.base import ExplainContext
from xaibench.passes import Pass


class SegX:
    """The map of ``base`` multiplied by the mask of the relevant region: the segmentation
    model's predicted target region (``mask = "target"``, default) or the ground truth
    (``mask = "ground_truth"``), optionally dilated by ``dilation`` pixels. The base map is taken
    from the engine, so it is computed once even when ``base`` is also in the grid.
    """

    name = "segx"
    needs = Pass.NONE

    def __init__(self, base: str = "grad_cam", mask: str = "target", dilation: int = 0):
        if mask not in ("target", "ground_truth"):
            raise UserError(f"segx: mask = {mask!r} is not one of 'target', 'ground_truth'")
        if dilation < 0:
            raise UserError(f"segx: dilation must be >= 0, got {dilation}")
        if base == "segx":
            raise UserError("segx: base cannot be 'segx' itself")
        self.base = base
        self.mask = mask
        self.dilation = dilation

    @property
    def composes(self) -> tuple[str, ...]:
        return (self.base,)

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        base = ctx.explain(self.base)
        if self.mask == "ground_truth":
            if ctx.ground_truth is None:
                raise UserError("segx: mask = 'ground_truth' needs ground-truth masks")
            region = (ctx.ground_truth > 0).float()
        else:
            if ctx.target.region is None:
                raise UserError("segx: a classifier has no target region; use mask = 'ground_truth'")
            region = ctx.target.region.float()
        region = region.to(base.device)
        if self.dilation:
            d = self.dilation
            region = F.max_pool2d(region[:, None], kernel_size=2 * d + 1, stride=1, padding=d)[:, 0]
        return base * region
