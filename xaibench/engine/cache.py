"""Heatmap cache: in memory and on disk, keyed by content.

A key hashes everything a map depends on: the model's weights, the image's content and (where
the engine is given one) its ground-truth mask, the layer, the explainer's name, class,
parameters, ``version`` and code (:func:`code_fingerprint`: its source files and its bases'),
the engine's own code, and the target; so a re-run that only adds thresholds or metrics finds
every map, and a fixed explainer, a relabelled image or another target never gets an old one.
Disk entries are written atomically (:func:`xaibench.util.atomic.atomic_write`: temporary file,
fsync, rename).
"""

from __future__ import annotations

import functools
import inspect
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from xaibench.config.hashing import content_digest, content_hash
from xaibench.util.atomic import atomic_write


def default_cache_dir() -> Path:
    return Path(os.environ.get("XAIBENCH_CACHE", Path.home() / ".cache" / "xaibench"))


def image_key(image: torch.Tensor) -> str:
    """Content hash of one image tensor."""
    arr = image.detach().to("cpu", torch.float32).contiguous().numpy()
    return content_hash(arr.tobytes(), str(arr.shape))


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
    return content_hash(*(Path(path).read_bytes() for path in paths))[:16]


def heatmap_key(model_id: str, image: str, layer: str, explainer: str, params: str, target: str) -> str:
    text = "\x1f".join([model_id, image, layer, explainer, params, target])
    return content_hash(text)


class HeatmapCache:
    """Maps [H, W] float32 by key; ``root=None`` keeps them in memory only (the most recent
    ``memory_bytes`` of them).

    On disk each entry is an ``.npz`` with the map and the SHA-1 of its bytes. What is read is
    checked (readable, float32, 2-D, the expected shape, finite, its checksum); an entry that
    fails is a miss, computed again and rewritten, and the first such entry is reported once. A
    cache that cannot be written (full disk, read-only folder) only costs speed: a warning,
    then the maps are kept in memory only.
    """

    #: bytes of maps kept in memory (the least recently used forgotten first): a run's memory
    #: must not grow with its images (16 maps of 512 x 512 are 16 MiB an image)
    MEMORY_BYTES = 256 << 20

    def __init__(self, root: Path | str | None = None, memory_bytes: int = MEMORY_BYTES):
        self.root = Path(root) if root is not None else None
        self._mem: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._mem_bytes = 0
        self.memory_bytes = memory_bytes
        self._writable = True
        self._warned: set[str] = set()
        self.hits = 0
        self.misses = 0
        self.rejected = 0  #: entries on disk that failed the checks

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npz"

    def _warn(self, kind: str, text: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            from xaibench.util.progress import warn

            warn(text)

    def _read(self, path: Path, shape: tuple[int, ...] | None) -> torch.Tensor | None:
        try:
            with np.load(path) as entry:  # no pickles: allow_pickle is False
                arr, digest = entry["map"], entry["sha1"].tobytes()
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        ok = (
            arr.dtype == np.float32 and arr.ndim == 2 and (shape is None or tuple(arr.shape) == tuple(shape))
            and bool(np.isfinite(arr).all()) and content_digest(arr.tobytes()) == digest
        )
        return torch.from_numpy(arr) if ok else None

    def get(self, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        """The map of ``key`` (of ``shape``, if given), or ``None``."""
        got = self._mem.get(key)
        if got is not None:
            self._mem.move_to_end(key)
        if got is not None and shape is not None and tuple(got.shape) != tuple(shape):
            got = None
        if got is None and self.root is not None:
            path = self._path(key)
            if path.exists():
                got = self._read(path, shape)
                if got is None:
                    self.rejected += 1
                    self._warn("rejected", f"cached map {path} is unreadable, of the wrong shape or type, not finite, or does not match its checksum; "
                               "it and any other such entry are computed again and rewritten")
                else:
                    self._remember(key, got)
        if got is None:
            self.misses += 1
        else:
            self.hits += 1
        return got

    def _remember(self, key: str, value: torch.Tensor) -> None:
        """Keep ``value`` in memory, forgetting the least recently used maps beyond
        ``memory_bytes`` (those on disk are read again; the others computed again)."""
        old = self._mem.pop(key, None)
        self._mem_bytes -= 0 if old is None else old.nbytes
        self._mem[key] = value
        self._mem_bytes += value.nbytes
        while self._mem_bytes > self.memory_bytes and len(self._mem) > 1:
            self._mem_bytes -= self._mem.popitem(last=False)[1].nbytes

    def put(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().to("cpu", torch.float32).contiguous()
        self._remember(key, value)
        if self.root is None or not self._writable:
            return
        arr = value.numpy()
        digest = np.frombuffer(content_digest(arr.tobytes()), dtype=np.uint8)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, map=arr, sha1=digest)

        try:
            atomic_write(self._path(key), write)
        except OSError as exc:
            self._writable = False
            self._warn("unwritable", f"cannot write the heatmap cache {self.root} ({exc.strerror or exc}); going on without it "
                       "(the most recent maps kept in memory for this run: the same numbers, slower reruns)")
