"""WHU Building Dataset (aerial imagery subset): real aerial tiles with building masks.

Published by the GPCV group of Wuhan University (http://gpcv.whu.edu.cn/data/building_dataset.html)
as 512x512 RGB GeoTIFF tiles at 0.3 m, laid out as::

    ROOT/train/image/*.tif   ROOT/train/label/*.tif
    ROOT/val/image/*.tif     ROOT/val/label/*.tif
    ROOT/test/image/*.tif    ROOT/test/label/*.tif

Labels are single-channel with 0 = background and 255 = building; they become mask 0/1
(values > 127 -> 1; a label that only holds 0 and 1 is taken as already binary). Tiles are read
with tifffile on access (not cached: the train split alone is ~4,700 tiles); the file listing of
a split is read once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from xaibench.config.vocabulary import SPLITS
from xaibench.datasets.base import LazySplit, Sample
from xaibench.errors import UserError, did_you_mean

URL = "http://gpcv.whu.edu.cn/data/building_dataset.html"
SOURCE = (
    "the WHU Building Dataset (aerial imagery subset) is published by the GPCV group of "
    f"Wuhan University at {URL}"
)
LAYOUT = "ROOT/{train,val,test}/{image,label}/*.tif"
EXTENSIONS = (".tif", ".tiff")

#: tiles used by :meth:`WHU.channel_mean`
MEAN_TILES = 64


def _expand_root(root: str | os.PathLike[str]) -> Path:
    text = os.path.expanduser(os.path.expandvars(os.fspath(root)))
    return Path(text)


def _tifs(folder: Path) -> dict[str, Path]:
    """stem -> path of the .tif/.tiff files in ``folder`` (case-insensitive extension)."""
    found: dict[str, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in EXTENSIONS and p.is_file():
            found.setdefault(p.stem, p)
    return found


def _read(path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(tifffile.imread(path))
    except Exception as exc:  # tifffile raises assorted errors for corrupt files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read WHU {what} {path}: {detail}") from exc


class WHU:
    """WHU aerial building tiles (mask 1 = building)."""

    name: ClassVar[str] = "whu"
    num_classes: int = 2
    #: what ``[run] folds`` splits into folds (image ids must differ across them)
    fold_splits: ClassVar[tuple[str, ...]] = SPLITS

    def __init__(self, root: str = "data/whu", size: int = 512, limit: int = 0) -> None:
        """
        root: dataset folder holding train/, val/, test/ (``~`` and ``$VARS`` such as
            ``$XAIBENCH_DATA`` are expanded).
        size: tiles are resized to size x size if they differ (images bilinear, labels
            nearest); a positive multiple of 32.
        limit: 0 = every tile of a split, N > 0 = the first N tiles in sorted filename order.
        """
        if not isinstance(root, (str, os.PathLike)):
            raise UserError(f"[dataset] root for dataset 'whu' must be a path string, got {root!r}")
        for key, value in (("size", size), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise UserError(
                    f"[dataset] {key} for dataset 'whu' must be an integer, got {value!r}"
                )
        if size < 32 or size % 32:
            raise UserError(
                f"[dataset] size = {size} for dataset 'whu' is invalid: must be a positive "
                "multiple of 32 (e.g. 256, 512)"
            )
        if limit < 0:
            raise UserError(
                f"[dataset] limit = {limit} for dataset 'whu' is invalid: must be 0 (all tiles) "
                "or a positive number of tiles"
            )
        self.root = _expand_root(root)
        self.size = int(size)
        self.limit = int(limit)
        if not self.root.is_dir():
            hint = ""
            if "$" in str(self.root):
                hint = " (an environment variable in it is not set)"
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise UserError(
                f"[dataset] root = {os.fspath(root)!r} for dataset 'whu': {self.root} {what}"
                f"{hint}; expected layout {LAYOUT}; {SOURCE}"
            )
        self._splits: dict[str, LazySplit] = {}
        self._mean: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"WHU(root={str(self.root)!r}, size={self.size}, limit={self.limit})"

    def split(self, name: str) -> Sequence[Sample]:
        """Tiles of ``name`` ("train", "val" or "test"); files are checked, not read, here."""
        if name not in SPLITS:
            raise UserError(did_you_mean(str(name), SPLITS, "split") + " (dataset 'whu')")
        if name not in self._splits:
            pairs = self._pairs(name)
            self._splits[name] = LazySplit(f"whu {name}", len(pairs), lambda i, pairs=pairs: self._load(*pairs[i]))
        return self._splits[name]

    def _pairs(self, name: str) -> list[tuple[Path, Path]]:
        image_dir = self.root / name / "image"
        label_dir = self.root / name / "label"
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise UserError(
                    f"WHU {name} split: folder {folder} is missing; expected layout {LAYOUT} "
                    f"under root {self.root}; {SOURCE}"
                )
        images = _tifs(image_dir)
        if not images:
            raise UserError(
                f"WHU {name} split: no .tif images in {image_dir}; expected layout {LAYOUT}; "
                f"{SOURCE}"
            )
        stems = sorted(images, key=lambda stem: images[stem].name)
        if self.limit:
            stems = stems[: self.limit]
        labels = _tifs(label_dir)
        pairs = []
        for stem in stems:
            if stem not in labels:
                raise UserError(
                    f"WHU image {images[stem]} has no label: expected "
                    f"{label_dir / images[stem].name}"
                )
            pairs.append((images[stem], labels[stem]))
        return pairs

    def _load(self, image_path: Path, label_path: Path) -> Sample:
        image = _read(image_path, "image")
        label = _read(label_path, "label")
        if image.ndim != 3 or image.shape[2] != 3:
            raise UserError(
                f"WHU image {image_path} has shape {image.shape}, expected H x W x 3 (RGB)"
            )
        if label.ndim == 3 and label.shape[2] == 1:
            label = label[..., 0]
        if label.ndim != 2:
            raise UserError(
                f"WHU label {label_path} has shape {label.shape}, expected H x W (one channel)"
            )
        if label.shape != image.shape[:2]:
            raise UserError(
                f"WHU label {label_path} is {label.shape[0]}x{label.shape[1]} but its image "
                f"{image_path} is {image.shape[0]}x{image.shape[1]}"
            )
        if image.dtype == np.uint8:
            img = image.astype(np.float32) / 255.0
        elif image.dtype == np.uint16:
            img = image.astype(np.float32) / 65535.0
        else:
            raise UserError(
                f"WHU image {image_path} has pixel type {image.dtype}, expected uint8"
            )
        binary = label.max(initial=0) <= 1
        mask = (label > 0) if binary else (label > 127)
        img_t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        mask_t = torch.from_numpy(mask.astype(np.int64))
        if img_t.shape[1:] != (self.size, self.size):
            img_t = F.interpolate(
                img_t[None], size=(self.size, self.size), mode="bilinear",
                align_corners=False, antialias=True,
            )[0].clamp_(0.0, 1.0)
            mask_t = F.interpolate(
                mask_t[None, None].float(), size=(self.size, self.size), mode="nearest-exact"
            )[0, 0].long()
        return Sample(
            image=img_t.contiguous(),
            mask=mask_t.contiguous(),
            image_id=image_path.stem,
            label=int(bool(mask_t.any())),
        )

    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the first min(64, len(train)) train tiles."""
        if self._mean is None:
            train = self.split("train")
            n = min(MEAN_TILES, len(train))
            sums = torch.zeros(3, dtype=torch.float64)
            for j in range(n):
                sums += train[j].image.double().mean(dim=(1, 2))
            self._mean = (sums / n).float()
        return self._mean.clone()
