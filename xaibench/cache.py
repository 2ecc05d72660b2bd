"""Heatmap cache: in memory and on disk, keyed by content.

A key hashes everything a map depends on: the model's weights, the image's content and (where
the engine is given one) its ground-truth mask, the layer, the explainer's name, class,
parameters, ``version`` and code (:func:`code_fingerprint`: its source files and its bases'),
the engine's own code, and the target; so a re-run that only adds thresholds or metrics finds
every map, and a fixed explainer, a relabelled image or another target never gets an old one.
Disk entries are written atomically (:func:`xaibench.atomic.atomic_write`: temporary file,
fsync, rename).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
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


@functools.cache
def code_fingerprint(*objects: object) -> str:
    """A hash of the source files that define ``objects`` (classes, with their bases, or
    modules); objects without a source file (built-ins, classes made in a REPL) add nothing."""
    paths: list[str] = []
    for obj in objects:
        for part in obj.__mro__ if isinstance(obj, type) else (obj,):
            try:
                path = inspect.getsourcefile(part)
            except TypeError:  # built-in
                continue
            if path and os.path.isfile(path) and path not in paths:
                paths.append(path)
    h = hashlib.sha1()
    for path in paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


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
