"""Heatmap cache: in memory and on disk, keyed by content.

A key hashes the model's weights, the image's content, the layer, the explainer and its
parameters, and the target; so a re-run that only adds thresholds or metrics finds every map.
Disk entries are written atomically (:func:`xaibench.atomic.atomic_write`: temporary file,
fsync, rename).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from xaibench.atomic import atomic_write


def default_cache_dir() -> Path:
    return Path(os.environ.get("XAIBENCH_CACHE", Path.home() / ".cache" / "xaibench"))


def image_key(image: torch.Tensor) -> str:
    """Content hash of one image tensor."""
    arr = image.detach().to("cpu", torch.float32).contiguous().numpy()
    h = hashlib.sha1(arr.tobytes())
    h.update(str(arr.shape).encode())
    return h.hexdigest()


def heatmap_key(model_id: str, image: str, layer: str, explainer: str, params: str, target: str) -> str:
    text = "\x1f".join([model_id, image, layer, explainer, params, target])
    return hashlib.sha1(text.encode()).hexdigest()


class HeatmapCache:
    """Maps [H, W] float32 by key; ``root=None`` keeps them in memory only."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else None
        self._mem: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> torch.Tensor | None:
        got = self._mem.get(key)
        if got is None and self.root is not None:
            path = self._path(key)
            if path.exists():
                try:
                    got = torch.from_numpy(np.load(path))
                except (OSError, ValueError):  # a torn or foreign file is a miss, not an error
                    got = None
                if got is not None:
                    self._mem[key] = got
        if got is None:
            self.misses += 1
        else:
            self.hits += 1
        return got

    def put(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().to("cpu", torch.float32).contiguous()
        self._mem[key] = value
        if self.root is None:
            return
        arr = value.numpy()

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
                np.save(f, arr)

        atomic_write(self._path(key), write)
