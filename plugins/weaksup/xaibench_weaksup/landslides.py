"""Landslides: seeded synthetic optical tiles with the statistics of the Bijie landslide images.

A stand-in for the Bijie landslide dataset (Ji et al. 2020; the thesis of the weaksup seed)
that works offline, calibrated to what is known of the real images (the plugin's README has the
table; ``python -m xaibench_weaksup.stats`` measures it):

* **labels**: 27.8 % of the tiles hold a landslide (770 of 2773 real images);
* **one landslide per positive tile, centred**: the tile is the landslide's bounding box plus an
  equal margin on all sides, resized to a square (:mod:`xaibench_weaksup.scar`), so the
  landslide's share of the tile is log-normal with median 7 % (p10 3.4 %, p90 15 %, mean about
  8.3 %, range 1-26 %);
* **a fresh landslide as seen from above**: bright bare soil and rock (tan, grey, yellow-brown
  or reddish), rough at the pixel scale (debris and boulders), a head scarp of fresh rock with a
  step in the DEM behind it (so the shaded relief shows a bright or dark crown), a depression
  that shallows towards the toe, sometimes a revegetated toe; the tile's DEM slopes down the
  landslide's axis;
* **terrain**: a fractal DEM (power-law spectrum, typical slope 15-35 degrees) with its shaded
  relief (random sun), under forest and grass with crown-scale texture;
* **distractors**, drawn from a generator of their own so that they do not depend on the label
  (the same rates in landslide and non-landslide tiles): terraced fields along the contours
  (60 % of tiles), bright bare fields (30 %), grey rough rock outcrops with relief (35 %), roads
  with a bare cut slope beside them (50 %), a river (20 %);
* **sensor**: a per-tile colour cast and gain, haze on some tiles, pixel noise.

The mask is the landslide's footprint; ``label`` = 1 iff the mask is not empty. Tile ``i`` of a
split is a pure function of ``(seed, split, i)`` and the constructor's keys: the label, terrain
and landslide come from ``numpy.random.default_rng([seed, split_index, i])``, the distractors
from ``default_rng([seed, split_index, i, 1])``. Tiles are generated lazily and memoised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from xaibench.plugin import SPLITS, LazySplit, Sample, UserError, check_bool, check_float, check_int, did_you_mean
from xaibench_weaksup.scar import Placed, draw_outline, draw_share, place
from xaibench_weaksup.terrain import Flow, densify, hillshade, noise_field, stamp, terrain, wandering_curve

#: tiles used by :meth:`Landslides.channel_mean`
MEAN_TILES = 64
#: share of landslide images in the real Bijie dataset: 770 of 770 + 2003
BIJIE_POSITIVE_FRACTION = 0.278

_FOREST = np.array([0.15, 0.25, 0.12])
_GRASS = np.array([0.31, 0.38, 0.20])
#: fresh landslide scars: bare soil and rock (tan, light grey, yellow-brown, reddish)
_FRESH = np.array([[0.74, 0.66, 0.54], [0.70, 0.69, 0.66], [0.72, 0.62, 0.44], [0.70, 0.56, 0.46]])
_SCARP = np.array([0.82, 0.80, 0.76])
#: field soils: the scars' colour family, a little darker
_SOIL = np.array([[0.62, 0.52, 0.40], [0.68, 0.61, 0.49], [0.58, 0.45, 0.35], [0.60, 0.58, 0.53]])
_ROCK = np.array([0.62, 0.62, 0.60])
_ROADS = np.array([[0.76, 0.75, 0.72], [0.68, 0.60, 0.48]])  # concrete, dirt
_RIVERS = np.array([[0.11, 0.16, 0.17], [0.40, 0.36, 0.28]])  # clear, muddy
_HAZE = np.array([0.74, 0.77, 0.82])


@dataclass(frozen=True)
class Tile:
    """One rendered tile (numpy) with what the renderer knows about it."""

    image: np.ndarray  # float32 [H, W, 3] in [0, 1]
    dem: np.ndarray  # float32 [H, W] in [0, 1] (min-max normalised elevation)
    mask: np.ndarray  # bool [H, W]: the landslide
    road: np.ndarray  # bool [H, W]: roads and their cut slopes
    field: np.ndarray  # bool [H, W]: terraced and bare fields
    rock: np.ndarray  # bool [H, W]: rock outcrops
    share: float  # the landslide's drawn share of the tile (0 for a negative tile)


def _paint(img: np.ndarray, where: np.ndarray, colour: np.ndarray, alpha: float | np.ndarray = 1.0) -> None:
    a = alpha if np.isscalar(alpha) else np.asarray(alpha)[..., None]
    img[where] += a * (colour - img[where])


def _land_cover(rng: np.random.Generator, size: int, fine: np.ndarray) -> np.ndarray:
    """Vegetation albedo [size, size, 3]."""
    forest = _FOREST * rng.uniform(0.85, 1.15) + rng.normal(0, 0.015, 3)
    grass = _GRASS * rng.uniform(0.85, 1.15) + rng.normal(0, 0.02, 3)
    blend = 1 / (1 + np.exp(-3 * (noise_field(rng, size, 2.6) + rng.uniform(-1, 1))))
    albedo = forest + blend[..., None] * (grass - forest)
    return albedo * (1 + 0.13 * fine)[..., None]


def _fields(rng: np.random.Generator, img: np.ndarray, flow: Flow, fine: np.ndarray) -> np.ndarray:
    """Terraced fields along the contours (striped, smooth) and bare fields (bright, smooth)."""
    size, gy, gx = flow.size, flow.gy, flow.gx
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    found = np.zeros((size, size), dtype=bool)
    terraced = rng.integers(1, 4) if rng.random() < 0.6 else 0
    bare = rng.integers(1, 3) if rng.random() < 0.3 else 0
    for k in range(terraced + bare):
        cy, cx = rng.uniform(0, size, 2)
        g = np.array([gy[int(cy), int(cx)], gx[int(cy), int(cx)]])
        across = g / (np.hypot(*g) + 1e-9) if k < terraced else np.array([np.cos(a := rng.uniform(0, np.pi)), np.sin(a)])
        along = np.array([-across[1], across[0]])
        a, b = rng.uniform(0.1, 0.3) * size, rng.uniform(0.05, 0.15) * size
        u = (yy - cy) * along[0] + (xx - cx) * along[1]
        v = (yy - cy) * across[0] + (xx - cx) * across[1]
        sel = (np.abs(u) < a / 2) & (np.abs(v) < b / 2)
        soil = _SOIL[rng.integers(len(_SOIL))] * rng.uniform(0.9, 1.15)
        if k < terraced:
            colour = soil if rng.random() < 0.6 else 0.5 * (soil + _GRASS)
            stripes = 1 + 0.1 * np.sin(v[sel] * rng.uniform(0.8, 1.6))
        else:
            colour, stripes = soil, np.ones(int(sel.sum()))
        _paint(img, sel, colour * stripes[:, None] * (1 + 0.05 * fine[sel])[:, None], 0.9)
        found |= sel
    return found


def _rock(rng: np.random.Generator, img: np.ndarray, z: np.ndarray, rough: np.ndarray) -> np.ndarray:
    """Grey rock outcrops, rough and with relief, like a landslide's debris but not bounded by a scarp."""
    if rng.random() >= 0.35:
        return np.zeros(img.shape[:2], dtype=bool)
    blobs = noise_field(rng, img.shape[0], 3.0)
    rock = blobs > np.quantile(blobs, 1 - rng.uniform(0.02, 0.08))
    _paint(img, rock, _ROCK * rng.uniform(0.85, 1.1) * (1 + 0.25 * rough[rock])[:, None], 0.85)
    z += rock * (0.5 + 0.5 * rough) * (img.shape[0] / 64)
    return rock


def _roads_and_river(rng: np.random.Generator, img: np.ndarray, z: np.ndarray, flow: Flow, rough: np.ndarray) -> np.ndarray:
    """Roads (concrete or dirt) with a bare cut slope on one side, and a river; returns the roads."""
    size = z.shape[0]
    s = size / 64
    road = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(1, 3) if rng.random() < 0.5 else 0):
        curve = densify(wandering_curve(rng, size))
        line = stamp(curve, rng.uniform(0.5, 1.2) * s, size)
        if rng.random() < 0.6:  # the cut slope: a bare strip beside the road
            side = rng.choice([-1, 1]) * rng.uniform(1.5, 2.5) * s
            normal = np.gradient(curve, axis=0)[:, ::-1] * np.array([1, -1])
            cut = stamp(curve + side * normal, rng.uniform(0.6, 1.2) * s, size) & ~line
            _paint(img, cut, _SOIL[rng.integers(len(_SOIL))] * (1 + 0.2 * rough[cut])[:, None], 0.85)
            road |= cut
        _paint(img, line, _ROADS[rng.integers(2)] * rng.uniform(0.9, 1.1))
        road |= line
    if rng.random() < 0.2:
        high = np.unravel_index(np.argmax(z + 3 * rng.random(z.shape) * z.std()), z.shape)
        path = flow.downhill(rng, np.asarray(high, dtype=float), 2 * size, 0.08, momentum=0.92)
        river = stamp(densify(path), rng.uniform(0.7, 1.6) * s, size)
        _paint(img, river, _RIVERS[rng.integers(2)] * rng.uniform(0.85, 1.15), 0.9)
    return road


def _landslide_relief(rng: np.random.Generator, z: np.ndarray, ls: Placed, rough: np.ndarray) -> None:
    """The scar in the DEM: a depression deepest at the crown (a scarp behind it) shallowing to
    the toe, and rough debris."""
    size = z.shape[0]
    depth = rng.uniform(2.0, 4.5) * size / 64
    z -= ls.mask * depth * (1 - ls.t) ** 1.5 * np.sqrt(np.clip(1 - ls.across**2, 0, 1))
    z += ls.mask * rng.uniform(0.6, 1.2) * rough * size / 64


def _landslide_colour(rng: np.random.Generator, img: np.ndarray, ls: Placed, rough: np.ndarray, moss: np.ndarray) -> None:
    """Bright bare soil and rock, a fresh-rock crown, boulders, sometimes a revegetated toe."""
    debris = _FRESH[rng.integers(len(_FRESH))] * rng.uniform(0.92, 1.1)
    crown = rng.uniform(0.08, 0.2)
    scarp = (ls.t < crown) & ls.mask
    t = ls.t[..., None]
    colour = _SCARP + np.clip(t / max(crown, 1e-6), 0, 1) * (debris - _SCARP)
    colour = colour * (1 + 0.28 * rough)[..., None]
    boulders = (rough > 1.6) & ls.mask
    colour[boulders] *= rng.uniform(0.55, 0.75)
    alpha = ls.mask.astype(float)
    if rng.random() < 0.3:  # partly revegetated toe
        alpha = alpha * (1 - 0.45 * np.clip(moss, 0, 1) * (ls.t > 0.6))
    img += alpha[..., None] * (colour - img)
    img[scarp] = np.maximum(img[scarp], _SCARP * rng.uniform(0.9, 1.05))


def _tilt(z: np.ndarray, direction: np.ndarray, grade: float) -> np.ndarray:
    """``z`` with a regional slope of ``grade`` (pixel units) going down along ``direction``."""
    size = z.shape[0]
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    return z - grade * (yy * direction[0] + xx * direction[1])


def render_tile(rng: np.random.Generator, size: int, positive: bool, distractors: np.random.Generator | None) -> Tile:
    """Draw one tile (see the module docstring) from ``rng`` and, for its distractors, from
    ``distractors`` (None leaves out the fields, rock, roads, rivers, colour casts and haze)."""
    z = terrain(rng, size)
    fine, rough, edge, moss = (noise_field(rng, size, beta) for beta in (0.6, 0.2, 1.5, 1.8))
    grade = np.tan(np.radians(rng.uniform(10, 30)))
    ls = place(draw_outline(rng), draw_share(rng), size, edge) if positive else None
    heading = ls.downslope if ls is not None else np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    z = _tilt(z, heading, grade)
    if ls is not None:
        _landslide_relief(rng, z, ls, rough)
    img = _land_cover(rng, size, fine)
    empty = np.zeros((size, size), dtype=bool)
    field = road = rock = empty
    if distractors is not None:
        d = distractors
        field = _fields(d, img, Flow(z), fine)
        rock = _rock(d, img, z, rough)
        road = _roads_and_river(d, img, z, Flow(z), rough)
    if ls is not None:
        _landslide_colour(rng, img, ls, rough, moss)
    img *= hillshade(rng, z)[..., None]
    if distractors is not None:
        img *= distractors.uniform(0.85, 1.15) * (1 + distractors.normal(0, 0.04, 3))
        if distractors.random() < 0.3:
            img += distractors.uniform(0.05, 0.25) * (_HAZE - img)
    img += rng.uniform(-0.015, 0.015, img.shape)
    mask = ls.mask if ls is not None else empty
    dem = (z - z.min()) / (z.max() - z.min() + 1e-12)
    return Tile(
        image=np.clip(img, 0, 1).astype(np.float32),
        dem=dem.astype(np.float32),
        mask=mask,
        road=road & ~mask,
        field=field & ~mask,
        rock=rock & ~mask,
        share=float(mask.mean()),
    )


class Landslides:
    """Synthetic hillside tiles with landslide scars (mask 1 = landslide)."""

    name: ClassVar[str] = "landslides"
    num_classes: int = 2
    #: what ``[run] folds`` splits into folds (val stays out: it is not scored)
    fold_splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(
        self,
        size: int = 64,
        n_train: int = 256,
        n_val: int = 32,
        n_test: int = 64,
        positive_fraction: float = BIJIE_POSITIVE_FRACTION,
        dem_channel: bool = False,
        seed: int = 0,
    ) -> None:
        """
        size: tile side in pixels, a positive multiple of 32.
        n_train, n_val, n_test: tiles per split (>= 0).
        positive_fraction: probability that a tile holds landslides, in [0, 1].
        dem_channel: add the tile's normalised DEM as a 4th channel.
        seed: non-negative integer; tiles depend only on (seed, split, index) and the above.
        """
        ds = self.name
        self.size = check_int(ds, "size", size, 32, multiple_of=32)
        self.seed = check_int(ds, "seed", seed, 0)
        self._lengths = {
            "train": check_int(ds, "n_train", n_train, 0),
            "val": check_int(ds, "n_val", n_val, 0),
            "test": check_int(ds, "n_test", n_test, 0),
        }
        self.positive_fraction = check_float(ds, "positive_fraction", positive_fraction, 0.0, 1.0)
        self.dem_channel = check_bool(ds, "dem_channel", dem_channel)
        self._splits: dict[str, LazySplit] = {}
        self._mean: torch.Tensor | None = None

    def __repr__(self) -> str:
        n = self._lengths
        return (
            f"Landslides(size={self.size}, n_train={n['train']}, n_val={n['val']}, n_test={n['test']}, "
            f"positive_fraction={self.positive_fraction}, dem_channel={self.dem_channel}, seed={self.seed})"
        )

    def _split_index(self, name: str) -> int:
        if name not in SPLITS:
            raise UserError(did_you_mean(str(name), SPLITS, "split") + f" (dataset {self.name!r})")
        return SPLITS.index(name)

    def render(self, split: str, i: int, distractors: bool = True) -> Tile:
        """The raw tile ``i >= 0`` of ``split`` (not memoised, not bounded by the split length)."""
        key = [self.seed, self._split_index(split), int(i)]
        rng = np.random.default_rng(key)
        positive = bool(rng.random() < self.positive_fraction)
        return render_tile(rng, self.size, positive, np.random.default_rng([*key, 1]) if distractors else None)

    def _image(self, tile: Tile) -> torch.Tensor:
        chw = tile.image.transpose(2, 0, 1)
        if self.dem_channel:
            chw = np.concatenate([chw, tile.dem[None]])
        return torch.from_numpy(np.ascontiguousarray(chw))

    def _sample(self, split: str, i: int) -> Sample:
        tile = self.render(split, i)
        return Sample(
            image=self._image(tile),
            mask=torch.from_numpy(tile.mask.astype(np.int64)),
            image_id=f"landslides-{split}-{i:04d}",
            label=int(tile.mask.any()),
        )

    def split(self, name: str) -> Sequence[Sample]:
        """Samples of ``name`` ("train", "val" or "test"), generated on first access."""
        self._split_index(name)
        if name not in self._splits:
            self._splits[name] = LazySplit(f"{self.name} {name}", self._lengths[name], lambda i, name=name: self._sample(name, i), memoise=True)
        return self._splits[name]

    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the first min(64, n_train) train tiles (of 64 tiles if n_train is 0)."""
        if self._mean is None:
            n = min(MEAN_TILES, self._lengths["train"]) or MEAN_TILES
            if self._lengths["train"]:
                images = [self.split("train")[i].image for i in range(n)]
            else:  # synthetic: the train distribution exists even with an empty train split
                images = [self._image(self.render("train", i)) for i in range(n)]
            self._mean = torch.stack([im.mean(dim=(1, 2)) for im in images]).mean(0)
        return self._mean.clone()
