"""InSAR moving-area datasets: seeded synthetic interferograms (``insar_moving_areas``) and a
folder loader for real tiles (``insar_folder``).

Input representation (both datasets)
------------------------------------
A wrapped interferometric phase ``phi`` with coherence ``gamma`` in [0, 1] becomes two
channels in [0, 1]::

    channel 0 = (1 + gamma * cos(phi)) / 2
    channel 1 = (1 + gamma * sin(phi)) / 2

i.e. the authors' ECSPLAIN input ``[gamma cos(phi), gamma sin(phi)]`` mapped from [-1, 1] to
[0, 1]. The (cos, sin) pair removes the 2 pi discontinuities of the wrapped phase, and the
coherence weighting makes decorrelated pixels fade towards 0.5 (no information).

Synthetic tiles (``insar_moving_areas``)
----------------------------------------
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

Real tiles (``insar_folder``)
-----------------------------
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
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from xaibench.plugin import LazySplit, Sample, UserError, did_you_mean

SPLITS = ("train", "val", "test")
#: tiles used by ``channel_mean``
MEAN_TILES = 64
#: tile side in km (whatever the resolution)
EXTENT_KM = 6.4
WAVELENGTH_M = 0.05546  # Sentinel-1 C band
LOOKS = 8


def phase_channels(phase: np.ndarray, coherence: np.ndarray | float = 1.0) -> np.ndarray:
    """Wrapped phase [H, W] (radians) and coherence -> float32 [2, H, W] in [0, 1]."""
    coh = np.clip(np.asarray(coherence, dtype=np.float64), 0.0, 1.0)
    out = np.stack([(1 + coh * np.cos(phase)) / 2, (1 + coh * np.sin(phase)) / 2])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _check_int(dataset: str, key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"[dataset] {key} for dataset {dataset!r} must be an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"[dataset] {key} = {value} for dataset {dataset!r} is invalid: must be >= {minimum}")
    return int(value)


def _check_float(dataset: str, key: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise UserError(f"[dataset] {key} for dataset {dataset!r} must be a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise UserError(f"[dataset] {key} = {value} for dataset {dataset!r} is invalid: must be in [{lo}, {hi}]")
    return float(value)


def _mean_of(split: Sequence[Sample], n: int) -> torch.Tensor:
    images = [split[i].image for i in range(min(n, len(split)))]
    return torch.stack([im.mean(dim=(1, 2)) for im in images]).mean(0)


# --------------------------------------------------------------------------------------------
# synthetic interferograms
# --------------------------------------------------------------------------------------------


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
        self.size = _check_int(ds, "size", size, 16)
        self.seed = _check_int(ds, "seed", seed, 0)
        self._lengths = {
            "train": _check_int(ds, "n_train", n_train, 0),
            "val": _check_int(ds, "n_val", n_val, 0),
            "test": _check_int(ds, "n_test", n_test, 0),
        }
        self.positive_fraction = _check_float(ds, "positive_fraction", positive_fraction, 0.0, 1.0)
        self.mask_fraction = _check_float(ds, "mask_fraction", mask_fraction, 1e-3, 1.0)
        self.noise_max_m = _check_float(ds, "noise_max_m", noise_max_m, 0.0, 1.0)
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
                self._mean = _mean_of(self.split("train"), MEAN_TILES)
            else:
                images = [torch.from_numpy(self.render("train", i).image) for i in range(MEAN_TILES)]
                self._mean = torch.stack([im.mean(dim=(1, 2)) for im in images]).mean(0)
        return self._mean.clone()


# --------------------------------------------------------------------------------------------
# real tiles from a folder
# --------------------------------------------------------------------------------------------

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
        self.limit = _check_int(self.name, "limit", limit, 0)
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
            self._mean = _mean_of(train, MEAN_TILES)
        return self._mean.clone()


# --------------------------------------------------------------------------------------------
# training-time augmentation
# --------------------------------------------------------------------------------------------


def augment(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Random geometric and phase augmentation of a training batch (global torch RNG).

    Each image (and its mask) gets a random rotation by a multiple of 90 degrees and a random
    horizontal flip; two-channel images (the [cos, sin] encoding above) also get a random global
    phase offset -- the authors' augmentation: (2x - 1) is rotated by the offset in the
    (cos, sin) plane, which keeps the coherence. Non-square tiles only turn by 0 or 180 degrees.
    """
    out_x, out_m = [], []
    square = images.shape[-1] == images.shape[-2]
    for x, m in zip(images, masks):
        k = int(torch.randint(4, (1,)))
        k = k if square else 2 * (k % 2)
        x, m = torch.rot90(x, k, dims=(-2, -1)), torch.rot90(m, k, dims=(-2, -1))
        if bool(torch.rand(()) < 0.5):
            x, m = torch.flip(x, dims=(-1,)), torch.flip(m, dims=(-1,))
        if x.shape[0] == 2:
            alpha = float(torch.rand(())) * 2 * np.pi
            c, s = 2 * x[0] - 1, 2 * x[1] - 1
            ca, sa = np.cos(alpha), np.sin(alpha)
            x = torch.stack([c * ca - s * sa, c * sa + s * ca]).add(1).div(2).clamp(0, 1)
        out_x.append(x)
        out_m.append(m)
    return torch.stack(out_x), torch.stack(out_m)
