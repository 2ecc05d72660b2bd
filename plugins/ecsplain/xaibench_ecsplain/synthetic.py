"""``insar_moving_areas``: xaibench-ecsplain's dataset of seeded synthetic wrapped interferograms
with and without moving areas (the input encoding is :mod:`xaibench_ecsplain.encoding`).

Synthetic tiles
---------------
Made with the ``eq-insar`` package's elastic half-space forward model (Davis 1986 point source,
double-couple moment tensor, projection to a Sentinel-1-like line of sight with random
incidence and ascending/descending heading). A tile covers 6.4 km x 6.4 km whatever ``size``
(``size`` is the resolution). Each tile is built as follows:

* positive tiles (label 1): one shallow source (depth 0.6-1.6 km, random strike, dip, rake,
  epicentre within the central 70 % of the tile); its LOS displacement is scaled so that the
  peak |LOS| in the tile is 2-7 cm (about 0.7-2.5 fringes at C band). The mask is where
  |LOS| >= ``mask_fraction`` x peak (default 15 %); a source whose mask covers less than 1 %
  of the tile is redrawn;
* negative tiles (label 0): no source, mask all 0;
* every tile: spatially correlated atmospheric noise (``eq_insar.generate_correlated_noise``,
  power law with the Kolmogorov exponent 5/3, 2 mm to ``noise_max_m`` standard deviation), a
  random linear orbital ramp, a smooth random coherence map (about 0.45-0.97) with the
  matching phase noise (std sqrt(1 - gamma^2) / (gamma sqrt(2 L)), L = 8 looks) and a random
  global phase offset (the authors' augmentation).

Tile ``i`` of a split is a pure function of ``(seed, split, i)`` and the constructor's
generation parameters: its generator is ``numpy.random.default_rng([seed, split_index, i])``
(``eq_insar``'s noise gets integer seeds drawn from it), so samples do not depend on access
order. Tiles are generated lazily and memoised (about 1.5 ms per 64 x 64 tile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from xaibench.plugin import SPLITS, LazySplit, Sample, UserError, check_float, check_int, did_you_mean
from xaibench_ecsplain.encoding import MEAN_TILES, mean_of, phase_channels

#: tile side in km (whatever the resolution)
EXTENT_KM = 6.4
WAVELENGTH_M = 0.05546  # Sentinel-1 C band
LOOKS = 8


@dataclass(frozen=True)
class Tile:
    """One synthetic interferogram with what the generator knows about it."""

    image: np.ndarray  # float32 [2, H, W] in [0, 1]
    mask: np.ndarray  # bool [H, W]
    los: np.ndarray  # LOS deformation (m) [H, W], 0 on negatives
    phase: np.ndarray  # wrapped phase (rad) [H, W]
    coherence: np.ndarray  # [H, W]
    label: int


def _smooth01(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """A smooth random field with zero mean and unit std (power-law spectrum)."""
    import eq_insar

    return eq_insar.generate_correlated_noise((size, size), amplitude_m=1.0, beta=beta, seed=int(rng.integers(2**31)))


def render_tile(
    rng: np.random.Generator,
    size: int,
    positive: bool,
    mask_fraction: float = 0.15,
    noise_max_m: float = 0.006,
) -> Tile:
    """Draw one tile (see the module docstring for the model)."""
    import eq_insar

    xs = (np.arange(size) + 0.5 - size / 2) * (EXTENT_KM / size)
    east_km, north_km = np.meshgrid(xs, -xs)  # row 0 is the northern edge
    los = np.zeros((size, size))
    mask = np.zeros((size, size), dtype=bool)
    if positive:
        min_pixels = max(1, int(0.01 * size * size))
        for _ in range(50):
            strike, dip, rake = rng.uniform(0, 360), rng.uniform(10, 90), rng.uniform(-180, 180)
            depth_km = rng.uniform(0.6, 1.6)
            xc, yc = rng.uniform(-0.35, 0.35, 2) * EXTENT_KM
            tensor = eq_insar.double_couple_moment_tensor(strike, dip, rake, 1e15)
            ue, un, uz = eq_insar.davis_point_source(east_km * 1e3, north_km * 1e3, xc * 1e3, yc * 1e3, depth_km * 1e3, *tensor)
            heading = -13.0 if rng.random() < 0.5 else -167.0  # ascending / descending
            d = eq_insar.compute_los_displacement(ue, un, uz, incidence_deg=rng.uniform(29, 46), heading_deg=heading)
            peak = float(np.abs(d).max())
            amplitude = rng.uniform(0.02, 0.07)
            if peak <= 0:
                continue
            los = d * (amplitude / peak)
            mask = np.abs(los) >= mask_fraction * amplitude
            if mask.sum() >= min_pixels:
                break
    atmosphere = eq_insar.generate_correlated_noise(
        (size, size), amplitude_m=rng.uniform(0.002, max(noise_max_m, 0.002)), beta=5 / 3, seed=int(rng.integers(2**31))
    )
    tilt = rng.normal(0.0, 0.004, 2)  # metres across the tile
    ramp = (tilt[0] * east_km + tilt[1] * north_km) / EXTENT_KM
    coherence = np.clip(0.75 + 0.15 * _smooth01(rng, size, 3.0) + rng.uniform(-0.15, 0.15), 0.2, 0.97)
    sigma = np.sqrt(1 - coherence**2) / (coherence * np.sqrt(2 * LOOKS))
    phase = eq_insar.displacement_to_phase(los + atmosphere + ramp, wavelength_m=WAVELENGTH_M)
    phase = phase + rng.standard_normal((size, size)) * sigma + rng.uniform(0, 2 * np.pi)
    phase = np.angle(np.exp(1j * phase))
    return Tile(
        image=phase_channels(phase, coherence),
        mask=mask,
        los=los,
        phase=phase,
        coherence=coherence,
        label=int(positive and mask.any()),
    )


class InsarMovingAreas:
    """Synthetic wrapped interferograms with and without moving areas (mask 1 = moving)."""

    name: ClassVar[str] = "insar_moving_areas"
    num_classes: int = 2
    #: what ``[run] folds`` splits into folds
    fold_splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(
        self,
        size: int = 64,
        n_train: int = 320,
        n_val: int = 32,
        n_test: int = 64,
        positive_fraction: float = 0.5,
        mask_fraction: float = 0.15,
        noise_max_m: float = 0.006,
        seed: int = 0,
    ) -> None:
        """
        size: tile side in pixels (>= 16); the tile always covers 6.4 km.
        n_train, n_val, n_test: tiles per split (>= 0).
        positive_fraction: probability that a tile holds a moving area.
        mask_fraction: the mask is |LOS| >= mask_fraction x the tile's peak |LOS|.
        noise_max_m: largest standard deviation of the atmospheric noise (m, >= 2 mm).
        seed: non-negative integer.
        """
        ds = self.name
        self.size = check_int(ds, "size", size, 16)
        self.seed = check_int(ds, "seed", seed, 0)
        self._lengths = {
            "train": check_int(ds, "n_train", n_train, 0),
            "val": check_int(ds, "n_val", n_val, 0),
            "test": check_int(ds, "n_test", n_test, 0),
        }
        self.positive_fraction = check_float(ds, "positive_fraction", positive_fraction, 0.0, 1.0)
        self.mask_fraction = check_float(ds, "mask_fraction", mask_fraction, 1e-3, 1.0)
        self.noise_max_m = check_float(ds, "noise_max_m", noise_max_m, 0.0, 1.0)
        self._splits: dict[str, LazySplit] = {}
        self._mean: torch.Tensor | None = None

    def __repr__(self) -> str:
        n = self._lengths
        return (
            f"InsarMovingAreas(size={self.size}, n_train={n['train']}, n_val={n['val']}, n_test={n['test']}, "
            f"positive_fraction={self.positive_fraction}, seed={self.seed})"
        )

    def _split_index(self, name: str) -> int:
        if name not in SPLITS:
            raise UserError(did_you_mean(str(name), SPLITS, "split") + f" (dataset {self.name!r})")
        return SPLITS.index(name)

    def render(self, split: str, i: int) -> Tile:
        """The raw tile ``i >= 0`` of ``split`` (not memoised, not bounded by the split length)."""
        rng = np.random.default_rng([self.seed, self._split_index(split), int(i)])
        positive = bool(rng.random() < self.positive_fraction)
        return render_tile(rng, self.size, positive, self.mask_fraction, self.noise_max_m)

    def _sample(self, split: str, i: int) -> Sample:
        tile = self.render(split, i)
        return Sample(
            image=torch.from_numpy(tile.image),
            mask=torch.from_numpy(tile.mask.astype(np.int64)),
            image_id=f"insar-{split}-{i:04d}",
            label=tile.label,
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
            if self._lengths["train"]:
                self._mean = mean_of(self.split("train"), MEAN_TILES)
            else:
                images = [torch.from_numpy(self.render("train", i).image) for i in range(MEAN_TILES)]
                self._mean = torch.stack([im.mean(dim=(1, 2)) for im in images]).mean(0)
        return self._mean.clone()
