"""Gradient-family CAMs: each is a weight kernel over (activations, gradients) of the shared pass.

All of them together cost one forward and one backward per image batch, whatever the number
of methods and layers. Formulas follow pytorch-grad-cam 1.5.7 (the test oracle), adapted to
segmentation by the target score (sum of the class logit over the target region).
"""

from __future__ import annotations

import torch

from xaibench.explainers.base import ExplainContext
from xaibench.registry.passes import Pass


class _GradientCAM:
    needs = Pass.ACTIVATIONS | Pass.GRADIENTS

    def weights(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Channel weights [B, K, 1, 1] or per-pixel weights [B, K, h, w]."""
        raise NotImplementedError

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        a, g = ctx.activations, ctx.gradients
        return (self.weights(a, g) * a).sum(dim=1)


class GradCAM(_GradientCAM):
    """Seg-Grad-CAM (Vinogradova et al. 2020): channel weights = spatial mean of the gradients."""

    name = "grad_cam"

    def weights(self, a, g):
        return g.mean(dim=(2, 3), keepdim=True)


class GradCAMPlusPlus(_GradientCAM):
    """Seg-Grad-CAM++ (Chattopadhyay et al. 2018): higher-order gradient weighting of positive gradients."""

    name = "grad_cam_pp"

    def weights(self, a, g):
        g2 = g.pow(2)
        g3 = g2 * g
        sum_a = a.sum(dim=(2, 3), keepdim=True)
        aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
        aij = torch.where(g != 0, aij, torch.zeros_like(aij))
        return (g.clamp_min(0) * aij).sum(dim=(2, 3), keepdim=True)


class XGradCAM(_GradientCAM):
    """Seg-XGrad-CAM (Fu et al. 2020): gradients weighted by the normalised activations."""

    name = "x_grad_cam"

    def weights(self, a, g):
        sum_a = a.sum(dim=(2, 3), keepdim=True)
        return (g * a / (sum_a + 1e-7)).sum(dim=(2, 3), keepdim=True)


class HiResCAM(_GradientCAM):
    """HiRes-CAM (Draelos & Carin 2020): element-wise gradient x activation, summed over channels."""

    name = "hires_cam"

    def weights(self, a, g):
        return g


class LayerCAM(_GradientCAM):
    """Layer-CAM (Jiang et al. 2021): element-wise positive gradient x activation."""

    name = "layer_cam"

    def weights(self, a, g):
        return g.clamp_min(0)
