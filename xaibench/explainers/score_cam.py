"""Score-CAM (Wang et al. 2020), adapted to segmentation by the target score."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xaibench.explainers.base import ExplainContext
from xaibench.registry.passes import Pass


class ScoreCAM:
    """Each channel, upsampled and min-max scaled, masks the input; the masked input's target
    score weighs the channel. ``baseline=False`` (default) weighs by a softmax over channels of
    the scores, as pytorch-grad-cam does; ``baseline=True`` uses the paper's increase of
    confidence, score(X * H_k) - score(zero image), without softmax (a softmax is invariant to
    subtracting the baseline, so the two options differ only in the weighting).
    ``fill`` is the value masked pixels move towards, ``X * H_k + fill * (1 - H_k)``
    (default 0: the paper's ``X * H_k``); set it to the input's "no information" value where
    zero is a strong signal (e.g. 0.5 for interferograms encoded as (1 + cos) / 2). The
    baseline image is then the constant ``fill``.
    The K masked forwards of each image go through the engine in chunks.
    """

    name = "score_cam"
    needs = Pass.ACTIVATIONS | Pass.MASKED_FORWARDS

    def __init__(self, baseline: bool = False, fill: float = 0.0):
        self.baseline = baseline
        self.fill = float(fill)

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        a = ctx.activations
        b, k = a.shape[:2]
        up = F.interpolate(a, size=ctx.images.shape[-2:], mode="bilinear", align_corners=True)
        flat = up.reshape(b, k, -1)
        lo = flat.min(dim=-1).values[..., None, None]
        hi = flat.max(dim=-1).values[..., None, None]
        up = (up - lo) / (hi - lo + 1e-8)
        scores = torch.empty(b, k, device=a.device, dtype=a.dtype)
        for i in range(b):  # one image at a time keeps memory at K inputs, chunks batch the forwards
            masked = self.fill + (ctx.images[i, None] - self.fill) * up[i, :, None]  # [K, C, H, W]
            idx = torch.full((k,), i, dtype=torch.long, device=a.device)
            scores[i] = ctx.masked_scores(masked, idx)
        if self.baseline:
            blank = torch.full_like(ctx.images, self.fill)
            base = ctx.masked_scores(blank, torch.arange(b, device=a.device))
            weights = scores - base[:, None]
        else:
            weights = torch.softmax(scores, dim=-1)
        return (weights[:, :, None, None] * a).sum(dim=1)
