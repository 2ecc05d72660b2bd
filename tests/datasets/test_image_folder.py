"""Tests of the ``image_folder`` dataset plugin, on tiny folders written here."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from xaibench.cli import main
from xaibench.datasets.base import Dataset
from xaibench.datasets.image_folder import ImageFolder
from xaibench.errors import UserError
from xaibench.testing import check_dataset

H, W = 32, 48


def image(k: int, h: int = H, w: int = W, c: int = 3, dtype=np.uint8) -> np.ndarray:
    hi = 256 if dtype == np.uint8 else 65536
    shape = (h, w) if c == 0 else (h, w, c)
    return np.random.default_rng(k).integers(0, hi, shape).astype(dtype)


def mask(k: int, h: int = H, w: int = W, value: int = 255) -> np.ndarray:
    """A rectangle of ``value`` that moves with ``k``; ``k < 0``: an empty mask."""
    m = np.zeros((h, w), np.uint8)
    if k >= 0:
        m[2 + k % 10 : 12 + k % 10, 3 : 3 + 2 * (k % 7 + 1)] = value
    return m


def write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, arr)
    elif suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, arr, photometric="rgb" if arr.ndim == 3 and arr.shape[2] == 3 else None)
    else:
        Image.fromarray(arr).save(path)
    return path


def flat_tree(root: Path, n: int, ext: str = ".png", mask_ext: str = ".png", masks=None) -> Path:
    for k in range(n):
        write(root / "images" / f"s{k:02d}{ext}", image(k))
        write(root / "masks" / f"s{k:02d}{mask_ext}", mask(k) if masks is None else masks(k))
    return root


def split_tree(root: Path, counts=(("train", 3), ("val", 2), ("test", 2))) -> Path:
    k = 0
    for split, n in counts:
        for _ in range(n):
            write(root / split / "images" / f"{split}_{k}.png", image(k))
            write(root / split / "masks" / f"{split}_{k}.png", mask(k))
            k += 1
    return root


def every(ds: ImageFolder):
    return {s: list(ds.split(s)) for s in ds.fold_splits}


def one_line_error(fn, *names: object) -> str:
    with pytest.raises(UserError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg
    for name in names:
        assert str(name) in msg, msg
    return msg


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext, mask_ext", [(".png", ".png"), (".tif", ".tif"), (".tiff", ".npy"), (".npy", ".png"), (".jpg", ".png"), (".JPEG", ".tif")])
def test_each_format_reads_the_pixels_of_the_file(tmp_path: Path, ext: str, mask_ext: str):
    root = flat_tree(tmp_path / "d", 5, ext, mask_ext)
    ds = ImageFolder(root=str(root), val_fraction=0.0, test_fraction=0.0)
    assert isinstance(ds, Dataset) and ds.num_classes == 2 and ds.fold_splits == ("train",)
    train = ds.split("train")
    assert [s.image_id for s in train] == [f"s{k:02d}" for k in range(5)]
    for k, s in enumerate(train):
        path = root / "images" / f"s{k:02d}{ext}"
        held = np.array(Image.open(path)) if ext.lower() in (".jpg", ".jpeg") else image(k)  # JPEG is lossy
        assert s.image.dtype == torch.float32 and s.image.shape == (3, H, W)
        assert torch.allclose(s.image, torch.from_numpy(held).permute(2, 0, 1).float() / 255)
        assert s.mask.dtype == torch.int64 and torch.equal(s.mask, torch.from_numpy(mask(k) // 255).long())
        assert s.label == 1


def test_uint16_float_and_channels_first_images(tmp_path: Path):
    root = tmp_path / "d"
    u16 = image(1, dtype=np.uint16)
    write(root / "images" / "a.tif", u16)
    floats = np.linspace(-0.5, 1.5, 3 * H * W).reshape(3, H, W).astype(np.float32)  # C x H x W, out of range
    write(root / "images" / "b.npy", floats)
    for stem in "ab":
        write(root / "masks" / f"{stem}.png", mask(2, value=1))
    a, b = ImageFolder(root=str(root), val_fraction=0.0, test_fraction=0.0).split("train")
    assert torch.allclose(a.image, torch.from_numpy(u16.astype(np.float32) / 65535).permute(2, 0, 1))
    assert torch.equal(b.image, torch.from_numpy(floats).clamp(0, 1)) and b.image.min() == 0 and b.image.max() == 1
    assert torch.equal(a.mask, torch.from_numpy(mask(2, value=1)).long())


def test_grey_images_kept_or_repeated(tmp_path: Path):
    root = tmp_path / "d"
    grey = image(3, c=0)
    write(root / "images" / "g.png", grey)
    write(root / "masks" / "g.png", mask(0))
    kept = ImageFolder(root=str(root), test_fraction=0.0, val_fraction=0.0).split("train")[0]
    assert kept.image.shape == (1, H, W) and torch.allclose(kept.image[0], torch.from_numpy(grey).float() / 255)
    rgb = ImageFolder(root=str(root), channels=3, test_fraction=0.0, val_fraction=0.0).split("train")[0]
    assert rgb.image.shape == (3, H, W) and all(torch.equal(rgb.image[c], kept.image[0]) for c in range(3))
    write(root / "images" / "g.png", image(3))
    one = ImageFolder(root=str(root), channels=1, test_fraction=0.0, val_fraction=0.0).split("train")
    one_line_error(lambda: one[0], root / "images" / "g.png", "channels = 1")


# --- layouts and splits ----------------------------------------------------------------------


def test_split_subfolders(tmp_path: Path):
    root = split_tree(tmp_path / "d")
    ds = ImageFolder(root=str(root))
    assert ds.layout == "split" and ds.fold_splits == ("train", "val", "test")
    assert {s: [x.image_id for x in v] for s, v in every(ds).items()} == {
        "train": ["train_0", "train_1", "train_2"], "val": ["val_3", "val_4"], "test": ["test_5", "test_6"],
    }
    assert torch.equal(ds.split("test")[1].mask, torch.from_numpy(mask(6) // 255).long())


def test_configurable_folder_names(tmp_path: Path):
    root = tmp_path / "d"
    for k in range(3):
        write(root / "test" / "rgb" / f"t{k}.png", image(k))
        write(root / "test" / "gt" / f"t{k}.png", mask(k))
    ds = ImageFolder(root=str(root), images="rgb", masks="gt")
    assert len(ds.split("test")) == 3 and ds.fold_splits == ("test",)
    one_line_error(lambda: ImageFolder(root=str(root)), root / "test" / "images")


def test_seeded_split_is_deterministic_disjoint_and_complete(tmp_path: Path):
    root = flat_tree(tmp_path / "d", 20)
    ids = lambda ds: {s: [x.image_id for x in v] for s, v in every(ds).items()}
    first = ids(ImageFolder(root=str(root), seed=3))
    assert first == ids(ImageFolder(root=str(root), seed=3))
    assert {s: len(v) for s, v in first.items()} == {"train": 14, "val": 2, "test": 4}
    everything = [i for v in first.values() for i in v]
    assert sorted(everything) == [f"s{k:02d}" for k in range(20)] and len(set(everything)) == 20
    assert first["test"] != ids(ImageFolder(root=str(root), seed=4))["test"]
    other = ids(ImageFolder(root=str(root), seed=3, val_fraction=0.25, test_fraction=0.5))
    assert {s: len(v) for s, v in other.items()} == {"train": 5, "val": 5, "test": 10}


# --- masks and labels ------------------------------------------------------------------------


def classes(k: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[:10, :10], m[10:20, 10:20], m[20:, 20:] = 1, 2, 3 if k else 0
    return m


def test_foreground_picks_classes(tmp_path: Path):
    root = flat_tree(tmp_path / "d", 2, masks=classes)
    opts = {"root": str(root), "val_fraction": 0.0, "test_fraction": 0.0}
    for fg in (2, [2]):
        ds = ImageFolder(**opts, foreground=fg)
        assert ds.num_classes == 2
        assert all(torch.equal(s.mask, torch.from_numpy(classes(k) == 2).long()) for k, s in enumerate(ds.split("train")))
    both = ImageFolder(**opts, foreground=[1, 3]).split("train")
    assert torch.equal(both[1].mask, torch.from_numpy(np.isin(classes(1), [1, 3])).long())
    assert [s.label for s in ImageFolder(**opts, foreground=3).split("train")] == [0, 1]  # s00 has no class 3


def test_class_ids_kept_with_num_classes_else_one_error(tmp_path: Path):
    root = flat_tree(tmp_path / "d", 2, masks=classes)
    ds = ImageFolder(root=str(root), num_classes=4, val_fraction=0.0, test_fraction=0.0)
    assert ds.num_classes == 4 and torch.equal(ds.split("train")[1].mask, torch.from_numpy(classes(1)).long())
    binary = ImageFolder(root=str(root), val_fraction=0.0, test_fraction=0.0).split("train")
    one_line_error(lambda: binary[0], root / "masks" / "s00.png", "class id 2", "num_classes = 3")


def test_masks_0_1_and_0_255_become_0_1(tmp_path: Path):
    root = flat_tree(tmp_path / "d", 2, masks=lambda k: mask(k, value=255 if k else 1))
    a, b = ImageFolder(root=str(root), val_fraction=0.0, test_fraction=0.0).split("train")
    assert torch.equal(a.mask, torch.from_numpy(mask(0, value=1)).long())
    assert torch.equal(b.mask, torch.from_numpy(mask(1, value=1)).long())


def test_labels_from_masks_and_from_csv(tmp_path: Path):
    root = flat_tree(tmp_path / "d", 3, masks=lambda k: mask(k if k != 1 else -1))
    opts = {"root": str(root), "val_fraction": 0.0, "test_fraction": 0.0}
    assert [s.label for s in ImageFolder(**opts).split("train")] == [1, 0, 1]
    (root / "labels.csv").write_text("image,label\nimages/s00.png,4\ns01.png,0\ns02.png,2\nnot_here.png,1\n")
    assert [s.label for s in ImageFolder(**opts, labels="labels.csv").split("train")] == [4, 0, 2]
    (root / "by_stem.csv").write_text("stem,label\ns02,1\ns00,0\ns01,3\n")
    assert [s.label for s in ImageFolder(**opts, labels=str(root / "by_stem.csv")).split("train")] == [0, 3, 1]
    (root / "short.csv").write_text("stem,label\ns00,1\ns02,1\n")
    one_line_error(lambda: ImageFolder(**opts, labels="short.csv"), root / "images" / "s01.png", "short.csv")
    (root / "bad.csv").write_text("name,label\ns00,1\n")
    one_line_error(lambda: ImageFolder(**opts, labels="bad.csv"), "bad.csv", "'stem' or an 'image' column")


# --- tiles -----------------------------------------------------------------------------------


def test_tiles_are_the_full_tiles_of_each_scene(tmp_path: Path):
    root = tmp_path / "d"
    scene, scene_mask = image(7, h=40, w=72), mask(5, h=40, w=72)
    write(root / "test" / "images" / "big.tif", scene)
    write(root / "test" / "masks" / "big.png", scene_mask)
    tiles = ImageFolder(root=str(root), tile=16).split("test")
    assert len(tiles) == 2 * 4  # rows 0, 16 (32 + 16 > 40); columns 0, 16, 32, 48 (64 + 16 > 72)
    assert [t.image_id for t in tiles][:5] == ["big@r0_c0", "big@r0_c16", "big@r0_c32", "big@r0_c48", "big@r16_c0"]
    for t in tiles:
        r, c = (int(part[1:]) for part in t.image_id.split("@")[1].split("_"))
        want = torch.from_numpy(scene[r : r + 16, c : c + 16]).permute(2, 0, 1).float() / 255
        assert t.image.shape == (3, 16, 16) and torch.allclose(t.image, want)
        assert torch.equal(t.mask, torch.from_numpy(scene_mask[r : r + 16, c : c + 16] // 255).long())
        assert t.label == int(scene_mask[r : r + 16, c : c + 16].any())
    strided = ImageFolder(root=str(root), tile=32, stride=8).split("test")
    assert len(strided) == 2 * 6 and strided[-1].image_id == "big@r8_c40"
    one_line_error(lambda: ImageFolder(root=str(root), tile=64).split("test"), root / "test" / "images" / "big.tif", "smaller than tile = 64")


# --- boxes -----------------------------------------------------------------------------------


VOC = """<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = "<object><name>{label}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"


def test_voc_boxes_become_box_masks(tmp_path: Path):
    root = tmp_path / "d"
    for k in range(2):
        write(root / "images" / f"b{k}.jpg", image(k))
    objects = OBJ.format(label="car", x0=1, y0=1, x1=4, y1=3) + OBJ.format(label="tree", x0=11, y0=6, x1=20, y1=30)
    (root / "annotations").mkdir()
    (root / "annotations" / "b0.xml").write_text(VOC.format(name="b0.jpg", w=W, h=H, objects=objects))
    (root / "annotations" / "b1.xml").write_text(VOC.format(name="b1.jpg", w=W, h=H, objects=""))
    ds = ImageFolder(root=str(root), boxes="voc", val_fraction=0.0, test_fraction=0.0)
    want = np.zeros((H, W), np.int64)
    want[0:3, 0:4] = 1  # VOC corners are 1-based and inclusive
    want[5:30, 10:20] = 1
    b0, b1 = ds.split("train")
    assert ds.num_classes == 2 and torch.equal(b0.mask, torch.from_numpy(want)) and b0.label == 1
    assert not b1.mask.any() and b1.label == 0
    trees = ImageFolder(root=str(root), boxes="voc", box_classes=["car", "tree"], val_fraction=0.0, test_fraction=0.0)
    want[0:3, 0:4] = 1
    want[5:30, 10:20] = 2
    assert trees.num_classes == 3 and torch.equal(trees.split("train")[0].mask, torch.from_numpy(want))


def test_csv_boxes_as_deepforest_writes_them(tmp_path: Path):
    root = tmp_path / "d"
    for k in range(3):
        write(root / "images" / f"f{k}.png", image(k))
    (root / "boxes.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\nf0.png,2,3,10,8,Tree\nf0.png,30.4,0,48,5.6,Tree\nf1.png,0,0,0,0,Tree\nf2.png,5,5,9,9,Bush\n"
    )
    ds = ImageFolder(root=str(root), boxes="csv:boxes.csv", val_fraction=0.0, test_fraction=0.0)
    f0, f1, f2 = ds.split("train")
    want = np.zeros((H, W), np.int64)
    want[3:8, 2:10] = 1
    want[0:6, 30:48] = 1  # pixels whose centres are inside the box
    assert torch.equal(f0.mask, torch.from_numpy(want))
    assert not f1.mask.any() and f1.label == 0 and f2.mask.sum() == 16
    only_trees = ImageFolder(root=str(root), boxes="csv:boxes.csv", box_classes=["Tree"], val_fraction=0.0, test_fraction=0.0)
    assert not only_trees.split("train")[2].mask.any()


# --- every bad input: one line naming the file -----------------------------------------------


def test_missing_root_says_the_layout(tmp_path: Path):
    msg = one_line_error(lambda: ImageFolder(root=str(tmp_path / "nowhere")), tmp_path / "nowhere", "does not exist")
    assert "images/NAME.*" in msg and "masks/NAME.*" in msg and "train" in msg


def test_pairing_is_checked_when_built(tmp_path: Path):
    root = flat_tree(tmp_path / "d", 3)
    (root / "masks" / "s01.png").unlink()
    one_line_error(lambda: ImageFolder(root=str(root)), root / "images" / "s01.png", "has no mask")
    write(root / "masks" / "s01.png", mask(1))
    write(root / "masks" / "extra.png", mask(1))
    one_line_error(lambda: ImageFolder(root=str(root)), root / "masks" / "extra.png", "has no image")
    (root / "masks" / "extra.png").unlink()
    write(root / "images" / "s02.tif", image(2))
    one_line_error(lambda: ImageFolder(root=str(root)), root / "images" / "s02.tif", root / "images" / "s02.png")


def test_box_annotations_are_paired_too(tmp_path: Path):
    root = tmp_path / "d"
    write(root / "images" / "a.png", image(0))
    (root / "annotations").mkdir()
    one_line_error(lambda: ImageFolder(root=str(root), boxes="voc"), root / "images" / "a.png", root / "annotations" / "a.xml")
    (root / "boxes.csv").write_text("image_path,xmin,ymin,xmax,ymax\na.png,1,1,5,5\nb.png,1,1,5,5\n")
    one_line_error(lambda: ImageFolder(root=str(root), boxes="csv:boxes.csv"), "boxes.csv", "'b'")
    (root / "boxes.csv").write_text("image_path,xmin,ymin,xmax,ymax\na.png,1,1,500,5\n")
    ds = ImageFolder(root=str(root), boxes="csv:boxes.csv", val_fraction=0.0, test_fraction=0.0)
    clipped = ds.split("train")[0].mask
    assert clipped[1:5, 1:].all() and clipped.sum() == 4 * (W - 1)  # cut at the image's edge
    (root / "boxes.csv").write_text("image_path,xmin,ymin,xmax,ymax\na.png,100,1,500,5\n")
    ds = ImageFolder(root=str(root), boxes="csv:boxes.csv", val_fraction=0.0, test_fraction=0.0)
    one_line_error(lambda: ds.split("train")[0], "boxes.csv", "outside")
    (root / "boxes.csv").write_text("image_path,xmin,ymin,xmax,ymax\na.png,9,1,5,5\n")
    one_line_error(lambda: ImageFolder(root=str(root), boxes="csv:boxes.csv"), "boxes.csv", "line 2", "no area")


@pytest.mark.parametrize(
    "what, words",
    [
        ("image_size", "is 20x32 but its image"),
        ("mask_size", "is 48x32 but its image"),
        ("unreadable", "cannot read image"),
        ("mixed", "mixes 0/255 with other values (7)"),
        ("negative", "negative value -1"),
        ("colour_mask", "channels that differ"),
        ("annotation_size", "is 99x32 but its image"),
    ],
)
def test_bad_sample_is_one_line_naming_the_file(tmp_path: Path, what: str, words: str):
    root = flat_tree(tmp_path / "d", 2)
    boxes = ""
    if what == "image_size":
        bad = write(root / "masks" / "s01.png", mask(1, w=20))
    elif what == "mask_size":
        bad = write(root / "images" / "s01.png", image(1, w=20))
    elif what == "unreadable":
        bad = root / "images" / "s01.png"
        bad.write_bytes(b"not a png")
    elif what == "mixed":
        bad = write(root / "masks" / "s01.png", mask(1) | np.eye(H, W, dtype=np.uint8) * 7)
    elif what == "negative":
        (root / "masks" / "s01.png").unlink()
        bad = write(root / "masks" / "s01.npy", -mask(1, value=1).astype(np.int16))
    elif what == "colour_mask":
        bad = write(root / "masks" / "s01.png", np.stack([mask(1), mask(2), mask(1)], axis=2))
    else:
        boxes = "voc"
        (root / "annotations").mkdir()
        for k in range(2):
            (root / "annotations" / f"s0{k}.xml").write_text(VOC.format(name="x", w=99 if k else W, h=H, objects=""))
        bad = root / "annotations" / "s01.xml"
    train = ImageFolder(root=str(root), boxes=boxes, val_fraction=0.0, test_fraction=0.0).split("train")
    assert train[0].image_id == "s00"  # the good one still loads
    msg = one_line_error(lambda: train[1], bad, words)
    if what in ("image_size", "mask_size"):
        assert str(root / "images" / "s01.png") in msg


def test_images_of_a_split_need_one_size(tmp_path: Path):
    root = flat_tree(tmp_path / "d", 2)
    write(root / "images" / "s01.png", image(1, h=H // 2, w=W // 2))
    write(root / "masks" / "s01.png", mask(1, h=H // 2, w=W // 2))
    train = ImageFolder(root=str(root), val_fraction=0.0, test_fraction=0.0).split("train")
    train[0]
    one_line_error(lambda: train[1], root / "images" / "s01.png", root / "images" / "s00.png", "one size")


def test_empty_split(tmp_path: Path):
    root = split_tree(tmp_path / "d", counts=(("train", 2), ("test", 1)))
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "masks").mkdir()
    ds = ImageFolder(root=str(root))
    assert ds.fold_splits == ("train", "test")
    one_line_error(lambda: ds.split("val"), root / "val" / "images", "empty")
    flat = ImageFolder(root=str(flat_tree(tmp_path / "f", 3)), val_fraction=0.0)
    one_line_error(lambda: flat.split("val"), "val_fraction = 0", "empty")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"boxes": "xml"}, "boxes"),
        ({"foreground": [], "num_classes": 0}, "foreground"),
        ({"foreground": 1, "num_classes": 3}, "num_classes"),
        ({"num_classes": 1}, "num_classes = 1"),
        ({"channels": 2}, "channels = 2"),
        ({"stride": 8}, "stride"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "below 1"),
        ({"box_classes": ["car"]}, "box_classes"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict, words: str):
    root = flat_tree(tmp_path / "d", 2)
    one_line_error(lambda: ImageFolder(root=str(root), **kwargs), words, "image_folder")


def test_fractions_with_split_folders_are_refused(tmp_path: Path):
    root = split_tree(tmp_path / "d")
    one_line_error(lambda: ImageFolder(root=str(root), test_fraction=0.5), "test_fraction", "flat layout")


# --- the contract, and xaibench validate -----------------------------------------------------


def test_check_dataset_and_channel_mean(tmp_path: Path):
    root = flat_tree(tmp_path / "d", 6)
    ds = check_dataset(ImageFolder, {"root": str(root), "tile": 16})
    want = torch.stack([s.image.mean(dim=(1, 2)) for s in ds.split("train")]).mean(0)
    assert torch.allclose(ds.channel_mean(), want, atol=1e-6)


CONFIG = """
[benchmark]
name = "folder"
seed = 1

[dataset]
name = "image_folder"
root = "{root}"
test_fraction = 0.5
val_fraction = 0.0

[model]
name = "smp_unet"
encoder_depth = 3
decoder_channels = [16, 8, 4]
epochs = 1
batch_size = 2

[grid]
explainers = ["grad_cam"]
layers = ["decoder1"]
thresholds = [0.5]
perturbations = ["background_only"]
metrics = ["confidence"]
"""


def test_xaibench_validate_reads_the_folder(tmp_path: Path, capsys):
    root = tmp_path / "data"
    for k in range(4):
        write(root / "images" / f"p{k}.png", image(k, h=64, w=64))
        write(root / "masks" / f"p{k}.png", mask(k, h=64, w=64))
    config = tmp_path / "folder.toml"
    config.write_text(textwrap.dedent(CONFIG.format(root=root)))
    assert main(["validate", str(config)]) == 0
    assert "image_folder/test" in capsys.readouterr().out
    test_ids = [s.image_id for s in ImageFolder(root=str(root), seed=1, test_fraction=0.5, val_fraction=0.0).split("test")]
    write(root / "masks" / f"{test_ids[0]}.png", mask(0, h=64, w=64) | 3)  # the first test mask: 0/255 mixed with 3
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and str(root / "masks" / f"{test_ids[0]}.png") in err
