"""``insar_folder``: xaibench-ecsplain's dataset of real InSAR tiles read from a folder (the
input encoding is :mod:`xaibench_ecsplain.encoding`).

Layout
------
::

    ROOT/{train,val,test}/images/NAME.{tif,tiff,png,npy}
    ROOT/{train,val,test}/masks/NAME.{tif,tiff,png,npy}
    ROOT/{train,val,test}/coherence/NAME.{tif,tiff,png,npy}   (optional)

An image is either a 2-D array of wrapped phase in radians (``image_format = "phase"``, the
default; turned into the two channels above, weighted by the coherence file when there is
one) or an array of channels already in [0, 1] (``image_format = "channels"``; [C, H, W] or
[H, W, C] with C <= 4; 8-bit data is divided by 255). A mask is any 2-D array; non-zero pixels
are moving. The image-level label is 1 when the mask has a positive pixel. A missing ROOT is
reported when the dataset is built, a missing ``SPLIT/images`` or ``SPLIT/masks`` folder when
that split is first used (both messages give the expected layout); an unreadable file, an
image without a mask of the same name (or the reverse) and shape mismatches are reported with
the file's path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from xaibench.plugin import SPLITS, LazySplit, Sample, UserError, check_int, did_you_mean
from xaibench_ecsplain.encoding import MEAN_TILES, mean_of, phase_channels

EXTENSIONS = (".tif", ".tiff", ".png", ".npy")
LAYOUT = "ROOT/{train,val,test}/{images,masks}/NAME.{tif,tiff,png,npy} (optional ROOT/SPLIT/coherence/NAME.*)"
IMAGE_FORMATS = ("phase", "channels")


def read_array(path: Path, what: str) -> np.ndarray:
    """A .tif/.tiff/.png/.npy file as a numpy array; unreadable files raise a UserError naming them."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.array(im)
    except Exception as exc:  # the readers raise assorted errors for corrupt files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read InSAR {what} {path}: {detail}") from exc
    arr = np.asarray(arr)
    if arr.dtype == object or arr.size == 0:
        raise UserError(f"cannot read InSAR {what} {path}: not a numeric array")
    return arr


def _files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in EXTENSIONS:
            found.setdefault(p.stem, p)
    return found


class InsarFolder:
    """Real InSAR tiles from a folder (``ROOT/{train,val,test}/{images,masks}/``)."""

    name: ClassVar[str] = "insar_folder"
    num_classes: int = 2
    #: what ``[run] folds`` splits into folds (image ids must differ across them)
    fold_splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __init__(self, root: str = "data/insar", image_format: str = "phase", limit: int = 0) -> None:
        """
        root: the folder holding train/, val/, test/ (``~`` and ``$VARS`` are expanded).
        image_format: ``phase`` (2-D wrapped phase in radians) or ``channels`` (channels in [0, 1]).
        limit: 0 = every tile of a split, N > 0 = the first N in sorted file-name order.
        """
        if not isinstance(root, (str, os.PathLike)) or not os.fspath(root):
            raise UserError(f"[dataset] root for dataset {self.name!r} must be a folder path, got {root!r}")
        if image_format not in IMAGE_FORMATS:
            raise UserError(f"[dataset] image_format = {image_format!r} for dataset {self.name!r} is not allowed; allowed: {', '.join(IMAGE_FORMATS)}")
        self.root = Path(os.path.expanduser(os.path.expandvars(os.fspath(root))))
        self.image_format = image_format
        self.limit = check_int(self.name, "limit", limit, 0)
        if not self.root.is_dir():
            raise UserError(
                f"dataset {self.name!r}: folder {str(self.root)!r} does not exist; put the tiles there as {LAYOUT} "
                "(mask pixels > 0 = moving area) or set [dataset] root"
            )
        self._splits: dict[str, LazySplit] = {}
        self._mean: torch.Tensor | None = None

    def _pairs(self, split: str) -> list[tuple[Path, Path, Path | None]]:
        base = self.root / split
        images, masks = base / "images", base / "masks"
        for folder in (images, masks):
            if not folder.is_dir():
                raise UserError(f"dataset {self.name!r}: folder {str(folder)!r} does not exist; expected layout {LAYOUT}")
        imgs, msks = _files(images), _files(masks)
        cohs = _files(base / "coherence") if (base / "coherence").is_dir() else {}
        lonely = sorted(set(imgs) ^ set(msks))
        if lonely:
            name = lonely[0]
            has, lacks = ("image", "mask") if name in imgs else ("mask", "image")
            where = imgs.get(name) or msks.get(name)
            raise UserError(
                f"dataset {self.name!r}: {has} {str(where)!r} has no {lacks} of the same name in "
                f"{str(masks if lacks == 'mask' else images)!r} ({len(lonely)} unpaired file(s))"
            )
        names = sorted(imgs)
        if self.limit:
            names = names[: self.limit]
        return [(imgs[n], msks[n], cohs.get(n)) for n in names]

    def _load(self, split: str, image_path: Path, mask_path: Path, coh_path: Path | None) -> Sample:
        raw = read_array(image_path, "image")
        if self.image_format == "phase":
            if raw.ndim == 3 and 1 in (raw.shape[0], raw.shape[-1]):
                raw = raw.reshape(raw.shape[1:] if raw.shape[0] == 1 else raw.shape[:-1])
            if raw.ndim != 2:
                raise UserError(f"InSAR image {image_path}: image_format 'phase' expects a 2-D phase array, got shape {raw.shape}")
            coh: np.ndarray | float = 1.0
            if coh_path is not None:
                coh_raw = read_array(coh_path, "coherence")
                if coh_raw.shape != raw.shape:
                    raise UserError(f"InSAR coherence {coh_path}: shape {coh_raw.shape} differs from its image {raw.shape}")
                coh = coh_raw.astype(np.float64)
                if np.issubdtype(coh_raw.dtype, np.integer) and coh.max() > 1.0:
                    coh = coh / 255.0
            image = phase_channels(raw.astype(np.float64), coh)
        else:
            arr = raw
            if arr.ndim == 2:
                arr = arr[None]
            elif arr.ndim == 3 and arr.shape[0] > 4 and arr.shape[-1] <= 4:
                arr = np.moveaxis(arr, -1, 0)
            if arr.ndim != 3 or arr.shape[0] > 4:
                raise UserError(f"InSAR image {image_path}: image_format 'channels' expects [C, H, W] or [H, W, C] with C <= 4, got {raw.shape}")
            if np.issubdtype(arr.dtype, np.integer):
                arr = arr.astype(np.float32) / (255.0 if arr.max() <= 255 else float(np.iinfo(arr.dtype).max))
            arr = arr.astype(np.float32)
            if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
                raise UserError(
                    f"InSAR image {image_path}: values in [{arr.min():.3g}, {arr.max():.3g}]; image_format 'channels' "
                    "expects values in [0, 1] (use image_format = 'phase' for phase in radians)"
                )
            image = np.clip(arr, 0, 1)
        mask = read_array(mask_path, "mask")
        if mask.ndim == 3 and 1 in (mask.shape[0], mask.shape[-1]):
            mask = mask.reshape(mask.shape[1:] if mask.shape[0] == 1 else mask.shape[:-1])
        if mask.ndim != 2:
            raise UserError(f"InSAR mask {mask_path}: expected a 2-D array, got shape {mask.shape}")
        if mask.shape != image.shape[1:]:
            raise UserError(f"InSAR mask {mask_path}: shape {mask.shape} differs from its image {image.shape[1:]}")
        binary = (mask > 0).astype(np.int64)
        return Sample(
            image=torch.from_numpy(np.ascontiguousarray(image)),
            mask=torch.from_numpy(binary),
            image_id=f"{split}/{image_path.stem}",
            label=int(binary.any()),
        )

    def split(self, name: str) -> Sequence[Sample]:
        """Samples of split ``name``, read from disk on access (not memoised: real splits can be large)."""
        if name not in SPLITS:
            raise UserError(did_you_mean(str(name), SPLITS, "split") + f" (dataset {self.name!r})")
        if name not in self._splits:
            pairs = self._pairs(name)
            self._splits[name] = LazySplit(f"{self.name} {name}", len(pairs), lambda i, name=name, pairs=pairs: self._load(name, *pairs[i]))
        return self._splits[name]

    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the first min(64, n) train tiles."""
        if self._mean is None:
            train = self.split("train")
            if not len(train):
                raise UserError(f"dataset {self.name!r}: {str(self.root / 'train' / 'images')!r} holds no tiles")
            self._mean = mean_of(train, MEAN_TILES)
        return self._mean.clone()
