"""A whole (tiny) benchmark through the core runner: the package's plugins work end to end."""

from __future__ import annotations

import math
import textwrap

import xaibench

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
width = 4
nb_epochs = 1
batch_size = 4
explainers = ["norm_cam"]
layers = ["c1", "conv2"]

[[models]]
name = "ecsplain"
label = "ecsplain-norm_cam-fused"
cam_type = "norm_cam"
width = 4
nb_epochs = 1
batch_size = 4
explainers = ["ecsplain_cam"]
layers = ["cam"]

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
metrics = ["localization_iou", "auroc", "mae", "classification_accuracy", "classification_recall", "classification_precision"]

[run]
batch_size = 4
"""


def test_tiny_benchmark_runs_end_to_end(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(CONFIG))
    df = xaibench.run(path, out=tmp_path / "run")
    assert set(df["model"]) == {"ecsplain-norm_cam", "ecsplain-norm_cam-fused", "unet"}
    assert set(df["dataset"]) == {"insar_moving_areas"}
    got = set(zip(df["model"], df["explainer"], df["layer"]))
    assert got == {
        ("ecsplain-norm_cam", "norm_cam", "c1"),
        ("ecsplain-norm_cam", "norm_cam", "conv2"),
        ("ecsplain-norm_cam-fused", "ecsplain_cam", "cam"),
        ("unet", "model_output", "output"),
    }
    acc = df[df["metric"] == "classification_accuracy"]
    assert len(acc) == 4 * 4 and acc["value"].isin([0.0, 1.0]).all()
    assert (acc["threshold"] == "").all()
    # classifier metrics do not depend on the explainer or layer of a model
    per_model = acc.groupby(["model", "image_id"])["value"].nunique()
    assert (per_model == 1).all()
    iou = df[df["metric"] == "localization_iou"]
    assert set(iou["threshold"]) == {"0.5"}
    assert all(math.isnan(v) or 0 <= v <= 1 for v in iou["value"])
    assert (tmp_path / "run" / "leaderboard.md").is_file()
