"""The InSAR input encoding shared by xaibench-ecsplain's datasets and models: wrapped phase and
coherence as two channels in [0, 1] (:func:`phase_channels`), per-channel means of a split
(:func:`mean_of`) and the training-time augmentation (:func:`augment`).

The datasets are :mod:`xaibench_ecsplain.synthetic` (``insar_moving_areas``) and
:mod:`xaibench_ecsplain.folder` (``insar_folder``); the models (:mod:`xaibench_ecsplain.model`,
:mod:`xaibench_ecsplain.baselines`) augment their training batches with :func:`augment`.

Input representation (both datasets)
------------------------------------
A wrapped interferometric phase ``phi`` with coherence ``gamma`` in [0, 1] becomes two
channels in [0, 1]::

    channel 0 = (1 + gamma * cos(phi)) / 2
    channel 1 = (1 + gamma * sin(phi)) / 2

i.e. the authors' ECSPLAIN input ``[gamma cos(phi), gamma sin(phi)]`` mapped from [-1, 1] to
[0, 1]. The (cos, sin) pair removes the 2 pi discontinuities of the wrapped phase, and the
coherence weighting makes decorrelated pixels fade towards 0.5 (no information).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xaibench.plugin import Sample

#: tiles used by ``channel_mean``
MEAN_TILES = 64


def phase_channels(phase: np.ndarray, coherence: np.ndarray | float = 1.0) -> np.ndarray:
    """Wrapped phase [H, W] (radians) and coherence -> float32 [2, H, W] in [0, 1]."""
    coh = np.clip(np.asarray(coherence, dtype=np.float64), 0.0, 1.0)
    out = np.stack([(1 + coh * np.cos(phase)) / 2, (1 + coh * np.sin(phase)) / 2])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def mean_of(split: Sequence[Sample], n: int) -> torch.Tensor:
    """Per-channel mean (float32) of the first ``min(n, len(split))`` images of ``split``."""
    images = [split[i].image for i in range(min(n, len(split)))]
    return torch.stack([im.mean(dim=(1, 2)) for im in images]).mean(0)


def augment(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Random geometric and phase augmentation of a training batch (global torch RNG).

    Each image (and its mask) gets a random rotation by a multiple of 90 degrees and a random
    horizontal flip; two-channel images (the [cos, sin] encoding above) also get a random global
    phase offset -- the authors' augmentation: (2x - 1) is rotated by the offset in the
    (cos, sin) plane, which keeps the coherence. Non-square tiles only turn by 0 or 180 degrees.
    """
    out_x, out_m = [], []
    square = images.shape[-1] == images.shape[-2]
    for x, m in zip(images, masks):
        k = int(torch.randint(4, (1,)))
        k = k if square else 2 * (k % 2)
        x, m = torch.rot90(x, k, dims=(-2, -1)), torch.rot90(m, k, dims=(-2, -1))
        if bool(torch.rand(()) < 0.5):
            x, m = torch.flip(x, dims=(-1,)), torch.flip(m, dims=(-1,))
        if x.shape[0] == 2:
            alpha = float(torch.rand(())) * 2 * np.pi
            c, s = 2 * x[0] - 1, 2 * x[1] - 1
            ca, sa = np.cos(alpha), np.sin(alpha)
            x = torch.stack([c * ca - s * sa, c * sa + s * ca]).add(1).div(2).clamp(0, 1)
        out_x.append(x)
        out_m.append(m)
    return torch.stack(out_x), torch.stack(out_m)
