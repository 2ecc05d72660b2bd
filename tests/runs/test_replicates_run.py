"""A benchmark under replicates, end to end: folds x seeds on a tiny config."""

import textwrap

import pandas as pd
import pytest

import xaibench
from xaibench.config.parse import load_config
from xaibench.errors import UserError
from xaibench.models import smp_unet
from xaibench.models.base import weights_hash
from xaibench.runs.results import ResultStore

pytestmark = pytest.mark.slow

GRID = """
[grid]
explainers = ["grad_cam", "eigen_cam"]
layers = ["decoder1"]
thresholds = [0.3]
perturbations = ["background_only"]
metrics = ["confidence", "iou_drop"]
"""


def _text(run: str) -> str:
    from tests.conftest import TINY_CONFIG

    text = textwrap.dedent(TINY_CONFIG)
    text = text[: text.index("[grid]")] + GRID + "\n[run]\nbatch_size = 4\nchance = \"rank\"  # a 1-epoch model: ranked anyway, to test the tables\n" + run + "\n"
    return text.replace("n_train = 8", "n_train = 10")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-fold x 2-seed run, with what every training got to see and the weights it made."""
    seen = []
    real = smp_unet.train_or_load

    def recording(module, cache_path, step, samples, **kw):
        out = real(module, cache_path, step, samples, **kw)
        seen.append({"ids": {s.image_id for s in samples}, "seed": kw["seed"], "weights": weights_hash(out)})
        return out

    d = tmp_path_factory.mktemp("reps")
    cfg = d / "reps.toml"
    cfg.write_text(_text("folds = 2\nseeds = [0, 1]"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(smp_unet, "train_or_load", recording)
        df = xaibench.run(cfg, d / "out", show_progress=False)
    return cfg, d / "out", df, seen


def test_every_image_is_scored_once_per_seed_by_a_model_that_never_saw_it(trained):
    _, out, df, seen = trained
    pool = {f"rooftops-train-{i:04d}" for i in range(10)} | {f"rooftops-test-{i:04d}" for i in range(6)}
    assert set(df["fold"]) == {"0", "1"} and set(df["seed"]) == {0, 1}
    per_image = df.groupby("image_id")["fold"].nunique()
    assert set(per_image.index) == pool and (per_image == 1).all()  # each image in exactly one held-out fold
    assert len(seen) == 4  # 2 folds x 2 seeds
    for _, block in df.groupby("fold"):
        held_out = set(block["image_id"])
        trainings = [s for s in seen if s["ids"] == pool - held_out]
        assert {s["seed"] for s in trainings} == {0, 1}  # both seeds trained on exactly the other fold
    # two seeds: the same images, other weights
    by_ids = {}
    for s in seen:
        by_ids.setdefault(frozenset(s["ids"]), []).append(s)
    for pair in by_ids.values():
        assert len(pair) == 2 and pair[0]["weights"] != pair[1]["weights"]


def test_rows_summary_manifest_and_leaderboard_carry_the_replicates(trained):
    cfg, out, df, _ = trained
    assert not df.duplicated(["cell_key", "image_id", "fold", "seed"]).any()
    summary = pd.read_csv(out / "summary.csv")
    summary = summary[summary["explainer"].notna()]  # (the model's own quality rows: NaN for the other kind of model)
    assert (summary["replicates"] == 4).all() and summary["replicate_sd"].notna().all()
    assert {"top1_share", "ranking_w"} <= set(summary.columns)
    manifest = __import__("json").loads((out / "manifest.json").read_text())
    assert [(r["fold"], r["seed"]) for r in manifest["replicates"]] == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]
    assert sorted(manifest["folds"]["0"] + manifest["folds"]["1"]) == sorted(df["image_id"].unique())
    md = (out / "leaderboard.md").read_text()
    assert "## Ranking stability" in md and "Kendall's W" in md and "4 replicates" in md


def test_a_second_run_resumes_every_replicate_and_a_new_seed_adds_only_its_own(trained, tmp_path):
    cfg, out, df, _ = trained
    again = xaibench.run(cfg, out, show_progress=False)
    assert len(again) == len(df)
    more = tmp_path / "more.toml"
    more.write_text(cfg.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    grown = xaibench.run(more, out, show_progress=False)
    assert len(grown) == len(df) * 3 // 2 and set(grown["seed"]) == {0, 1, 2}
    assert not grown.duplicated(["cell_key", "image_id", "fold", "seed"]).any()
    other = tmp_path / "other.toml"
    other.write_text(cfg.read_text().replace("folds = 2", "folds = 4"))
    with pytest.raises(UserError, match="holds results of a different benchmark setup"):
        xaibench.run(other, out, show_progress=False)


def test_kill_9_mid_fold_then_resume_loses_and_duplicates_nothing(trained, tmp_path, kill_9_after_parts):
    cfg, _, reference, _ = trained
    out = tmp_path / "killed"
    kill_9_after_parts(cfg, out, parts=3, poll=0.02)
    partial = ResultStore(out).read()
    assert 0 < len(partial) < len(reference)
    full = xaibench.run(cfg, out, show_progress=False)
    key = ["cell_key", "image_id", "fold", "seed"]
    assert not full.duplicated(key).any()
    merged = full.merge(reference, on=key, suffixes=("", "_ref"))
    assert len(merged) == len(reference) == len(full)
    assert (merged["value"] - merged["value_ref"]).abs().max() < 1e-6


def test_ray_runs_the_replicates_like_local(trained, tmp_path):
    pytest.importorskip("ray")
    cfg, _, local, _ = trained
    remote = xaibench.run(cfg, tmp_path / "ray", show_progress=False, executor="ray")
    key = ["cell_key", "image_id", "fold", "seed"]
    merged = remote.merge(local, on=key, suffixes=("", "_local"))
    assert len(merged) == len(local) == len(remote)
    assert (merged["value"] - merged["value_local"]).abs().max() < 1e-5


def test_seeds_need_a_model_with_a_seed_parameter_it_does_not_set_itself(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(_text("seeds = [0, 1]").replace("epochs = 1", "epochs = 1\nseed = 3"))
    with pytest.raises(UserError, match=r"\[model\]: seed: the model sets its own seed, which run.seeds replaces"):
        xaibench.run(load_config(path), tmp_path / "o", show_progress=False)
    assert not (tmp_path / "o").exists()
