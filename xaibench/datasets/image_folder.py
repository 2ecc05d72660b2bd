"""``image_folder``: a folder of images with masks (or box annotations) as a benchmark dataset,
for data without a plugin of its own. Files are read by :mod:`xaibench.datasets.folder_io`.

Layouts (``images`` and ``masks`` are the default folder names, both configurable)::

    ROOT/{train,val,test}/images/NAME.*   ROOT/{train,val,test}/masks/NAME.*   (split subfolders)
    ROOT/images/NAME.*                    ROOT/masks/NAME.*                    (flat, split by seed)

An image and its mask share the file stem ``NAME``; ``*`` is any of png, jpg, jpeg, tif, tiff, bmp,
npy. The flat layout is split per image (before tiling) by a permutation seeded with ``seed``:
``round(test_fraction * N)`` images go to test, ``round(val_fraction * N)`` to val, the rest to
train. With ``boxes = "voc"`` the masks folder is ``annotations`` (``NAME.xml``); with
``boxes = "csv:FILE"`` one CSV under ROOT holds every image's boxes.

What is checked when: the constructor lists the folders (no file is decoded) and stops at a
missing ROOT or folder, an image without a mask or annotation and the reverse, two files with one
name, a bad box or label CSV, an image missing from the label CSV. ``split()`` stops at an empty
split; with tiling it reads every image's header (its size) and stops at an image smaller than a
tile. Reading a sample stops at an unreadable file, an image and a mask of different sizes,
unexpected mask values, a box outside its image, and an image whose size or channels differ from
the split's first one read. ``xaibench validate`` builds the dataset and reads the first sample of
"train" and of the scored split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from xaibench.config.params import check_float, check_int
from xaibench.config.vocabulary import SPLITS
from xaibench.datasets import folder_io as io
from xaibench.datasets.base import LazySplit, Sample
from xaibench.errors import UserError, did_you_mean

NAME = "image_folder"
#: tiles (or images) used by :meth:`ImageFolder.channel_mean`
MEAN_TILES = 64
FORMATS = "png, jpg, jpeg, tif, tiff, bmp, npy"


@dataclass(frozen=True)
class Item:
    """One image file and its mask or VOC annotation (``None`` with boxes from a CSV)."""

    stem: str
    image: Path
    target: Path | None


def _text(key: str, value: object, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise UserError(f"[dataset] {key} for dataset {NAME!r} must be a {'' if empty else 'non-empty '}string, got {value!r}")
    return value.strip()


def _ids(key: str, value: object) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise UserError(f"[dataset] {key} for dataset {NAME!r} must be a class id or a non-empty list of class ids")
    return tuple(check_int(NAME, key, v, 0) for v in values)


def _expand(root: Path, text: str) -> Path:
    path = Path(os.path.expanduser(os.path.expandvars(text)))
    return path if path.is_absolute() else root / path


class ImageFolder:
    """Images with masks (or boxes) from a folder: PNG, JPEG, TIFF or .npy, paired by file name."""

    name: ClassVar[str] = NAME

    def __init__(
        self,
        root: str = "data/image_folder",
        images: str = "images",
        masks: str = "masks",
        boxes: str = "",
        annotations: str = "annotations",
        box_classes: list[str] | None = None,
        foreground: int | list[int] | None = None,
        num_classes: int = 0,
        labels: str = "",
        channels: int = 0,
        tile: int = 0,
        stride: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        """Every parameter is documented in docs/config.md (``### image_folder``)."""
        self._settings(root, images, masks, boxes, annotations, box_classes, foreground, num_classes, labels, channels, tile, stride)
        self.val_fraction = check_float(NAME, "val_fraction", val_fraction, 0.0, 1.0, hi_open=True)
        self.test_fraction = check_float(NAME, "test_fraction", test_fraction, 0.0, 1.0, hi_open=True)
        if self.val_fraction + self.test_fraction >= 1:
            raise UserError(f"[dataset] val_fraction + test_fraction for dataset {NAME!r} must be below 1 (the rest is train), got {self.val_fraction + self.test_fraction:g}")
        self.seed = check_int(NAME, "seed", seed, 0)
        self.layout = self._layout()
        self._csv_boxes = io.read_box_csv(_expand(self.root, self.boxes[4:])) if self.boxes.startswith("csv:") else {}
        self._items = self._find_items()
        self._labels = self._read_labels()
        #: the splits with images: what ``[run] folds`` draws its folds from
        self.fold_splits = tuple(s for s in SPLITS if self._items[s])
        self._splits: dict[str, LazySplit] = {}
        self._shapes: dict[str, tuple[tuple[int, ...], str]] = {}
        self._scene_cache: tuple[Item, torch.Tensor, np.ndarray] | None = None
        self._mean: torch.Tensor | None = None

    def _settings(self, root, images, masks, boxes, annotations, box_classes, foreground, num_classes, labels, channels, tile, stride) -> None:
        text = _text("root", root)
        self.root = Path(os.path.expanduser(os.path.expandvars(text)))
        self.images, self.masks, self.annotations = _text("images", images), _text("masks", masks), _text("annotations", annotations)
        self.boxes, self.labels = _text("boxes", boxes, empty=True), _text("labels", labels, empty=True)
        if self.boxes not in ("", "voc") and not (self.boxes.startswith("csv:") and self.boxes[4:].strip()):
            raise UserError(f"[dataset] boxes = {self.boxes!r} for dataset {NAME!r} is invalid: use \"voc\" (ROOT/annotations/NAME.xml) or \"csv:FILE\" (a CSV under ROOT)")
        if not isinstance(box_classes, list | None) or not all(isinstance(c, str) and c for c in box_classes or []):
            raise UserError(f"[dataset] box_classes for dataset {NAME!r} must be a list of box labels (strings), got {box_classes!r}")
        self.box_classes = tuple(box_classes or ())
        self.foreground = () if foreground is None else _ids("foreground", foreground)
        num = check_int(NAME, "num_classes", num_classes, 0)
        derived = "boxes" if self.boxes else "foreground" if self.foreground else None
        if self.box_classes and not self.boxes:
            raise UserError(f"[dataset] box_classes for dataset {NAME!r} needs boxes = \"voc\" or \"csv:FILE\"")
        if derived and self.foreground and self.boxes:
            raise UserError(f"[dataset] foreground for dataset {NAME!r} picks mask values and does not apply with boxes; use box_classes")
        if derived and num:
            raise UserError(f"[dataset] num_classes for dataset {NAME!r} follows from {derived} and cannot be set with it")
        if num == 1:
            raise UserError(f"[dataset] num_classes = 1 for dataset {NAME!r} is invalid: background counts, so binary masks have 2")
        self.num_classes = num or (len(self.box_classes) + 1 if self.box_classes else 2)
        self.channels = check_int(NAME, "channels", channels, 0)
        if self.channels not in (0, 1, 3):
            raise UserError(f"[dataset] channels = {self.channels} for dataset {NAME!r} is invalid: 0 (as read), 1 or 3 (grey repeated)")
        self.tile = check_int(NAME, "tile", tile, 0)
        self.stride = check_int(NAME, "stride", stride, 0) or self.tile
        if stride and not tile:
            raise UserError(f"[dataset] stride for dataset {NAME!r} needs tile (the tile side in pixels)")

    def _layout(self) -> str:
        """"split" (ROOT/train, ROOT/val, ROOT/test) or "flat" (ROOT/images)."""
        expected = self._expected()
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise UserError(f"[dataset] root for dataset {NAME!r}: {self.root} {what}; expected layout {expected}")
        split = [s for s in SPLITS if (self.root / s).is_dir()]
        flat = (self.root / self.images).is_dir()
        if split and flat:
            raise UserError(f"{NAME}: {self.root} has both {', '.join(split)} and {self.images}/; keep one layout: {expected}")
        if not split and not flat:
            raise UserError(f"{NAME}: {self.root} has neither train/, val/, test/ nor {self.images}/; expected layout {expected}")
        if split and (self.val_fraction, self.test_fraction) != (0.1, 0.2):
            raise UserError(f"[dataset] val_fraction and test_fraction for dataset {NAME!r} split the flat layout; {self.root} has split folders ({', '.join(split)})")
        return "split" if split else "flat"

    def _expected(self) -> str:
        target = f"{self.annotations}/NAME.xml" if self.boxes == "voc" else f"{self.masks}/NAME.*" if not self.boxes else "NAME.* (boxes in " + self.boxes[4:] + ")"
        return f"ROOT/{{train,val,test}}/{self.images}/NAME.* + ROOT/{{train,val,test}}/{target}, or ROOT/{self.images}/NAME.* + ROOT/{target} ({FORMATS})"

    def _find_items(self) -> dict[str, list[Item]]:
        if self.layout == "split":
            items = {s: self._pair(self.root / s) if (self.root / s).is_dir() else [] for s in SPLITS}
        else:
            found = self._pair(self.root)
            items = {s: [found[i] for i in idx] for s, idx in io.assign_splits(len(found), self.val_fraction, self.test_fraction, self.seed).items()}
        if not any(items.values()):
            raise UserError(f"{NAME}: no images under {self.root}; expected layout {self._expected()}")
        if self._csv_boxes:
            stems = {it.stem for split in items.values() for it in split}
            extra = sorted(set(self._csv_boxes) - stems)
            if extra:
                raise UserError(f"{NAME}: the box CSV {self.boxes[4:]} names image {extra[0]!r}, which is not among the images under {self.root}")
        return items

    def _pair(self, base: Path) -> list[Item]:
        """The images of ``base/images`` with their masks or annotations; a file without its
        partner is an error naming it."""
        image_dir = base / self.images
        if not image_dir.is_dir():
            raise UserError(f"{NAME}: folder {image_dir} is missing; expected layout {self._expected()}")
        images = io.list_files(image_dir)
        if self.boxes.startswith("csv:"):
            for stem, path in images.items():
                if stem not in self._csv_boxes:
                    raise UserError(f"{NAME}: image {path} has no row in the box CSV {self.boxes[4:]} (a row of four zeros marks an image without boxes)")
            return [Item(stem, path, None) for stem, path in sorted(images.items())]
        voc = self.boxes == "voc"
        target_dir = base / (self.annotations if voc else self.masks)
        if not target_dir.is_dir():
            raise UserError(f"{NAME}: folder {target_dir} is missing; expected layout {self._expected()}")
        targets = io.list_files(target_dir, (".xml",) if voc else io.EXTENSIONS)
        what = "annotation" if voc else "mask"
        for stem, path in sorted(images.items()):
            if stem not in targets:
                raise UserError(f"{NAME}: image {path} has no {what}: expected {target_dir / stem}.{'xml' if voc else '*'}")
        for stem, path in sorted(targets.items()):
            if stem not in images:
                raise UserError(f"{NAME}: {what} {path} has no image: expected {image_dir / stem}.* ({FORMATS})")
        return [Item(stem, path, targets[stem]) for stem, path in sorted(images.items())]

    def _read_labels(self) -> dict[str, int] | None:
        if not self.labels:
            return None
        path = _expand(self.root, self.labels)
        labels = io.read_label_csv(path)
        for split in self._items.values():
            for item in split:
                if item.stem not in labels:
                    raise UserError(f"{NAME}: image {item.image} has no row in the label CSV {path}")
        return labels

    def __repr__(self) -> str:
        return f"ImageFolder(root={str(self.root)!r}, layout={self.layout!r}, num_classes={self.num_classes}, tile={self.tile})"

    def split(self, name: str) -> Sequence[Sample]:
        """The samples of ``name`` ("train", "val" or "test"): images, or their tiles."""
        if name not in SPLITS:
            raise UserError(did_you_mean(str(name), SPLITS, "split") + f" (dataset {NAME!r})")
        if name not in self._splits:
            items = self._items[name]
            if not items:
                raise UserError(self._empty(name))
            index: list[tuple[Item, tuple[int, int] | None]] = [(it, None) for it in items]
            if self.tile:
                index = [(it, rc) for it in items for rc in self._origins(it)]
            self._splits[name] = LazySplit(f"{NAME} {name}", len(index), lambda i, index=index, name=name: self._load(name, *index[i]))
        return self._splits[name]

    def _empty(self, name: str) -> str:
        if self.layout == "split":
            return f"{NAME}: split {name!r} is empty: no images in {self.root / name / self.images}; expected layout {self._expected()}"
        n = sum(len(v) for v in self._items.values())
        if name == "train":
            return f"{NAME}: split 'train' is empty: val_fraction + test_fraction leave none of the {n} images under {self.root}"
        return f"{NAME}: split {name!r} is empty: {name}_fraction = {getattr(self, name + '_fraction'):g} of {n} images under {self.root} rounds to 0"

    def _origins(self, item: Item) -> list[tuple[int, int]]:
        size = io.array_size(item.image, "image")
        if min(size) < self.tile:
            raise UserError(f"{NAME}: image {item.image} is {size[1]}x{size[0]}, smaller than tile = {self.tile}")
        return io.tile_origins(size, self.tile, self.stride)

    def _scene(self, item: Item) -> tuple[torch.Tensor, np.ndarray]:
        """The image [C, H, W] and mask [H, W] of ``item``, whole (the last one is kept for tiles)."""
        if self._scene_cache is not None and self._scene_cache[0] == item:
            return self._scene_cache[1], self._scene_cache[2]
        image = io.image_tensor(io.read_array(item.image, "image"), item.image, self.channels)
        size = tuple(image.shape[1:])
        if self.boxes == "voc":
            declared, boxes = io.read_voc(item.target)
            if declared is not None and declared != size:
                raise UserError(f"{NAME}: annotation {item.target} is {declared[1]}x{declared[0]} but its image {item.image} is {size[1]}x{size[0]}")
            mask = io.box_mask(boxes, size, self.box_classes, str(item.target))
        elif self.boxes:
            mask = io.box_mask(self._csv_boxes[item.stem], size, self.box_classes, f"{self.boxes[4:]}, image {item.stem!r}")
        else:
            raw = io.mask_values(io.read_array(item.target, "mask", mask=True), item.target)
            if raw.shape != size:
                raise UserError(f"{NAME}: mask {item.target} is {raw.shape[1]}x{raw.shape[0]} but its image {item.image} is {size[1]}x{size[0]}")
            mask = io.class_mask(raw, item.target, self.foreground, self.num_classes)
        self._scene_cache = (item, image, mask)
        return image, mask

    def _load(self, split: str, item: Item, origin: tuple[int, int] | None) -> Sample:
        image, mask = self._scene(item)
        image_id = item.stem
        if origin is not None:
            (r, c), t = origin, self.tile
            image, mask = image[:, r : r + t, c : c + t], mask[r : r + t, c : c + t]
            image_id = f"{item.stem}@r{r}_c{c}"
        shape = tuple(image.shape)
        first = self._shapes.setdefault(split, (shape, str(item.image)))
        if first[0] != shape:
            raise UserError(
                f"{NAME}: image {item.image} is {shape[0]} x {shape[1]} x {shape[2]} (C x H x W) but {first[1]} of the same split is "
                f"{' x '.join(map(str, first[0]))}; images of a split need one size and channel count (set tile to cut them into tiles, channels = 3 for grey images)"
            )
        mask_t = torch.from_numpy(np.array(mask, dtype=np.int64, copy=True))  # copies: the scene stays as read
        label = self._labels[item.stem] if self._labels is not None else int(bool(mask_t.any()))
        return Sample(image=image.clone(memory_format=torch.contiguous_format), mask=mask_t, image_id=image_id, label=label)

    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the first min(64, len(train)) training images (or tiles)."""
        if self._mean is None:
            train = self.split("train")
            n = min(MEAN_TILES, len(train))
            self._mean = torch.stack([train[j].image.double().mean(dim=(1, 2)) for j in range(n)]).mean(0).float()
        return self._mean.clone()
