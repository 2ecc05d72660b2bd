"""The weaksup datasets: synthetic ``landslides`` tiles and the ``bijie`` folder loader, and
their registration through the package's own entry point."""

from __future__ import annotations

import pathlib
from importlib import metadata

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.measure import label as components
from xaibench_weaksup.bijie import Bijie
from xaibench_weaksup.landslides import Landslides

from xaibench.plugin import UserError


def _same(a, b):
    return torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and a.label == b.label and a.image_id == b.image_id


# -- landslides -----------------------------------------------------------------------------


def test_tiles_are_a_function_of_seed_split_and_index():
    a = Landslides(size=32, n_train=6, n_val=0, n_test=6, seed=1)
    b = Landslides(size=32, n_train=6, n_val=0, n_test=6, seed=1)
    first = [a.split("test")[i] for i in range(6)]
    second = [b.split("test")[i] for i in reversed(range(6))][::-1]  # other access order
    assert all(_same(x, y) for x, y in zip(first, second))
    longer = Landslides(size=32, n_train=6, n_test=12, seed=1)
    assert all(_same(x, longer.split("test")[i]) for i, x in enumerate(first))
    other_seed = Landslides(size=32, n_train=6, n_test=6, seed=2)
    assert not any(torch.equal(other_seed.split("test")[i].image, first[i].image) for i in range(6))
    assert not torch.equal(a.split("train")[0].image, first[0].image)
    assert a.split("test")[0] is first[0]  # memoised
    assert a.split("test")[-1] is a.split("test")[5]
    with pytest.raises(IndexError):
        a.split("test")[6]


def test_images_masks_labels_and_ids():
    ds = Landslides(size=32, n_train=24, n_val=4, n_test=8, seed=0)
    samples = [s for split in ("train", "val", "test") for s in ds.split(split)]
    assert {s.label for s in samples} == {0, 1}
    for s in samples:
        assert s.image.dtype == torch.float32 and s.image.shape == (3, 32, 32)
        assert 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0
        assert s.mask.dtype == torch.int64 and s.mask.shape == (32, 32)
        assert set(s.mask.unique().tolist()) <= {0, 1}
        assert s.label == int(bool(s.mask.any()))
    ids = [s.image_id for s in samples]
    assert len(set(ids)) == len(ids)  # unique across splits (folds pool train and test)
    assert ids[0] == "landslides-train-0000" and ds.split("test")[3].image_id == "landslides-test-0003"
    assert Landslides.fold_splits == ("train", "test") and Landslides.num_classes == 2


def test_positive_fraction_is_respected():
    ds = Landslides(size=32, n_train=200, n_val=0, n_test=0, positive_fraction=0.5, seed=5)
    labels = np.array([s.label for s in ds.split("train")])
    assert 0.4 <= labels.mean() <= 0.6  # 200 draws: sd about 0.035
    assert all(s.label == 1 for s in Landslides(size=32, n_train=12, positive_fraction=1.0).split("train"))
    assert all(s.label == 0 and not s.mask.any() for s in Landslides(size=32, n_train=12, positive_fraction=0.0).split("train"))


@pytest.fixture(scope="module")
def proxy_tiles():
    """300 tiles of the default proxy (64 x 64): the sample the statistics tests read."""
    ds = Landslides(size=64, seed=11)
    return [ds.render("test", i) for i in range(300)]


def test_positive_share_is_the_real_datasets(proxy_tiles):
    share = np.mean([t.mask.any() for t in proxy_tiles])
    assert Landslides().positive_fraction == pytest.approx(770 / (770 + 2003), abs=5e-4)
    assert 0.20 <= share <= 0.36  # 27.8 % of 300 draws: sd 0.026, three sd either side


def test_one_centred_landslide_per_positive_tile(proxy_tiles):
    positives = [t.mask for t in proxy_tiles if t.mask.any()]
    assert len(positives) >= 60
    for mask in positives:
        assert components(mask, connectivity=1).max() == 1  # one 4-connected component
        ys, xs = np.nonzero(mask)
        top, bottom, left, right = ys.min(), 63 - ys.max(), xs.min(), 63 - xs.max()
        assert abs(top - bottom) <= 1 and abs(left - right) <= 1  # bounding box plus an equal margin


def test_landslide_share_follows_the_real_masks(proxy_tiles):
    share = np.array([t.mask.mean() for t in proxy_tiles if t.mask.any()])
    assert 0.055 <= np.median(share) <= 0.09  # real: 7 %
    assert 0.07 <= share.mean() <= 0.10  # real: about 8-10 %
    assert 0.025 <= np.quantile(share, 0.1) <= 0.045  # real p10: 3.4 %
    assert 0.12 <= np.quantile(share, 0.9) <= 0.19  # real p90: 15 %
    assert share.min() >= 0.008 and share.max() <= 0.28  # real range: 1-26 %


def test_distractors_are_as_frequent_in_both_classes(proxy_tiles):
    pos = [t for t in proxy_tiles if t.mask.any()]
    neg = [t for t in proxy_tiles if not t.mask.any()]
    for kind, expected in (("field", 0.72), ("road", 0.5), ("rock", 0.35)):
        rates = [np.mean([getattr(t, kind).any() for t in tiles]) for tiles in (pos, neg)]
        assert all(abs(r - expected) < 0.16 for r in rates), (kind, rates)


def test_landslides_are_bright_and_rough(proxy_tiles):
    """Fresh scars: brighter than the vegetation around them and rougher at the pixel scale."""
    brighter = rougher = 0
    positives = [t for t in proxy_tiles if t.mask.any()]
    for t in positives:
        grey = t.image.mean(-1)
        rough = np.abs(grey - ndimage.uniform_filter(grey, 3))
        ring = ndimage.binary_dilation(t.mask, iterations=4) & ~ndimage.binary_dilation(t.mask) & ~t.field & ~t.road & ~t.rock
        brighter += grey[t.mask].mean() > 1.3 * grey[ring].mean()
        rougher += rough[t.mask].mean() > 1.3 * rough[ring].mean()
    assert brighter >= 0.9 * len(positives) and rougher >= 0.8 * len(positives)


def test_render_is_a_pure_function_of_seed_split_and_index():
    ds = Landslides(size=64, seed=4)
    first, again = ds.render("val", 7), Landslides(size=64, seed=4).render("val", 7)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.mask, again.mask) and np.array_equal(first.dem, again.dem)
    assert not np.array_equal(first.image, ds.render("val", 8).image)
    assert not np.array_equal(first.image, ds.render("test", 7).image)


def test_dem_channel_adds_the_normalised_dem():
    plain = Landslides(size=32, n_train=4, seed=3)
    dem = Landslides(size=32, n_train=4, dem_channel=True, seed=3)
    for a, b in zip(plain.split("train"), dem.split("train")):
        assert b.image.shape == (4, 32, 32)
        assert torch.equal(a.image, b.image[:3]) and torch.equal(a.mask, b.mask)
        assert float(b.image[3].min()) == 0.0 and float(b.image[3].max()) == 1.0
    assert plain.channel_mean().shape == (3,) and dem.channel_mean().shape == (4,)
    assert Landslides(size=32, n_train=0).channel_mean().shape == (3,)  # generated, not the empty split


def _best_threshold_iou(tiles) -> float:
    """The best IoU with the landslides of one threshold on brightness or on a red-minus-green
    soil index, in either direction, chosen with the masks (an oracle colour rule)."""
    img = np.stack([t.image for t in tiles]).astype(np.float64)
    mask = np.stack([t.mask for t in tiles])
    bright = img.mean(-1)
    soil = (img[..., 0] - img[..., 1]) / (img[..., 0] + img[..., 1] + 1e-6)
    best = 0.0
    for feature in (bright, -bright, soil, -soil):
        for thr in np.quantile(feature, np.linspace(0.5, 0.999, 100)):
            pred = feature > thr
            best = max(best, (pred & mask).sum() / (pred | mask).sum())
    return best


def test_landslides_are_not_a_colour_threshold_because_of_the_distractors():
    ds = Landslides(size=64, seed=0)
    tiles = [ds.render("test", i) for i in range(60)]
    with_distractors = _best_threshold_iou(tiles)
    without = _best_threshold_iou([ds.render("test", i, distractors=False) for i in range(60)])
    assert with_distractors < 0.5
    assert without > with_distractors + 0.15  # the check can fail: fields, rock and roads share the scars' colours


def test_landslides_bad_parameters_name_the_key():
    cases = {
        "size": [{"size": 48}, {"size": 64.0}, {"size": 0}],
        "n_train": [{"n_train": -1}],
        "n_test": [{"n_test": "8"}],
        "positive_fraction": [{"positive_fraction": 1.5}, {"positive_fraction": "half"}],
        "dem_channel": [{"dem_channel": "yes"}, {"dem_channel": 1}],
        "seed": [{"seed": -1}, {"seed": True}],
    }
    for key, kwargs_list in cases.items():
        for kwargs in kwargs_list:
            with pytest.raises(UserError, match=rf"\b{key}\b.*'landslides'"):
                Landslides(**kwargs)
    with pytest.raises(UserError, match="split.*landslides"):
        Landslides(size=32).split("training")


# -- bijie ----------------------------------------------------------------------------------

#: landslide images in creation order (not the sorted order): name -> (H, W, colour, mask part, DEM ramp axis)
LANDSLIDES = {
    "b10": (40, 48, (200, 30, 30), "left", 1),
    "b2": (64, 64, (30, 200, 30), "top", 0),
    "a1": (50, 30, (30, 30, 200), "none", 1),
}
NON_LANDSLIDES = {"n2": (36, 44, (120, 120, 20)), "n10": (64, 32, (20, 120, 120)), "m1": (32, 32, (90, 60, 30))}


def _png(path: pathlib.Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _ramp(h: int, w: int, axis: int) -> np.ndarray:
    ramp = np.linspace(10, 250, h if axis == 0 else w)
    return np.broadcast_to(ramp[:, None] if axis == 0 else ramp[None, :], (h, w)).astype(np.uint8)


def _bijie_tree(root: pathlib.Path) -> pathlib.Path:
    """A tiny Bijie tree in the published layout (PNG, masks 0/255, sizes that differ)."""
    for name, (h, w, colour, part, axis) in LANDSLIDES.items():
        _png(root / "landslide" / "image" / f"{name}.png", np.full((h, w, 3), colour, dtype=np.uint8))
        mask = np.zeros((h, w), dtype=np.uint8)
        if part == "left":
            mask[:, : w // 2] = 255
        elif part == "top":
            mask[: h // 2] = 255
        _png(root / "landslide" / "mask" / f"{name}.png", mask)
        _png(root / "landslide" / "dem" / f"{name}.png", _ramp(h // 2, w // 2, axis))  # DEMs are coarser
    (root / "landslide" / "polygon_coordinate").mkdir()
    for name, (h, w, colour) in NON_LANDSLIDES.items():
        _png(root / "non-landslide" / "image" / f"{name}.png", np.full((h, w, 3), colour, dtype=np.uint8))
        _png(root / "non-landslide" / "dem" / f"{name}.png", _ramp(h, w, 0))
    return root


@pytest.fixture
def reversed_listing(monkeypatch):
    """Mask and DEM folders list their files in reverse order, image folders in sorted order:
    pairing by listing order would give each image another image's mask and DEM."""
    original = pathlib.Path.iterdir
    listing = lambda self: iter(sorted(original(self), reverse=self.name in ("mask", "dem")))  # noqa: E731
    monkeypatch.setattr(pathlib.Path, "iterdir", listing)


def _all(ds):
    return {s.image_id: s for split in ("train", "val", "test") for s in ds.split(split)}


def test_bijie_pairs_by_name_resizes_and_labels(tmp_path, reversed_listing):
    ds = Bijie(root=str(_bijie_tree(tmp_path)), size=32, dem_channel=True, test_fraction=0.34, seed=0)
    samples = _all(ds)
    assert set(samples) == {f"landslide/{n}" for n in LANDSLIDES} | {f"non-landslide/{n}" for n in NON_LANDSLIDES}
    for name, (_h, _w, colour, part, axis) in LANDSLIDES.items():
        s = samples[f"landslide/{name}"]
        assert s.image.shape == (4, 32, 32) and s.image.dtype == torch.float32 and s.label == 1
        assert torch.allclose(s.image[:3, 5, 5], torch.tensor(colour) / 255.0, atol=1e-5)
        expected = torch.zeros(32, 32, dtype=torch.int64)
        if part == "left":
            expected[:, :16] = 1
        elif part == "top":
            expected[:16] = 1
        assert s.mask.dtype == torch.int64 and torch.equal(s.mask, expected)
        dem = s.image[3]
        assert 0.0 <= float(dem.min()) < 0.1 and 0.9 < float(dem.max()) <= 1.0
        rising = (dem[-1] - dem[0]).mean() if axis == 0 else (dem[:, -1] - dem[:, 0]).mean()
        assert rising > 0.5  # this image's DEM, not a neighbour's
    for name, (_h, _w, colour) in NON_LANDSLIDES.items():
        s = samples[f"non-landslide/{name}"]
        assert s.label == 0 and not s.mask.any() and s.mask.shape == (32, 32)
        assert torch.allclose(s.image[:3, 5, 5], torch.tensor(colour) / 255.0, atol=1e-5)
    assert ds.channel_mean().shape == (4,)
    rgb = Bijie(root=str(tmp_path), size=64)
    assert rgb.split("test")[0].image.shape == (3, 64, 64)


def test_bijie_splits_are_stratified_seeded_and_disjoint(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for i in range(10):
        _png(tmp_path / "landslide" / "image" / f"ls{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        _png(tmp_path / "landslide" / "mask" / f"ls{i}.png", np.full((8, 8), 255, dtype=np.uint8))
    for i in range(20):
        _png(tmp_path / "non-landslide" / "image" / f"nl{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    ds = Bijie(root=str(tmp_path), size=32, test_fraction=0.2, val_fraction=0.1, seed=3)
    labels = {split: sorted(1 if i.startswith("landslide/") else 0 for i in ds.ids(split)) for split in ("train", "val", "test")}
    assert labels["test"] == [0] * 4 + [1] * 2 and labels["val"] == [0] * 2 + [1] and labels["train"] == [0] * 14 + [1] * 7
    ids = [i for split in ("train", "val", "test") for i in ds.ids(split)]
    assert len(ids) == len(set(ids)) == 30
    assert [s.image_id for s in ds.split("test")] == ds.ids("test")
    assert Bijie(root=str(tmp_path), size=32, test_fraction=0.2, val_fraction=0.1, seed=3).ids("test") == ds.ids("test")
    assert any(Bijie(root=str(tmp_path), size=32, seed=s).ids("test") != Bijie(root=str(tmp_path), size=32, seed=0).ids("test") for s in (1, 2, 3))
    original = pathlib.Path.iterdir
    monkeypatch.setattr(pathlib.Path, "iterdir", lambda self: iter(sorted(original(self), reverse=True)))
    assert Bijie(root=str(tmp_path), size=32, test_fraction=0.2, val_fraction=0.1, seed=3).ids("test") == ds.ids("test")


def test_bijie_root_expansion_and_missing_root(tmp_path, monkeypatch):
    _bijie_tree(tmp_path / "data")
    monkeypatch.setenv("BIJIE_TEST_DATA", str(tmp_path))
    assert len(Bijie(root="$BIJIE_TEST_DATA/data", size=32).split("train")) == 4
    with pytest.raises(UserError, match=r"nowhere does not exist; put the Bijie landslide dataset there .*landslide/\{image,mask,dem\}.*gpcv"):
        Bijie(root=str(tmp_path / "nowhere"))
    monkeypatch.delenv("BIJIE_TEST_DATA")
    with pytest.raises(UserError, match="environment variable"):
        Bijie(root="$BIJIE_TEST_DATA/data")


def _error(root, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        Bijie(root=str(root), size=32, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bijie_missing_folders(tmp_path):
    root = _bijie_tree(tmp_path / "a")
    for p in sorted((root / "non-landslide").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (root / "non-landslide").rmdir()
    assert f"folder {root / 'non-landslide'} is missing; expected layout" in _error(root)
    root = _bijie_tree(tmp_path / "b")
    for p in (root / "landslide" / "mask").iterdir():
        p.unlink()
    (root / "landslide" / "mask").rmdir()
    assert f"folder {root / 'landslide' / 'mask'} is missing" in _error(root)
    root = _bijie_tree(tmp_path / "c")
    for p in (root / "non-landslide" / "dem").iterdir():
        p.unlink()
    (root / "non-landslide" / "dem").rmdir()
    Bijie(root=str(root), size=32)  # the DEMs are only needed with dem_channel
    assert f"folder {root / 'non-landslide' / 'dem'} is missing (needed because dem_channel = true" in _error(root, dem_channel=True)


def test_bijie_unpaired_files(tmp_path):
    root = _bijie_tree(tmp_path / "a")
    (root / "landslide" / "mask" / "b2.png").unlink()
    msg = _error(root)
    assert f"image {root / 'landslide' / 'image' / 'b2.png'} has no mask: expected {root / 'landslide' / 'mask' / 'b2.png'}" in msg
    root = _bijie_tree(tmp_path / "b")
    _png(root / "landslide" / "mask" / "stray.png", np.zeros((8, 8), dtype=np.uint8))
    assert f"mask {root / 'landslide' / 'mask' / 'stray.png'} has no image: expected {root / 'landslide' / 'image' / 'stray.png'}" in _error(root)
    root = _bijie_tree(tmp_path / "c")
    (root / "non-landslide" / "dem" / "n10.png").unlink()
    msg = _error(root, dem_channel=True)
    assert f"image {root / 'non-landslide' / 'image' / 'n10.png'} has no DEM: expected {root / 'non-landslide' / 'dem' / 'n10.png'}" in msg
    assert len(_all(Bijie(root=str(root), size=32))) == 6  # fine without the DEMs


def test_bijie_unreadable_and_mismatched_files(tmp_path):
    root = _bijie_tree(tmp_path / "a")
    (root / "landslide" / "image" / "a1.png").write_bytes(b"not a png")
    assert f"cannot read Bijie image {root / 'landslide' / 'image' / 'a1.png'}" in _error(root)
    root = _bijie_tree(tmp_path / "b")
    path = root / "non-landslide" / "image" / "n2.png"
    _png(path, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-200])  # truncated: caught before any sample is returned
    assert f"cannot read Bijie image {path}" in _error(root)
    root = _bijie_tree(tmp_path / "c")
    (root / "landslide" / "dem" / "b10.png").write_bytes(b"\x89PNG garbage")
    assert f"cannot read Bijie DEM {root / 'landslide' / 'dem' / 'b10.png'}" in _error(root, dem_channel=True)
    root = _bijie_tree(tmp_path / "d")
    _png(root / "landslide" / "mask" / "b2.png", np.zeros((32, 64), dtype=np.uint8))
    msg = _error(root)
    assert f"mask {root / 'landslide' / 'mask' / 'b2.png'} is 32x64 but its image {root / 'landslide' / 'image' / 'b2.png'} is 64x64" in msg


def test_bijie_bad_parameters_name_the_key(tmp_path):
    root = _bijie_tree(tmp_path)
    for key, kwargs in (
        ("size", {"size": 50}),
        ("dem_channel", {"dem_channel": "yes"}),
        ("test_fraction", {"test_fraction": 1.0}),
        ("val_fraction", {"val_fraction": -0.1}),
        ("test_fraction", {"test_fraction": 0.6, "val_fraction": 0.4}),
        ("seed", {"seed": 1.5}),
    ):
        with pytest.raises(UserError, match=rf"\b{key}\b.*'bijie'"):
            Bijie(root=str(root), **kwargs)
    with pytest.raises(UserError, match="root"):
        Bijie(root=3)
    with pytest.raises(UserError, match="split.*bijie"):
        Bijie(root=str(root), size=32).split("validation")


# -- registration ---------------------------------------------------------------------------


def test_registered_through_the_entry_point_of_xaibench_weaksup():
    eps = [ep for ep in metadata.entry_points(group="xaibench") if ep.name == "weaksup"]
    assert len(eps) == 1 and eps[0].value == "xaibench_weaksup.plugin"
    assert eps[0].dist is not None and eps[0].dist.metadata["name"] == "xaibench-weaksup"
    from xaibench.testing import plugin_entry

    for name, cls in (("landslides", Landslides), ("bijie", Bijie)):
        entry = plugin_entry("datasets", name)
        assert entry.cls is cls and entry.distribution == "xaibench-weaksup" and entry.module == "xaibench_weaksup.plugin"


def test_plugin_module_registers_both_datasets():
    from xaibench_weaksup import plugin

    got: list[type] = []
    plugin.register_datasets(register=got.append)
    assert got == [Landslides, Bijie]
