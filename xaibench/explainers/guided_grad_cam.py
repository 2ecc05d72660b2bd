"""Guided Grad-CAM (Selvaraju et al. 2017): Guided Backprop x the layer's Grad-CAM, upsampled.

As Captum's ``GuidedGradCam``: the ReLU'd Grad-CAM of the layer (from the shared pass, free
beside the CAMs) upsampled to the input by nearest neighbour, times the Guided Backprop
attribution [B, C, H, W]; channels are summed like every pixel attribution's. Unlike the other
pixel attributions it has a layer axis (the Grad-CAM's). Guided Backprop costs one forward and
one modified backward per batch, computed once for all of the grid's layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xaibench.explainers.attribution import check_sign, guided_backprop, quiet, reduce_channels
from xaibench.explainers.base import ExplainContext
from xaibench.explainers.gradient import GradCAM
from xaibench.registry.passes import Pass


class GuidedGradCAM:
    """Guided Grad-CAM (Selvaraju et al. 2017): Guided Backprop times the layer's Grad-CAM, upsampled."""

    name = "guided_grad_cam"
    needs = Pass.ACTIVATIONS | Pass.GRADIENTS | Pass.MODEL_PASSES

    def __init__(self, sign: str = "positive"):
        self.sign = check_sign(self.name, sign)
        self._memo: tuple[tuple, torch.Tensor] | None = None  # the last batch's Guided Backprop

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        cam = GradCAM().explain(ctx)[:, None].clamp_min(0)  # the raw Grad-CAM of the shared pass
        cam = F.interpolate(cam, size=tuple(ctx.images.shape[-2:]), mode="nearest")
        return reduce_channels(self._guided(ctx) * cam, self.sign)

    def _guided(self, ctx: ExplainContext) -> torch.Tensor:
        key = (tuple(ctx.image_keys), id(ctx.target))
        if self._memo is None or self._memo[0] != key:
            x = ctx.images.detach()
            with torch.enable_grad(), quiet():
                gbp = guided_backprop(ctx.scorer, x, torch.arange(x.shape[0], device=x.device)).detach()
            self._memo = (key, gbp)
        return self._memo[1]
