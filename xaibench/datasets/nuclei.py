"""``nuclei``: real fluorescence microscopy of cell nuclei (Data Science Bowl 2018), the nuclei
as a binary foreground mask (1 = any nucleus), cut into tiles.

Two sources, the same tiling:

- ``root`` unset: the 512 x 512 image and its instance mask (about 125 nuclei, 20 % foreground)
  that the Python package ``stardist`` 0.9.2 (BSD-3-Clause licence) ships as
  ``stardist/data/images/img2d.tif`` and ``mask2d.tif``, located through the installed
  distribution's files, never imported (``pip install --no-deps stardist==0.9.2`` installs the
  files alone). The split is spatial: the right-most ``test_fraction`` of the tile columns is
  test, the ``val_fraction`` left of it val, the rest train.
- ``root`` set: a folder in the Data Science Bowl 2018 layout (``stage1_train`` unpacked)::

      ROOT/ID/images/ID.png        the image (one file; PNG, TIFF, JPEG or .npy)
      ROOT/ID/masks/*.png          one mask per nucleus (0 = background); their union is the mask

  split per image by a permutation seeded with ``seed``: ``round(test_fraction * N)`` images
  to test, ``round(val_fraction * N)`` to val, the rest to train.

Every image is turned into ``channels`` channels (1: grey, the mean of colour channels; 3: grey
repeated, colour kept) and, with ``normalize``, stretched so its 1st and 99.8th percentiles
become 0 and 1 (clipped): fluorescence images are dim and their ranges differ from one
image to the next. Train tiles are cut every ``stride`` pixels, val and test tiles without
overlap. Tile ids are ``ID@r{row}_c{col}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from xaibench.config.params import check_bool, check_int
from xaibench.datasets import folder_io as io
from xaibench.datasets.tiled import Tile, TiledScenes, origins, package_dir, package_version, shipped_file
from xaibench.errors import UserError

NAME = "nuclei"
PACKAGE = "stardist"
REQUIREMENT = "stardist==0.9.2"
SHIPPED_ID = "img2d"
LAYOUT = "ROOT/ID/images/ID.png with ROOT/ID/masks/*.png (one mask per nucleus), as in the Data Science Bowl 2018"
#: the percentiles ``normalize`` maps to 0 and 1
PERCENTILES = (1.0, 99.8)


class Nuclei(TiledScenes):
    """Fluorescence images of nuclei, tiled (mask 1 = nucleus)."""

    name: ClassVar[str] = NAME
    #: small parameters for xaibench.testing.check_dataset (the packaged image)
    test_params: ClassVar[dict] = {"tile": 64}

    def __init__(
        self,
        root: str = "",
        tile: int = 64,
        stride: int = 0,
        test_fraction: float = 0.25,
        val_fraction: float = 0.0,
        channels: int = 1,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        """Every parameter is documented in docs/config.md (``### nuclei``)."""
        self._tiling_params(PACKAGE, root, tile, stride, test_fraction, val_fraction)
        if self.val_fraction + self.test_fraction >= 1:
            raise UserError(f"[dataset] val_fraction + test_fraction for dataset {NAME!r} must be below 1 (the rest is train), got {self.val_fraction + self.test_fraction:g}")
        self.channels = check_int(NAME, "channels", channels, 1)
        if self.channels not in (1, 3):
            raise UserError(f"[dataset] channels = {self.channels} for dataset {NAME!r} is invalid: 1 (grey) or 3 (grey repeated, colour kept)")
        self.normalize = check_bool(NAME, "normalize", normalize)
        self.seed = check_int(NAME, "seed", seed, 0)
        with io.speaking_as(NAME):
            self._paths = self._shipped() if self.root is None else self._folder()
            tiles = self._cut_shipped() if self.root is None else self._cut_folder()
        self._use_tiles(tiles)

    def __repr__(self) -> str:
        source = f"root={str(self.root)!r}" if self.root else f"{PACKAGE} {package_version(PACKAGE) or '(version unknown)'}"
        return (
            f"Nuclei({source}, tile={self.tile}, stride={self.stride}, test_fraction={self.test_fraction:g}, "
            f"val_fraction={self.val_fraction:g}, channels={self.channels}, normalize={self.normalize})"
        )

    def _shipped(self) -> dict[str, tuple[Path, list[Path]]]:
        """id -> (image, mask files): the one packaged image and its instance mask."""
        base = package_dir(PACKAGE, REQUIREMENT, NAME, f"set [dataset] root to a folder in the layout {LAYOUT}") / "data" / "images"
        return {SHIPPED_ID: (shipped_file(base, "img2d.tif", NAME, REQUIREMENT), [shipped_file(base, "mask2d.tif", NAME, REQUIREMENT)])}

    def _folder(self) -> dict[str, tuple[Path, list[Path]]]:
        assert self.root is not None
        if not self.root.is_dir():
            raise UserError(f"[dataset] root for dataset {NAME!r}: {self.root} {'is not a folder' if self.root.exists() else 'does not exist'}; expected {LAYOUT}")
        found: dict[str, tuple[Path, list[Path]]] = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (folder / "images").is_dir():
                raise UserError(f"{NAME}: {folder} has no images/ folder; expected {LAYOUT}")
            images = io.list_files(folder / "images")
            if len(images) != 1:
                listed = ", ".join(p.name for p in images.values()) or "nothing readable"
                raise UserError(f"{NAME}: {folder / 'images'} must hold one image, it holds {listed}; expected {LAYOUT}")
            if not (folder / "masks").is_dir():
                raise UserError(f"{NAME}: image {next(iter(images.values()))} has no masks/ folder beside it; expected {LAYOUT}")
            found[folder.name] = (next(iter(images.values())), sorted(io.list_files(folder / "masks").values()))
        if not found:
            raise UserError(f"{NAME}: no image folders under {self.root}; expected {LAYOUT}")
        return found

    def _cut_shipped(self) -> dict[str, list[Tile]]:
        image = self._paths[SHIPPED_ID][0]
        h, w = io.array_size(image, "image")
        t = self.tile
        cols = w // t
        n_test = math.floor(self.test_fraction * cols + 0.5)
        n_val = math.floor(self.val_fraction * cols + 0.5)
        test_at, val_at = w - n_test * t, w - (n_test + n_val) * t
        cut = lambda region, stride: [Tile(SHIPPED_ID, r, c) for r, c in origins(region, t, stride)]  # noqa: E731
        return {"train": cut((0, 0, h, val_at), self.stride), "val": cut((0, val_at, h, test_at), t), "test": cut((0, test_at, h, w), t)}

    def _cut_folder(self) -> dict[str, list[Tile]]:
        ids = sorted(self._paths)
        tiles: dict[str, list[Tile]] = {}
        for split, picked in io.assign_splits(len(ids), self.val_fraction, self.test_fraction, self.seed).items():
            tiles[split] = []
            for key in (ids[i] for i in picked):
                image = self._paths[key][0]
                h, w = io.array_size(image, "image")
                if min(h, w) < self.tile:
                    raise UserError(f"{NAME}: image {image} is {w}x{h}, smaller than tile = {self.tile}")
                tiles[split] += [Tile(key, r, c) for r, c in origins((0, 0, h, w), self.tile, self.stride if split == "train" else self.tile)]
        return tiles

    def _empty(self, split: str) -> str:
        what = "tile columns of the image" if self.root is None else f"{len(self._paths)} images under {self.root}"
        if split == "train":
            return f"{NAME}: split 'train' is empty: val_fraction + test_fraction leave none of the {what}"
        return f"{NAME}: split {split!r} is empty: {split}_fraction = {getattr(self, split + '_fraction'):g} of the {what} rounds to none"

    def _read_scene(self, key: str) -> tuple[torch.Tensor, np.ndarray]:
        image_path, mask_paths = self._paths[key]
        with io.speaking_as(NAME):
            image = io.image_tensor(io.read_array(image_path, "image"), image_path, 0)
            size = (int(image.shape[1]), int(image.shape[2]))
            mask = np.zeros(size, np.int64)
            for path in mask_paths:
                m = io.mask_values(io.read_array(path, "mask", mask=True), path)
                if m.shape != size:
                    raise UserError(f"{NAME}: mask {path} is {m.shape[1]}x{m.shape[0]} but its image {image_path} is {size[1]}x{size[0]}")
                if m.min() < 0:
                    raise UserError(f"{NAME}: mask {path} holds the negative value {int(m.min())}; expected 0 for background")
                mask |= (m > 0).astype(np.int64)
        return self._channels(image, image_path), mask

    def _channels(self, image: torch.Tensor, path: Path) -> torch.Tensor:
        c = image.shape[0]
        if c not in (1, 3):
            raise UserError(f"{NAME}: image {path} has {c} channels; expected grey (1) or colour (3)")
        if self.channels == 1 and c == 3:
            image = image.mean(0, keepdim=True)
        elif self.channels == 3 and c == 1:
            image = image.repeat(3, 1, 1)
        if self.normalize:
            lo, hi = np.percentile(image.numpy(), PERCENTILES)
            image = ((image - float(lo)) / max(float(hi - lo), 1e-6)).clamp_(0.0, 1.0)
        return image.contiguous()
