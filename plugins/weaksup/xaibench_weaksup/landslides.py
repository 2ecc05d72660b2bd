"""Landslides: seeded synthetic optical tiles of vegetated hillsides with landslide scars.

A stand-in for the Bijie landslide images (Ji et al. 2020; the thesis of the weaksup seed)
that works offline. Each tile is made from a random terrain:

* **terrain**: a fractal DEM (power-law spectrum f^-beta, beta 3-3.8, cropped from a field
  1.5 times the tile so it is not periodic) plus a regional tilt, scaled so the typical slope is
  15-35 degrees; shaded relief from a random sun (azimuth 0-360, elevation 30-60 degrees);
* **land cover**: forest and grass/shrub blended by a smooth field, with crown-scale texture;
* **distractors** (in landslide and non-landslide tiles alike, drawn before the label is
  used): terraced fields of bare or cropped soil laid along the contour lines (the same soil
  colours as the scars), grey rock outcrops, 0-2 bright roads (concrete or dirt) and a river
  (dark or muddy) that runs downhill like a scar does, but thin;
* **landslide scars** (1-4 on positive tiles): bare-soil tongues traced downslope along the
  DEM gradient from a head on a steep slope, 12-50 % of the tile long, with a widening
  tongue, irregular (noise-perturbed) boundaries, a scarp-to-debris colour gradient
  (brown, tan, reddish or grey), partial revegetation on some, and a shallow depression of
  the DEM at the head; shading applies on top, so a scar on a shadowed slope is dark;
* **sensor**: a per-tile colour cast and gain, haze on some tiles, pixel noise.

The mask is 1 on scar pixels (before revegetation and shading), 0 elsewhere: roads, rivers,
fields and rock are background. ``label`` = 1 iff the mask is not empty.

Tile ``i`` of a split is a pure function of ``(seed, split, i)`` and the constructor's
``size``, ``positive_fraction`` and ``dem_channel``: its generator is
``numpy.random.default_rng([seed, split_index, i])``, so samples do not depend on access
order. Tiles are generated lazily and memoised (about 3.5 ms of CPU per 64 x 64 tile, 7.5 ms
at 128 x 128, measured on a busy 2-core machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from xaibench.plugin import SPLITS, LazySplit, Sample, UserError, check_bool, check_float, check_int, did_you_mean
from xaibench_weaksup.terrain import Flow, densify, hillshade, noise_field, stamp, terrain, wandering_curve

#: tiles used by :meth:`Landslides.channel_mean`
MEAN_TILES = 64

_FOREST = np.array([0.15, 0.25, 0.12])
_GRASS = np.array([0.31, 0.38, 0.20])
#: bare soil / debris colours, shared by scars and fields
_SOIL = np.array(
    [
        [0.58, 0.47, 0.35],  # brown
        [0.66, 0.59, 0.47],  # tan
        [0.54, 0.40, 0.30],  # reddish brown
        [0.53, 0.51, 0.47],  # grey
        [0.46, 0.42, 0.36],  # dark debris
    ]
)
_ROCK = np.array([0.52, 0.51, 0.48])
_ROADS = np.array([[0.72, 0.71, 0.68], [0.66, 0.58, 0.46]])  # concrete, dirt
_RIVERS = np.array([[0.11, 0.16, 0.17], [0.40, 0.36, 0.28]])  # clear, muddy
_HAZE = np.array([0.74, 0.77, 0.82])


@dataclass(frozen=True)
class Tile:
    """One rendered tile (numpy) with what the renderer knows about it."""

    image: np.ndarray  # float32 [H, W, 3] in [0, 1]
    dem: np.ndarray  # float32 [H, W] in [0, 1] (min-max normalised elevation)
    mask: np.ndarray  # bool [H, W]: landslide scars
    road: np.ndarray  # bool [H, W]
    river: np.ndarray  # bool [H, W]
    field: np.ndarray  # bool [H, W]: terraced fields and rock outcrops


def _land_cover(rng: np.random.Generator, size: int, fine: np.ndarray) -> np.ndarray:
    """Vegetation albedo [size, size, 3]."""
    forest = _FOREST * rng.uniform(0.85, 1.15) + rng.normal(0, 0.015, 3)
    grass = _GRASS * rng.uniform(0.85, 1.15) + rng.normal(0, 0.02, 3)
    blend = 1 / (1 + np.exp(-3 * (noise_field(rng, size, 2.6) + rng.uniform(-1, 1))))
    albedo = forest + blend[..., None] * (grass - forest)
    return albedo * (1 + 0.13 * fine)[..., None]


def _paint(img: np.ndarray, where: np.ndarray, colour: np.ndarray, alpha: float | np.ndarray = 1.0) -> None:
    a = alpha if np.isscalar(alpha) else np.asarray(alpha)[..., None]
    img[where] += a * (colour - img[where])


def _fields_and_rock(rng: np.random.Generator, img: np.ndarray, flow: Flow, fine: np.ndarray) -> np.ndarray:
    """Terraced fields along the contours and rock outcrops: soil colours that are not scars."""
    size, gy, gx = flow.size, flow.gy, flow.gx
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    found = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(1, 5) if rng.random() < 0.75 else 0):
        cy, cx = rng.uniform(0, size, 2)
        g = np.array([gy[int(cy), int(cx)], gx[int(cy), int(cx)]])
        across = g / (np.hypot(*g) + 1e-9)  # downslope axis; fields are long along the contour
        along = np.array([-across[1], across[0]])
        a, b = rng.uniform(0.08, 0.3) * size, rng.uniform(0.05, 0.14) * size
        u = (yy - cy) * along[0] + (xx - cx) * along[1]
        v = (yy - cy) * across[0] + (xx - cx) * across[1]
        sel = (np.abs(u) < a / 2) & (np.abs(v) < b / 2)
        soil = _SOIL[rng.integers(len(_SOIL))] * rng.uniform(0.85, 1.1)
        colour = soil if rng.random() < 0.7 else 0.5 * (soil + _GRASS)
        terraces = 1 + 0.08 * np.sin(v[sel] * rng.uniform(0.8, 1.6))
        _paint(img, sel, colour * terraces[:, None] * (1 + 0.1 * fine[sel])[:, None], 0.9)
        found |= sel
    if rng.random() < 0.5:
        blobs = noise_field(rng, size, 3.0)
        rock = blobs > np.quantile(blobs, 1 - rng.uniform(0.02, 0.07))
        _paint(img, rock, _ROCK * rng.uniform(0.85, 1.15) * (1 + 0.15 * fine[rock])[:, None], 0.85)
        found |= rock
    return found


def _roads_and_river(rng: np.random.Generator, img: np.ndarray, z: np.ndarray, flow: Flow) -> tuple[np.ndarray, np.ndarray]:
    size = z.shape[0]
    s = size / 64
    road = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(1, 3) if rng.random() < 0.55 else 0):
        line = stamp(densify(wandering_curve(rng, size)), rng.uniform(0.5, 1.2) * s, size)
        _paint(img, line, _ROADS[rng.integers(2)] * rng.uniform(0.9, 1.1))
        road |= line
    river = np.zeros((size, size), dtype=bool)
    if rng.random() < 0.35:
        high = np.unravel_index(np.argmax(z + 3 * rng.random(z.shape) * z.std()), z.shape)
        path = flow.downhill(rng, np.asarray(high, dtype=float), 2 * size, 0.08, momentum=0.92)
        river = stamp(densify(path), rng.uniform(0.7, 1.6) * s, size)
        _paint(img, river, _RIVERS[rng.integers(2)] * rng.uniform(0.85, 1.15), 0.9)
    return road, river


def _scar(rng: np.random.Generator, flow: Flow, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """One scar: alpha in [0, 1], along-track position t in [0, 1] (head 0, toe 1), bounding box."""
    size = flow.size
    path = flow.downhill(rng, flow.steep_point(rng), rng.uniform(0.15, 0.55) * size, 0.06)
    width = max(rng.uniform(0.02, 0.05) * size, 1.2)
    pts = densify(path, max(width / 2.5, 0.6))
    t = np.linspace(0, 1, len(pts))
    r = width * (0.55 + rng.uniform(0.2, 0.9) * t**rng.uniform(0.5, 1.5)) * (1 + 0.15 * np.sin(np.pi * t))
    lo = np.clip(np.floor(pts.min(0) - 1.6 * r.max()), 0, size).astype(int)
    hi = np.clip(np.ceil(pts.max(0) + 1.6 * r.max()) + 1, 0, size).astype(int)
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
    ys, xs = np.arange(lo[0], hi[0], dtype=np.float32), np.arange(lo[1], hi[1], dtype=np.float32)
    inv_r2 = (1.0 / r**2).astype(np.float32)
    dy2 = (ys[:, None] - pts[:, 0].astype(np.float32)) ** 2  # [h, K]
    dx2 = (xs[:, None] - pts[:, 1].astype(np.float32)) ** 2  # [w, K]
    d2 = (dy2[:, None, :] + dx2[None, :, :]) * inv_r2  # [h, w, K]: (distance / radius)^2
    k = np.argmin(d2, axis=-1)
    dmin = np.sqrt(np.take_along_axis(d2, k[..., None], -1)[..., 0])
    alpha = np.clip((1 + rng.uniform(0.15, 0.35) * edge[box] - dmin) / 0.25, 0, 1)
    return alpha, t[k], box


def _scars(rng: np.random.Generator, img: np.ndarray, z: np.ndarray, flow: Flow, fine: np.ndarray) -> np.ndarray:
    size = z.shape[0]
    mask = np.zeros((size, size), dtype=bool)
    edge, moss = noise_field(rng, size, 2.0), noise_field(rng, size, 1.8)
    n_scars = rng.choice([1, 2, 3, 4], p=[0.5, 0.28, 0.14, 0.08])
    min_pixels = max(6, int(0.003 * size * size))
    done = 0
    for _attempt in range(6 * n_scars):
        alpha, t, box = _scar(rng, flow, edge)
        inside = alpha > 0.5
        if inside.sum() < min_pixels:
            continue
        scarp = _SOIL[rng.integers(len(_SOIL))] * rng.uniform(0.9, 1.15)
        debris = _SOIL[rng.integers(len(_SOIL))] * rng.uniform(0.8, 1.0)
        colour = scarp + t[..., None] * (debris - scarp)
        colour = colour * (1 + 0.12 * fine[box])[..., None]
        if rng.random() < 0.35:  # partly revegetated
            alpha = alpha * (1 - rng.uniform(0.2, 0.6) * np.clip(moss[box], 0, 1))
        region = img[box]
        region += alpha[..., None] * (colour - region)
        z[box] -= inside * rng.uniform(0.3, 1.0) * (1 - t) ** 2 * (size / 64)
        mask[box] |= inside
        done += 1
        if done == n_scars:
            break
    return mask


def render_tile(rng: np.random.Generator, size: int, positive: bool, distractors: bool = True) -> Tile:
    """Draw one tile (see the module docstring); ``distractors=False`` leaves out the fields,
    rock, roads, rivers, colour casts and haze (for tests that show those matter)."""
    z = terrain(rng, size)
    fine = noise_field(rng, size, 0.6)
    img = _land_cover(rng, size, fine)
    flow = Flow(z)
    field = road = river = np.zeros((size, size), dtype=bool)
    if distractors:
        field = _fields_and_rock(rng, img, flow, fine)
        road, river = _roads_and_river(rng, img, z, flow)
    mask = _scars(rng, img, z, flow, fine) if positive else np.zeros((size, size), dtype=bool)
    img *= hillshade(rng, z)[..., None]
    if distractors:
        img *= rng.uniform(0.85, 1.15) * (1 + rng.normal(0, 0.04, 3))
        if rng.random() < 0.3:
            img += rng.uniform(0.05, 0.25) * (_HAZE - img)
    img += rng.uniform(-0.015, 0.015, img.shape)
    dem = (z - z.min()) / (z.max() - z.min() + 1e-12)
    return Tile(
        image=np.clip(img, 0, 1).astype(np.float32),
        dem=dem.astype(np.float32),
        mask=mask,
        road=road & ~mask,
        river=river & ~mask,
        field=field & ~mask,
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
        positive_fraction: float = 0.5,
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
        rng = np.random.default_rng([self.seed, self._split_index(split), int(i)])
        positive = bool(rng.random() < self.positive_fraction)
        return render_tile(rng, self.size, positive, distractors)

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
