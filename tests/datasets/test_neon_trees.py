"""Tests of the ``neon_trees`` dataset on tiny fake trees written here: a fake ``deepforest``
package (its data files only, as the real one ships them) and a NeonTreeEvaluation folder.
Neither needs the real package."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from xaibench.cli import main
from xaibench.datasets import neon_trees
from xaibench.datasets.base import Dataset
from xaibench.datasets.neon_trees import SHIPPED, NeonTrees
from xaibench.errors import MissingPackage, UserError
from xaibench.testing import check_dataset

TRAIN, (YELL, OSBS, SOAP) = SHIPPED["train"][0], SHIPPED["test"]
#: (height, width) of the fake scenes; the real ones are 2472 x 2299, 1035 x 1249, 400 x 400, 400 x 400
SIZES = {TRAIN: (72, 64), YELL: (40, 48), OSBS: (32, 32), SOAP: (32, 34)}
#: VOC boxes (1-based corners, inclusive): one or two per scene
BOXES = {TRAIN: [(3, 5, 10, 12), (33, 41, 48, 56)], YELL: [(1, 1, 16, 8)], OSBS: [(9, 9, 24, 24)], SOAP: [(17, 1, 32, 16)]}


def pixels(stem: str) -> np.ndarray:
    h, w = SIZES[stem]
    return np.random.default_rng(len(stem) + h).integers(0, 256, (h, w, 3)).astype(np.uint8)


def voc(stem: str, boxes=None, size=None) -> str:
    h, w = size or SIZES[stem]
    objects = "".join(
        f"<object><name>Tree</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for x0, y0, x1, y1 in (BOXES[stem] if boxes is None else boxes)
    )
    return f"<annotation><filename>{stem}.png</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch) -> Path:
    """A ``deepforest`` package folder holding only the data files the loader reads, first on sys.path."""
    data = tmp_path / "site" / "deepforest" / "data"
    data.mkdir(parents=True)
    (data.parent / "__init__.py").write_text("raise ImportError('the loader must not import deepforest')\n")
    for stem in SIZES:
        Image.fromarray(pixels(stem)).save(data / f"{stem}.png")
        (data / f"{stem}.xml").write_text(voc(stem))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return data


def evaluation_tree(root: Path, extra_image: bool = True) -> Path:
    """The NeonTreeEvaluation layout: annotations/, training/RGB/, evaluation/RGB/ (one plot without annotation)."""
    (root / "annotations").mkdir(parents=True)
    for folder, stems in (("training", [TRAIN]), ("evaluation", [OSBS, SOAP])):
        (root / folder / "RGB").mkdir(parents=True)
        for stem in stems:
            tifffile.imwrite(root / folder / "RGB" / f"{stem}.tif", pixels(stem), photometric="rgb")
            (root / "annotations" / f"{stem}.xml").write_text(voc(stem))
    if extra_image:
        tifffile.imwrite(root / "evaluation" / "RGB" / "UNLABELLED_001.tif", pixels(OSBS), photometric="rgb")
    return root


def box_mask(stem: str) -> np.ndarray:
    m = np.zeros(SIZES[stem], np.int64)
    for x0, y0, x1, y1 in BOXES[stem]:
        m[y0 - 1 : y1, x0 - 1 : x1] = 1
    return m


def one_line(fn, *words) -> str:
    with pytest.raises(UserError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg, msg
    for w in words:
        assert str(w) in msg, msg
    return msg


def test_the_packaged_scenes_are_tiled_with_box_masks_and_the_other_scenes_for_test(fake_package: Path):
    ds = NeonTrees(tile=16, downsample=1, test="scenes", val_fraction=0.25)
    assert isinstance(ds, Dataset) and ds.num_classes == 2 and "deepforest" in repr(ds)
    train, val, test = (ds.split(s) for s in ("train", "val", "test"))
    # the training scene is 72 x 64: 4 tile rows of 16 (72 // 16); the bottom one (0.25 x 4) is val
    assert len(train) == 3 * 4 and len(val) == 4
    assert {s.image_id.split("@")[0] for s in train} == {s.image_id.split("@")[0] for s in val} == {TRAIN}
    assert max(int(s.image_id.split("@r")[1].split("_")[0]) for s in train) + 16 <= min(int(s.image_id.split("@r")[1].split("_")[0]) for s in val)
    # test: the three other scenes, without overlap: (40 // 16) x (48 // 16) + 2 x 2 + 2 x 2
    assert len(test) == 6 + 4 + 4 and {s.image_id.split("@")[0] for s in test} == {YELL, OSBS, SOAP}
    want_image, want_mask = torch.from_numpy(pixels(TRAIN)).permute(2, 0, 1).float() / 255, box_mask(TRAIN)
    for s in list(train) + list(val):
        r, c = (int(v) for v in s.image_id.split("@r")[1].split("_c"))
        assert torch.allclose(s.image, want_image[:, r : r + 16, c : c + 16])
        assert np.array_equal(s.mask.numpy(), want_mask[r : r + 16, c : c + 16]) and s.label == int(want_mask[r : r + 16, c : c + 16].any())
    first = {s.image_id: s for s in test}[f"{YELL}@r0_c0"]
    assert first.mask.sum() == 16 * 8 and first.mask[:8, :16].all()  # VOC (xmin, ymin, xmax, ymax) = (1, 1, 16, 8): 8 rows, 16 columns


def test_by_default_the_right_of_the_training_scene_is_test_spatially_apart(fake_package: Path):
    ds = NeonTrees(tile=16, downsample=1, test_fraction=0.25, val_fraction=0.25)
    assert "test='band'" in repr(ds)
    corners = {s: [tuple(int(v) for v in x.image_id.split("@r")[1].split("_c")) for x in ds.split(s)] for s in ("train", "val", "test")}
    for split in corners:
        assert {x.image_id.split("@")[0] for x in ds.split(split)} == {TRAIN}  # the other scenes are not used
    # 72 x 64: 4 tile columns, the right one (0.25 x 4) is test over the full height (4 rows);
    # of the left 48 columns, the bottom tile row (0.25 x 4) is val, the rest train
    assert sorted(corners["test"]) == [(r, 48) for r in (0, 16, 32, 48)]
    assert sorted(corners["val"]) == [(56, c) for c in (0, 16, 32)]
    assert all(r + 16 <= 56 and c + 16 <= 48 for r, c in corners["train"]) and len(corners["train"]) == 9
    strided = NeonTrees(tile=16, stride=8, downsample=1, test_fraction=0.25, val_fraction=0.25).split("train")
    assert len(strided) == 6 * 5  # rows 0..40 step 8 (tiles ending by 56), columns 0..32 step 8 (ending by 48)
    with pytest.raises(UserError, match="test_fraction = 0 of the training scenes' tile columns"):
        NeonTrees(tile=16, downsample=1, test_fraction=0.0).split("test")


def test_downsampling_averages_the_image_and_keeps_the_box_where_half_a_block_is_in(fake_package: Path):
    ds = NeonTrees(tile=8, downsample=4, test="scenes", val_fraction=0.0)
    s = ds.split("train")[0]
    assert s.image_id == f"{TRAIN}@r0_c0"
    full = torch.from_numpy(pixels(TRAIN)).permute(2, 0, 1).float() / 255
    assert torch.allclose(s.image, full[:, :32, :32].reshape(3, 8, 4, 8, 4).mean(dim=(2, 4)), atol=1e-6)
    blocks = box_mask(TRAIN)[:32, :32].reshape(8, 4, 8, 4).mean(axis=(1, 3))
    assert np.array_equal(s.mask.numpy(), (blocks >= 0.5).astype(np.int64)) and s.mask.any()
    with pytest.raises(UserError, match="split 'val' is empty"):
        ds.split("val")


def test_tiles_are_pure_functions_of_the_parameters_and_index(fake_package: Path):
    a, b = NeonTrees(tile=16, downsample=1, test="scenes"), NeonTrees(tile=16, downsample=1, test="scenes")
    test_a, test_b = a.split("test"), b.split("test")
    late = test_b[len(test_b) - 1]  # read first in b, last in a
    for i in range(len(test_a)):
        assert test_a[i].image_id == test_b[i].image_id and torch.equal(test_a[i].image, test_b[i].image)
    assert torch.equal(late.mask, test_a[len(test_a) - 1].mask)
    assert [s.image_id for s in NeonTrees(tile=16, stride=8, downsample=1, test="scenes").split("train")][:3] == [f"{TRAIN}@r0_c{c}" for c in (0, 8, 16)]


def test_test_columns_sample_the_whole_scene_and_no_training_tile_crosses_into_them(fake_package: Path):
    ds = NeonTrees(tile=16, stride=8, downsample=1, test="columns", test_fraction=0.25, val_fraction=0.25)
    assert "test='columns'" in repr(ds)
    corners = {s: [tuple(int(v) for v in x.image_id.split("@r")[1].split("_c")) for x in ds.split(s)] for s in ("train", "val", "test")}
    # 72 x 64: 4 tile columns; every round(1 / 0.25) = 4th from the second is test: column 1 (x 16-32), full height
    assert sorted(corners["test"]) == [(r, 16) for r in (0, 16, 32, 48)]
    held = set(range(16, 32))
    for r, c in corners["train"] + corners["val"]:
        assert not held & set(range(c, c + 16)), (r, c)  # no training or val tile overlaps a test column
    # training runs: x 0-16 (one column) and x 32-64 (stride 8: 32, 40, 48); rows 0..40 step 8 above the val row
    assert sorted({c for _, c in corners["train"]}) == [0, 32, 40, 48] and len(corners["train"]) == 4 * 6
    assert sorted(corners["val"]) == [(56, 0), (56, 32), (56, 48)]
    half = NeonTrees(tile=16, downsample=1, test="columns", test_fraction=0.5)  # every 2nd column: 1 and 3
    assert sorted({x.image_id.rsplit("_c", 1)[1] for x in half.split("test")}) == ["16", "48"]
    with pytest.raises(UserError, match="test_fraction = 0 of the training scenes' tile columns"):
        NeonTrees(tile=16, downsample=1, test="columns", test_fraction=0.0).split("test")


def test_the_contract_holds_on_the_fake_package(fake_package: Path):
    for test in ("band", "columns", "scenes"):
        ds = check_dataset(NeonTrees, {"tile": 16, "downsample": 1, "test": test})
        assert ds.channel_mean().shape == (3,)


def test_without_the_package_the_error_says_how_to_install_it(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setattr(neon_trees, "PACKAGE", "xaibench_no_such_package")
    msg = one_line(NeonTrees, "pip install --no-deps deepforest==2.1.0", "root")
    assert msg.startswith("neon_trees:")
    with pytest.raises(MissingPackage) as err:
        NeonTrees()
    assert err.value.requirement == "deepforest==2.1.0"
    config = tmp_path / "c.toml"
    config.write_text(textwrap.dedent("""
        [benchmark]
        name = "c"
        [dataset]
        name = "neon_trees"
        [model]
        name = "smp_unet"
        [grid]
        explainers = ["grad_cam"]
        layers = ["decoder1"]
        thresholds = [0.5]
        metrics = ["pointing_game"]
    """))
    capsys.readouterr()
    assert main(["validate", str(config)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("error:") and "pip install --no-deps deepforest==2.1.0" in err_lines[0]


def test_a_file_missing_from_the_package_is_named(fake_package: Path):
    (fake_package / f"{OSBS}.xml").unlink()
    one_line(lambda: NeonTrees(tile=16, downsample=1, test="scenes"), f"{OSBS}.xml", "reinstall")
    NeonTrees(tile=16, downsample=1)  # the default test band needs the training scene only


def test_the_neontreeevaluation_folder_layout(tmp_path: Path):
    root = evaluation_tree(tmp_path / "nte")
    ds = NeonTrees(root=str(root), tile=16, downsample=1, test="scenes", val_fraction=0.0)
    assert ds.left_out == 1 and "1 image(s) without annotation left out" in repr(ds)
    assert {s.image_id.split("@")[0] for s in ds.split("test")} == {OSBS, SOAP} and len(ds.split("train")) == 16
    s = {x.image_id: x for x in ds.split("test")}[f"{OSBS}@r0_c0"]
    assert np.array_equal(s.mask.numpy(), box_mask(OSBS)[:16, :16])
    assert torch.allclose(s.image, torch.from_numpy(pixels(OSBS)[:16, :16]).permute(2, 0, 1).float() / 255)
    check_dataset(NeonTrees, {"root": str(root), "tile": 16, "downsample": 1, "test": "scenes"})
    band = NeonTrees(root=str(root), tile=16, downsample=1)  # the training scene's right is test
    assert {s.image_id.split("@")[0] for s in band.split("test")} == {TRAIN}


def test_bad_folders_and_files_are_one_line_naming_them(tmp_path: Path):
    one_line(lambda: NeonTrees(root=str(tmp_path / "nowhere")), "nowhere", "does not exist", "annotations")
    root = evaluation_tree(tmp_path / "a")
    (root / "training" / "RGB" / f"{TRAIN}.tif").rename(root / "training" / "RGB" / "OTHER.tif")
    one_line(lambda: NeonTrees(root=str(root)), "no image in", "training")
    (root / "training").rename(root / "elsewhere")
    one_line(lambda: NeonTrees(root=str(root)), "training/RGB", "is missing")

    root = evaluation_tree(tmp_path / "b", extra_image=False)
    (root / "annotations" / f"{OSBS}.xml").write_text(voc(OSBS, size=(40, 40)))
    ds = NeonTrees(root=str(root), tile=16, downsample=1, test="scenes")
    one_line(lambda: list(ds.split("test")), f"{OSBS}.xml", "40x40", "32x32")

    root = evaluation_tree(tmp_path / "c", extra_image=False)
    (root / "annotations" / f"{SOAP}.xml").write_text(voc(SOAP, boxes=[(50, 50, 60, 60)]))
    one_line(lambda: list(NeonTrees(root=str(root), tile=16, downsample=1, test="scenes").split("test")), f"{SOAP}.xml", "outside")

    root = evaluation_tree(tmp_path / "d", extra_image=False)
    (root / "evaluation" / "RGB" / f"{SOAP}.tif").write_bytes(b"not a tiff")
    msg = one_line(lambda: NeonTrees(root=str(root), tile=16, downsample=1, test="scenes"), f"{SOAP}.tif")
    assert msg.startswith("neon_trees:")

    root = evaluation_tree(tmp_path / "e", extra_image=False)
    one_line(lambda: NeonTrees(root=str(root), tile=16, downsample=4, test="scenes"), f"{OSBS}.tif", "smaller than tile = 16")
    for key, value in (("tile", 4), ("downsample", 0), ("val_fraction", 1.0), ("root", 3), ("test", "other"), ("test_fraction", -0.1)):
        one_line(lambda key=key, value=value: NeonTrees(**{"root": str(root), key: value}), key)


@pytest.mark.slow
def test_the_shipped_benchmark_runs_on_the_fake_package(fake_package: Path, tmp_path: Path):
    """benchmarks/neon-trees.toml as shipped, on the fake package's scenes and with a tiny U-Net:
    the grid with the baselines runs and the leaderboard ranks them."""
    import tomllib

    import xaibench
    from xaibench.config.parse import parse_config

    shipped = Path(__file__).parents[2] / "benchmarks" / "neon-trees.toml"
    data = tomllib.loads(shipped.read_text())
    data["dataset"].update(tile=16, downsample=1)
    data["model"].update(epochs=1, encoder_depth=3, decoder_channels=[16, 8, 4])
    df = xaibench.run(parse_config(data, str(shipped)), tmp_path / "out", show_progress=False)
    assert set(df.explainer) >= {"grad_cam", "score_cam", "random", "center_prior"} and df.image_id.nunique() == 4  # one test tile column of the 72 x 64 training scene
    assert {"pointing_game", "energy_pointing_game", "model_iou", "model_f1"} <= set(df.metric)
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "deepforest 2.1.0" in board and "## Models" in board
