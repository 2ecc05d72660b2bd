"""benchmarks/landslides.toml end to end at tiny sizes: 2 folds, every training per fold, the
rows of Table 4.1, AND never larger than its masks, and the shipped benchmark validates."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import xaibench
from xaibench.cli import main

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "landslides.toml"
TABLE_4_1 = {"mask_and:grad_cam", "mask_and:cyclegan", "mask_and:grad_cam+gan", "mask_and:thesis", "mask_and:otsu"}


def tiny(text: str) -> str:
    """The shipped benchmark at test sizes: 32 tiles, 2 folds, one epoch of tiny networks."""
    text = text.replace("n_train = 200", "n_train = 24").replace("n_test = 50", "n_test = 8").replace("folds = 5", "folds = 2")
    assert text.count("width = 16\nepochs = 16\n") == 2  # both classifier entries
    text = text.replace("width = 16\nepochs = 16\n", "width = 4\nepochs = 2\n")
    text = text.replace("\nepochs = 6\n", "\nepochs = 1\n").replace("threshold_sweep = 9", "threshold_sweep = 1")
    assert "ngf = 8\nn_blocks = 2\nndf = 16\n" in text and "\nepochs = 10\n" in text
    return text.replace("ngf = 8\nn_blocks = 2\nndf = 16\n", "ngf = 4\nn_blocks = 1\nndf = 8\n").replace("\nepochs = 10\n", "\nepochs = 1\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("landslides")
    cfg = d / "landslides.toml"
    cfg.write_text(tiny(BENCHMARK.read_text()))
    df = xaibench.run(cfg, d / "out", show_progress=False)
    return d / "out", df


def test_the_shipped_benchmark_validates_with_five_folds(capsys):
    assert main(["validate", str(BENCHMARK)]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.startswith(f"ok: {BENCHMARK}: ") and " in 5 folds" in header  # [run] folds = 5
    models = {line.split()[0] for line in lines if line.startswith("  ") and " (" in line and "cells" in line}  # "  LABEL (MODEL): ..." per model
    assert models == {"classifier", "classifier-sweep", "unet"}


def test_every_row_of_table_4_1_is_scored_on_every_image_once(run):
    out, df = run
    assert TABLE_4_1 <= set(df["explainer"]) and {"grad_cam", "score_cam", "cyclegan_diff", "model_output"} <= set(df["explainer"])
    assert {"random", "center_prior"} <= set(df["explainer"])  # the trivial baselines beside Table 4.1
    assert {"model_pooled_iou", "model_accuracy", "model_auroc"} <= set(df["metric"])  # the probes, in the Models section
    assert set(df["fold"]) == {"0", "1"}
    assert (df.groupby("image_id")["fold"].nunique() == 1).all()  # each image held out once
    assert len(set(df["image_id"])) == 32
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(k.startswith("explainer_fit_s[classifier (fold 1") for k in manifest["timings"])
    assert (out / "plots" / "gallery.png").is_file() and (out / "plots" / "threshold_pooled_iou.png").is_file()


def test_and_is_never_larger_than_either_of_its_masks(run):
    _, df = run
    recall = df[df["metric"] == "localization_recall"].pivot_table(index=["image_id", "fold"], columns="explainer", values="value")
    for both, parts in (("mask_and:grad_cam+gan", ("mask_and:grad_cam", "mask_and:cyclegan")),):
        ok = recall[[both, *parts]].dropna()
        assert len(ok) and (ok[both] <= ok[list(parts)].min(axis=1) + 1e-9).all()


def test_masks_are_scored_on_the_landslide_tiles_only(run):
    _, df = run
    local = df[df["metric"].str.startswith(("localization_", "pooled_")) & (df["explainer"] == "mask_and:thesis")]
    has_landslide = local.groupby("image_id")["value"].apply(lambda v: v.notna().any())
    assert has_landslide.any() and not has_landslide.all()  # the landslide-free tiles are left out (NaN)
    acc = df[(df["metric"] == "model_accuracy") & (df["model"] == "classifier")]
    assert acc["value"].notna().sum() == 32  # the classifier is judged on every tile


def test_pooled_and_per_image_statistics_are_both_in_the_summary(run):
    out, _ = run
    summary = pd.read_csv(out / "summary.csv")
    stats = summary.groupby("metric")["statistic"].first()
    assert stats["pooled_iou"] == "pooled" and stats["localization_iou"] == "mean"
    assert summary["replicates"].max() == 2
