import torch

from xaibench.engine.evaluation import evaluate_batch, threshold_values
from xaibench.engine.grid import expand
from xaibench.engine.heatmaps import BatchMaps
from xaibench.engine.targets import resolve
from xaibench.metrics.faithfulness import Confidence, IoUDrop
from xaibench.metrics.localization import LocalizationIoU


def test_otsu_splits_a_bimodal_map_between_its_modes():
    m = torch.zeros(1, 8, 8)
    m[0, :4] = 0.9
    m[0, 4:] = 0.1
    t = threshold_values(m, "otsu")
    assert 0.1 <= float(t[0]) < 0.9
    assert threshold_values(torch.zeros(2, 4, 4), "0.3").tolist() == [0.30000001192092896] * 2


def test_one_batch_scores_every_cell_with_shared_perturbed_inputs(tiny_unet, tiny_images):
    with torch.no_grad():
        logits = tiny_unet(tiny_images)
    gt = (logits[:, 0] > 0).long()
    heat = torch.rand(3, 32, 32)
    maps = BatchMaps({("e", "path"): heat}, logits, resolve(None, logits))
    metrics = {"confidence": Confidence(), "iou_drop": IoUDrop(), "localization_iou": LocalizationIoU()}
    cells = expand("m", ["e"], ["l"], [0.3, "otsu"], ["background_only", "highlighted_only"], metrics)
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        with torch.no_grad():
            return tiny_unet(x)

    scored = evaluate_batch(cells, metrics, maps, {"l": "path"}, tiny_images, gt, torch.zeros_like(tiny_images), forward, 16)
    assert len(scored) == len(cells)
    # 2 thresholds x 2 modes x 3 images; iou_drop reuses the background_only inputs
    assert sum(calls) == 12
    by = {(c.metric, c.threshold, c.perturbation): v for c, v, *_ in scored}
    assert by[("localization_iou", "0.3", "")].shape == (3,)
    assert torch.isfinite(by[("confidence", "otsu", "highlighted_only")]).all()
