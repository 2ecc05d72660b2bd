"""segx with mask = "segmenter": a base map refined by a separate segmentation model (the SegX
paper's U-Net), loaded through the registry per replicate, cached, part of the heatmap key."""

import json
import pickle
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import xaibench
import xaibench.models.smp_unet as smp_unet
from xaibench.cli import main
from xaibench.engine.targets import Target
from xaibench.errors import UserError
from xaibench.explainers.fitting import FitContext, fit_explainers, model_loader, trains
from xaibench.explainers.segx import SegX
from xaibench.models.base import LoadedModel
from xaibench.registry.discovery import load_registry
from xaibench.testing import TinyDataset

SIZE = 16


class ConstantSegmenter(nn.Module):
    """Logits ``value`` (one channel, or [C] channels) everywhere, at ``size`` x ``size``."""

    def __init__(self, value, size: int = SIZE):
        super().__init__()
        self.value = nn.Parameter(torch.as_tensor(value, dtype=torch.float32).reshape(-1))
        self.size = size

    def forward(self, x):
        return self.value[None, :, None, None].expand(x.shape[0], -1, self.size, self.size).clone()


def _fitted(segmenter: nn.Module, task="binary", base="grad_cam", **params) -> SegX:
    e = SegX(base=base, mask="segmenter", segmenter="constant", **params)
    loads = []

    def load_model(name, p):
        loads.append((name, p))
        return LoadedModel(segmenter, task)

    identity = e.fit(FitContext(dataset=None, dataset_key="k", show_progress=False, load_model=load_model))
    assert loads == [("constant", {})] and identity
    return e


def _ctx(base: torch.Tensor, classes=None) -> SimpleNamespace:
    b = base.shape[0]
    classes = torch.ones(b, dtype=torch.long) if classes is None else classes
    return SimpleNamespace(
        images=torch.rand(b, 3, SIZE, SIZE), target=Target(classes, None, classes), explain=lambda name: base,
        ground_truth=None, chunk_size=2,
    )


def _base(b=3, size=SIZE) -> torch.Tensor:
    return torch.rand(b, size, size, generator=torch.Generator().manual_seed(0))


def test_an_empty_segmenter_mask_zeroes_the_map():
    e = _fitted(ConstantSegmenter(-20.0))
    assert torch.equal(e.explain(_ctx(_base())), torch.zeros(3, SIZE, SIZE))


def test_a_segmenter_that_predicts_everything_leaves_the_base_map_exactly():
    base = _base()
    assert torch.equal(_fitted(ConstantSegmenter(20.0)).explain(_ctx(base)), base)


def test_base_none_is_the_segmenter_mask_alone_at_layer_input_reading_no_base_map():
    """The composite's own baseline: the mask as the map, one cell (layer input), no base asked for."""
    from xaibench.explainers.base import explains_input

    e = _fitted(ConstantSegmenter(0.3), base="none")
    ctx = _ctx(_base())
    ctx.explain = lambda name: pytest.fail(f"the mask alone asked for the base map {name!r}")
    assert torch.equal(e.explain(ctx), torch.ones(3, SIZE, SIZE))
    assert e.composes == () and explains_input(e, {"segx:mask": e})
    assert torch.equal(_fitted(ConstantSegmenter(-0.3), base="none").explain(ctx), torch.zeros(3, SIZE, SIZE))
    assert not explains_input(_fitted(ConstantSegmenter(0.3)), {"grad_cam": object()})


@pytest.mark.parametrize("logit, threshold, on", [(0.0, 0.5, False), (0.01, 0.5, True), (-0.84, 0.3, True), (-0.84, 0.31, False), (-0.86, 0.3, False), (2.2, 0.9, True), (2.2, 0.91, False)])
def test_the_mask_is_on_where_the_probability_is_above_mask_threshold(logit, threshold, on):
    # sigmoid(0) = 0.5 exactly: not > 0.5; sigmoid(-0.84) = 0.3015, sigmoid(-0.86) = 0.2973, sigmoid(2.2) = 0.9002
    base = _base()
    out = _fitted(ConstantSegmenter(logit), mask_threshold=threshold).explain(_ctx(base))
    assert torch.equal(out, base if on else torch.zeros_like(base))


def test_the_mask_is_of_the_explained_class_and_resized_nearest():
    """A 3-class segmenter at half resolution: class 2 on the left half, class 1 elsewhere."""

    class LeftHalf(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3, SIZE // 2, SIZE // 2)
            logits[:, 2, :, : SIZE // 4] = 10.0
            logits[:, 1, :, SIZE // 4 :] = 10.0
            return logits

    base = _base(2)
    out = _fitted(LeftHalf(), task="multiclass").explain(_ctx(base, classes=torch.tensor([2, 1])))
    left = torch.zeros(SIZE, SIZE)
    left[:, : SIZE // 2] = 1
    assert torch.equal(out[0], base[0] * left) and torch.equal(out[1], base[1] * (1 - left))


@pytest.mark.parametrize("percent, kept", [(5, 13), (10, 26), (50, 128), (100, 256)])  # ceil(percent% of 256)
def test_top_percent_keeps_the_highest_pixels_of_the_refined_map_as_ones(percent, kept):
    base = _base()
    out = _fitted(ConstantSegmenter(20.0), top_percent=percent).explain(_ctx(base))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    for m, b in zip(out, base):
        assert int(m.sum()) == kept
        if kept < m.numel():
            assert b[m == 1].min() > b[m == 0].max()


def test_top_percent_never_keeps_pixels_outside_the_mask():
    e = SegX(base="grad_cam", mask="ground_truth", top_percent=50)
    base = _base(1)
    ctx = _ctx(base)
    ctx.ground_truth = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
    ctx.ground_truth[:, :2] = 1  # 32 pixels of 256: fewer than half
    out = e.explain(ctx)
    assert int(out.sum()) == 2 * SIZE and torch.equal(out[0, :2], torch.ones(2, SIZE))


def test_the_gallery_shows_the_segmenter_mask_once_for_variants_that_share_it():
    from xaibench.runs.runner import _gallery_extras

    assert SegX().gallery_image is None and SegX(mask="segmenter", segmenter="s").gallery_image is None  # nothing to show unfitted
    half = ConstantSegmenter([-3.0, 3.0])  # two classes: the foreground (last channel) everywhere
    a, b, empty = _fitted(half), _fitted(half), _fitted(ConstantSegmenter(-20.0))
    images = torch.rand(2, 3, SIZE, SIZE)
    assert torch.equal(a.gallery_image(images), torch.ones(2, 1, SIZE, SIZE))
    extras = _gallery_extras({"segx:a": a, "segx:b": b, "segx:empty": empty, "grad_cam": SegX()}, images)
    assert list(extras) == ["segx:a:\nsegmenter mask", "segx:empty:\nsegmenter mask"]
    assert torch.equal(extras["segx:empty:\nsegmenter mask"], torch.zeros(2, 1, SIZE, SIZE))


def test_only_the_segmenter_mode_trains_and_the_unfitted_instance_pickles():
    assert not trains(SegX()) and not trains(SegX(mask="ground_truth")) and trains(SegX)
    e = SegX(mask="segmenter", segmenter="smp_unet", segmenter_params={"epochs": 1})
    assert trains(e)
    assert pickle.loads(pickle.dumps(e)).segmenter_params == {"epochs": 1}
    _, identities, _ = fit_explainers({"segx": SegX()}, FitContext(dataset=None, dataset_key="k"))
    assert identities == {}  # no fit, no load_model needed


@pytest.mark.parametrize(
    "params, words",
    [
        ({"mask": "segmenter"}, ["segx", "segmenter"]),
        ({"segmenter": "smp_unet"}, ["segx", "segmenter", "only with mask = 'segmenter'"]),
        ({"mask": "target", "segmenter_params": {"epochs": 1}}, ["segx", "segmenter_params"]),
        ({"mask": "ground_truth", "mask_threshold": 0.7}, ["segx", "mask_threshold"]),
        ({"mask": "segmenter", "segmenter": "smp_unet", "mask_threshold": 1.0}, ["segx", "mask_threshold", "(0, 1)"]),
        ({"mask": "segmenter", "segmenter": "smp_unet", "mask_threshold": 0}, ["segx", "mask_threshold"]),
        ({"top_percent": 0}, ["segx", "top_percent", "(0, 100]"]),
        ({"top_percent": 101}, ["segx", "top_percent"]),
        ({"mask": "unet"}, ["segx", "'segmenter'"]),
        ({"base": ""}, ["segx", "base", "'none'"]),
    ],
)
def test_bad_parameters_are_user_errors_naming_segx_and_the_parameter(params, words):
    with pytest.raises(UserError) as exc:
        SegX(**params)
    assert all(w in str(exc.value) for w in words), str(exc.value)


def test_a_wrong_segmenter_name_params_or_kind_is_a_user_error_naming_segx(tmp_path):
    ctx = FitContext(dataset=TinyDataset(), dataset_key="k", cache_dir=tmp_path, show_progress=False)
    ctx.load_model = model_loader(load_registry(), ctx, 0)
    with pytest.raises(UserError, match=r"segx: segmenter = 'smp_unte'.*smp_unet"):
        SegX(mask="segmenter", segmenter="smp_unte").fit(ctx)
    with pytest.raises(UserError, match=r"segx: segmenter = 'smp_unet'.*'encoder_dept'"):
        SegX(mask="segmenter", segmenter="smp_unet", segmenter_params={"encoder_dept": 3}).fit(ctx)
    with pytest.raises(UserError, match="no load_model"):
        SegX(mask="segmenter", segmenter="smp_unet").fit(FitContext(dataset=None, dataset_key="k"))
    with pytest.raises(UserError, match="classifier"):
        _fitted(ConstantSegmenter([0.0, 1.0]), task="classifier")

    class Classifier(ConstantSegmenter):
        def forward(self, x):
            return self.value[None].expand(x.shape[0], -1)

    with pytest.raises(UserError, match=r"segx: segmenter 'constant' gives outputs of shape \(3, 2\)"):
        _fitted(Classifier([0.0, 1.0])).explain(_ctx(_base()))


@pytest.mark.parametrize(
    "change, words",
    [
        (("", "mask_threshold = 1.5"), ["segx", "mask_threshold"]),
        (('segmenter = "smp_unet"', 'segmenter = "smp_unte"'), ["[explainer_params.segx]", "unknown model 'smp_unte'", "Did you mean 'smp_unet'"]),
        (("epochs = 1, batch_size = 8}", "epoch = 1, batch_size = 8}"), ["[explainer_params.segx]", "unknown key 'epoch' for 'smp_unet'"]),
    ],
)
def test_validate_exits_2_on_a_bad_segx_parameter_or_segmenter_before_anything_trains(change, words, tmp_path, capsys):
    old, new = change
    cfg = tmp_path / "bad.toml"
    text = _config()
    cfg.write_text(text.replace(old, new) if old else _config(new))
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and all(w in err[0] for w in words), err


SEGMENTER = 'segmenter_params = {encoder_depth = 3, decoder_channels = [8, 4, 4], epochs = 1, batch_size = 8}'


def _config(extra: str = SEGMENTER) -> str:
    """The shared tiny benchmark (tests/conftest.py), explained by grad_cam and segx on a separate U-Net."""
    from tests.conftest import tiny_config_with

    return tiny_config_with("segx", f"""
        [grid]
        explainers = ["grad_cam", "segx"]
        layers = ["decoder1"]
        thresholds = [0.5]
        perturbations = ["background_only"]
        metrics = ["localization_iou"]

        [run]
        batch_size = 4

        [explainer_params.segx]
        base = "grad_cam"
        mask = "segmenter"
        segmenter = "smp_unet"
        {extra}
        """)


@pytest.mark.slow
def test_a_benchmark_trains_the_segmenter_once_caches_it_and_keys_the_maps_by_it(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XAIBENCH_CACHE", str(cache))
    loads = []  # (weights file, whether it was cached) of every model plugin load that trains or loads
    real = smp_unet.train_or_load

    def spy(module, cache_path, *args, **kw):
        loads.append((cache_path.name, cache_path.is_file()))
        return real(module, cache_path, *args, **kw)

    monkeypatch.setattr(smp_unet, "train_or_load", spy)
    cfg = tmp_path / "segx.toml"
    cfg.write_text(_config())

    def run(out):
        loads.clear()
        df = xaibench.run(cfg, tmp_path / out, show_progress=False)
        return df, json.loads((tmp_path / out / "manifest.json").read_text())["timings"], list(loads)

    df, timings, first = run("first")
    assert len(first) == 2 and len({f for f, _ in first}) == 2 and not any(c for _, c in first)  # the model and the segmenter, each trained
    segmenter_file = first[1][0]  # the worker loads the explained model first, then fits segx
    assert timings["heatmaps_computed"] == 2 * 2  # grad_cam and segx, 2 batches
    segx = df[df["explainer"] == "segx"]
    assert len(segx) == 6 and segx["value"].notna().all()

    again, timings, second = run("second")
    assert second == [(f, True) for f, _ in first]  # loaded, not trained again
    assert timings["heatmaps_computed"] == 0 and timings["heatmap_cache_hits"] == 2 * 6  # per image
    assert sorted(again["value"].fillna(-1)) == sorted(df["value"].fillna(-1))

    # other segmenter weights under the same file and parameters: segx's maps are keyed by them
    path = cache / "models" / segmenter_file
    state = torch.load(path, weights_only=True)
    torch.save({k: v + 0.5 if v.is_floating_point() else v for k, v in state.items()}, path)
    _, timings, _ = run("third")
    assert timings["heatmaps_computed"] == 2 and timings["heatmap_cache_hits"] == 6  # segx's again, grad_cam's cached
