"""The files of the ``image_folder`` dataset: listing, reading images and masks in any common
format, box annotations (Pascal VOC XML, DeepForest CSV) turned into masks, label CSVs, tiles.

Every failure is one ``UserError`` line that names the file.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch

from xaibench.config.vocabulary import SPLITS
from xaibench.errors import UserError

#: file types read as images and masks (the suffix, case-insensitive)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
#: one box: (label, x0, y0, x1, y1) in 0-based pixel-edge coordinates (x1, y1 exclusive)
Box = tuple[str, float, float, float, float]

WHO = "image_folder"
#: the dataset named at the start of every error (:func:`speaking_as` sets it for another dataset)
_WHO: ContextVar[str] = ContextVar("folder_io_who", default=WHO)


@contextmanager
def speaking_as(name: str) -> Iterator[None]:
    """Within the block, errors of this module start ``name:`` instead of ``image_folder:``."""
    token = _WHO.set(name)
    try:
        yield
    finally:
        _WHO.reset(token)


def _detail(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def list_files(folder: Path, extensions: tuple[str, ...] = EXTENSIONS) -> dict[str, Path]:
    """stem -> path of the files of ``folder`` with one of ``extensions``; two files with one stem
    (``a.png`` and ``a.tif``) are an error naming both."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in extensions and p.is_file() and not p.name.startswith("."):
            if p.stem in found:
                raise UserError(f"{_WHO.get()}: {found[p.stem]} and {p} have the same name {p.stem!r}; keep one file per name in {folder}")
            found[p.stem] = p
    return found


def _pil(path: Path, mask: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        if mode == "LA" or (mask and mode == "PA"):  # drop the alpha band: grey levels, a mask's class ids
            return np.array(im.getchannel(0))
        if mode in ("1", "L", "I;16", "I", "F", "RGB") or (mask and mode == "P"):  # P: a mask's class ids
            return np.array(im)
        return np.array(im.convert("RGB"))  # RGBA, CMYK, YCbCr, palette images


def read_array(path: Path, what: str, mask: bool = False) -> np.ndarray:
    """``path`` (PNG, JPEG, BMP through Pillow; TIFF through tifffile; ``.npy``) as an array."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            arr = _pil(path, mask)
    except Exception as exc:  # the readers raise assorted errors for corrupt files
        raise UserError(f"{_WHO.get()}: cannot read {what} {path}: {_detail(exc)}") from exc
    arr = np.asarray(arr)
    if arr.dtype == object or arr.size == 0 or arr.dtype.kind not in "biuf":
        raise UserError(f"{_WHO.get()}: cannot read {what} {path}: not a numeric array ({arr.dtype}, shape {arr.shape})")
    return arr


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    """Height and width of an array of ``shape``: H x W, or 3-D with the channel axis the
    smaller of the first and the last (H x W x C or C x H x W)."""
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    return (int(shape[0]), int(shape[1])) if shape[2] <= shape[0] else (int(shape[1]), int(shape[2]))


def array_size(path: Path, what: str) -> tuple[int, int]:
    """(height, width) of the image at ``path`` from its header, without decoding the pixels."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        elif suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
        else:
            from PIL import Image

            with Image.open(path) as im:
                shape = (im.size[1], im.size[0])
    except Exception as exc:
        raise UserError(f"{_WHO.get()}: cannot read {what} {path}: {_detail(exc)}") from exc
    if len(shape) not in (2, 3):
        raise UserError(f"{_WHO.get()}: {what} {path} has shape {tuple(shape)}, expected H x W, H x W x C or C x H x W")
    return _hw(tuple(shape))


def _hwc(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        return arr[..., None]
    return arr if arr.shape[2] <= arr.shape[0] else arr.transpose(1, 2, 0)


def image_tensor(arr: np.ndarray, path: Path, channels: int) -> torch.Tensor:
    """An image array as float32 [C, H, W] in [0, 1]: uint8 / 255, uint16 / 65535, floats clipped;
    ``channels = 3`` repeats a grey image, ``channels = 1`` or ``3`` refuses other counts."""
    if arr.ndim not in (2, 3):
        raise UserError(f"{_WHO.get()}: image {path} has shape {arr.shape}, expected H x W, H x W x C or C x H x W")
    x = _hwc(arr)
    if x.dtype.kind == "u" and x.dtype.itemsize in (1, 2):  # uint8, uint16 (either byte order)
        x = x.astype(np.float32) / (255.0 if x.dtype.itemsize == 1 else 65535.0)
    elif x.dtype == np.bool_:
        x = x.astype(np.float32)
    elif x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise UserError(f"{_WHO.get()}: image {path} holds NaN or infinite values")
        x = np.clip(x.astype(np.float32), 0.0, 1.0)
    else:
        raise UserError(f"{_WHO.get()}: image {path} has pixel type {x.dtype}; expected uint8, uint16 or floats in [0, 1]")
    c = x.shape[2]
    if channels == 3 and c == 1:
        x = np.repeat(x, 3, axis=2)
    elif channels and c != channels:
        raise UserError(f"{_WHO.get()}: image {path} has {c} channels but [dataset] channels = {channels} (1: grey images only; 3: colour, or grey repeated)")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def mask_values(arr: np.ndarray, path: Path) -> np.ndarray:
    """A mask array as int64 [H, W]: one channel (or identical colour channels), integer values."""
    if arr.ndim == 3:
        x = _hwc(arr)
        if (x != x[..., :1]).any():
            raise UserError(f"{_WHO.get()}: mask {path} has {x.shape[2]} channels that differ; expected one channel of class ids (colour-coded masks are not read)")
        arr = x[..., 0]
    if arr.ndim != 2:
        raise UserError(f"{_WHO.get()}: mask {path} has shape {arr.shape}, expected H x W")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise UserError(f"{_WHO.get()}: mask {path} holds values that are not whole numbers; expected class ids")
    return arr.astype(np.int64)


def class_mask(m: np.ndarray, path: Path, foreground: tuple[int, ...], num_classes: int) -> np.ndarray:
    """Class ids of a mask: with ``foreground``, 1 where the mask holds one of those values; else a
    0/255 mask becomes 0/1 and class ids must be below ``num_classes``."""
    lo, hi = int(m.min()), int(m.max())
    if lo < 0:
        raise UserError(f"{_WHO.get()}: mask {path} holds the negative value {lo}; expected class ids >= 0")
    if foreground:
        return np.isin(m, foreground).astype(np.int64)
    if hi == 255 and num_classes <= 255:
        others = np.unique(m[(m != 0) & (m != 255)])
        if others.size:
            shown = ", ".join(str(v) for v in others[:5]) + (", ..." if others.size > 5 else "")
            raise UserError(
                f"{_WHO.get()}: mask {path} mixes 0/255 with other values ({shown}); a 0/255 mask holds only 0 and 255 "
                "(a lossy JPEG mask? save masks as PNG), class ids go from 0 to num_classes - 1"
            )
        return (m == 255).astype(np.int64)
    if hi >= num_classes:
        raise UserError(
            f"{_WHO.get()}: mask {path} holds class id {hi} but num_classes = {num_classes}; set [dataset] num_classes = {hi + 1}, "
            "or foreground = [ids] for a binary task"
        )
    return m


def _number(value: str | None, where: str, column: str) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{_WHO.get()}: {where}: {column} = {value!r} is not a number") from None
    if not math.isfinite(v):
        raise UserError(f"{_WHO.get()}: {where}: {column} = {value!r} is not a finite number")
    return v


def _box(label: str, x0: float, y0: float, x1: float, y1: float, where: str) -> Box:
    if x1 <= x0 or y1 <= y0:
        raise UserError(f"{_WHO.get()}: {where}: the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area (max <= min)")
    return (label, x0, y0, x1, y1)


def read_voc(path: Path) -> tuple[tuple[int, int] | None, list[Box]]:
    """A Pascal VOC annotation: (height, width) from ``<size>`` (``None`` when absent or 0) and its
    boxes, moved from VOC's 1-based inclusive corners to 0-based edges (``xmin - 1``, ``xmax``)."""
    try:
        tree = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise UserError(f"{_WHO.get()}: cannot read annotation {path}: {_detail(exc)}") from exc
    w, h = (tree.findtext(f"size/{k}") for k in ("width", "height"))
    size = (int(_number(h, str(path), "height")), int(_number(w, str(path), "width"))) if w and h else None
    boxes = []
    for k, obj in enumerate(tree.iter("object")):
        where = f"{path}, object {k + 1}"
        bb = obj.find("bndbox")
        if bb is None:
            raise UserError(f"{_WHO.get()}: {where} has no <bndbox>")
        x0, y0, x1, y1 = (_number(bb.findtext(c), where, c) for c in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(_box((obj.findtext("name") or "").strip(), x0 - 1, y0 - 1, x1, y1, where))
    return (size if size and all(size) else None), boxes


def _rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{_WHO.get()}: cannot read {path}: {_detail(exc)}") from exc
    missing = [c for c in required if c not in columns]
    if missing:
        raise UserError(f"{_WHO.get()}: {path} lacks the column(s) {', '.join(missing)}; its header is {', '.join(columns) or '(empty)'}")
    return columns, rows


def read_box_csv(path: Path) -> dict[str, list[Box]]:
    """Boxes per image stem from a CSV ``image_path,xmin,ymin,xmax,ymax[,label]`` (DeepForest's
    format: 0-based pixel edges); a row of four zeros marks an image without boxes."""
    columns, rows = _rows(path, ("image_path", "xmin", "ymin", "xmax", "ymax"))
    boxes: dict[str, list[Box]] = {}
    for line, row in rows:
        stem = Path((row.get("image_path") or "").strip()).stem
        where = f"{path}, line {line}"
        if not stem:
            raise UserError(f"{_WHO.get()}: {where}: image_path is empty")
        x0, y0, x1, y1 = (_number(row.get(c), where, c) for c in ("xmin", "ymin", "xmax", "ymax"))
        found = boxes.setdefault(stem, [])
        if (x0, y0, x1, y1) != (0, 0, 0, 0):
            found.append(_box((row.get("label") or "").strip() if "label" in columns else "", x0, y0, x1, y1, where))
    return boxes


def read_label_csv(path: Path) -> dict[str, int]:
    """Image-level labels per stem from a CSV with a ``label`` column and a ``stem`` column (the
    file name without extension) or an ``image`` column (a file name or path; its stem is used)."""
    columns, rows = _rows(path, ("label",))
    key = "stem" if "stem" in columns else "image" if "image" in columns else None
    if key is None:
        raise UserError(f"{_WHO.get()}: {path} needs a 'stem' or an 'image' column next to 'label'; its header is {', '.join(columns)}")
    labels: dict[str, int] = {}
    for line, row in rows:
        raw = (row.get(key) or "").strip()
        stem = raw if key == "stem" else Path(raw).stem
        text = (row.get("label") or "").strip()
        if not stem or not text.lstrip("-").isdigit() or int(text) < 0:
            raise UserError(f"{_WHO.get()}: {path}, line {line}: expected a name and a class id >= 0, got {key} = {raw!r}, label = {text!r}")
        if labels.setdefault(stem, int(text)) != int(text):
            raise UserError(f"{_WHO.get()}: {path}, line {line}: {stem!r} has two labels, {labels[stem]} and {text}")
    return labels


def box_mask(boxes: list[Box], size: tuple[int, int], classes: tuple[str, ...], where: str) -> np.ndarray:
    """An int64 [H, W] mask of ``boxes``: class 1 for every box, or with ``classes`` the box of
    label ``classes[k]`` class ``k + 1`` (other labels are left out); later boxes are drawn over
    earlier ones. A box covers the pixels whose centres lie inside it, at least one per axis."""
    h, w = size
    m = np.zeros((h, w), np.int64)
    for label, x0, y0, x1, y1 in boxes:
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            raise UserError(f"{_WHO.get()}: {where}: the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} image")
        if classes and label not in classes:
            continue
        r0, c0 = math.ceil(y0 - 0.5), math.ceil(x0 - 0.5)
        r1, c1 = max(math.ceil(y1 - 0.5), r0 + 1), max(math.ceil(x1 - 0.5), c0 + 1)
        m[max(r0, 0) : min(r1, h), max(c0, 0) : min(c1, w)] = classes.index(label) + 1 if classes else 1
    return m


def tile_origins(size: tuple[int, int], tile: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (row, column) of the full ``tile`` x ``tile`` tiles of an image, ``stride``
    apart, row-major; tiles that would cross the bottom or right edge are left out."""
    h, w = size
    return [(r, c) for r in range(0, h - tile + 1, stride) for c in range(0, w - tile + 1, stride)]


def assign_splits(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Indices of ``n`` sorted images per split: a seeded permutation, ``round(test_fraction * n)``
    to test first, then ``round(val_fraction * n)`` to val, the rest to train."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_test, n_val = math.floor(test_fraction * n + 0.5), math.floor(val_fraction * n + 0.5)
    cut = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    return {split: sorted(cut[split]) for split in SPLITS}
