"""End to end on a tiny config: contract of the run directory, resume, cache, errors."""

import json
import time
import types

import pandas as pd
import pytest
import torch

import xaibench
from xaibench.config.parse import load_config
from xaibench.engine import cpu_isa
from xaibench.errors import UserError
from xaibench.plugin import hookimpl
from xaibench.runs.results import FIXED_COLUMNS, ResultStore
from xaibench.runs.runner import run_benchmark

pytestmark = pytest.mark.slow

CELLS = 2 * 2 * 2 * 2 + 2 * 2 * 2  # confidence: e x l x t x p; iou_drop: e x l x t
IMAGES = 6


def explained(df):
    """The rows of explanations (every run also scores the model itself: rows without an explainer)."""
    return df[df["explainer"] != ""]


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """A cache of this module's own, so pass counts do not depend on what other tests cached."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XAIBENCH_CACHE", str(tmp_path_factory.mktemp("runner-cache")))
        yield


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, own_cache):
    from tests.conftest import TINY_CONFIG

    d = tmp_path_factory.mktemp("run")
    cfg = d / "tiny.toml"
    cfg.write_text(TINY_CONFIG)
    out = d / "out"
    t = time.perf_counter()
    df = xaibench.run(cfg, out, show_progress=False)
    return cfg, out, df, time.perf_counter() - t


def test_run_directory_contract(first_run):
    cfg, out, df, _ = first_run
    for name in ("results.parquet", "summary.csv", "leaderboard.md", "manifest.json"):
        assert (out / name).is_file(), name
    table = pd.read_parquet(out / "results.parquet")
    assert set(FIXED_COLUMNS) <= set(table.columns)
    assert len(explained(table)) == CELLS * IMAGES == len(explained(df))
    assert set(table[table.explainer == ""].metric) >= {"model_pooled_iou", "model_trivial_iou"}  # every run scores the model
    assert set(explained(table)["perturbation"]) == {"background_only", "highlighted_only"}
    assert set(table.loc[table.metric == "iou_drop", "perturbation"]) == {"background_only"}
    assert table["value"].notna().any()
    summary = pd.read_csv(out / "summary.csv")
    assert {"mean", "std", "ci_low", "ci_high", "n", "p_vs_best"} <= set(summary.columns) and len(summary[summary.explainer.notna()]) == CELLS
    m = json.loads((out / "manifest.json").read_text())
    assert m["config_hash"] == load_config(cfg).hash() and m["seed"] == 0 and m["device"] == "cpu"
    assert m["cpu"].endswith(torch.backends.cpu.get_cpu_capability()) and m["cpu_isa"] == cpu_isa.describe()
    assert m["versions"]["torch"] == torch.__version__.split("+")[0] or m["versions"]["torch"].startswith(torch.__version__[:4])
    assert m["passes"]["backwards"] == 2  # one per image batch (6 images, batch 4), shared by every explainer and layer
    # every perturbed row the cells asked for, and those forwarded (fewer: identical inputs once, clean ones never)
    assert 0 < m["passes"]["perturbed_forwarded"] <= m["passes"]["perturbed_requested"]
    assert m["passes"]["perturbed_requested"] == len(explained(table).query("perturbation != ''").drop_duplicates(["cell_key", "image_id"]).groupby(["explainer", "layer", "threshold", "perturbation", "image_id"]))
    parts = ("data_s", "heatmaps_s", "thresholds_s", "perturbed_forwards_s", "metric_arithmetic_s", "write_s", "summary_s")
    assert all(m["timings"][k] >= 0 for k in parts) and sum(m["timings"][k] for k in parts) <= m["timings"]["total_s"]
    lb = (out / "leaderboard.md").read_text()
    assert "## Rankings per metric" in lb and "[95% CI]" in lb and "Faithfulness ranking by IoU drop" in lb
    assert (out / "plots" / "gallery.png").is_file() and (out / "plots" / "threshold_confidence.png").is_file()


def test_second_run_resumes_and_recomputes_nothing(first_run):
    cfg, out, df, cold = first_run
    t = time.perf_counter()
    again = xaibench.run(cfg, out, show_progress=False)
    warm = time.perf_counter() - t
    m = json.loads((out / "manifest.json").read_text())
    assert m["passes"]["forwards"] == 0 and len(again) == len(df)
    assert warm < cold


def test_adding_thresholds_reuses_every_cached_map(first_run, tmp_path):
    cfg, out, df, _ = first_run
    more = tmp_path / "more.toml"
    more.write_text(cfg.read_text().replace("thresholds = [0.2, 0.5]", "thresholds = [0.2, 0.5, 0.3]"))
    new = xaibench.run(more, out, show_progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["timings"]["heatmaps_computed"] == 0 and m["timings"]["heatmap_cache_hits"] > 0
    assert len(explained(new)) == len(explained(df)) * 3 // 2
    assert not new.duplicated(["cell_key", "image_id"]).any()


def test_a_different_setup_in_the_same_directory_is_refused_and_fresh_starts_over(first_run, tmp_path):
    cfg, out, df, _ = first_run
    other = tmp_path / "other.toml"
    other.write_text(cfg.read_text().replace("seed = 0", "seed = 1"))
    with pytest.raises(UserError, match="different benchmark setup"):
        xaibench.run(other, out, show_progress=False)
    fresh_out = tmp_path / "copy"
    xaibench.run(cfg, fresh_out, show_progress=False)
    n = len(list((fresh_out / "parts").glob("*.parquet")))
    xaibench.run(cfg, fresh_out, show_progress=False, fresh=True)
    assert len(list((fresh_out / "parts").glob("*.parquet"))) == n  # rewritten, not appended
    m = json.loads((fresh_out / "manifest.json").read_text())
    # and no cached map is served again: 2 explainers x 2 layers x 2 image batches computed
    assert m["timings"]["heatmaps_computed"] == 2 * 2 * 2 and m["timings"]["heatmap_cache_hits"] == 0


def test_fresh_maps_recomputes_one_explainers_maps_and_rows_and_keeps_the_others(first_run, tmp_path):
    import shutil

    cfg, out, df, _ = first_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = ResultStore(copy).read()  # (other tests may have added cells to the first run's directory)
    again = xaibench.run(cfg, copy, show_progress=False, fresh_maps=["grad_cam"])
    m = json.loads((copy / "manifest.json").read_text())
    assert m["timings"]["heatmaps_computed"] == 2 * 2 and m["timings"]["heatmap_cache_hits"] == 0  # grad_cam's: 2 layers x 2 batches
    key = ["cell_key", "image_id"]
    assert not again.duplicated(key).any()
    kept, other = (d[d["explainer"] != "grad_cam"].sort_values(key).reset_index(drop=True) for d in (before, again))
    assert len(kept) and other[key].equals(kept[key]) and other["value"].equals(kept["value"])  # eigen_cam's rows were not touched
    new, old = (d[d["explainer"] == "grad_cam"].sort_values(key).reset_index(drop=True) for d in (again, df))
    assert len(new) and new[key].equals(old[key])  # the config's grad_cam cells, computed again
    assert torch.allclose(torch.tensor(new["value"].to_numpy()), torch.tensor(old["value"].to_numpy()), atol=1e-5, equal_nan=True)


def test_concurrent_run_on_the_same_directory_is_refused(first_run):
    cfg, out, _, _ = first_run
    with ResultStore(out).lock():
        with pytest.raises(UserError, match="in use"):
            xaibench.run(cfg, out, show_progress=False)


def test_user_error_writes_nothing(tiny_config, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny_config.read_text().replace('layers = ["decoder1", "decoder2"]', 'layers = ["decoder9"]'))
    out = tmp_path / "never"
    with pytest.raises(UserError, match="decoder9"):
        xaibench.run(bad, out, show_progress=False)
    assert not out.exists()


def test_crash_mid_run_leaves_a_readable_table_and_resume_completes(tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = ResultStore.append
    calls = {"n": 0}

    def crash_after_first(self, rows):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # dies between two batches
        real(self, rows)

    monkeypatch.setattr(ResultStore, "append", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        xaibench.run(tiny_config, out, show_progress=False)
    partial = pd.read_parquet(out / "results.parquet")
    assert 0 < len(partial) < CELLS * IMAGES
    monkeypatch.setattr(ResultStore, "append", real)
    resumed = tmp_path / "resume.toml"  # other batches than the crashed run's: done rows must not come back
    resumed.write_text(tiny_config.read_text().replace("batch_size = 4", "batch_size = 6"))
    full = xaibench.run(resumed, out, show_progress=False)
    assert len(explained(full)) == CELLS * IMAGES and not full.duplicated(["cell_key", "image_id"]).any()


def test_kill_9_leaves_a_readable_table(tiny_config, tmp_path, kill_9_after_parts):
    out = tmp_path / "killed"
    cfg = tmp_path / "big.toml"
    cfg.write_text(tiny_config.read_text().replace("n_test = 6", "n_test = 40").replace("batch_size = 4", "batch_size = 2"))
    kill_9_after_parts(cfg, out, parts=2, poll=0.05)
    table = pd.read_parquet(out / "results.parquet")  # readable whatever moment the kill hit
    assert len(table) > 0
    assert ResultStore(out).done()  # and the parts too


class _Wrapped:
    """A model plugin handing the runner a module the test keeps."""

    name = "wrapped"
    module = None

    def load(self, ctx):
        from xaibench.models.base import LoadedModel
        from xaibench.models.smp_unet import unet_tail

        m = type(self).module
        return LoadedModel(m, "binary", {"decoder1": "decoder.blocks.2", "decoder2": "decoder.blocks.1"}, tail=lambda p: unet_tail(m, p))


def test_the_users_model_is_not_modified_by_a_run(tiny_config, tmp_path):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    module = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4], classes=1).eval()
    _Wrapped.module = module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    structure = [(n, type(m)) for n, m in module.named_modules()]
    plugin = types.ModuleType("wrapped_plugin")
    plugin.register_models = hookimpl(lambda register: register(_Wrapped))
    cfg = tmp_path / "w.toml"
    text = tiny_config.read_text()
    start = text.index("[model]")
    end = text.index("[grid]")
    cfg.write_text(text[:start] + '[model]\nname = "wrapped"\n\n' + text[end:].replace('"eigen_cam"]', '"eigen_cam", "score_cam", "ablation_cam"]'))
    run_benchmark(load_config(cfg), tmp_path / "o", show_progress=False, extra_plugins=[plugin])
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [(n, type(m)) for n, m in module.named_modules()] == structure
    assert all(not m._forward_hooks and not m._backward_hooks for m in module.modules())
    assert all(p.grad is None for p in module.parameters())


def test_ray_executor_gives_the_same_rows_as_local(first_run, tmp_path):
    pytest.importorskip("ray")
    cfg, _, local, _ = first_run
    out = tmp_path / "ray"
    remote = run_benchmark(load_config(cfg), out, executor="ray", show_progress=False)
    key = ["cell_key", "image_id"]
    a = local.sort_values(key).reset_index(drop=True)
    b = remote.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    assert a["value"].isna().equals(b["value"].isna())  # NaN in the same rows
    assert (a["value"] - b["value"]).abs().max() < 1e-5  # and the same numbers in the others (max skips NaN)


def test_changed_explainer_parameters_are_refused_on_resume(first_run, tmp_path):
    cfg, out, _, _ = first_run
    changed = tmp_path / "changed.toml"
    changed.write_text(cfg.read_text() + "\n[explainer_params.eigen_cam]\n")
    xaibench.run(changed, tmp_path / "o1", show_progress=False)  # an empty table is fine anywhere
    other = tmp_path / "other.toml"
    other.write_text(cfg.read_text().replace('explainers = ["grad_cam", "eigen_cam"]', 'explainers = ["random"]') + "\n[explainer_params.random]\nseed = 1\n")
    xaibench.run(other, tmp_path / "o2", show_progress=False)
    again = tmp_path / "again.toml"
    again.write_text(other.read_text().replace("seed = 1\n", "seed = 2\n"))
    with pytest.raises(UserError, match=r"\[explainer_params.random\] differs"):
        xaibench.run(again, tmp_path / "o2", show_progress=False)


def test_sanity_check_adds_rank_correlations_and_a_leaderboard_section(first_run, tmp_path):
    cfg, _, _, _ = first_run
    out = tmp_path / "sane"
    df = run_benchmark(load_config(cfg), out, sanity=True, show_progress=False)
    rows = df[df.metric == "sanity_rank_correlation"]
    assert len(rows) == 2 * 2 * IMAGES  # explainers x layers x images
    ok = rows["value"].dropna()
    assert len(ok) > 0 and ok.between(-1, 1).all()  # NaN where a randomised map is constant
    assert "## Sanity check: model randomisation" in (out / "leaderboard.md").read_text()


def test_a_fused_layer_is_a_layer_of_the_grid(first_run, tmp_path):
    cfg, _, df, _ = first_run
    fused = tmp_path / "fused.toml"
    fused.write_text(cfg.read_text().replace('layers = ["decoder1", "decoder2"]', 'layers = ["decoder1", "mean(decoder1, decoder2)"]'))
    got = xaibench.run(fused, tmp_path / "out", show_progress=False)
    assert set(explained(got).layer) == {"decoder1", "mean(decoder1, decoder2)"}
    plain = ["explainer", "threshold", "perturbation", "metric", "image_id"]
    same = df[df.layer == "decoder1"].set_index(plain)["value"].sort_index()
    assert same.equals(got[got.layer == "decoder1"].set_index(plain)["value"].sort_index())


class _ForegroundShare:
    """A model-level metric: the share of pixels the model predicts as foreground."""

    name = "foreground_share"
    direction = "higher"
    uses_threshold = False
    perturbation = None
    uses_map = False

    def compute(self, ctx):
        assert ctx.heatmap is None
        return (ctx.logits[:, 0] > 0).float().flatten(1).mean(1)


def test_a_model_level_metric_is_computed_once_per_model(first_run, tmp_path):
    cfg, _, df, _ = first_run
    plugin = types.ModuleType("model_level_plugin")
    plugin.register_metrics = hookimpl(lambda register: register(_ForegroundShare))
    text = cfg.read_text().replace('metrics = ["confidence", "iou_drop"]', 'metrics = ["confidence", "iou_drop", "foreground_share"]')
    (tmp_path / "m.toml").write_text(text)
    out = tmp_path / "o"
    got = run_benchmark(load_config(tmp_path / "m.toml"), out, show_progress=False, extra_plugins=[plugin])
    rows = got[got.metric == "foreground_share"]
    assert len(rows) == IMAGES and set(rows.explainer) == {""} and set(rows.layer) == {""}
    assert rows["value"].between(0, 1).all()
    assert len(got[got.metric != "foreground_share"]) == len(df)  # the map cells are unchanged
    board = (out / "leaderboard.md").read_text()
    assert "### foreground_share" in board and "| (model) |" in board


def _two_models(a: str, b: str, b_tables: str = "") -> str:
    """TINY_CONFIG with its [model] as two [[models]] "a" and "b": ``a`` / ``b`` are keys put in
    place of ``epochs = 1`` (so they must set epochs), ``b_tables`` sub-tables after b's keys."""
    from tests.conftest import TINY_CONFIG

    model = TINY_CONFIG[TINY_CONFIG.index("[model]") : TINY_CONFIG.index("[grid]")]
    body = model.replace("[model]", "[[models]]")
    entry = lambda label, keys: body.replace("epochs = 1", f'label = "{label}"\n{keys}')  # noqa: E731
    return TINY_CONFIG.replace(model, entry("a", a) + entry("b", b) + b_tables)


def test_the_manifest_counts_the_maps_of_every_model(first_run, tmp_path):
    two = _two_models('epochs = 1\nexplainers = ["grad_cam", "layer_cam"]', 'epochs = 2\nexplainers = ["grad_cam"]\nlayers = ["decoder1"]')
    (tmp_path / "two.toml").write_text(two)
    xaibench.run(tmp_path / "two.toml", tmp_path / "o", show_progress=False)
    timings = json.loads((tmp_path / "o" / "manifest.json").read_text())["timings"]
    # model a: grad_cam's maps at 2 layers are cached (per image) by first_run, layer_cam's 2 x 2 batches are new;
    # model b: 1 map x 2 batches, new
    assert timings["heatmaps_computed"] == 4 + 2 and timings["heatmap_cache_hits"] == 2 * IMAGES


def test_a_models_own_explainer_parameters_are_used_and_kept_on_resume(first_run, tmp_path):
    def config(fill: float) -> str:
        text = _two_models("epochs = 1", "epochs = 1", f"[models.explainer_params.score_cam]\nfill = {fill}\n\n")
        return text.replace('explainers = ["grad_cam", "eigen_cam"]', 'explainers = ["score_cam"]').replace('layers = ["decoder1", "decoder2"]', 'layers = ["decoder1"]')

    (tmp_path / "c.toml").write_text(config(0.5))
    df = xaibench.run(tmp_path / "c.toml", tmp_path / "o", show_progress=False)
    conf = df[(df.metric == "confidence")].pivot_table(index=["threshold", "perturbation", "image_id"], columns="model", values="value")
    assert (conf["a"] - conf["b"]).abs().max() > 1e-3  # same weights, other Score-CAM fill: other maps
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["config"]["models"][1]["explainer_params"] == {"score_cam": {"fill": 0.5}}
    (tmp_path / "c2.toml").write_text(config(0.25))
    with pytest.raises(UserError, match=r"\[\[models\]\] 'b' explainer_params.score_cam differs"):
        xaibench.run(tmp_path / "c2.toml", tmp_path / "o", show_progress=False)


def test_variants_run_one_plugin_with_two_settings_in_one_grid(first_run, tmp_path):
    cfg, _, df, _ = first_run
    text = cfg.read_text().replace('explainers = ["grad_cam", "eigen_cam"]', 'explainers = ["grad_cam", "eigen_cam", "segx:truth"]')
    text += '\n[explainer_params."segx:truth"]\nbase = "eigen_cam"\nmask = "ground_truth"\n'
    variant = tmp_path / "variant.toml"
    variant.write_text(text)
    got = xaibench.run(variant, tmp_path / "out", show_progress=False)
    assert set(explained(got).explainer) == {"grad_cam", "eigen_cam", "segx:truth"}
    plain = ["layer", "threshold", "perturbation", "metric", "image_id"]
    same = df[df.explainer == "eigen_cam"].set_index(plain)["value"].sort_index()
    assert same.equals(got[got.explainer == "eigen_cam"].set_index(plain)["value"].sort_index())
    masked = got[got.explainer == "segx:truth"].set_index(plain)["value"].sort_index()
    assert not masked.equals(same.reindex(masked.index))  # eigen_cam restricted to the ground truth: other values


def test_an_unknown_base_of_a_composite_names_the_composite_and_the_file(first_run, tmp_path):
    from xaibench.runs.runner import plan

    cfg, _, _, _ = first_run
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('explainers = ["grad_cam", "eigen_cam"]', 'explainers = ["mask_and"]') + '\n[explainer_params.mask_and]\nbases = ["grad_cam", "eigen_cm"]\n')
    with pytest.raises(UserError, match=r"bad.toml: explainer 'mask_and' .* uses 'eigen_cm': .*Did you mean 'eigen_cam'"):
        plan(load_config(bad))


def test_a_pixel_attribution_gets_one_cell_at_layer_input_beside_the_cams(first_run, tmp_path):
    cfg, _, df, _ = first_run
    mixed = tmp_path / "mixed.toml"
    mixed.write_text(cfg.read_text().replace('explainers = ["grad_cam", "eigen_cam"]', 'explainers = ["grad_cam", "saliency", "integrated_gradients", "segx:saliency"]') + "\n[explainer_params.integrated_gradients]\nn_steps = 4\n" + '\n[explainer_params."segx:saliency"]\nbase = "saliency"\nmask = "ground_truth"\n')
    got = xaibench.run(mixed, tmp_path / "out", show_progress=False)
    layers = explained(got).groupby("explainer").layer.unique().map(sorted).to_dict()
    assert layers == {"grad_cam": ["decoder1", "decoder2"], "saliency": ["input"], "integrated_gradients": ["input"], "segx:saliency": ["input"]}
    per_explainer = got.groupby("explainer").size()
    assert per_explainer["saliency"] * 2 == per_explainer["grad_cam"]  # one layer where grad_cam has two
    plain = ["layer", "threshold", "perturbation", "metric", "image_id"]
    same = df[df.explainer == "grad_cam"].set_index(plain)["value"].sort_index()
    assert same.equals(got[got.explainer == "grad_cam"].set_index(plain)["value"].sort_index())
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "saliency" in board and "| input |" in board.replace("`", "")


def test_layer_input_for_a_cam_is_a_config_error(first_run, tmp_path):
    cfg, _, _, _ = first_run
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('layers = ["decoder1", "decoder2"]', 'layers = ["decoder1", "input"]'))
    with pytest.raises(UserError, match=r"bad.toml: grid: layers: 'input' is the input image.*'grad_cam' explains a layer"):
        xaibench.run(bad, tmp_path / "out", show_progress=False)


def test_the_plan_adds_the_empty_masks_miou_beside_a_background_inclusive_miou_only(tiny_config, tmp_path):
    from xaibench.config.vocabulary import EMPTY_MASK_REFERENCE, MODEL_QUALITY
    from xaibench.runs.runner import plan

    plain = plan(load_config(tiny_config)).metric_names
    assert not set(plain) & set(EMPTY_MASK_REFERENCE.values()) and set(MODEL_QUALITY) <= set(plain)
    cfg = tmp_path / "miou.toml"
    cfg.write_text(tiny_config.read_text().replace('metrics = ["confidence", "iou_drop"]', 'metrics = ["confidence", "pooled_miou"]'))
    assert "empty_mask_pooled_miou" in plan(load_config(cfg)).metric_names
    assert "empty_mask_miou" not in plan(load_config(cfg)).metric_names


def test_the_empty_mask_reference_scores_the_images_its_miou_scores(tiny_config, tmp_path):
    from xaibench.runs.runner import plan

    cfg = tmp_path / "miou.toml"
    cfg.write_text(tiny_config.read_text().replace('metrics = ["confidence", "iou_drop"]', 'metrics = ["localization_miou"]') + '\n[metric_params.localization_miou]\nimages = "with_object"\n')
    assert plan(load_config(cfg)).metrics["empty_mask_miou"].images == "with_object"
