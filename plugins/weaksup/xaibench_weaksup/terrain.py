"""Terrain and line drawing for the synthetic ``landslides`` tiles: power-law noise fields, a
fractal DEM with its shaded relief, downslope flow paths, and polylines rasterised with a width."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _spectrum_radius(size: int) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    r = np.hypot(fy, fx).astype(np.float32)
    r[0, 0] = 1.0
    return r


def noise_field(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """A periodic random field [size, size] with power spectrum ~ f^-beta, zero mean, unit std."""
    shape = (size, size // 2 + 1)
    spec = np.empty(shape, dtype=np.complex64)
    spec.real = rng.standard_normal(shape, dtype=np.float32)
    spec.imag = rng.standard_normal(shape, dtype=np.float32)
    amp = _spectrum_radius(size) ** np.float32(-beta / 2)
    amp[0, 0] = 0.0
    field = np.fft.irfft2(spec * amp, s=(size, size)).astype(np.float64)
    return field * (1.0 / (field.std() + 1e-12))


def terrain(rng: np.random.Generator, size: int) -> np.ndarray:
    """Elevation in pixel units [size, size], typical slope 15-35 degrees."""
    big = noise_field(rng, size + size // 2, rng.uniform(3.0, 3.8))
    dem = big[:size, :size]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, size)
    dem = dem + rng.uniform(0.5, 2.5) * (np.cos(angle) * ramp[:, None] + np.sin(angle) * ramp[None, :])
    gy, gx = np.gradient(dem)
    typical = float(np.median(np.hypot(gy, gx))) + 1e-9
    return dem * (np.tan(np.radians(rng.uniform(15, 35))) / typical)


def hillshade(rng: np.random.Generator, z: np.ndarray) -> np.ndarray:
    """Brightness factor (1 on flat ground) from a random sun."""
    gy, gx = np.gradient(z)
    az, alt = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(30, 60))
    lx, ly, lz = np.cos(alt) * np.cos(az), np.cos(alt) * np.sin(az), np.sin(alt)
    shade = np.clip((lz - gx * lx - gy * ly) / np.sqrt(1 + gx * gx + gy * gy), 0, 1)
    return 0.25 + 0.75 * shade / lz


def stamp(points: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Boolean [size, size] of the pixels within ``radius`` of a polyline's (dense) points."""
    out = np.zeros((size, size), dtype=bool)
    if len(points) == 0:
        return out
    r = int(np.ceil(radius))
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    keep = oy**2 + ox**2 <= radius**2 + 0.25
    offsets = np.stack([oy[keep], ox[keep]], -1)
    idx = (np.rint(points).astype(np.intp)[:, None, :] + offsets[None]).reshape(-1, 2)
    inside = (idx >= 0).all(1) & (idx < size).all(1)
    out[idx[inside, 0], idx[inside, 1]] = True
    return out


def densify(points: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Points every ``step`` pixels along the polyline ``points`` [K, 2]."""
    if len(points) < 2:
        return points
    seg = np.hypot(*np.diff(points, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.arange(0.0, arc[-1] + 1e-9, step)
    return np.stack([np.interp(s, arc, points[:, 0]), np.interp(s, arc, points[:, 1])], -1)


def wandering_curve(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth S-bending curve entering the tile at a random border point (pixel steps)."""
    side = rng.integers(4)
    u = rng.uniform(0.1, 0.9) * size
    start = [(0.0, u), (size - 1.0, u), (u, 0.0), (u, size - 1.0)][side]
    inward = [0.0, np.pi, np.pi / 2, -np.pi / 2][side]  # angle of the step (dy, dx) = (cos, sin)
    n = 3 * size
    bends = max(2, int(rng.uniform(1, 4) * n / size))  # curvature changes sign about every size/2
    knots = rng.normal(0, rng.uniform(0.4, 1.2) / size, bends + 1)
    curvature = np.interp(np.linspace(0, bends, n), np.arange(bends + 1), knots)
    theta = inward + rng.uniform(-0.6, 0.6) + np.cumsum(curvature)
    pts = np.asarray(start) + np.cumsum(np.stack([np.cos(theta), np.sin(theta)], -1), axis=0)
    inside = ((pts >= -1) & (pts <= size)).all(1)
    stop = int(np.argmin(inside)) if not inside.all() else n
    return pts[: max(stop, 2)]


class Flow:
    """Where water (and debris) goes on a terrain: the downslope unit vector of the local
    gradient blended with the regional one (8 x 8 block mean), and the slope."""

    def __init__(self, z: np.ndarray, block: int = 8) -> None:
        size = z.shape[0]
        b = block if size % block == 0 else 1
        self.size = size
        self.gy, self.gx = np.gradient(z)
        up = lambda g: np.repeat(np.repeat(g.reshape(size // b, b, size // b, b).mean(axis=(1, 3)), b, 0), b, 1)  # noqa: E731
        gy, gx = self.gy + up(self.gy), self.gx + up(self.gx)
        norm = np.hypot(gy, gx) + 1e-9
        self._uy, self._ux = (-gy / norm).ravel().tolist(), (-gx / norm).ravel().tolist()
        self.slope_cdf = np.cumsum(np.hypot(self.gy, self.gx).ravel() ** 3)

    def steep_point(self, rng: np.random.Generator) -> np.ndarray:
        """A random pixel (plus a sub-pixel offset), drawn with probability ~ slope^3."""
        k = int(np.searchsorted(self.slope_cdf, rng.random() * self.slope_cdf[-1]))
        return np.array(divmod(min(k, self.size**2 - 1), self.size), dtype=float) + rng.uniform(0, 1, 2)

    def downhill(self, rng: np.random.Generator, start: np.ndarray, length: float, wiggle: float, momentum: float = 0.8) -> np.ndarray:
        """Path of about ``length`` pixel steps from ``start`` down the slope, with momentum so
        it runs on through small pits; stops at the tile's edge."""
        size, uy, ux = self.size, self._uy, self._ux
        steps = max(int(length), 1)
        noise = rng.normal(0, wiggle, 2 * steps).tolist()
        y, x = float(start[0]), float(start[1])
        dy = dx = 0.0
        pts = [(y, x)]
        for k in range(steps):
            at = min(max(int(y), 0), size - 1) * size + min(max(int(x), 0), size - 1)
            dy = momentum * dy + (1 - momentum) * uy[at] + noise[2 * k]
            dx = momentum * dx + (1 - momentum) * ux[at] + noise[2 * k + 1]
            n = (dy * dy + dx * dx) ** 0.5 + 1e-12
            dy, dx = dy / n, dx / n
            y, x = y + dy, x + dx
            if not (0 <= y < size and 0 <= x < size):
                break
            pts.append((y, x))
        return np.asarray(pts)
