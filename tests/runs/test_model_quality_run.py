"""End to end: a run with the model-quality metrics scores its models first, and a model at
chance is listed apart (or refused)."""

import pandas as pd
import pytest

import xaibench
from xaibench.cli import main
from xaibench.config.vocabulary import MODEL_QUALITY
from xaibench.report.models import at_chance


@pytest.fixture(scope="module")
def chance_run(tmp_path_factory):
    from tests.conftest import TINY_CONFIG

    d = tmp_path_factory.mktemp("chance")
    cfg = d / "tiny.toml"
    text = TINY_CONFIG.replace('chance = "rank"', 'chance = "warn"').replace('metrics = ["confidence", "iou_drop"]', 'metrics = ["confidence", "iou_drop", "model_*"]')
    assert "model_*" in text
    cfg.write_text(text)
    df = xaibench.run(cfg, d / "out", show_progress=False)
    return cfg, d / "out", df


def test_the_quality_cells_are_one_per_model_and_the_leaderboard_opens_with_them(chance_run):
    _, out, df = chance_run
    quality = df[df["metric"].isin(MODEL_QUALITY)]
    assert set(quality["explainer"]) == {""} and set(quality["metric"]) == set(MODEL_QUALITY)
    assert quality.groupby("metric")["image_id"].nunique().eq(6).all()  # every scored image, once per metric
    lb = (out / "leaderboard.md").read_text()
    assert lb.index("## Models") < lb.index("## Explanations of models at chance")
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    assert summary.loc[summary["metric"] == "model_accuracy", "mean"].isna().all()  # a segmenter has no image-label accuracy


def test_a_model_at_chance_is_listed_apart_not_ranked(chance_run):
    _, out, _ = chance_run
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    assert list(at_chance(summary)) == ["smp_unet"]  # one epoch on 8 tiles
    lb = (out / "leaderboard.md").read_text()
    assert "> ⚠ model 'smp_unet' is at chance: its pooled IoU" in lb
    assert "## Rankings per metric" not in lb and "## Faithfulness ranking by IoU drop" not in lb
    apart = lb[lb.index("## Explanations of models at chance"):]
    assert "| smp_unet | iou_drop (M1) | grad_cam | decoder1 | 0.2 |" in apart


def test_chance_error_refuses_the_run_and_keeps_its_results(chance_run, tmp_path, capsys):
    cfg, _, _ = chance_run
    strict = tmp_path / "strict.toml"
    strict.write_text(cfg.read_text().replace('chance = "warn"', 'chance = "error"'))
    assert main(["run", str(strict), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "is at chance" in err[0] and "chance = 'error'" in err[0]
    assert (tmp_path / "o" / "results.parquet").is_file() and (tmp_path / "o" / "leaderboard.md").is_file()
