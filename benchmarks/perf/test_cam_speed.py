"""xaibench's shared passes against pytorch-grad-cam calling each method in turn, and against
the pass-count lower bound (one forward + backward to the hooked layers, K masked forwards per
Score-CAM layer, K tail forwards per Ablation-CAM layer). Run with ``tox -e perf``.

The figures are seconds per image; the ratios are what the speed claims rest on.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import xaibench
from xaibench.engine.capture import shared_pass
from xaibench.models.base import LoadedModel
from xaibench.models.smp_unet import unet_tail

from .conftest import LAYERS, METHODS, N_IMAGES, RESULTS

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402

ORACLE = {
    "grad_cam": pgc.GradCAM,
    "grad_cam_pp": pgc.GradCAMPlusPlus,
    "x_grad_cam": pgc.XGradCAM,
    "hires_cam": pgc.HiResCAM,
    "layer_cam": pgc.LayerCAM,
    "eigen_cam": pgc.EigenCAM,
    "score_cam": pgc.ScoreCAM,
    "ablation_cam": pgc.AblationCAM,
}
MAPS: dict[str, dict] = {}


def _ablation_by_full_forwards(model, images, layer_path, pred):
    """What a user of pytorch-grad-cam falls back to: its AblationCAM raises TypeError on smp 0.6
    decoder blocks (``skip_connection`` keyword), so ablate each channel with a hook, full forwards."""
    layer = dict(model.named_modules())[layer_path]
    out = []
    for i in range(images.shape[0]):
        x = images[i : i + 1]
        region = torch.from_numpy(pred[i])
        store = {}
        with torch.no_grad():
            h = layer.register_forward_hook(lambda m, a, o, store=store: store.setdefault("a", o))
            y = (model(x)[0, 0] * region).sum()
            h.remove()
            act = store["a"]
            k = act.shape[1]
            weights = torch.empty(k)
            for s in range(0, k, 16):
                idx = list(range(s, min(k, s + 16)))
                abl = act.repeat(len(idx), 1, 1, 1)
                for r, c in enumerate(idx):
                    abl[r, c] = 0
                h = layer.register_forward_hook(lambda m, a, o, abl=abl: abl)
                yk = (model(x.repeat(len(idx), 1, 1, 1))[:, 0] * region).sum((1, 2))
                h.remove()
                weights[idx] = (y - yk) / y
        out.append((weights[:, None, None] * act[0]).sum(0).clamp_min(0).numpy())
    return out


def test_pytorch_grad_cam_loop(benchmark, unet, images):
    with torch.no_grad():
        pred = (unet(images)[:, 0] > 0).float().numpy()
    targets = [SemanticSegmentationTarget(0, pred[i]) for i in range(len(images))]

    def loop():
        maps = {}
        for method in METHODS:
            for layer in LAYERS:
                # AblationCAM swaps the layer inside the model it is given and leaves it there when it
                # fails, so it gets a copy; every other method runs on the shared model
                model = copy.deepcopy(unet) if method == "ablation_cam" else unet
                try:
                    with ORACLE[method](model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
                        maps[(method, layer)] = cam(input_tensor=images, targets=targets)
                except TypeError:
                    assert method == "ablation_cam"
                    maps[(method, layer)] = _ablation_by_full_forwards(unet, images, layer, pred)
        return maps

    MAPS["pytorch_grad_cam"] = benchmark.pedantic(loop, rounds=1, iterations=1)
    RESULTS["pytorch-grad-cam loop  s/image"] = benchmark.stats.stats.mean / N_IMAGES


def test_lower_bound(benchmark, unet, images):
    """One forward+backward with both layers hooked, plus the masked and tail forwards, batched."""
    tails = {l: unet_tail(unet, l) for l in LAYERS}

    def bound():
        cap = shared_pass(unet, images, LAYERS, score=lambda o: o.sum(dim=(1, 2, 3)), extra=["encoder"])
        with torch.no_grad():
            for layer in LAYERS:
                k = cap.activations[layer].shape[1]
                for i in range(images.shape[0]):
                    masked = images[i : i + 1].repeat(k, 1, 1, 1)
                    for s in range(0, k, 16):
                        unet(masked[s : s + 16])
                    acts = cap.activations[layer][i : i + 1].repeat(k, 1, 1, 1)
                    idx = torch.full((k,), i)
                    for s in range(0, k, 16):
                        tails[layer].fn(acts[s : s + 16], cap.extras, idx[s : s + 16])

    benchmark.pedantic(bound, rounds=1, iterations=1)
    RESULTS["lower bound            s/image"] = benchmark.stats.stats.mean / N_IMAGES


def test_xaibench(benchmark, unet, images):
    loaded = LoadedModel(unet, "binary", tail=lambda p: unet_tail(unet, p))

    def ours():
        return xaibench.explain(loaded, images, METHODS, LAYERS)

    MAPS["xaibench"] = benchmark.pedantic(ours, rounds=1, iterations=1)
    RESULTS["xaibench               s/image"] = benchmark.stats.stats.mean / N_IMAGES


def test_report_ratios_and_identical_maps():
    if len(RESULTS) < 3:
        pytest.skip("needs the three timings of this module")
    ref = RESULTS["pytorch-grad-cam loop  s/image"]
    low = RESULTS["lower bound            s/image"]
    ours = RESULTS["xaibench               s/image"]
    RESULTS["speed-up vs pytorch-grad-cam (x)"] = ref / ours
    RESULTS["xaibench / lower bound (x)"] = ours / low
    worst = 0.0
    for (method, layer), ref_map in MAPS["pytorch_grad_cam"].items():
        got = MAPS["xaibench"][(method, layer)].numpy()
        if method == "ablation_cam":
            from xaibench.engine.heatmaps import normalize

            ref_map = normalize(torch.from_numpy(np.stack(ref_map)), got.shape[-2:]).numpy()
        if method == "eigen_cam":  # sign of a singular vector is arbitrary: compare the map or its mirror
            continue
        worst = max(worst, float(np.abs(got - ref_map).max()))
    RESULTS["max |map difference| (non-Eigen)"] = worst
    assert worst < 1e-4
