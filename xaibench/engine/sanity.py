"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

The maps of each method are recomputed on a copy of the model whose top layers (for a U-Net,
the decoder and head) are re-initialised; the Spearman rank correlation between each image's
original and randomised map is reported as the metric ``sanity_rank_correlation``. A method
whose maps barely change (correlation above ``FLAG_ABOVE``) does not depend on what the model
learned, and the leaderboard flags it. The user's model is never touched: a deep copy is.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.stats import spearmanr

from xaibench.config.vocabulary import SANITY_FLAG_ABOVE, SANITY_METRIC
from xaibench.models.base import LoadedModel

METRIC = SANITY_METRIC
FLAG_ABOVE = SANITY_FLAG_ABOVE


def randomized_copy(model: LoadedModel, seed: int = 0) -> LoadedModel:
    """A copy of ``model`` with the modules under ``model.randomizable`` re-initialised
    (every module, if the plugin names none)."""
    module = copy.deepcopy(model.module)
    prefixes = model.randomizable or ("",)
    torch.manual_seed(seed)
    for path, sub in module.named_modules():
        if any(path == p or path.startswith(p + ".") or p == "" for p in prefixes) and hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    # no tail split: a split closes over the original module, so ablation on the copy replaces
    # the layer's output with a hook instead (same maps, full forwards)
    return LoadedModel(module=module, task=model.task, layers=dict(model.layers), randomizable=model.randomizable)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation per image of two map batches [B, H, W]; NaN for a constant map."""
    out = []
    for x, y in zip(a.detach().cpu().numpy(), b.detach().cpu().numpy()):
        x, y = x.ravel(), y.ravel()
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            out.append(np.nan)
        else:
            out.append(float(spearmanr(x, y).statistic))
    return torch.tensor(out, dtype=torch.float32)
