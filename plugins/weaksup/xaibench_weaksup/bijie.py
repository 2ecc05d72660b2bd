"""Bijie landslide dataset: real optical images of landslides and non-landslide areas.

Published by the GPCV group of Wuhan University (Ji et al., 2020,
http://gpcv.whu.edu.cn/data/Bijie_pages.html): 770 landslide and 2003 non-landslide images of
Bijie, Guizhou, China, as PNG files of varying size, laid out as::

    ROOT/landslide/image/NAME.png       RGB
    ROOT/landslide/mask/NAME.png        0 = background, 255 = landslide
    ROOT/landslide/dem/NAME.png         elevation
    ROOT/landslide/polygon_coordinate/  (not used)
    ROOT/non-landslide/image/NAME.png
    ROOT/non-landslide/dem/NAME.png

An image and its mask (and DEM) are paired by file-name stem, never by listing order. Every
image is resized to ``size`` x ``size`` (bilinear, antialiased), every mask too (nearest);
a DEM (``dem_channel = true``) is resized like the image, min-max normalised to [0, 1] per
image and becomes a 4th channel. Non-landslide images get an all-zero mask; ``label`` is the
folder: 1 = landslide, 0 = non-landslide.

There is no train/test split on disk, so the splits are drawn here: each class is shuffled
with ``numpy.random.default_rng([seed, label])`` (images sorted by id first, so the listing
order does not matter) and cut into ``test_fraction``, ``val_fraction`` and the rest (train);
each split is then shuffled (seeded) so its first images mix both classes.

Everything that can be checked without decoding the pixels is checked when the dataset is
built, before any sample is returned: the root and class folders, the image / mask / DEM
pairing, that every file is a readable image (its header and chunk checksums) and that each
mask is the size of its image. Samples are read from disk on access (not memoised).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from xaibench.plugin import SPLITS, LazySplit, Sample, UserError, check_bool, check_float, check_int, did_you_mean

URL = "http://gpcv.whu.edu.cn/data/Bijie_pages.html"
SOURCE = f"the Bijie landslide dataset is published by the GPCV group of Wuhan University at {URL}"
LAYOUT = "ROOT/landslide/{image,mask,dem}/NAME.png and ROOT/non-landslide/{image,dem}/NAME.png"
EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
CLASSES = (("landslide", 1), ("non-landslide", 0))
#: images used by :meth:`Bijie.channel_mean`
MEAN_TILES = 64


@dataclass(frozen=True)
class Record:
    """One image on disk with its mask (landslides only) and DEM (when used)."""

    image_id: str
    label: int
    image: Path
    mask: Path | None
    dem: Path | None


def _expand_root(root: str | os.PathLike[str]) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(os.fspath(root))))


def _files(folder: Path) -> dict[str, Path]:
    """stem -> path of the image files in ``folder`` (case-insensitive extension)."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in EXTENSIONS and p.is_file():
            found.setdefault(p.stem, p)
    return found


def _detail(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def probe(path: Path, what: str) -> tuple[int, int]:
    """(height, width) of an image file, after checking that PIL can identify and verify it."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read Bijie {what} {path}: {_detail(exc)}; replace the file with an intact copy") from exc
    return height, width


def read(path: Path, what: str) -> np.ndarray:
    """The pixels of an image file as a numpy array (RGB images as H x W x 3 uint8)."""
    try:
        with Image.open(path) as im:
            im.load()
            if what == "image":
                if im.mode not in ("RGB", "RGBA", "P", "L", "LA", "CMYK"):
                    raise UserError(f"Bijie image {path} has pixel mode {im.mode!r}, expected 8-bit RGB")
                im = im.convert("RGB")
            elif im.mode == "P":  # palette masks: the palette's grey value, not its index
                im = im.convert("L")
            return np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read Bijie {what} {path}: {_detail(exc)}; replace the file with an intact copy") from exc


def _resize(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """[C, H, W] float -> [C, size, size]."""
    if t.shape[1:] == (size, size):
        return t
    if mode == "nearest":
        return F.interpolate(t[None], size=(size, size), mode="nearest-exact")[0]
    return F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def mean_of(split: Sequence[Sample], n: int) -> torch.Tensor:
    """Per-channel mean of the first ``min(n, len(split))`` images of ``split``."""
    m = min(n, len(split))
    sums = torch.zeros(split[0].image.shape[0], dtype=torch.float64)
    for i in range(m):
        sums += split[i].image.double().mean(dim=(1, 2))
    return (sums / m).float()


class Bijie:
    """Bijie landslide / non-landslide images (mask 1 = landslide)."""

    name: ClassVar[str] = "bijie"
    num_classes: int = 2
    #: what ``[run] folds`` splits into folds (the whole dataset, as in the thesis' 10-fold CV)
    fold_splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __init__(
        self,
        root: str = "data/bijie",
        size: int = 256,
        dem_channel: bool = False,
        test_fraction: float = 0.2,
        val_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        """
        root: the folder holding landslide/ and non-landslide/ (``~`` and ``$VARS`` are expanded).
        size: images and masks are resized to size x size; a positive multiple of 32.
        dem_channel: add the image's DEM (min-max normalised) as a 4th channel.
        test_fraction, val_fraction: share of each class drawn into test / val; the rest is train.
        seed: non-negative integer; the split assignment depends only on it and the file names.
        """
        ds = self.name
        if not isinstance(root, (str, os.PathLike)) or not os.fspath(root):
            raise UserError(f"[dataset] root for dataset {ds!r} must be a folder path, got {root!r}")
        self.size = check_int(ds, "size", size, 32, multiple_of=32)
        self.dem_channel = check_bool(ds, "dem_channel", dem_channel)
        self.test_fraction = check_float(ds, "test_fraction", test_fraction, 0.0, 1.0, hi_open=True)
        self.val_fraction = check_float(ds, "val_fraction", val_fraction, 0.0, 1.0, hi_open=True)
        if self.test_fraction + self.val_fraction >= 1.0:
            raise UserError(
                f"[dataset] test_fraction + val_fraction = {self.test_fraction + self.val_fraction} for dataset {ds!r} "
                "is invalid: must be < 1 (the rest is the train split)"
            )
        self.seed = check_int(ds, "seed", seed, 0)
        self.root = _expand_root(root)
        self._check_root(root)
        records = [r for folder, label in CLASSES for r in self._scan(folder, label)]
        self._records = self._assign(records)
        self._splits: dict[str, LazySplit] = {}
        self._mean: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"Bijie(root={str(self.root)!r}, size={self.size}, dem_channel={self.dem_channel}, "
            f"test_fraction={self.test_fraction}, val_fraction={self.val_fraction}, seed={self.seed})"
        )

    # -- scanning -------------------------------------------------------------------------------

    def _check_root(self, given: str | os.PathLike[str]) -> None:
        if self.root.is_dir():
            return
        hint = " (an environment variable in it is not set)" if "$" in str(self.root) else ""
        what = "is not a folder" if self.root.exists() else "does not exist"
        raise UserError(
            f"[dataset] root = {os.fspath(given)!r} for dataset 'bijie': {self.root} {what}{hint}; "
            f"put the Bijie landslide dataset there in its published layout {LAYOUT} (or set [dataset] root); {SOURCE}"
        )

    def _folder(self, path: Path, why: str = "") -> Path:
        if not path.is_dir():
            raise UserError(f"Bijie: folder {path} is missing{why}; expected layout {LAYOUT} under root {self.root}; {SOURCE}")
        return path

    def _scan(self, folder: str, label: int) -> list[Record]:
        """Records of one class folder, with every pairing and header check done."""
        base = self._folder(self.root / folder)
        image_dir = self._folder(base / "image")
        images = _files(image_dir)
        if not images:
            raise UserError(f"Bijie: no images (.png) in {image_dir}; expected layout {LAYOUT}; {SOURCE}")
        masks: dict[str, Path] = {}
        if label:
            mask_dir = self._folder(base / "mask")
            masks = _files(mask_dir)
            for stem, path in images.items():
                if stem not in masks:
                    raise UserError(f"Bijie landslide image {path} has no mask: expected {mask_dir / path.name}; add it or remove the image")
            for stem, path in masks.items():
                if stem not in images:
                    raise UserError(f"Bijie mask {path} has no image: expected {image_dir / path.name}; add it or remove the mask")
        dems: dict[str, Path] = {}
        if self.dem_channel:
            dem_dir = self._folder(base / "dem", " (needed because dem_channel = true; set dem_channel = false to use the RGB images only)")
            dems = _files(dem_dir)
            for stem, path in images.items():
                if stem not in dems:
                    raise UserError(
                        f"Bijie {folder} image {path} has no DEM: expected {dem_dir / path.name} "
                        "(dem_channel = true; add the DEM or set dem_channel = false)"
                    )
        records = []
        for stem in sorted(images):
            shape = probe(images[stem], "image")
            if stem in masks:
                mask_shape = probe(masks[stem], "mask")
                if mask_shape != shape:
                    raise UserError(
                        f"Bijie mask {masks[stem]} is {mask_shape[0]}x{mask_shape[1]} but its image {images[stem]} is "
                        f"{shape[0]}x{shape[1]}; a mask must have its image's size"
                    )
            if stem in dems:
                probe(dems[stem], "DEM")
            records.append(Record(f"{folder}/{stem}", label, images[stem], masks.get(stem), dems.get(stem)))
        return records

    def _assign(self, records: list[Record]) -> dict[str, list[Record]]:
        """Stratified, seeded split assignment; each split in a seeded order mixing the classes."""
        out: dict[str, list[Record]] = {s: [] for s in SPLITS}
        for _, label in CLASSES:
            members = sorted((r for r in records if r.label == label), key=lambda r: r.image_id)
            order = np.random.default_rng([self.seed, label]).permutation(len(members))
            n_test = int(np.floor(self.test_fraction * len(members) + 0.5))
            n_val = int(np.floor(self.val_fraction * len(members) + 0.5))
            for rank, i in enumerate(order):
                split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
                out[split].append(members[i])
        for k, split in enumerate(SPLITS):
            mix = np.random.default_rng([self.seed, 2, k]).permutation(len(out[split]))
            out[split] = [out[split][i] for i in mix]
        return out

    # -- samples --------------------------------------------------------------------------------

    def ids(self, split: str) -> list[str]:
        """The image ids of ``split`` in order (no file is read)."""
        self._check_split(split)
        return [r.image_id for r in self._records[split]]

    def _check_split(self, name: str) -> None:
        if name not in SPLITS:
            raise UserError(did_you_mean(str(name), SPLITS, "split") + f" (dataset {self.name!r})")

    def _load(self, record: Record) -> Sample:
        rgb = read(record.image, "image")
        height, width = rgb.shape[:2]
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)
        image = _resize(image, self.size, "bilinear").clamp_(0.0, 1.0)
        if record.mask is not None:
            raw = read(record.mask, "mask")
            raw = raw.max(axis=-1) if raw.ndim == 3 else raw
            if raw.shape != (height, width):
                raise UserError(f"Bijie mask {record.mask} is {raw.shape[0]}x{raw.shape[1]} but its image {record.image} is {height}x{width}")
            binary = (raw > 0) if raw.max(initial=0) <= 1 else (raw > 127)
            mask = _resize(torch.from_numpy(binary.astype(np.float32))[None], self.size, "nearest")[0].long()
        else:
            mask = torch.zeros(self.size, self.size, dtype=torch.int64)
        if record.dem is not None:
            dem = read(record.dem, "DEM").astype(np.float64)
            dem = dem[..., 0] if dem.ndim == 3 else dem
            span = dem.max() - dem.min()
            dem = (dem - dem.min()) / span if span > 0 else np.zeros_like(dem)
            dem_t = _resize(torch.from_numpy(dem.astype(np.float32))[None], self.size, "bilinear").clamp_(0.0, 1.0)
            image = torch.cat([image, dem_t])
        return Sample(image=image.contiguous(), mask=mask.contiguous(), image_id=record.image_id, label=record.label)

    def split(self, name: str) -> Sequence[Sample]:
        """Samples of ``name`` ("train", "val" or "test"), read from disk on access."""
        self._check_split(name)
        if name not in self._splits:
            records = self._records[name]
            self._splits[name] = LazySplit(f"{self.name} {name}", len(records), lambda i, records=records: self._load(records[i]))
        return self._splits[name]

    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the first min(64, len(train)) train images (of val, then test, when
        train is empty)."""
        if self._mean is None:
            split = next(s for s in (self.split(n) for n in SPLITS) if len(s))
            self._mean = mean_of(split, MEAN_TILES)
        return self._mean.clone()
