"""Tests of the synthetic Rooftops dataset."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from xaibench.datasets.base import Dataset, Sample
from xaibench.datasets.rooftops import Rooftops
from xaibench.errors import UserError


def _same(a: Sample, b: Sample) -> bool:
    return (
        a.image_id == b.image_id
        and a.label == b.label
        and torch.equal(a.image, b.image)
        and torch.equal(a.mask, b.mask)
    )


def test_protocol_and_defaults():
    ds = Rooftops()
    assert isinstance(ds, Dataset)
    assert Rooftops.name == "rooftops"
    assert ds.num_classes == 2
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [160, 16, 16]


def test_deterministic_across_instances_access_orders_and_lengths():
    a = Rooftops(size=64, n_train=4, n_val=4, n_test=12, seed=3)
    b = Rooftops(size=64, n_train=0, n_val=0, n_test=20, seed=3)  # other lengths, same tiles
    forward = [a.split("test")[i] for i in range(12)]
    backward = [b.split("test")[i] for i in reversed(range(12))][::-1]
    b.split("train")  # touching other splits must not matter
    assert all(_same(x, y) for x, y in zip(forward, backward))
    # a fresh instance, random access order
    c = Rooftops(size=64, n_test=12, seed=3)
    for i in [7, 2, 11, 0, 5]:
        assert _same(c.split("test")[i], forward[i])


def test_memoised_and_sequence_behaviour():
    ds = Rooftops(size=32, n_train=3, n_val=2, n_test=5)
    test = ds.split("test")
    assert ds.split("test") is test
    assert test[1] is test[1]
    assert test[-1] is test[4]
    assert [s.image_id for s in test] == [f"rooftops-test-{i:04d}" for i in range(5)]
    assert [s.image_id for s in test[1:3]] == ["rooftops-test-0001", "rooftops-test-0002"]
    with pytest.raises(IndexError):
        test[5]
    with pytest.raises(IndexError):
        test[-6]
    assert len(ds.split("val")) == 2


def test_shapes_dtypes_ranges_ids_labels():
    ds = Rooftops(size=96, n_train=2, n_val=9, n_test=2, seed=1)
    for i, s in enumerate(ds.split("val")):
        assert s.image.shape == (3, 96, 96) and s.image.dtype == torch.float32
        assert s.mask.shape == (96, 96) and s.mask.dtype == torch.int64
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert set(s.mask.unique().tolist()) <= {0, 1}
        assert s.image_id == f"rooftops-val-{i:04d}"
        assert s.label == int(bool(s.mask.any()))
        assert s.image.std() > 0.02  # not a flat image


def test_masks_are_plausible():
    ds = Rooftops(size=128, n_test=16, seed=0)
    test = ds.split("test")
    labels = [s.label for s in test]
    assert 1 in labels and 0 in labels  # some tiles without buildings
    assert sum(labels) >= 12
    fractions = [s.mask.float().mean().item() for s in test if s.label]
    assert all(0.005 < f < 0.4 for f in fractions), fractions
    assert 0.02 < np.mean(fractions) < 0.25
    # roofs are compact blobs: at most 4 connected components per tile
    for s in test:
        _, n = ndimage.label(s.mask.numpy())
        assert n <= 4


def test_empty_every_sets_the_image_level_negatives_and_keeps_the_other_tiles():
    default, balanced = Rooftops(size=32, n_test=16), Rooftops(size=32, n_test=16, empty_every=2)
    assert [s.label for s in balanced.split("test")] == [1, 0] * 8
    assert [s.label for s in default.split("test")] == ([1] * 7 + [0]) * 2
    for i in (0, 2, 4):  # a tile with buildings in both is the same tile
        assert torch.equal(default.split("test")[i].image, balanced.split("test")[i].image)
    assert repr(default).endswith("seed=0)") and repr(balanced).endswith("empty_every=2)")


def test_different_seeds_and_splits_differ():
    a = Rooftops(size=64, n_train=2, n_test=2, seed=0)
    b = Rooftops(size=64, n_train=2, n_test=2, seed=1)
    assert not torch.equal(a.split("test")[0].image, b.split("test")[0].image)
    assert not torch.equal(a.split("test")[0].mask, b.split("test")[0].mask)
    assert not torch.equal(a.split("train")[0].image, a.split("test")[0].image)


def test_shadows_are_dark_outside_the_mask_and_next_to_roofs():
    ds = Rooftops(size=128, n_test=16, seed=2)
    checked = 0
    for i in range(16):
        tile = ds.render("test", i)
        sample = ds.split("test")[i]
        assert np.array_equal(tile.roof, sample.mask.numpy().astype(bool))
        assert not (tile.shadow & tile.roof).any()
        if not tile.roof.any():
            assert not tile.shadow.any()
            continue
        checked += 1
        assert tile.shadow.any()
        lum = tile.image.mean(-1)
        ground = ~tile.roof & ~tile.shadow
        assert lum[tile.shadow].mean() < 0.8 * lum[tile.roof].mean()
        assert lum[tile.shadow].mean() < 0.7 * lum[ground].mean()
        # shadows are cast by roofs: every shadow pixel is close to a roof
        assert ndimage.distance_transform_edt(~tile.roof)[tile.shadow].max() <= 9
        # ... on the side away from the sun: the shadow's centroid lies in the sun direction
        dy, dx = tile.sun
        ys, xs = np.nonzero(tile.shadow)
        ry, rx = np.nonzero(tile.roof)
        assert (ys.mean() - ry.mean()) * dy + (xs.mean() - rx.mean()) * dx > 0
        # black box, from the sample alone: a thin ring just outside the mask has dark pixels
        img = sample.image.numpy().mean(0)
        ring = ndimage.binary_dilation(tile.roof, iterations=2) & ~tile.roof
        assert (img[ring] < 0.6 * np.median(img[ground])).mean() > 0.1
    assert checked >= 12


def test_channel_mean():
    ds = Rooftops(size=32, n_train=5, n_test=1)
    mean = ds.channel_mean()
    assert mean.shape == (3,) and mean.dtype == torch.float32
    expected = torch.stack([ds.split("train")[i].image.mean(dim=(1, 2)) for i in range(5)]).mean(0)
    assert torch.allclose(mean, expected, atol=1e-6)
    assert torch.all((mean > 0.1) & (mean < 0.9))
    mean[0] = 99.0  # callers get a copy
    assert torch.allclose(ds.channel_mean(), expected, atol=1e-6)
    # with no train tiles it still has a mean (from the train generator)
    empty = Rooftops(size=32, n_train=0)
    assert torch.all(torch.isfinite(empty.channel_mean()))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"size": 100}, "size"),
        ({"size": 0}, "size"),
        ({"size": -32}, "size"),
        ({"size": "128"}, "size"),
        ({"size": True}, "size"),
        ({"n_train": -1}, "n_train"),
        ({"n_test": 2.5}, "n_test"),
        ({"seed": -1}, "seed"),
        ({"empty_every": 1}, "empty_every"),
    ],
)
def test_bad_config_values(kwargs, key):
    with pytest.raises(UserError) as err:
        Rooftops(**kwargs)
    msg = str(err.value)
    assert key in msg and "rooftops" in msg and "\n" not in msg
    if key == "size" and isinstance(kwargs["size"], int) and not isinstance(kwargs["size"], bool):
        assert "multiple of 32" in msg


def test_unknown_split_lists_the_splits():
    with pytest.raises(UserError) as err:
        Rooftops().split("tset")
    msg = str(err.value)
    assert "'tset'" in msg and "test" in msg and "train" in msg and "val" in msg


def test_generation_is_fast():
    ds = Rooftops(size=128, n_train=30)
    ds.render("train", 0)  # warm up
    start = time.perf_counter()
    for i in range(30):
        ds.render("train", i)
    per_tile = (time.perf_counter() - start) / 30
    assert per_tile < 0.05  # ~5 ms on a slow shared core; generous against load
