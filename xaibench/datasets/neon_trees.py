"""``neon_trees``: real NEON airborne RGB orthophotos (10 cm pixels) with hand-drawn tree-crown
boxes, the boxes drawn as a binary mask (1 = inside a crown's box), cut into tiles.

Two sources, the same tiling:

- ``root`` unset: the images the Python package ``deepforest`` 2.1.0 (MIT licence; NEON data
  annotated by the Weecology lab) ships in ``deepforest/data/``, located through the installed
  distribution's files, never imported (``pip install --no-deps deepforest==2.1.0`` installs the
  files alone). The training scene is ``2019_YELL_2_528000_4978000_image_crop2`` (Yellowstone,
  2472 x 2299, 574 crowns); the other scenes are ``2019_YELL_2_541000_4977000_image_crop``
  (Yellowstone, 279 crowns) and the 400 x 400 plots ``OSBS_029`` (Florida, 61) and ``SOAP_061``
  (California, 37).
- ``root`` set: the NeonTreeEvaluation benchmark (Weinstein et al. 2021; Zenodo record 5914554:
  annotations.zip, evaluation.zip, training.zip unpacked into ROOT)::

      ROOT/annotations/NAME.xml       crown boxes, Pascal VOC
      ROOT/training/RGB/NAME.tif      training scenes
      ROOT/evaluation/RGB/NAME.tif    evaluation plots: the other scenes

  (``.tif``, ``.tiff`` or ``.png``). An image without ``annotations/NAME.xml`` is left out (the
  published evaluation folder has plots without annotations); ``repr()`` counts them.

Each scene is averaged over ``downsample`` x ``downsample`` blocks (its box mask too: a block is a
crown where half its pixels are) and cut into ``tile`` x ``tile`` tiles. ``test = "band"``: the
right-most ``test_fraction`` of each training scene's tile columns is test, spatially apart
from the rest (no tile crosses the edge); ``test = "columns"``: every ``round(1 / test_fraction)``-th
tile column of each training scene (from the second) is test, so the test tiles sample the whole
scene (its dense and its sparse parts) while no training tile crosses into a test column;
``test = "scenes"``: the other scenes are test (another
site or acquisition: a domain shift). Of the rest of each training scene, the bottom
``val_fraction`` of the tile rows is val and the remainder train. Training tiles are cut every
``stride`` pixels, val and test tiles without overlap. Tile ids are ``NAME@r{row}_c{col}`` (corner
at the downsampled resolution). The constructor lists the files and reads the images' headers;
a tile decodes its scene (kept for the next tiles).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from xaibench.config.params import check_int
from xaibench.datasets import folder_io as io
from xaibench.datasets.tiled import Tile, TiledScenes, downsample_image, downsample_mask, origins, package_dir, package_version, shipped_file
from xaibench.errors import UserError

NAME = "neon_trees"
PACKAGE = "deepforest"
REQUIREMENT = "deepforest==2.1.0"
#: the annotated scenes deepforest ships, per split
SHIPPED = {
    "train": ("2019_YELL_2_528000_4978000_image_crop2",),
    "test": ("2019_YELL_2_541000_4977000_image_crop", "OSBS_029", "SOAP_061"),
}
LAYOUT = "ROOT/annotations/NAME.xml with ROOT/training/RGB/NAME.tif (training scenes) and ROOT/evaluation/RGB/NAME.tif (other scenes, for test = \"scenes\")"
FOLDERS = {"train": Path("training") / "RGB", "test": Path("evaluation") / "RGB"}
#: where the test tiles come from: a band of the training scenes, or the other scenes
TESTS = ("band", "columns", "scenes")
IMAGE_TYPES = (".tif", ".tiff", ".png")


class NeonTrees(TiledScenes):
    """NEON airborne RGB tiles with tree-crown boxes as masks (mask 1 = crown box)."""

    name: ClassVar[str] = NAME
    #: small parameters for xaibench.testing.check_dataset (the packaged scenes, coarse)
    test_params: ClassVar[dict] = {"tile": 32, "downsample": 8}

    def __init__(
        self,
        root: str = "",
        tile: int = 64,
        stride: int = 0,
        downsample: int = 4,
        test: str = "band",
        test_fraction: float = 0.25,
        val_fraction: float = 0.1,
    ) -> None:
        """Every parameter is documented in docs/config.md (``### neon_trees``)."""
        self._tiling_params(PACKAGE, root, tile, stride, test_fraction, val_fraction)
        self.downsample = check_int(NAME, "downsample", downsample, 1)
        if test not in TESTS:
            raise UserError(f"[dataset] test = {test!r} for dataset {NAME!r} is invalid: \"band\" (the right of each training scene), \"columns\" (every few tile columns of it) or \"scenes\" (other scenes)")
        self.test = test
        self.left_out = 0  #: images of the folder without an annotation
        with io.speaking_as(NAME):
            self._files = self._shipped() if self.root is None else self._folder()
            tiles = self._cut()
        self._paths = {stem: (image, xml) for split in self._files.values() for stem, image, xml in split}
        self._use_tiles(tiles)

    def __repr__(self) -> str:
        source = f"root={str(self.root)!r}" if self.root else f"{PACKAGE} {package_version(PACKAGE) or '(version unknown)'}"
        extra = f", {self.left_out} image(s) without annotation left out" if self.left_out else ""
        held = f"test={self.test!r}, test_fraction={self.test_fraction:g}" if self.test != "scenes" else "test='scenes'"
        return f"NeonTrees({source}, tile={self.tile}, stride={self.stride}, downsample={self.downsample}, {held}, val_fraction={self.val_fraction:g}{extra})"

    def _shipped(self) -> dict[str, list[tuple[str, Path, Path]]]:
        base = package_dir(PACKAGE, REQUIREMENT, NAME, f"set [dataset] root to a NeonTreeEvaluation folder ({LAYOUT})") / "data"
        return {
            split: [(stem, shipped_file(base, f"{stem}.png", NAME, REQUIREMENT), shipped_file(base, f"{stem}.xml", NAME, REQUIREMENT)) for stem in stems]
            for split, stems in SHIPPED.items()
            if split == "train" or self.test == "scenes"
        }

    def _folder(self) -> dict[str, list[tuple[str, Path, Path]]]:
        assert self.root is not None
        if not self.root.is_dir():
            raise UserError(f"[dataset] root for dataset {NAME!r}: {self.root} {'is not a folder' if self.root.exists() else 'does not exist'}; expected {LAYOUT}")
        folders = {split: f for split, f in FOLDERS.items() if split == "train" or self.test == "scenes"}
        for folder in (self.root / "annotations", *(self.root / f for f in folders.values())):
            if not folder.is_dir():
                raise UserError(f"{NAME}: folder {folder} is missing; expected {LAYOUT}")
        notes = io.list_files(self.root / "annotations", (".xml",))
        files: dict[str, list[tuple[str, Path, Path]]] = {}
        for split, folder in folders.items():
            images = io.list_files(self.root / folder, IMAGE_TYPES)
            files[split] = [(stem, path, notes[stem]) for stem, path in sorted(images.items()) if stem in notes]
            self.left_out += len(images) - len(files[split])
            twice = sorted({stem for stem, _, _ in files[split]} & {stem for stem, _, _ in files.get("train", [])}) if split == "test" else []
            if twice:
                raise UserError(f"{NAME}: {twice[0]!r} is both in {self.root / FOLDERS['train']} and in {self.root / folder}; a scene is for training or for testing")
            if not files[split]:
                raise UserError(f"{NAME}: no image in {self.root / folder} has an annotation in {self.root / 'annotations'}; expected {LAYOUT}")
        return files

    def _size(self, image: Path) -> tuple[int, int]:
        h, w = io.array_size(image, "image")
        f = self.downsample
        if min(h // f, w // f) < self.tile:
            raise UserError(f"{NAME}: image {image} is {w}x{h}, {w // f}x{h // f} at downsample = {f}: smaller than tile = {self.tile}")
        return h // f, w // f

    def _cut(self) -> dict[str, list[Tile]]:
        tiles: dict[str, list[Tile]] = {"train": [], "val": [], "test": []}
        t = self.tile
        for stem, image, _ in self._files["train"]:
            h, w = self._size(image)
            cut = h - math.floor(self.val_fraction * (h // t) + 0.5) * t
            kept, held = self._columns(w)
            for c0, c1 in kept:  # the training part: runs of tile columns between the test columns
                tiles["train"] += [Tile(stem, r, c) for r, c in origins((0, c0, cut, c1), t, self.stride)]
                tiles["val"] += [Tile(stem, r, c) for r, c in origins((cut, c0, h, c1), t, t)]
            for c0, c1 in held:
                tiles["test"] += [Tile(stem, r, c) for r, c in origins((0, c0, h, c1), t, t)]
        for stem, image, _ in self._files.get("test", []):
            h, w = self._size(image)
            tiles["test"] += [Tile(stem, r, c) for r, c in origins((0, 0, h, w), self.tile, self.tile)]
        return tiles

    def _columns(self, width: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(training, test) column ranges [c0, c1) of a training scene ``width`` pixels wide."""
        t, n = self.tile, width // self.tile
        if self.test == "scenes" or self.test_fraction == 0:
            return [(0, width)], []
        if self.test == "band":
            right = width - math.floor(self.test_fraction * n + 0.5) * t
            return [(0, right)], [(right, width)]
        period = max(2, round(1 / self.test_fraction))
        held = [(c * t, (c + 1) * t) for c in range(1, n, period)]
        edges = [0, *(x for h in held for x in h), width]
        return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a], held

    def _empty(self, split: str) -> str:
        if split == "val":
            return f"{NAME}: split 'val' is empty: val_fraction = {self.val_fraction:g} of the training scenes' tile rows rounds to none"
        if split == "test" and self.test != "scenes":
            return f"{NAME}: split 'test' is empty: test_fraction = {self.test_fraction:g} of the training scenes' tile columns rounds to none"
        return f"{NAME}: split {split!r} is empty: its scenes hold no full tile of {self.tile} px"

    def _read_scene(self, key: str) -> tuple[torch.Tensor, np.ndarray]:
        image_path, xml = self._paths[key]
        with io.speaking_as(NAME):
            image = io.image_tensor(io.read_array(image_path, "image"), image_path, 3)
            size = (int(image.shape[1]), int(image.shape[2]))
            declared, boxes = io.read_voc(xml)
            if declared is not None and declared != size:
                raise UserError(f"{NAME}: annotation {xml} is {declared[1]}x{declared[0]} but its image {image_path} is {size[1]}x{size[0]}")
            mask = io.box_mask(boxes, size, (), str(xml))
        return downsample_image(image, self.downsample), downsample_mask(mask, self.downsample)
