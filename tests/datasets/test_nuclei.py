"""Tests of the ``nuclei`` dataset on tiny fake trees written here: a fake ``stardist`` package
(its two data files only) and a Data Science Bowl 2018 folder. Neither needs the real package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from xaibench.datasets import nuclei
from xaibench.datasets.base import Dataset
from xaibench.datasets.nuclei import PERCENTILES, Nuclei
from xaibench.errors import MissingPackage, UserError
from xaibench.testing import check_dataset

SIZE = 64


def fluorescence(seed: int, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """A dim uint16 image (values up to ~235, as the real img2d.tif)."""
    return np.random.default_rng(seed).integers(0, 236, (h, w)).astype(np.uint16)


def instances(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """An instance mask: nucleus k is a square labelled k, one per 16 x 16 block where (row + col) is even."""
    m = np.zeros((h, w), np.uint16)
    k = 0
    for r in range(0, h, 16):
        for c in range(0, w, 16):
            if (r // 16 + c // 16) % 2 == 0:
                k += 1
                m[r + 4 : r + 12, c + 4 : c + 12] = k
    return m


def stretched(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x.astype(np.float32), PERCENTILES)
    return np.clip((x.astype(np.float32) - lo) / (hi - lo), 0, 1).astype(np.float32)


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch) -> Path:
    images = tmp_path / "site" / "stardist" / "data" / "images"
    images.mkdir(parents=True)
    (tmp_path / "site" / "stardist" / "__init__.py").write_text("raise ImportError('the loader must not import stardist')\n")
    tifffile.imwrite(images / "img2d.tif", fluorescence(0))
    tifffile.imwrite(images / "mask2d.tif", instances())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return images


def dsb_tree(root: Path, n: int = 5, rgba: bool = True) -> Path:
    """ROOT/ID/images/ID.png (RGBA, as the DSB's) + ROOT/ID/masks/*.png (one 0/255 PNG per nucleus)."""
    for k in range(n):
        key = f"{k:03d}abc"
        (root / key / "images").mkdir(parents=True)
        (root / key / "masks").mkdir()
        grey = (fluorescence(k + 1, 32, 48) % 256).astype(np.uint8)
        pixels = np.stack([grey, grey, grey, np.full_like(grey, 255)], -1) if rgba else grey
        Image.fromarray(pixels).save(root / key / "images" / f"{key}.png")
        inst = instances(32, 48)
        for label in range(1, int(inst.max()) + 1):
            Image.fromarray(((inst == label) * 255).astype(np.uint8)).save(root / key / "masks" / f"m{label}.png")
    return root


def one_line(fn, *words) -> str:
    with pytest.raises(UserError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg, msg
    for w in words:
        assert str(w) in msg, msg
    return msg


def test_the_packaged_image_is_tiled_and_split_left_right(fake_package: Path):
    ds = Nuclei(tile=16, test_fraction=0.25, val_fraction=0.25)
    assert isinstance(ds, Dataset) and ds.num_classes == 2 and "stardist" in repr(ds)
    cols = {s: {int(x.image_id.split("_c")[1]) for x in ds.split(s)} for s in ("train", "val", "test")}
    assert cols == {"train": {0, 16}, "val": {32}, "test": {48}}  # 4 tile columns: 2 train, 1 val, 1 test
    assert len(ds.split("test")) == 4 and len(ds.split("train")) == 8
    image, mask = stretched(fluorescence(0)), (instances() > 0).astype(np.int64)
    for s in ds.split("test"):
        r, c = (int(v) for v in s.image_id.split("@r")[1].split("_c"))
        assert s.image.shape == (1, 16, 16) and torch.allclose(s.image[0], torch.from_numpy(image[r : r + 16, c : c + 16]), atol=1e-5)
        assert np.array_equal(s.mask.numpy(), mask[r : r + 16, c : c + 16]) and set(np.unique(s.mask.numpy())) <= {0, 1}
    # overlapping train tiles with a stride; they stay left of val
    strided = Nuclei(tile=16, stride=8, test_fraction=0.25, val_fraction=0.25).split("train")
    assert len(strided) == 7 * 3 and max(int(x.image_id.split("_c")[1]) for x in strided) + 16 <= 32


def test_normalize_and_channels(fake_package: Path):
    raw = Nuclei(tile=16, normalize=False).split("train")[0]
    assert torch.allclose(raw.image[0], torch.from_numpy(fluorescence(0)[:16, :16].astype(np.float32) / 65535))
    rgb = Nuclei(tile=16, channels=3).split("train")[0]
    assert rgb.image.shape == (3, 16, 16) and torch.equal(rgb.image[0], rgb.image[2])
    one_line(lambda: Nuclei(tile=16, test_fraction=0.0).split("test"), "split 'test' is empty")


def test_the_contract_holds_and_tiles_are_pure(fake_package: Path):
    check_dataset(Nuclei, {"tile": 16})
    a, b = Nuclei(tile=16), Nuclei(tile=16)
    last = b.split("train")[-1]
    assert torch.equal(a.split("train")[-1].image, last.image) and a.split("train")[-1].image_id == last.image_id


def test_without_the_package_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(nuclei, "PACKAGE", "xaibench_no_such_package")
    with pytest.raises(MissingPackage) as err:
        Nuclei()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("nuclei:") and "pip install --no-deps stardist==0.9.2" in msg and "root" in msg


def test_a_dsb_folder_is_split_per_image_and_the_masks_unite(tmp_path: Path):
    root = dsb_tree(tmp_path / "dsb")
    ds = Nuclei(root=str(root), tile=16, test_fraction=0.4, seed=3)
    by_split = {s: sorted({x.image_id.split("@")[0] for x in ds.split(s)}) for s in ("train", "test")}
    assert len(by_split["train"]) == 3 and len(by_split["test"]) == 2 and not set(by_split["train"]) & set(by_split["test"])
    assert len(ds.split("test")) == 2 * 2 * 3  # 32 x 48 images, tiles of 16
    s = ds.split("test")[0]
    assert np.array_equal(s.mask.numpy(), (instances(32, 48) > 0).astype(np.int64)[:16, :16])
    assert s.image.shape == (1, 16, 16)
    check_dataset(Nuclei, {"root": str(root), "tile": 16, "test_fraction": 0.4})


def test_seeds_decide_the_dsb_split(tmp_path: Path):
    root = dsb_tree(tmp_path / "dsb", n=8, rgba=False)
    draws = {tuple(sorted({x.image_id.split("@")[0] for x in Nuclei(root=str(root), tile=16, test_fraction=0.5, seed=seed).split("test")})) for seed in range(6)}
    assert len(draws) > 1
    assert Nuclei(root=str(root), tile=16, seed=1).split("test")[0].image_id == Nuclei(root=str(root), tile=16, seed=1).split("test")[0].image_id


def test_bad_dsb_folders_and_files_are_one_line_naming_them(tmp_path: Path):
    one_line(lambda: Nuclei(root=str(tmp_path / "nowhere")), "nowhere", "does not exist", "masks")
    root = dsb_tree(tmp_path / "a", n=3)
    (root / "000abc" / "masks" / "m1.png").unlink()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "000abc" / "masks" / "m1.png")
    ds = Nuclei(root=str(root), tile=16, test_fraction=0.0)
    one_line(lambda: list(ds.split("train")), "m1.png", "10x10", "48x32")

    root = dsb_tree(tmp_path / "b", n=3)
    (root / "001abc" / "masks").rename(root / "001abc" / "gone")
    one_line(lambda: Nuclei(root=str(root)), "001abc.png", "masks/")

    root = dsb_tree(tmp_path / "c", n=3)
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(root / "002abc" / "images" / "extra.png")
    one_line(lambda: Nuclei(root=str(root)), "002abc", "must hold one image")

    root = dsb_tree(tmp_path / "d", n=3)
    (root / "000abc" / "images" / "000abc.png").write_bytes(b"not a png")
    msg = one_line(lambda: Nuclei(root=str(root), tile=16), "000abc.png")
    assert msg.startswith("nuclei:")

    root = dsb_tree(tmp_path / "e", n=3)
    one_line(lambda: Nuclei(root=str(root), tile=40), "smaller than tile = 40")
    for key, value in (("tile", 2), ("channels", 2), ("normalize", "yes"), ("test_fraction", 0.9), ("root", 1)):
        one_line(lambda key=key, value=value: Nuclei(**{"root": str(root), "val_fraction": 0.2, key: value}), key)


@pytest.mark.slow
def test_the_shipped_benchmark_runs_on_the_fake_package(fake_package: Path, tmp_path: Path):
    """benchmarks/nuclei.toml as shipped, on the fake package's image and with a tiny U-Net."""
    import tomllib

    import xaibench
    from xaibench.config.parse import parse_config

    shipped = Path(__file__).parents[2] / "benchmarks" / "nuclei.toml"
    data = tomllib.loads(shipped.read_text())
    data["dataset"].update(tile=16, stride=8)
    data["model"].update(epochs=1, encoder_depth=3, decoder_channels=[16, 8, 4])
    df = xaibench.run(parse_config(data, str(shipped)), tmp_path / "out", show_progress=False)
    assert set(df.explainer) >= {"grad_cam", "score_cam", "random", "center_prior"} and df.image_id.nunique() == 4
    assert {"pointing_game", "model_iou"} <= set(df.metric) and df["value"].notna().any()
    assert "stardist 0.9.2" in (tmp_path / "out" / "leaderboard.md").read_text()
