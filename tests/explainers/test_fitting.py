"""Explainers with a network of their own: fitted per replicate on its training images, cached,
part of the heatmap cache key, loaded once per worker (local and Ray)."""


import pytest
import torch

import xaibench
from xaibench.engine.heatmaps import HeatmapEngine
from xaibench.errors import UserError
from xaibench.explainers.fitting import FitContext, fit_explainers
from xaibench.plugin import Pass, config_hash, hookimpl, save_atomic
from xaibench.testing import TinyDataset, check_explainer, tiny_images, tiny_unet

pytestmark = pytest.mark.slow


class MeanImageDiff:
    """|x - mean training image|: a 'network' (the mean) fitted on the training split."""

    name = "mean_image_diff"
    needs = Pass.NONE
    normalize = False
    trainings: list = []  # (dataset_key, seed, training image ids) of every fit that trained

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def fit(self, ctx: FitContext) -> str:
        path = ctx.cache_dir / "explainers" / f"mean-{config_hash(data=ctx.dataset_key, seed=ctx.seed, scale=self.scale)}.pt"
        if path.is_file():
            self._mean = torch.load(path, weights_only=True)
        else:
            train = ctx.dataset.split("train")
            MeanImageDiff.trainings.append((ctx.dataset_key, ctx.seed, {s.image_id for s in train}))
            self._mean = torch.stack([s.image for s in train]).mean(0) + 0.01 * ctx.seed
            save_atomic(self._mean, path)
        return config_hash(mean=self._mean.sum().item())

    def explain(self, ctx):
        return ((ctx.images - self._mean.to(ctx.images.device)).abs().mean(1) * self.scale).clamp(0, 1)


class Plugin:
    @hookimpl
    def register_explainers(self, register):
        register(MeanImageDiff)


GRID = """
[grid]
explainers = ["mean_image_diff", "grad_cam"]
layers = ["decoder1"]
thresholds = [0.3]
perturbations = ["background_only"]
metrics = ["localization_iou"]

[run]
folds = 2
batch_size = 4
"""


def _config() -> str:
    """The shared tiny benchmark (tests/conftest.py) with this module's grid and 2 folds."""
    from tests.conftest import tiny_config_with

    return tiny_config_with("fit", GRID)


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    cfg = d / "fit.toml"
    cfg.write_text(_config())
    MeanImageDiff.trainings.clear()
    df = xaibench.run(cfg, d / "out", show_progress=False, extra_plugins=[Plugin()])
    return cfg, d, df, list(MeanImageDiff.trainings)


def test_each_fold_fits_on_its_training_images_only(two_folds):
    _, _, df, trainings = two_folds
    assert len(trainings) == 2 and len({t[0] for t in trainings}) == 2  # one fit per fold, each its own data key
    pool = set(df["image_id"])
    for fold, block in df[df["explainer"] == "mean_image_diff"].groupby("fold"):
        held_out = set(block["image_id"])
        assert any(ids == pool - held_out for _, _, ids in trainings), f"fold {fold}: no fit on exactly the other fold"
    assert all(not (ids & set(b["image_id"])) for _, _, ids in trainings for _, b in df.groupby("fold") if ids == pool - set(b["image_id"]))


def test_a_second_run_loads_the_networks_and_another_fold_never_gets_a_cached_map(two_folds):
    cfg, d, df, _ = two_folds
    MeanImageDiff.trainings.clear()
    again = xaibench.run(cfg, d / "again", show_progress=False, extra_plugins=[Plugin()])
    assert MeanImageDiff.trainings == []  # cached per fold: nothing trained again
    cols = ["cell_key", "image_id", "fold"]
    a, b = df.sort_values(cols).reset_index(drop=True), again.sort_values(cols).reset_index(drop=True)
    assert a["value"].tolist() == pytest.approx(b["value"].tolist(), nan_ok=True)
    manifest = __import__("json").loads((d / "out" / "manifest.json").read_text())
    assert any(k.startswith("explainer_fit_s[") for k in manifest["timings"])


def test_the_fitted_network_is_part_of_the_heatmap_key():
    model, (images, _) = tiny_unet(), tiny_images()
    ds = TinyDataset()
    maps = []
    for seed in (0, 1):  # two 'replicates' with other networks, one shared map cache
        ctx = FitContext(dataset=ds, dataset_key="k", seed=seed, show_progress=False, model=model)
        explainers, fitted, _ = fit_explainers({"m": MeanImageDiff()}, ctx)
        engine = HeatmapEngine(model, explainers, fitted=fitted, cache=maps[0][1] if maps else None)
        maps.append((engine.run(images, ["output"], pairs=[("m", "")]).maps[("m", "")], engine.cache))
    assert not torch.allclose(maps[0][0], maps[1][0])


def test_an_unfitted_explainer_says_it_needs_a_benchmark_and_a_bad_identity_is_refused(tmp_path):
    model, (images, _) = tiny_unet(), tiny_images()
    with pytest.raises(UserError, match="was not fitted"):
        HeatmapEngine(model, {"m": MeanImageDiff()}).run(images, ["output"], pairs=[("m", "")])

    class NoIdentity(MeanImageDiff):
        def fit(self, ctx):
            super().fit(ctx)
            return None

    ctx = FitContext(dataset=TinyDataset(), dataset_key="k", cache_dir=tmp_path, show_progress=False)
    with pytest.raises(UserError, match="must return a non-empty string"):
        fit_explainers({"m": NoIdentity()}, ctx)


def test_check_explainer_fits_and_refits_from_the_cache():
    maps = check_explainer(MeanImageDiff)
    assert maps.shape == (2, 32, 32)

    class Forgets(MeanImageDiff):  # trains again each time, differently: not cached, not deterministic
        calls = 0

        def fit(self, ctx):
            Forgets.calls += 1
            self._mean = torch.full((3, 32, 32), 0.1 * Forgets.calls)
            return f"net-{Forgets.calls}"

    with pytest.raises(AssertionError, match="second fit"):
        check_explainer(Forgets)


def test_ray_actors_load_the_fitted_networks_and_give_the_local_rows(two_folds):
    pytest.importorskip("ray")
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    cfg, d, df, _ = two_folds
    remote = xaibench.run(cfg, d / "ray", show_progress=False, executor="ray", extra_plugins=[Plugin()])
    cols = ["cell_key", "image_id", "fold"]
    a, b = df.sort_values(cols).reset_index(drop=True), remote.sort_values(cols).reset_index(drop=True)
    assert a[cols].equals(b[cols])
    assert a["value"].tolist() == pytest.approx(b["value"].tolist(), nan_ok=True)
