"""mask_and / mask_or: exact masks on hand-made maps, per-image Otsu, parameter errors, and the
composites through the engine (bases shared, composites of composites, cache keys)."""

import types

import pytest
import torch

import xaibench
import xaibench.registry.builtin.explainers as X
from xaibench import testing as T
from xaibench.config.parse import instantiate
from xaibench.engine.cache import HeatmapCache
from xaibench.engine.capture import PassCounter
from xaibench.engine.evaluation import threshold_values
from xaibench.engine.heatmaps import HeatmapEngine
from xaibench.errors import UserError
from xaibench.explainers.base import ExplainContext, params_key
from xaibench.explainers.masks import MaskAnd, MaskOr

LAYER = "decoder.blocks.1"
REG = {c.name: c for c in X.BUILTIN}


def _ctx(maps):
    """A context whose ``explain(name)`` returns the hand-made map ``maps[name]``."""
    b, h, w = next(iter(maps.values())).shape
    asked = []

    def explain(name):
        asked.append(name)
        return maps[name].clone()

    ctx = ExplainContext(
        images=torch.zeros(b, 3, h, w),
        layer="x",
        activations=None,
        gradients=None,
        target=None,
        logits=None,
        image_keys=[str(i) for i in range(b)],
        masked_scores=None,
        tail_scores=None,
        explain=explain,
    )
    return ctx, asked


# -- hand-made maps ------------------------------------------------------------------------------

A = torch.tensor([[[0.5, 0.39, 1.0, 0.0, 0.4]]])
B = torch.tensor([[[0.08, 1.0, 0.07, 0.0, 0.5]]])
# A >= 0.4 -> 1 0 1 0 1 (0.4 itself is in: the grid's >=); B >= 0.08 -> 1 1 0 0 1 (0.08 itself is in)


def test_and_and_or_of_hand_made_maps_use_the_grids_greater_or_equal():
    ctx, asked = _ctx({"a": A, "b": B})
    both = MaskAnd(bases=["a", "b"], thresholds=[0.4, 0.08]).explain(ctx)
    assert asked == ["a", "b"]
    assert both.dtype == torch.float32 and both.tolist() == [[[1.0, 0.0, 0.0, 0.0, 1.0]]]
    either = MaskOr(bases=["a", "b"], thresholds=[0.4, 0.08]).explain(_ctx({"a": A, "b": B})[0])
    assert either.tolist() == [[[1.0, 1.0, 1.0, 0.0, 1.0]]]
    # the grid binarises the same way: heat >= threshold_values(heat, label)
    grid_a = A >= threshold_values(A, "0.4")[:, None, None]
    grid_b = B >= threshold_values(B, "0.08")[:, None, None]
    assert torch.equal(both.bool(), grid_a & grid_b) and torch.equal(either.bool(), grid_a | grid_b)


def test_one_threshold_per_base_in_order_and_a_single_value_for_all():
    maps = {"a": A, "b": B, "c": torch.tensor([[[1.0, 1.0, 1.0, 1.0, 0.2]]])}
    swapped = MaskAnd(bases=["a", "b"], thresholds=[0.08, 0.4]).explain(_ctx(maps)[0])  # a >= 0.08, b >= 0.4
    assert swapped.tolist() == [[[0.0, 1.0, 0.0, 0.0, 1.0]]]
    three = MaskAnd(bases=["a", "b", "c"], thresholds=[0.4, 0.08, 0.5]).explain(_ctx(maps)[0])
    assert three.tolist() == [[[1.0, 0.0, 0.0, 0.0, 0.0]]]
    single = MaskOr(bases=["a", "b"], thresholds=0.5)
    assert single.thresholds == (0.5, 0.5)
    assert single.explain(_ctx(maps)[0]).tolist() == [[[1.0, 1.0, 1.0, 0.0, 1.0]]]
    assert MaskOr(bases=["a", "b"], thresholds=0).explain(_ctx(maps)[0]).tolist() == [[[1.0] * 5]]  # >= 0: everything


def test_otsu_is_per_image_on_each_base_map():
    a = torch.full((2, 8, 8), 0.1)
    a[0, :, :4] = 0.3  # image 0: modes 0.1 and 0.3
    a[1] = 0.6
    a[1, :, :2] = 0.9  # image 1: modes 0.6 and 0.9; no single threshold splits both images
    ones = torch.ones(2, 8, 8)
    got = MaskAnd(bases=["a", "ones"], thresholds=["otsu", 1.0]).explain(_ctx({"a": a, "ones": ones})[0])
    expected = torch.zeros(2, 8, 8)
    expected[0, :, :4] = 1
    expected[1, :, :2] = 1
    assert torch.equal(got, expected)
    t = threshold_values(a, "otsu")
    assert torch.equal(got.bool(), a >= t[:, None, None]) and 0.1 < float(t[0]) <= 0.3 < 0.6 < float(t[1]) <= 0.9
    # a constant map has no Otsu split: the grid's fallback 0.5 (so an all-zero map selects nothing)
    assert MaskOr(bases=["z", "ones"], thresholds=["otsu", 1.0]).explain(_ctx({"z": torch.zeros(2, 8, 8), "ones": ones * 0.9})[0]).sum() == 0


# -- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"bases": "grad_cam"}, r"mask_and: bases must be a list of 1 or more explainer names, got 'grad_cam'"),
        ({"bases": []}, r"bases must be a list of 1 or more"),
        ({"bases": None}, r"bases must be a list of 1 or more"),
        ({"bases": ["grad_cam", 3]}, r"bases must be explainer names \(strings\), got 3"),
        ({"bases": ["grad_cam", ""]}, r"bases must be explainer names \(strings\), got ''"),
        ({"bases": ["grad_cam", "mask_and"]}, r"bases cannot contain 'mask_and' itself"),
        ({"bases": ["grad_cam", "score_cam", "grad_cam"], "thresholds": 0.5}, r"bases lists 'grad_cam' more than once"),
        ({"bases": ["grad_cam", "score_cam"], "thresholds": [0.4]}, r"mask_and: thresholds has 1 values for 2 bases"),
        ({"bases": ["grad_cam", "score_cam"], "thresholds": [0.4, 0.1, 0.2]}, r"thresholds has 3 values for 2 bases"),
        ({"bases": ["grad_cam", "score_cam"], "thresholds": []}, r"thresholds has 0 values for 2 bases"),
        ({"thresholds": [0.4, 1.5]}, r"mask_and: thresholds: 1.5 is not allowed; a threshold is a number in \[0, 1\] or 'otsu'"),
        ({"thresholds": [-0.1, 0.5]}, r"thresholds: -0.1 is not allowed"),
        ({"thresholds": "mean"}, r"thresholds: 'mean' is not allowed"),
        ({"thresholds": [True, 0.5]}, r"thresholds: True is not allowed"),
        ({"thresholds": [float("nan"), 0.5]}, r"thresholds: nan is not allowed"),
    ],
)
def test_bad_parameters_are_one_line_user_errors(params, match):
    with pytest.raises(UserError, match=match) as err:
        MaskAnd(**params)
    assert "\n" not in str(err.value)


def test_errors_from_a_benchmark_name_the_file_and_table():
    where = "b.toml: [explainer_params.mask_or]"
    with pytest.raises(UserError, match=r"^b\.toml: \[explainer_params\.mask_or\] mask_or: thresholds has 1 values for 2 bases"):
        instantiate(MaskOr, {"bases": ["grad_cam", "eigen_cam"], "thresholds": [0.4]}, where)
    with pytest.raises(UserError, match=r"unknown key 'threshold' for 'mask_or'; allowed keys: bases, thresholds"):
        instantiate(MaskOr, {"threshold": 0.4}, where)
    ok = instantiate(MaskOr, {"bases": ["grad_cam", "eigen_cam"], "thresholds": [0.4, "otsu"]}, where)  # TOML gives lists
    assert ok.bases == ("grad_cam", "eigen_cam") and ok.thresholds == (0.4, "otsu") and ok.composes == ok.bases


BENCHMARK = """
[benchmark]
name = "masks"
seed = 0
[dataset]
name = "rooftops"
size = 64
[model]
name = "smp_unet"
[grid]
explainers = ["mask_and", "grad_cam"]
layers = ["decoder1"]
thresholds = [0.5]
metrics = ["localization_iou"]
[explainer_params.mask_and]
bases = ["grad_cam", "eigen_cam"]
"""


def test_a_benchmark_toml_validates_and_its_errors_name_the_table():
    import tomllib

    from xaibench.config.parse import parse_config
    from xaibench.runs.runner import plan

    good = plan(parse_config(tomllib.loads(BENCHMARK + 'thresholds = [0.4, "otsu"]\n'), "m.toml"))
    assert {c.explainer for c in good.cells if c.explainer} == {"mask_and", "grad_cam"}
    with pytest.raises(UserError, match=r"^m\.toml: \[explainer_params\.mask_and\] mask_and: thresholds: 'Otsu' is not allowed"):
        plan(parse_config(tomllib.loads(BENCHMARK + 'thresholds = [0.4, "Otsu"]\n'), "m.toml"))


def test_the_cache_key_follows_bases_and_thresholds():
    key = params_key(MaskAnd(bases=["score_cam", "grad_cam"], thresholds=[0.4, 0.08]))
    assert "(0.4, 0.08)" in key and "('score_cam', 'grad_cam')" in key
    assert key != params_key(MaskAnd(bases=["score_cam", "grad_cam"], thresholds=[0.4, 0.1]))
    assert key != params_key(MaskAnd(bases=["score_cam", "grad_cam"], thresholds=[0.4, "otsu"]))
    assert key != params_key(MaskAnd(bases=["score_cam", "eigen_cam"], thresholds=[0.4, 0.08]))
    # the same parameters spelled differently are the same key
    assert params_key(MaskAnd(thresholds=0.5)) == params_key(MaskAnd(thresholds=[0.5, 0.5])) == params_key(MaskAnd(thresholds=(1 / 2, 0.5)))
    assert params_key(MaskOr(thresholds=[1, 0])) == params_key(MaskOr(thresholds=[1.0, 0.0]))


# -- through the engine --------------------------------------------------------------------------


def _engine(explainers, cache=None, counter=None):
    return HeatmapEngine(T.tiny_unet(), explainers, cache=cache or HeatmapCache(), counter=counter)


def test_through_the_engine_bases_are_computed_once_and_shared_with_the_grid():
    images, _ = T.tiny_images(3)
    explainers = {
        "grad_cam": REG["grad_cam"](),
        "eigen_cam": REG["eigen_cam"](),
        "mask_and": MaskAnd(bases=["grad_cam", "eigen_cam"], thresholds=[0.4, "otsu"]),
        "mask_or": MaskOr(bases=["eigen_cam", "grad_cam"], thresholds=["otsu", 0.4]),
    }
    counter = PassCounter()
    engine = _engine(explainers, counter=counter)
    pairs = [("mask_and", LAYER), ("mask_or", LAYER), ("grad_cam", LAYER)]
    out = engine.run(images, [LAYER], pairs=pairs).maps
    assert sorted(engine.computed) == sorted([("grad_cam", LAYER), ("eigen_cam", LAYER), ("mask_and", LAYER), ("mask_or", LAYER)])
    assert (counter.forwards, counter.backwards) == (1, 1)
    gc = out[("grad_cam", LAYER)]
    ec = engine.run(images, [LAYER], pairs=[("eigen_cam", LAYER)]).maps[("eigen_cam", LAYER)]  # a cache hit
    assert len(engine.computed) == 4
    a = gc >= threshold_values(gc, "0.4")[:, None, None]
    e = ec >= threshold_values(ec, "otsu")[:, None, None]
    both, either = out[("mask_and", LAYER)], out[("mask_or", LAYER)]
    assert torch.equal(both, (a & e).float()) and torch.equal(either, (a | e).float())
    assert 0 < both.sum() < either.sum() < either.numel()  # the maps are not trivial
    assert both.shape == images[:, 0].shape and set(either.unique().tolist()) <= {0.0, 1.0}
    # normalize = False: the grid's thresholds binarise the {0, 1} map to the same mask
    for label in ("0.01", "0.5", "1.0", "otsu"):
        assert torch.equal(both >= threshold_values(both, label)[:, None, None], a & e), label


def test_a_composite_of_composites_through_the_engine_and_the_api():
    images, gt = T.tiny_images(3)
    explainers = {
        "grad_cam": REG["grad_cam"](),
        "eigen_cam": REG["eigen_cam"](),
        "segx": REG["segx"](base="grad_cam", mask="ground_truth", dilation=1),
        "mask_or": MaskOr(bases=["grad_cam", "eigen_cam"], thresholds=[0.6, 0.6]),
        "mask_and": MaskAnd(bases=["segx", "mask_or"], thresholds=["otsu", 0.5]),
    }
    engine = _engine(explainers)
    got = engine.run(images, [LAYER], ground_truth=gt, pairs=[("mask_and", LAYER)]).maps[("mask_and", LAYER)]
    order = [n for n, _ in engine.computed]
    assert sorted(order) == sorted(explainers) and order.index("mask_and") == 4
    assert order.index("grad_cam") < order.index("segx") and order.index("eigen_cam") < order.index("mask_or")
    parts = engine.run(images, [LAYER], ground_truth=gt, pairs=[("segx", LAYER), ("mask_or", LAYER)]).maps
    assert len(engine.computed) == 5  # all cached
    segx, union = parts[("segx", LAYER)], parts[("mask_or", LAYER)]
    expected = (segx >= threshold_values(segx, "otsu")[:, None, None]) & (union >= 0.5)
    assert torch.equal(got, expected.float()) and 0 < got.sum() < union.sum()
    grown = torch.nn.functional.max_pool2d(gt[:, None].float(), 3, 1, 1)[:, 0]
    assert got[grown == 0].sum() == 0  # inside segx's (dilated) region only

    params = {
        "segx": {"base": "grad_cam", "mask": "ground_truth", "dilation": 1},
        "mask_or": {"bases": ["grad_cam", "eigen_cam"], "thresholds": 0.6},
        "mask_and": {"bases": ["segx", "mask_or"], "thresholds": ["otsu", 0.5]},
    }
    api = xaibench.explain(T.tiny_unet().module, images, "mask_and", LAYER, ground_truth=gt, method_params=params)
    assert torch.equal(api, got)


def test_a_cycle_of_composites_is_a_user_error():
    images, _ = T.tiny_images(2)
    explainers = {
        "grad_cam": REG["grad_cam"](),
        "mask_and": MaskAnd(bases=["grad_cam", "mask_or"]),
        "mask_or": MaskOr(bases=["grad_cam", "mask_and"]),
    }
    with pytest.raises(UserError, match="composes itself: mask_and -> mask_or -> mask_and"):
        _engine(explainers).run(images, [LAYER], pairs=[("mask_and", LAYER)])


def test_a_change_of_thresholds_recomputes_the_mask_but_not_its_bases(tmp_path):
    images, _ = T.tiny_images(2)
    cache = HeatmapCache(tmp_path)

    def run(thresholds):
        engine = _engine(
            {"grad_cam": REG["grad_cam"](), "eigen_cam": REG["eigen_cam"](), "mask_and": MaskAnd(bases=["grad_cam", "eigen_cam"], thresholds=thresholds)},
            cache=cache,
        )
        maps = engine.run(images, [LAYER], pairs=[("mask_and", LAYER)]).maps[("mask_and", LAYER)]
        return engine.computed, maps

    first, a = run([0.4, 0.08])
    assert len(first) == 3
    again, a2 = run([0.4, 0.08])
    assert again == [] and torch.equal(a, a2)  # the same parameters: a cache hit
    other, b = run([0.4, 0.9])
    assert other == [("mask_and", LAYER)] and not torch.equal(a, b)  # the bases come from the cache


def test_the_registered_classes_keep_the_plugin_contract():
    for cls in (MaskAnd, MaskOr):
        maps = T.check_explainer(cls, {"bases": ["grad_cam", "eigen_cam"], "thresholds": [0.3, "otsu"]}, layer="decoder2")
        assert set(maps.unique().tolist()) <= {0.0, 1.0}


def test_one_base_is_that_map_binarised_at_its_threshold():
    heat = torch.tensor([[[0.1, 0.4], [0.39, 0.9]]])
    m = MaskAnd(bases=["score_cam"], thresholds=[0.4])
    ctx = types.SimpleNamespace(explain=lambda name: heat.clone())
    assert torch.equal(m.explain(ctx), torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))
