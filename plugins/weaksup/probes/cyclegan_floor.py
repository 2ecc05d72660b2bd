"""The CycleGAN difference's floor on the landslides proxy: |G(x) - x| where there is no landslide.

Trains the benchmark's CycleGAN (landslide -> landslide-free training tiles of one fold's size)
and measures, on held-out tiles, the difference map on background pixels (every pixel of a
landslide-free tile and the pixels outside the mask of a landslide tile) and inside the
landslides: its median and p90, and the share of background pixels above the thesis's
threshold 0.08. Settings are keyword arguments of ``train_cyclegan``::

    python plugins/weaksup/probes/cyclegan_floor.py epochs=12 ngf=16 n_blocks=4 batch_size=4
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from xaibench_weaksup.cyclegan import cyclegan_difference, train_cyclegan
from xaibench_weaksup.landslides import Landslides

THRESHOLD = 0.08


def floor(settings: dict, n_train: int = 256, n_test: int = 100, size: int = 64, seed: int = 0) -> dict[str, float]:
    ds = Landslides(size=size, n_train=n_train, n_val=0, n_test=n_test, seed=seed)
    train = list(ds.split("train"))
    a, b = [s for s in train if s.label], [s for s in train if not s.label]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        g = train_cyclegan(a, b, cache_path=Path(tmp) / "g.pt", seed=seed, show_progress=False, **settings)
    seconds = time.perf_counter() - t0
    test = list(ds.split("test"))
    diff = cyclegan_difference(g, torch.stack([s.image for s in test])).numpy()
    mask = torch.stack([s.mask for s in test]).numpy() > 0
    bg, fg = diff[~mask], diff[mask]
    return {
        "train_s": seconds,
        "background_median": float(np.median(bg)),
        "background_p90": float(np.quantile(bg, 0.9)),
        "background_above_0.08": float((bg > THRESHOLD).mean()),
        "landslide_median": float(np.median(fg)),
        "landslide_above_0.08": float((fg > THRESHOLD).mean()),
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    kwargs = {k: (float(v) if "." in v or "e-" in v else int(v)) for k, v in (arg.split("=", 1) for arg in sys.argv[1:])}
    print(kwargs, {k: round(v, 4) for k, v in floor(kwargs).items()}, flush=True)
