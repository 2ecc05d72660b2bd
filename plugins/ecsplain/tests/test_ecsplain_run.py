"""A whole (tiny) benchmark through the core runner: the package's plugins work end to end, and
the package's benchmark config is valid."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import xaibench
from xaibench.cli import main

CONFIG = """
[benchmark]
name = "ecsplain-tiny"
seed = 0

[dataset]
name = "insar_moving_areas"
size = 32
n_train = 8
n_val = 0
n_test = 4

[[models]]
name = "ecsplain"
label = "ecsplain-norm_cam"
cam_type = "norm_cam"
cam_layers = ["c1", "conv2"]
width = 4
nb_epochs = 1
batch_size = 4
explainers = ["norm_cam", "grad_cam"]
layers = ["c1", "conv2", "mean(c1, conv2)"]

[[models]]
name = "unet"
channels = [4, 8, 16]
nb_epochs = 1
batch_size = 4
explainers = ["model_output"]
layers = ["output"]

[grid]
thresholds = [0.5]
threshold_sweep = 1
metrics = ["localization_iou", "hausdorff", "auroc", "mae", "classification_accuracy", "classification_recall", "classification_precision", "classification_f1"]

[metric_params.localization_iou]
images = "with_object"

[metric_params.hausdorff]
images = "with_object"

[run]
batch_size = 4
"""

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "ecsplain.toml"


def test_tiny_benchmark_runs_end_to_end(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(CONFIG))
    df = xaibench.run(path, out=tmp_path / "run")
    assert set(df["model"]) == {"ecsplain-norm_cam", "unet"}
    assert set(df["dataset"]) == {"insar_moving_areas"}
    maps = df[df["explainer"] != ""]
    got = set(zip(maps["model"], maps["explainer"], maps["layer"]))
    fused = {lay for _, _, lay in got if lay.startswith("mean(")}
    assert len(fused) == 1
    assert got == {(m, e, lay) for m in ["ecsplain-norm_cam"] for e in ["norm_cam", "grad_cam"] for lay in ["c1", "conv2", *fused]} | {
        ("unet", "model_output", "output"),
    }
    # model-level metrics: one cell per model, explainer / layer / threshold empty
    acc = df[df["metric"] == "classification_accuracy"]
    assert len(acc) == 4 * 2 and acc["value"].isin([0.0, 1.0]).all()
    assert (acc[["explainer", "layer", "threshold"]] == "").all().all()
    # classification_f1's dataset statistic is the F1 of the detections, not the mean
    summary = pd.read_csv(tmp_path / "run" / "summary.csv", keep_default_na=False)
    for model in ("ecsplain-norm_cam", "unet"):
        f1 = df[(df["model"] == model) & (df["metric"] == "classification_f1")]["value"].dropna()  # 1 = TP, 0 = FP or FN
        row = summary[(summary["model"] == model) & (summary["metric"] == "classification_f1")]
        assert len(row) == 1 and row["statistic"].iloc[0] == "f1"
        expected = 2 * f1.sum() / (2 * f1.sum() + (f1 == 0).sum()) if len(f1) else math.nan
        assert float(row["mean"].iloc[0]) == pytest.approx(expected, nan_ok=True)
    iou = df[df["metric"] == "localization_iou"]
    assert set(iou["threshold"]) == {"0.5"}
    assert all(math.isnan(v) or 0 <= v <= 1 for v in iou["value"])
    # images = "with_object": localisation only on the tiles that hold a moving area
    positive = {f"insar-test-{i:04d}" for i in range(4) if tiny_labels()[i]}
    assert 0 < len(positive) < 4
    for metric in ("localization_iou", "hausdorff"):
        rows = df[df["metric"] == metric]
        assert rows[~rows["image_id"].isin(positive)]["value"].isna().all(), metric
        assert rows[rows["image_id"].isin(positive)]["value"].notna().any(), metric
    assert (tmp_path / "run" / "leaderboard.md").is_file()


def tiny_labels() -> list[int]:
    from xaibench_ecsplain.synthetic import InsarMovingAreas

    return [s.label for s in InsarMovingAreas(size=32, n_train=8, n_val=0, n_test=4, seed=0).split("test")]


@pytest.mark.skipif(not BENCHMARK.is_file(), reason="outside the xaibench repository")
def test_the_ecsplain_benchmark_config_is_valid(capsys):
    assert main(["validate", str(BENCHMARK)]) == 0
    text = BENCHMARK.read_text()
    assert "mean(c1, conv2, conv3, conv4, conv5)" in text
