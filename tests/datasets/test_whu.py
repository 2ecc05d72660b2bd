"""Tests of the WHU dataset plugin, on a tiny fake WHU tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from xaibench.datasets.base import Dataset
from xaibench.datasets.whu import URL, WHU
from xaibench.errors import UserError

N = {"train": 3, "val": 2, "test": 4}
STEMS = {split: [f"tile_{k:03d}" for k in range(n)] for split, n in N.items()}


def _label(k: int, side: int = 64) -> np.ndarray:
    label = np.zeros((side, side), np.uint8)
    label[8 : 8 + 4 * (k + 1), 16 : 16 + 6 * (k + 1)] = 255
    return label


def _image(rng: np.random.Generator, side: int = 64) -> np.ndarray:
    return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)


@pytest.fixture
def whu_root(tmp_path: Path) -> Path:
    """ROOT/{train,val,test}/{image,label}/tile_NNN.tif, 64x64, written in shuffled order."""
    root = tmp_path / "whu"
    rng = np.random.default_rng(0)
    for split, stems in STEMS.items():
        (root / split / "image").mkdir(parents=True)
        (root / split / "label").mkdir(parents=True)
        for k in rng.permutation(len(stems)):
            tifffile.imwrite(root / split / "image" / f"{stems[k]}.tif", _image(rng))
            tifffile.imwrite(root / split / "label" / f"{stems[k]}.tif", _label(int(k)))
    return root


def test_loads_tiles(whu_root: Path):
    ds = WHU(root=str(whu_root), size=64)
    assert isinstance(ds, Dataset) and WHU.name == "whu" and ds.num_classes == 2
    assert {s: len(ds.split(s)) for s in N} == N
    test = ds.split("test")
    assert [s.image_id for s in test] == STEMS["test"]  # sorted filename order
    for k, s in enumerate(test):
        raw = tifffile.imread(whu_root / "test" / "image" / f"{s.image_id}.tif")
        assert s.image.shape == (3, 64, 64) and s.image.dtype == torch.float32
        assert s.mask.shape == (64, 64) and s.mask.dtype == torch.int64
        assert torch.allclose(s.image, torch.from_numpy(raw).permute(2, 0, 1).float() / 255)
        assert torch.equal(s.mask, torch.from_numpy(_label(k) == 255).long())
        assert s.label == 1
    assert test[-1].image_id == STEMS["test"][-1]
    with pytest.raises(IndexError):
        test[len(test)]


def test_label_mapping(whu_root: Path):
    label_dir = whu_root / "val" / "label"
    odd = np.array([[0, 100, 127, 128], [200, 255, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    tifffile.imwrite(label_dir / "tile_000.tif", np.kron(odd, np.ones((16, 16), np.uint8)))
    tifffile.imwrite(label_dir / "tile_001.tif", np.zeros((64, 64), np.uint8))
    val = WHU(root=str(whu_root), size=64).split("val")
    mask = val[0].mask
    assert set(mask.unique().tolist()) == {0, 1}
    assert torch.equal(mask[::16, ::16], torch.from_numpy(odd > 127).long())
    assert val[1].label == 0 and not val[1].mask.any()


def test_binary_01_labels_are_kept(whu_root: Path):
    tifffile.imwrite(whu_root / "val" / "label" / "tile_000.tif", (_label(0) > 0).astype(np.uint8))
    s = WHU(root=str(whu_root), size=64).split("val")[0]
    assert torch.equal(s.mask, torch.from_numpy(_label(0) > 0).long())


def test_limit_takes_first_tiles_in_sorted_order(whu_root: Path):
    ds = WHU(root=str(whu_root), size=64, limit=2)
    assert [s.image_id for s in ds.split("test")] == STEMS["test"][:2]
    assert len(WHU(root=str(whu_root), size=64, limit=50).split("test")) == N["test"]


def test_resize(whu_root: Path):
    # a flat-colour image must keep its colour; the label's box scales with it
    flat = np.full((64, 64, 3), 51, np.uint8)
    tifffile.imwrite(whu_root / "test" / "image" / "tile_003.tif", flat)
    ds = WHU(root=str(whu_root), size=32)
    for k, s in enumerate(ds.split("test")):
        assert s.image.shape == (3, 32, 32) and s.mask.shape == (32, 32)
        assert s.mask.dtype == torch.int64 and set(s.mask.unique().tolist()) <= {0, 1}
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        expected = (_label(k) == 255).mean()
        assert abs(s.mask.float().mean().item() - expected) < 0.05
    assert torch.allclose(ds.split("test")[3].image, torch.full((3, 32, 32), 0.2), atol=1e-5)
    up = WHU(root=str(whu_root), size=96).split("test")[0]
    assert up.image.shape == (3, 96, 96) and up.mask.shape == (96, 96)


def test_resize_labels_nearest(whu_root: Path):
    # a salt-and-pepper label: nearest keeps ~half the pixels set and picks a source pixel of
    # each 2x2 block; interpolating and thresholding would not
    noisy = np.random.default_rng(1).integers(0, 2, (64, 64)).astype(np.uint8) * 255
    tifffile.imwrite(whu_root / "val" / "label" / "tile_000.tif", noisy)
    mask = WHU(root=str(whu_root), size=32).split("val")[0].mask.numpy()
    blocks = (noisy > 127).reshape(32, 2, 32, 2).transpose(0, 2, 1, 3).reshape(32, 32, 4)
    assert ((blocks == mask[..., None].astype(bool)).any(-1)).all()
    assert abs(mask.mean() - (noisy > 127).mean()) < 0.1


def test_channel_mean(whu_root: Path):
    ds = WHU(root=str(whu_root), size=64)
    expected = torch.stack([s.image.mean(dim=(1, 2)) for s in ds.split("train")]).mean(0)
    mean = ds.channel_mean()
    assert mean.shape == (3,) and torch.allclose(mean, expected, atol=1e-6)


def test_root_expansion(whu_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XAIBENCH_DATA", str(whu_root.parent))
    assert len(WHU(root="$XAIBENCH_DATA/whu", size=64).split("val")) == N["val"]
    monkeypatch.setenv("HOME", str(whu_root.parent))
    assert len(WHU(root="~/whu", size=64).split("val")) == N["val"]


def test_missing_root_names_path_layout_and_source(tmp_path: Path):
    missing = tmp_path / "nowhere" / "whu"
    with pytest.raises(UserError) as err:
        WHU(root=str(missing))
    msg = str(err.value)
    assert str(missing) in msg and URL in msg and "train" in msg and "image" in msg
    assert "\n" not in msg


def test_missing_split_folder(whu_root: Path):
    shutil.rmtree(whu_root / "val" / "label")
    ds = WHU(root=str(whu_root), size=64)
    assert len(ds.split("test")) == N["test"]  # other splits still work
    with pytest.raises(UserError) as err:
        ds.split("val")
    msg = str(err.value)
    assert str(whu_root / "val" / "label") in msg and URL in msg


def test_missing_label_names_both_files(whu_root: Path):
    (whu_root / "train" / "label" / "tile_001.tif").unlink()
    with pytest.raises(UserError) as err:
        WHU(root=str(whu_root), size=64).split("train")
    msg = str(err.value)
    assert str(whu_root / "train" / "image" / "tile_001.tif") in msg
    assert str(whu_root / "train" / "label" / "tile_001.tif") in msg
    # beyond the limit it is not needed
    assert len(WHU(root=str(whu_root), size=64, limit=1).split("train")) == 1


def test_corrupt_tile_names_the_file(whu_root: Path):
    bad = whu_root / "test" / "image" / "tile_002.tif"
    bad.write_bytes(b"this is not a tiff file")
    test = WHU(root=str(whu_root), size=64).split("test")
    test[1]  # the others still load
    with pytest.raises(UserError) as err:
        test[2]
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "folder, array, words",
    [
        ("image", np.zeros((64, 64), np.uint8), "H x W x 3"),
        ("image", np.zeros((64, 64, 4), np.uint8), "H x W x 3"),
        ("label", np.zeros((64, 64, 3), np.uint8), "H x W"),
        ("label", np.zeros((32, 32), np.uint8), "32x32"),
        ("image", np.zeros((64, 64, 3), np.float64), "float64"),
    ],
)
def test_wrong_tile_shape_or_type(whu_root: Path, folder: str, array: np.ndarray, words: str):
    path = whu_root / "val" / folder / "tile_001.tif"
    rgb = array.ndim == 3 and array.shape[2] == 3
    tifffile.imwrite(path, array, photometric="rgb" if rgb else None)
    val = WHU(root=str(whu_root), size=64).split("val")
    with pytest.raises(UserError) as err:
        val[1]
    assert str(path) in str(err.value) and words in str(err.value)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"size": 100}, "size"),
        ({"size": 0}, "size"),
        ({"limit": -1}, "limit"),
        ({"size": "512"}, "size"),
    ],
)
def test_bad_config_values(whu_root: Path, kwargs: dict, key: str):
    with pytest.raises(UserError) as err:
        WHU(root=str(whu_root), **kwargs)
    assert key in str(err.value) and "whu" in str(err.value)


def test_unknown_split(whu_root: Path):
    with pytest.raises(UserError) as err:
        WHU(root=str(whu_root)).split("validation")
    assert "'validation'" in str(err.value) and "val" in str(err.value)


@pytest.mark.slow
def test_the_shipped_whu_benchmark_runs_on_a_tree_in_the_published_layout(whu_root: Path, tmp_path: Path):
    """benchmarks/whu.toml as shipped, pointed at a tiny fake tree and with a tiny U-Net: the
    whole study grid runs and its leaderboard has the three analyses."""
    import tomllib

    import xaibench
    from xaibench.config.parse import parse_config

    shipped = Path(__file__).parents[2] / "benchmarks" / "whu.toml"
    data = tomllib.loads(shipped.read_text())
    data["dataset"].update(root=str(whu_root), size=64)
    data["model"].update(epochs=1, encoder_depth=3, decoder_channels=[16, 8, 4])
    data.setdefault("run", {})["chance"] = "rank"  # a 1-epoch model may be at chance; the tables are what is tested
    df = xaibench.run(parse_config(data, str(shipped)), tmp_path / "out", show_progress=False)
    grid = data["grid"]
    df = df[df.explainer != ""]  # the model's own quality rows have no explainer
    assert set(df.explainer) == set(grid["explainers"]) and set(df.layer) - {"input"} == set(grid["layers"])  # center_prior: one cell at input
    assert df.image_id.nunique() == N["test"] and df["value"].notna().any()
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    for section in ("Best method per perturbation mode and threshold", "Faithfulness ranking by IoU drop", "Layer comparison"):
        assert f"## {section}" in board
