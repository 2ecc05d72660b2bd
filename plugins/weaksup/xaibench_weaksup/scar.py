"""One landslide per positive tile, placed the way the Bijie crops are made.

In the Bijie dataset (Ji et al. 2020) each landslide image is a crop around one landslide: its
bounding box plus an equal margin on all four sides, later resized to a square. So the
landslide is centred and its share of the image follows from the margin. This module draws a
landslide outline in a world frame (head at the origin, length 1 along its downslope axis), a
target share ``s`` of the tile, solves the margin ``m`` for that share
(``area = s (w + 2m)(h + 2m)`` with ``w x h`` the bounding box) and rasterises the outline on
the crop ``[box - m, box + m]`` resized to ``size x size`` (so, as in the real images, a tall
landslide is stretched less across than along).

The share is log-normal with median 7 % and log-sd 0.58 (p10 3.4 %, p90 15 %, mean about
8.3 %), clipped to [1 %, 26 %]: the real masks' distribution (README of the plugin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: the real Bijie landslide share of a positive image: median, log-sd, clip range
SHARE_MEDIAN, SHARE_LOG_SD, SHARE_RANGE = 0.07, 0.58, (0.01, 0.26)


@dataclass(frozen=True)
class Outline:
    """A landslide outline in its own frame: axis t in [0, 1] from head to toe, offsets across
    the axis ``-left(t) < v - bend t^2 < right(t)`` (world units, length 1)."""

    t: np.ndarray  # [K] sample points along the axis
    left: np.ndarray  # [K] half-widths to the left of the axis
    right: np.ndarray  # [K]
    bend: float
    angle: float  # direction of the axis (head -> toe) in the world frame, radians

    @property
    def area(self) -> float:
        return float(np.trapezoid(self.left + self.right, self.t))

    def world(self, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y, x) world coordinates of axis position t and across offset v."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        return t * c - v * s, t * s + v * c

    def local(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(t, v) of world points."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        return y * c + x * s, -y * s + x * c

    def box(self) -> tuple[float, float, float, float]:
        """(y0, x0, y1, x1) of the outline's bounding box."""
        centre = self.bend * self.t**2
        ys, xs = self.world(np.concatenate([self.t, self.t]), np.concatenate([centre - self.left, centre + self.right]))
        return float(ys.min()), float(xs.min()), float(ys.max()), float(xs.max())


def _wobble(rng: np.random.Generator, n: int, knots: int, amount: float) -> np.ndarray:
    """A smooth random factor 1 + amount * noise along the axis."""
    k = rng.normal(0, 1, knots)
    return 1 + amount * np.interp(np.linspace(0, knots - 1, n), np.arange(knots), k)


def draw_outline(rng: np.random.Generator) -> Outline:
    """A landslide: widest somewhere along its length, a rounded crown (head) and toe, irregular
    flanks, a slight bend; length / width 1.2-4."""
    n = 96
    t = np.linspace(0.0, 1.0, n)
    width = rng.uniform(0.13, 0.42)  # half-width at the widest point
    widest = rng.uniform(0.3, 0.75)
    rel = np.where(t < widest, (t - widest) / widest, (t - widest) / (1 - widest))
    envelope = np.sqrt(np.clip(1 - np.abs(rel) ** rng.uniform(1.6, 3.0), 0, 1))
    left = width * envelope * np.clip(_wobble(rng, n, 7, 0.13), 0.6, 1.4)
    right = width * envelope * np.clip(_wobble(rng, n, 7, 0.13), 0.6, 1.4)
    return Outline(t, left, right, float(rng.normal(0, 0.12)), float(rng.uniform(0, 2 * np.pi)))


def draw_share(rng: np.random.Generator) -> float:
    """The landslide's share of its tile (log-normal, clipped; see the module docstring)."""
    return float(np.clip(SHARE_MEDIAN * np.exp(SHARE_LOG_SD * rng.standard_normal()), *SHARE_RANGE))


@dataclass(frozen=True)
class Placed:
    """A landslide rasterised on a tile: its mask and, per pixel, where it lies along and
    across the landslide (t: 0 head .. 1 toe; across: -1 left flank .. 1 right flank)."""

    mask: np.ndarray  # bool [size, size], one 4-connected component
    t: np.ndarray  # float [size, size]
    across: np.ndarray  # float [size, size]
    downslope: np.ndarray  # (dy, dx) unit vector head -> toe in tile pixels


def margin_for(box_h: float, box_w: float, area: float, share: float) -> float:
    """The equal margin m that gives ``area / ((box_w + 2m)(box_h + 2m)) = share`` (0 if the
    box itself is too small for the share)."""
    need = area / share  # crop area
    a, b = box_h + box_w, box_h * box_w - need
    if b >= 0:
        return 0.0
    return float((-a + np.sqrt(a * a - 4 * b)) / 4)


def place(outline: Outline, share: float, size: int, edge: np.ndarray) -> Placed:
    """Rasterise ``outline`` on a ``size`` tile cut as the Bijie crops are (bounding box plus
    an equal margin chosen for ``share``); ``edge`` [size, size] is a noise field that makes the
    flanks ragged at the pixel scale."""
    y0, x0, y1, x1 = outline.box()
    m = margin_for(y1 - y0, x1 - x0, outline.area, share)
    ys = y0 - m + (np.arange(size) + 0.5) / size * (y1 - y0 + 2 * m)
    xs = x0 - m + (np.arange(size) + 0.5) / size * (x1 - x0 + 2 * m)
    t, v = outline.local(ys[:, None], xs[None, :])
    v = v - outline.bend * np.clip(t, 0, 1) ** 2
    left = np.interp(t, outline.t, outline.left, left=0.0, right=0.0)
    right = np.interp(t, outline.t, outline.right, left=0.0, right=0.0)
    scale = float(max(outline.left.max(), outline.right.max()))
    inside = np.minimum(v + left, right - v) + 0.06 * scale * edge > 0
    inside &= (t >= 0) & (t <= 1)
    labels, n = ndimage.label(inside)
    if n > 1:  # ragged flanks may cut off a crumb: keep the landslide's body
        inside = labels == 1 + int(np.argmax(ndimage.sum_labels(inside, labels, range(1, n + 1))))
    inside = ndimage.binary_fill_holes(inside)
    ys, xs = np.nonzero(inside)
    if len(ys):  # the ragged flanks move the box by a pixel or two: centre it again, as the crop is cut
        shift = ((size - 1 - ys.max() - ys.min()) // 2, (size - 1 - xs.max() - xs.min()) // 2)
        inside, t, v, left, right = (np.roll(a, shift, axis=(0, 1)) for a in (inside, t, v, left, right))
    across = np.clip(np.where(v >= 0, v / np.maximum(right, 1e-6), v / np.maximum(left, 1e-6)), -1, 1)
    head = np.array(outline.world(np.array(0.0), np.array(0.0)))
    toe = np.array(outline.world(np.array(1.0), np.array(outline.bend)))
    step = (toe - head) / np.array([y1 - y0 + 2 * m, x1 - x0 + 2 * m])  # in tile fractions
    down = step / (np.hypot(*step) + 1e-12)
    return Placed(inside, np.clip(t, 0, 1), across, down)
