"""Synthetic InSAR tiles: determinism, labels, masks; the folder loader and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from xaibench_ecsplain.encoding import phase_channels
from xaibench_ecsplain.folder import InsarFolder
from xaibench_ecsplain.synthetic import InsarMovingAreas

from xaibench.plugin import UserError


def _same(a, b):
    return torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and a.label == b.label and a.image_id == b.image_id


def test_tiles_are_a_function_of_seed_split_and_index():
    a = InsarMovingAreas(size=32, n_train=6, n_test=6, seed=1)
    b = InsarMovingAreas(size=32, n_train=6, n_test=6, seed=1)
    # different access order, same tiles
    first = [a.split("test")[i] for i in range(6)]
    second = [b.split("test")[i] for i in reversed(range(6))][::-1]
    assert all(_same(x, y) for x, y in zip(first, second))
    # a longer split keeps the tiles of the shorter one
    longer = InsarMovingAreas(size=32, n_train=6, n_test=12, seed=1)
    assert all(_same(x, longer.split("test")[i]) for i, x in enumerate(first))
    # other seed or split: other tiles
    c = InsarMovingAreas(size=32, n_train=6, n_test=6, seed=2)
    assert not torch.equal(c.split("test")[0].image, first[0].image)
    assert not torch.equal(a.split("train")[0].image, first[0].image)
    # memoised
    assert a.split("test")[0] is first[0]
    assert a.split("test")[-1] is a.split("test")[5]
    with pytest.raises(IndexError):
        a.split("test")[6]


def test_images_masks_and_labels():
    ds = InsarMovingAreas(size=32, n_train=24, n_test=0, seed=0)
    samples = list(ds.split("train"))
    labels = {s.label for s in samples}
    assert labels == {0, 1}  # both classes with positive_fraction 0.5
    for s in samples:
        assert s.image.dtype == torch.float32 and s.image.shape == (2, 32, 32)
        assert 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0
        assert s.mask.dtype == torch.int64 and s.mask.shape == (32, 32)
        assert set(s.mask.unique().tolist()) <= {0, 1}
        assert s.label == int(bool(s.mask.any()))
        if s.label:
            assert s.mask.float().mean() >= 0.01  # a moving area covers at least 1 % of the tile
    assert len({s.image_id for s in samples}) == len(samples)


def test_mask_is_where_the_deformation_exceeds_a_fraction_of_its_peak():
    ds = InsarMovingAreas(size=32, n_train=8, mask_fraction=0.3, positive_fraction=1.0, seed=5)
    for i in range(4):
        tile = ds.render("train", i)
        assert tile.label == 1
        peak = np.abs(tile.los).max()
        assert np.array_equal(tile.mask, np.abs(tile.los) >= 0.3 * peak - 1e-12)
        # the image encodes the wrapped phase and the coherence
        assert np.allclose(tile.image, phase_channels(tile.phase, tile.coherence), atol=1e-6)
    negative = InsarMovingAreas(size=32, n_train=4, positive_fraction=0.0, seed=5)
    for s in negative.split("train"):
        assert s.label == 0 and not s.mask.any()


def test_phase_channels():
    phase = np.array([[0.0, np.pi / 2], [np.pi, -np.pi / 2]])
    ch = phase_channels(phase, np.array([[1.0, 1.0], [0.5, 0.0]]))
    assert ch.shape == (2, 2, 2) and ch.dtype == np.float32
    assert np.allclose(ch[:, 0, 0], [1.0, 0.5])
    assert np.allclose(ch[:, 0, 1], [0.5, 1.0], atol=1e-7)
    assert np.allclose(ch[:, 1, 0], [0.25, 0.5], atol=1e-7)
    assert np.allclose(ch[:, 1, 1], [0.5, 0.5])  # coherence 0: no information


def test_channel_mean_and_bad_parameters():
    ds = InsarMovingAreas(size=32, n_train=4, seed=0)
    mean = ds.channel_mean()
    assert mean.shape == (2,) and torch.all((mean > 0.3) & (mean < 0.7))
    for kwargs in ({"size": 8}, {"n_train": -1}, {"positive_fraction": 1.5}, {"seed": "x"}, {"size": 32.0}):
        with pytest.raises(UserError):
            InsarMovingAreas(**kwargs)
    with pytest.raises(UserError, match="split"):
        ds.split("training")


# -- folder loader ------------------------------------------------------------------------------


def _write_split(root, split, n=3, fmt="npy"):
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        phase = rng.uniform(-np.pi, np.pi, (16, 16)).astype(np.float32)
        mask = np.zeros((16, 16), dtype=np.uint8)
        if i % 2 == 0:
            mask[4:9, 5:10] = 255
        name = f"tile{i}"
        if fmt == "npy":
            np.save(root / split / "images" / f"{name}.npy", phase)
            np.save(root / split / "masks" / f"{name}.npy", mask)
        else:
            tifffile.imwrite(root / split / "images" / f"{name}.tif", phase)
            Image.fromarray(mask).save(root / split / "masks" / f"{name}.png")


def test_folder_loader_reads_tiles_and_labels(tmp_path):
    _write_split(tmp_path, "train", 3, "npy")
    _write_split(tmp_path, "test", 4, "tif")
    ds = InsarFolder(root=str(tmp_path))
    train, test = ds.split("train"), ds.split("test")
    assert len(train) == 3 and len(test) == 4
    for split in (train, test):
        for i, s in enumerate(split):
            assert s.image.shape == (2, 16, 16) and s.image.dtype == torch.float32
            assert 0 <= float(s.image.min()) and float(s.image.max()) <= 1
            assert s.mask.dtype == torch.int64 and set(s.mask.unique().tolist()) <= {0, 1}
            assert s.label == (1 if i % 2 == 0 else 0)
            assert int(s.mask.sum()) == (25 if i % 2 == 0 else 0)
    assert test[0].image_id == "test/tile0"
    assert ds.channel_mean().shape == (2,)
    assert len(InsarFolder(root=str(tmp_path), limit=2).split("test")) == 2


def test_folder_loader_coherence_and_channel_images(tmp_path):
    _write_split(tmp_path, "train", 2, "npy")
    (tmp_path / "train" / "coherence").mkdir()
    np.save(tmp_path / "train" / "coherence" / "tile0.npy", np.zeros((16, 16), dtype=np.float32))
    s = InsarFolder(root=str(tmp_path)).split("train")[0]
    assert torch.allclose(s.image, torch.full_like(s.image, 0.5))  # coherence 0: no information

    root = tmp_path / "channels"
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "masks").mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 255, dtype=np.uint8)).save(root / "val" / "images" / "a.png")
    np.save(root / "val" / "masks" / "a.npy", np.ones((8, 8)))
    s = InsarFolder(root=str(root), image_format="channels").split("val")[0]
    assert s.image.shape == (3, 8, 8) and torch.allclose(s.image, torch.ones(3, 8, 8)) and s.label == 1


def test_folder_loader_errors(tmp_path):
    with pytest.raises(UserError, match=r"does not exist.*ROOT/\{train,val,test\}/\{images,masks\}"):
        InsarFolder(root=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="image_format"):
        InsarFolder(root=str(tmp_path), image_format="rgb")

    _write_split(tmp_path, "train", 2, "npy")
    ds = InsarFolder(root=str(tmp_path))
    with pytest.raises(UserError, match=r"test.*images.*does not exist.*expected layout"):
        ds.split("test")

    (tmp_path / "train" / "images" / "tile1.npy").write_bytes(b"not a numpy file")
    with pytest.raises(UserError, match=r"cannot read InSAR image .*tile1\.npy"):
        ds.split("train")[1]

    np.save(tmp_path / "train" / "images" / "lonely.npy", np.zeros((16, 16)))
    with pytest.raises(UserError, match=r"lonely\.npy.*has no mask"):
        InsarFolder(root=str(tmp_path)).split("train")

    root = tmp_path / "shapes"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    np.save(root / "train" / "images" / "a.npy", np.zeros((16, 16)))
    np.save(root / "train" / "masks" / "a.npy", np.zeros((8, 8)))
    with pytest.raises(UserError, match=r"a\.npy: shape"):
        InsarFolder(root=str(root)).split("train")[0]


def test_augmentation_moves_image_and_mask_together_and_keeps_coherence():
    from xaibench_ecsplain.encoding import augment

    ds = InsarMovingAreas(size=32, n_train=8, positive_fraction=1.0, seed=4)
    samples = list(ds.split("train"))
    x = torch.stack([s.image for s in samples])
    m = torch.stack([s.mask for s in samples])
    torch.manual_seed(0)
    xa, ma = augment(x, m)
    assert xa.shape == x.shape and ma.shape == m.shape and ma.dtype == m.dtype
    assert 0 <= float(xa.min()) and float(xa.max()) <= 1
    coherence = lambda t: (2 * t - 1).pow(2).sum(dim=1).sqrt()  # noqa: E731
    for i in range(len(samples)):
        # the mask went through the same rotation / flip as the coherence map
        found = False
        for k in range(4):
            for flip in (False, True):
                c = torch.rot90(coherence(x[i : i + 1])[0], k, dims=(-2, -1))
                mm = torch.rot90(m[i], k, dims=(-2, -1))
                if flip:
                    c, mm = torch.flip(c, dims=(-1,)), torch.flip(mm, dims=(-1,))
                if torch.allclose(c, coherence(xa[i : i + 1])[0], atol=1e-5) and torch.equal(mm, ma[i]):
                    found = True
        assert found
    assert not torch.allclose(xa, x)  # some phase offset was applied
