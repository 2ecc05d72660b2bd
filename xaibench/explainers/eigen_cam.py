"""Eigen-CAM (Muhammad & Yeasin 2020): the layer's activations projected on their first principal component."""

from __future__ import annotations

import torch

from xaibench.explainers.base import ExplainContext
from xaibench.registry.passes import Pass


def first_component_projection(activations: torch.Tensor) -> torch.Tensor:
    """Projection [B, h, w] of each image's centred activations on its first right-singular vector.

    Economy SVD of the [h*w, K] matrix (K = channels): only K singular vectors are formed,
    never the h*w x h*w left basis a full SVD builds. A singular vector's sign is arbitrary;
    we fix it so that the projection correlates positively with the channel-mean activation
    map (the map points where the layer is, on average, active). pytorch-grad-cam leaves the
    sign to LAPACK, so its Eigen-CAM can come out as the inverse of ours.
    """
    b, k, h, w = activations.shape
    x = activations.reshape(b, k, h * w).transpose(1, 2).double()  # [B, hw, K]
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    proj = x @ vh[:, 0, :, None]  # [B, hw, 1]
    ref = activations.reshape(b, k, h * w).mean(dim=1).double()  # [B, hw]
    sign = torch.sign((proj[..., 0] * (ref - ref.mean(dim=1, keepdim=True))).sum(dim=1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (proj[..., 0] * sign[:, None]).reshape(b, h, w).to(activations.dtype)


class EigenCAM:
    """Seg-Eigen-CAM: gradient-free and class-agnostic; costs no pass beyond the shared forward."""

    name = "eigen_cam"
    needs = Pass.ACTIVATIONS

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        a = torch.nan_to_num(ctx.activations)
        return first_component_projection(a)
