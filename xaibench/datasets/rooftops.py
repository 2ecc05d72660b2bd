"""Rooftops: seeded synthetic aerial tiles of building roofs, for offline use.

Each tile shows ground (soil/grass colour variation with smoothed-noise vegetation patches),
one or two grey roads, and 0-4 buildings (rectangles and L-shapes, any orientation) whose roofs
come in a few plausible colours (red, terracotta, brown, grey, light). Every building casts a
dark shadow in the tile's single sun direction; shadows fall on the ground and roads, never on
roofs. The mask is 1 on roof pixels and 0 elsewhere (shadows and roads are background).

Tile ``i`` of a split is a pure function of ``(seed, split, i, size)``: its random generator is
``np.random.default_rng([seed, split_index, i])``, so samples do not depend on access order or
on the other constructor arguments. Tiles are generated lazily and memoised. Every eighth tile
(``i % 8 == 7``; ``empty_every`` sets the 8) has no building, so each split has image-level
negatives (``label`` 0); ``empty_every = 2`` balances the labels for a classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from skimage.draw import polygon
from skimage.filters import gaussian

from xaibench.config.params import check_int
from xaibench.config.vocabulary import SPLITS
from xaibench.datasets.base import LazySplit, Sample
from xaibench.errors import UserError, did_you_mean

#: tiles used by :meth:`Rooftops.channel_mean`
MEAN_TILES = 64

_GROUND = np.array(
    [
        [0.36, 0.46, 0.24],  # grass
        [0.50, 0.50, 0.31],  # dry grass
        [0.50, 0.42, 0.32],  # soil
        [0.42, 0.44, 0.30],  # mixed
    ],
    dtype=np.float32,
)
_TREE = np.array([0.13, 0.27, 0.11], dtype=np.float32)
_ROOFS = np.array(
    [
        [0.62, 0.24, 0.18],  # red tiles
        [0.72, 0.40, 0.27],  # terracotta
        [0.46, 0.31, 0.22],  # brown
        [0.55, 0.55, 0.57],  # grey
        [0.80, 0.78, 0.74],  # light
    ],
    dtype=np.float32,
)
_SHADOW_TINT = np.array([0.42, 0.45, 0.55], dtype=np.float32)


@dataclass(frozen=True)
class Tile:
    """One rendered tile (numpy, HWC) with the masks the renderer knows about."""

    image: np.ndarray  # float32 [H, W, 3] in [0, 1]
    roof: np.ndarray  # bool [H, W]
    shadow: np.ndarray  # bool [H, W], disjoint from roof
    road: np.ndarray  # bool [H, W] (shadows may fall on roads; roofs never overlap them)
    sun: tuple[float, float]  # unit (dy, dx) direction shadows are cast towards


def _interp_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear (half-pixel centres, edge-clamped) source indices and weights along one axis."""
    x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (x - i0).astype(np.float32)


def _upsample(low: np.ndarray, size: int) -> np.ndarray:
    """Bilinear [h, w] -> [size, size], in plain numpy (single-threaded, so it stays fast
    when other processes or torch threads keep the cores busy)."""
    r0, r1, wr = _interp_weights(low.shape[0], size)
    c0, c1, wc = _interp_weights(low.shape[1], size)
    rows = low[r0] + (low[r1] - low[r0]) * wr[:, None]
    return rows[:, c0] + (rows[:, c1] - rows[:, c0]) * wc


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1] with about ``cells`` blobs across the tile."""
    low = gaussian(rng.standard_normal((2 * cells + 2, 2 * cells + 2), dtype=np.float32), 0.8)
    field = _upsample(low, size)
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo + 1e-8)


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` translated by (dy, dx), zero-filled."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def render_tile(rng: np.random.Generator, size: int, n_buildings: int) -> Tile:
    """Draw one tile with ``n_buildings`` buildings (fewer if they do not fit). The parts are
    drawn in a fixed order from ``rng``: ground, roads, buildings, then texture and noise."""
    s = size / 128.0
    img, fine = _ground(rng, size)
    road, base_angle = _roads(rng, size, s, img)
    roof, roof_img, sun, shadow_len = _buildings(rng, size, s, n_buildings, road, base_angle)
    shadow = _shadows_and_roofs(img, roof, roof_img, sun, shadow_len)
    # texture, mild global gain jitter and sensor noise
    img *= np.float32(rng.uniform(0.92, 1.08))
    img += (0.012 * fine)[..., None]
    img += rng.random((size, size, 3), dtype=np.float32) * np.float32(0.04) - np.float32(0.02)
    np.clip(img, 0.0, 1.0, out=img)
    return Tile(image=img, roof=roof, shadow=shadow, road=road & ~roof, sun=sun)


def _ground(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two ground colours blended by a large-scale field, with vegetation patches; and the fine
    texture (noise at half resolution, upsampled: about 2 px grain at 128 px) used again later."""
    c1, c2 = _GROUND[rng.permutation(len(_GROUND))[:2]]
    c1 = c1 + rng.uniform(-0.04, 0.04, 3).astype(np.float32)
    c2 = c2 + rng.uniform(-0.04, 0.04, 3).astype(np.float32)
    blend = _smooth_field(rng, size, 3)
    img = np.multiply(blend[..., None], c2 - c1)
    img += c1
    # fine texture: noise at half resolution, upsampled (about 2 px grain at 128 px)
    half = max(size // 2, 1)
    fine = _upsample(rng.standard_normal((half, half), dtype=np.float32), size)
    # vegetation: soft-edged patches where a medium-scale field exceeds a threshold
    veg = _smooth_field(rng, size, 10)
    thresh = rng.uniform(0.55, 0.8)
    sel = veg > thresh
    alpha = np.minimum((veg[sel] - thresh) / 0.06, 1.0)[:, None]
    tree = _TREE * (1 + 0.35 * fine[sel])[:, None]
    img[sel] += alpha * (tree - img[sel])
    return img, fine


def _roads(rng: np.random.Generator, size: int, s: float, img: np.ndarray) -> tuple[np.ndarray, float]:
    """Long thick rectangles across the tile (a second one roughly perpendicular), painted grey
    into ``img``; the road mask and the base angle the buildings align with."""
    shape = (size, size)
    road = np.zeros(shape, dtype=bool)
    n_roads = 1 + int(rng.random() < 0.45)
    base_angle = rng.uniform(0, np.pi)
    for k in range(n_roads):
        angle = base_angle + k * (np.pi / 2 + rng.normal(0, 0.1))
        width = rng.uniform(7, 12) * s
        centre = rng.uniform(0.15 * size, 0.85 * size, 2)
        d = np.array([np.sin(angle), np.cos(angle)]) * 2.0 * size
        n = np.array([-d[1], d[0]]) / (2.0 * size) * width / 2
        corners = np.stack([centre + d + n, centre + d - n, centre - d - n, centre - d + n])
        rr, cc = polygon(corners[:, 0], corners[:, 1], shape)
        road[rr, cc] = True
    grey = rng.uniform(0.36, 0.48)
    img[road] = np.array([grey, grey, grey * 1.03], dtype=np.float32)
    return road, base_angle


def _buildings(rng: np.random.Generator, size: int, s: float, n_buildings: int, road: np.ndarray, base_angle: float):
    """Rectangles and L-shapes, kept apart from roads and each other: the roof mask, the roof
    colours (gable roofs shaded by the sun), the sun direction and the shadow length."""
    shape = (size, size)
    roof = np.zeros(shape, dtype=bool)
    occupied = road.copy()
    sun_angle = rng.uniform(0, 2 * np.pi)
    sun = (float(np.sin(sun_angle)), float(np.cos(sun_angle)))  # direction shadows fall
    shadow_len = rng.uniform(3, 7) * s
    align = rng.random() < 0.7  # most buildings face the roads
    margin = 3.0 * s + 1.0
    roof_img = np.zeros((*shape, 3), dtype=np.float32)
    k = max(8, int(24 * s))  # collision probe grid: k x k points over the grown footprint
    axis = np.linspace(-0.5, 0.5, k)
    unit = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    for _ in range(n_buildings):
        for _attempt in range(25):
            a = rng.uniform(16, 38) * s  # extent along local x
            b = rng.uniform(12, 28) * s  # extent along local y
            angle = (base_angle if align else rng.uniform(0, np.pi)) + rng.normal(0, 0.06)
            angle += rng.integers(0, 2) * np.pi / 2
            reach = 0.5 * np.hypot(a, b) + 1.5
            if 2 * reach >= size:
                continue
            centre = rng.uniform(reach, size - reach, 2)
            rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
            # collision: probe points over the footprint's rectangle grown by the margin
            pts = np.rint((unit * (b + 2 * margin, a + 2 * margin)) @ rot + centre).astype(np.intp)
            np.clip(pts, 0, size - 1, out=pts)
            if occupied[pts[:, 0], pts[:, 1]].any():
                continue
            if rng.random() < 0.6:
                local = np.array([[0, 0], [0, a], [b, a], [b, 0]])
                gable = rng.random() < 0.7
            else:
                cw, ch = rng.uniform(0.4, 0.6) * a, rng.uniform(0.4, 0.6) * b
                local = np.array([[0, 0], [0, a], [ch, a], [ch, cw], [b, cw], [b, 0]])
                gable = False
            verts = (local - (b / 2, a / 2)) @ rot + centre
            rr, cc = polygon(verts[:, 0], verts[:, 1], shape)
            if len(rr) == 0:
                continue
            colour = _ROOFS[rng.integers(len(_ROOFS))] * np.float32(rng.uniform(0.9, 1.08))
            if gable:
                # two roof planes split along the ridge; the one facing the sun is brighter
                normal = rot[0] if a >= b else rot[1]
                side = np.sign((rr - centre[0]) * normal[0] + (cc - centre[1]) * normal[1])
                facing = -(normal[0] * sun[0] + normal[1] * sun[1])
                shade = (1 + 0.12 * facing * side).astype(np.float32)
                roof_img[rr, cc] = colour * shade[:, None]
            else:
                roof_img[rr, cc] = colour
            roof[rr, cc] = True
            occupied[pts[:, 0], pts[:, 1]] = True
            break
    return roof, roof_img, sun, shadow_len


def _shadows_and_roofs(img: np.ndarray, roof: np.ndarray, roof_img: np.ndarray, sun: tuple[float, float], shadow_len: float) -> np.ndarray:
    """Roofs swept along the sun direction, minus roofs, darken ``img``; then the roofs are
    painted over it with a slightly darker rim. Returns the shadow mask."""
    shape = roof.shape
    shadow = np.zeros(shape, dtype=bool)
    if roof.any():
        steps = max(1, int(np.ceil(shadow_len)))
        offsets = {
            (round(t / steps * shadow_len * sun[0]), round(t / steps * shadow_len * sun[1]))
            for t in range(1, steps + 1)
        }
        for dy, dx in offsets:
            shadow |= _shift(roof, dy, dx)
        shadow &= ~roof
        img[shadow] *= _SHADOW_TINT
        # roofs with a slightly darker rim
        inner = roof & _shift(roof, 1, 0) & _shift(roof, -1, 0)
        inner &= _shift(roof, 0, 1) & _shift(roof, 0, -1)
        roof_img[roof & ~inner] *= np.float32(0.85)
        img[roof] = roof_img[roof]
    return shadow


class Rooftops:
    """Synthetic aerial tiles with building roofs (mask 1 = roof)."""

    name: ClassVar[str] = "rooftops"
    num_classes: int = 2
    #: what ``[run] folds`` splits into folds (val stays out: it is not scored)
    fold_splits: ClassVar[tuple[str, ...]] = ("train", "test")
    #: small parameters for xaibench.testing.check_dataset
    test_params: ClassVar[dict] = {"size": 32, "n_train": 4, "n_val": 2, "n_test": 4}

    def __init__(
        self,
        size: int = 128,
        n_train: int = 160,
        n_val: int = 16,
        n_test: int = 16,
        seed: int = 0,
        empty_every: int = 8,
    ) -> None:
        """
        size: tile side in pixels, a positive multiple of 32.
        n_train, n_val, n_test: number of tiles per split (>= 0).
        seed: non-negative integer; tiles depend only on (seed, split, index, size, empty_every).
        empty_every: tile ``i`` has no building when ``i % empty_every == empty_every - 1`` (>= 2).
        """
        self.empty_every = check_int("rooftops", "empty_every", empty_every, 2)
        self.size = check_int("rooftops", "size", size, 32, multiple_of=32)
        self.seed = check_int("rooftops", "seed", seed, 0)
        self._lengths = {
            "train": check_int("rooftops", "n_train", n_train, 0),
            "val": check_int("rooftops", "n_val", n_val, 0),
            "test": check_int("rooftops", "n_test", n_test, 0),
        }
        self._splits: dict[str, LazySplit] = {}
        self._mean: torch.Tensor | None = None

    def __repr__(self) -> str:
        n = self._lengths
        return (
            f"Rooftops(size={self.size}, n_train={n['train']}, n_val={n['val']}, "
            f"n_test={n['test']}, seed={self.seed}"
            + (f", empty_every={self.empty_every})" if self.empty_every != 8 else ")")
        )

    def render(self, split: str, i: int) -> Tile:
        """The raw tile ``i >= 0`` of ``split`` (numpy, with roof/shadow/road masks).

        Not memoised and not bounded by the split length (tiles exist for every index).
        """
        split_index = self._split_index(split)
        rng = np.random.default_rng([self.seed, split_index, int(i)])
        n_buildings = 0 if i % self.empty_every == self.empty_every - 1 else int(rng.integers(1, 5))
        return render_tile(rng, self.size, n_buildings)

    def _split_index(self, name: str) -> int:
        if name not in SPLITS:
            raise UserError(did_you_mean(str(name), SPLITS, "split") + " (dataset 'rooftops')")
        return SPLITS.index(name)

    def _sample(self, split_index: int, i: int) -> Sample:
        split = SPLITS[split_index]
        tile = self.render(split, i)
        image = torch.from_numpy(np.ascontiguousarray(tile.image.transpose(2, 0, 1)))
        mask = torch.from_numpy(tile.roof.astype(np.int64))
        return Sample(
            image=image,
            mask=mask,
            image_id=f"rooftops-{split}-{i:04d}",
            label=int(tile.roof.any()),
        )

    def split(self, name: str) -> Sequence[Sample]:
        """Samples of ``name`` ("train", "val" or "test"), generated on first access."""
        self._split_index(name)
        if name not in self._splits:
            index = SPLITS.index(name)
            self._splits[name] = LazySplit(f"rooftops {name}", self._lengths[name], lambda i, index=index: self._sample(index, i), memoise=True)
        return self._splits[name]

    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the first min(64, n_train) train tiles (64 if n_train is 0)."""
        if self._mean is None:
            n = min(MEAN_TILES, self._lengths["train"]) or MEAN_TILES
            if self._lengths["train"]:
                train = self.split("train")
                images = [train[i].image for i in range(n)]
            else:  # synthetic: the train distribution exists even with an empty train split
                images = [
                    torch.from_numpy(self.render("train", i).image).permute(2, 0, 1)
                    for i in range(n)
                ]
            self._mean = torch.stack([im.mean(dim=(1, 2)) for im in images]).mean(0)
        return self._mean.clone()
