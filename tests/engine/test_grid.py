import pytest

from xaibench.engine.grid import Cell, expand, threshold_label
from xaibench.errors import UserError
from xaibench.metrics.faithfulness import Confidence, IoUDrop
from xaibench.metrics.localization import AUROC, LocalizationIoU


def test_cells_follow_what_each_metric_uses():
    metrics = {"confidence": Confidence(), "iou_drop": IoUDrop(), "localization_iou": LocalizationIoU(), "auroc": AUROC()}
    cells = expand("m", ["a", "b"], ["l1"], [0.1, "otsu"], ["background_only", "highlighted_only"], metrics)
    by = {}
    for c in cells:
        by.setdefault(c.metric, []).append(c)
    assert len(by["confidence"]) == 2 * 1 * 2 * 2
    assert len(by["iou_drop"]) == 2 * 2 and {c.perturbation for c in by["iou_drop"]} == {"background_only"}
    assert len(by["localization_iou"]) == 2 * 2 and {c.perturbation for c in by["localization_iou"]} == {""}
    assert [(c.threshold, c.perturbation) for c in by["auroc"]] == [("", ""), ("", "")]
    assert len({c.key for c in cells}) == len(cells)


def test_keys_are_stable_text():
    c = Cell("m", "grad_cam", "decoder1", "0.1", "background_only", "confidence")
    assert c.key == "m|grad_cam|decoder1|0.1|background_only|confidence"
    assert threshold_label(0.30000000000000004) == "0.3" and threshold_label("otsu") == "otsu"


def test_missing_axes_are_errors():
    with pytest.raises(UserError, match="needs at least one perturbation"):
        expand("m", ["a"], ["l"], [0.1], [], {"confidence": Confidence()}, "x.toml")
    with pytest.raises(UserError, match="give thresholds or threshold_sweep"):
        expand("m", ["a"], ["l"], [], ["background_only"], {"confidence": Confidence()}, "x.toml")

    class Bad:
        uses_threshold = False
        perturbation = "cell"

    with pytest.raises(UserError, match="uses no threshold"):
        expand("m", ["a"], ["l"], [0.1], ["background_only"], {"bad": Bad()}, "x.toml")


class _ModelLevel:
    name = "model_level"
    direction = "higher"
    uses_threshold = False
    perturbation = None
    uses_map = False


def test_a_model_level_metric_gets_one_cell_per_model():
    cells = expand("m", ["a", "b"], ["l1", "l2"], [0.1, 0.5], ["background_only"], {"model_level": _ModelLevel(), "auroc": AUROC()})
    model_level = [c for c in cells if c.metric == "model_level"]
    assert model_level == [Cell("m", "", "", "", "", "model_level")]
    assert len(cells) == 1 + 2 * 2


def test_a_model_level_metric_cannot_binarise_or_perturb():
    class Bad(_ModelLevel):
        uses_threshold = True

    with pytest.raises(UserError, match="reads no map"):
        expand("m", ["a"], ["l"], [0.1], [], {"bad": Bad()}, "x.toml")


def test_a_pixel_attribution_has_the_one_layer_input():
    from xaibench.engine.grid import layers_of
    from xaibench.explainers.attribution import Saliency
    from xaibench.explainers.gradient import GradCAM

    per = layers_of({"grad_cam": GradCAM(), "saliency": Saliency()}, ["grad_cam", "saliency"], ["l1", "l2"])
    assert per == {"grad_cam": ("l1", "l2"), "saliency": ("input",)}
    cells = expand("m", ["grad_cam", "saliency"], per, [0.1], ["background_only"], {"confidence": Confidence()})
    assert sorted({(c.explainer, c.layer) for c in cells}) == [("grad_cam", "l1"), ("grad_cam", "l2"), ("saliency", "input")]
    assert layers_of({"saliency": Saliency()}, ["saliency"], ["input"]) == {"saliency": ("input",)}
    with pytest.raises(UserError, match="'grad_cam' explains a layer"):
        layers_of({"grad_cam": GradCAM()}, ["grad_cam"], ["l1", "input"])


def test_a_composite_of_pixel_attributions_has_layer_input_and_one_of_a_cam_the_grid_layers():
    from xaibench.engine.grid import layers_of
    from xaibench.explainers.attribution import Saliency
    from xaibench.explainers.gradient import GradCAM
    from xaibench.explainers.masks import MaskAnd
    from xaibench.explainers.segx import SegX

    explainers = {
        "grad_cam": GradCAM(), "saliency": Saliency(),
        "segx:saliency": SegX(base="saliency", mask="ground_truth"), "segx:grad_cam": SegX(base="grad_cam", mask="ground_truth"),
        "mixed": MaskAnd(bases=["grad_cam", "saliency"]),
    }
    per = layers_of(explainers, ["segx:saliency", "segx:grad_cam", "mixed"], ["l1", "l2"])
    assert per == {"segx:saliency": ("input",), "segx:grad_cam": ("l1", "l2"), "mixed": ("l1", "l2")}
