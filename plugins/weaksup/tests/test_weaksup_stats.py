"""``python -m xaibench_weaksup.stats``: the proxy-versus-Bijie statistics, on a fake Bijie tree
whose statistics are known by construction."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from PIL import Image
from xaibench_weaksup.stats import auroc, main, summarise

from xaibench.plugin import Sample

#: landslide images of the fake tree: (side, top, left, bottom, right) of a centred rectangle mask
RECTS = [(32, 8, 8, 24, 24), (32, 12, 12, 20, 20), (32, 12, 8, 20, 24), (64, 20, 24, 44, 40), (64, 30, 30, 34, 34)]
#: their shares, unchanged by the loader's resize to 32 x 32 (nearest, even corners)
SHARES = [(b - t) * (r - l) / side**2 for side, t, l, b, r in RECTS]


def _png(path: pathlib.Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _fake_bijie(root: pathlib.Path) -> pathlib.Path:
    rng = np.random.default_rng(0)
    for k, (side, top, left, bottom, right) in enumerate(RECTS):
        image = rng.integers(60, 120, (side, side, 3), dtype=np.uint8)
        image[top:bottom, left:right] = 220  # bright scars: brightness separates the classes
        mask = np.zeros((side, side), dtype=np.uint8)
        mask[top:bottom, left:right] = 255
        _png(root / "landslide" / "image" / f"ls{k}.png", image)
        _png(root / "landslide" / "mask" / f"ls{k}.png", mask)
    for k in range(11):
        _png(root / "non-landslide" / "image" / f"nl{k}.png", rng.integers(60, 120, (48, 48, 3), dtype=np.uint8))
    return root


def test_summary_of_a_known_tree(tmp_path):
    from xaibench_weaksup.stats import real_samples

    stats = summarise(real_samples(str(_fake_bijie(tmp_path)), 32))
    assert stats["images"] == 16 and stats["positive share"] == pytest.approx(5 / 16)
    assert stats["components per positive image"] == 1 and stats["positive images with one component"] == 1
    assert stats["landslide share: median"] == pytest.approx(np.median(SHARES))
    assert stats["landslide share: mean"] == pytest.approx(np.mean(SHARES))
    assert stats["landslide share: range"] == pytest.approx((min(SHARES), max(SHARES)))
    assert stats["box centre offset (of the side)"] == pytest.approx(0.0) and stats["margin inequality (of the side)"] == pytest.approx(0.0)
    assert stats["colour-feature AUROC (label)"] == 1.0


def test_components_and_centring_are_measured():
    mask = torch.zeros(20, 20, dtype=torch.int64)
    mask[0:4, 0:4] = 1  # off-centre, in the corner
    mask[10:12, 10:12] = 1
    sample = Sample(image=torch.rand(3, 20, 20), mask=mask, image_id="x", label=1)
    stats = summarise([sample, Sample(image=torch.rand(3, 20, 20), mask=torch.zeros(20, 20, dtype=torch.int64), image_id="y", label=0)])
    assert stats["components per positive image"] == 2 and stats["positive images with one component"] == 0
    assert stats["box centre offset (of the side)"] == pytest.approx(abs(5.5 - 9.5) / 20)
    assert stats["margin inequality (of the side)"] == pytest.approx(8 / 20)  # margins 0 and 8


def test_auroc_is_mann_whitney():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert np.isnan(auroc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_command_prints_proxy_real_and_published_side_by_side(tmp_path, capsys):
    root = _fake_bijie(tmp_path / "bijie")
    assert main([str(root), "--size", "32", "--tiles", "40"]) == 0
    out = capsys.readouterr().out
    assert "proxy (40 tiles)" in out and "real Bijie" in out and str(root) in out.replace("\n", "") and "published" in out
    row = next(line for line in out.splitlines() if "positive share" in line)
    assert "31.2 %" in row and "27.8 %" in row  # the fake tree's 5 / 16 beside the published share
    assert "landslide share: median" in out


def test_command_on_a_missing_folder_is_one_error_line(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "--tiles", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere does not exist" in err and "\n" not in err
