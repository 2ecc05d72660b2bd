"""Pixel attributions: xaibench's shared and batched passes against Captum called method by
method (each with its defaults), and every method's pass count against its floor.

The floor of a method is what it cannot avoid: the shared forward of the B images, plus its
own rows (IG: ``n_steps`` per image; GradientSHAP: ``n_samples``; Occlusion: 1 + P windows;
DeepLift: the B inputs and B baselines, plus its 1-row probe for reused activations; Guided
Backprop and Guided Grad-CAM: B), and one backward per batched forward that needs one. Run with
``tox -e perf``; the figures go to the terminal summary (seconds per image, ratios, passes).
"""

from __future__ import annotations

import math

import pytest
import torch
from captum import attr as ca

import xaibench
from xaibench.engine.capture import PassCounter
from xaibench.engine.heatmaps import HeatmapEngine
from xaibench.explainers.attribution import quiet
from xaibench.models.base import LoadedModel
from xaibench.registry.builtin.explainers import BUILTIN

from .conftest import N_IMAGES, RESULTS, SIZE

LAYER = "decoder.blocks.3"
PARAMS = {"integrated_gradients": {"n_steps": 16}, "gradient_shap": {"n_samples": 8}, "occlusion": {"window": 16, "stride": 16}}
METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "gradient_shap", "occlusion", "deeplift", "guided_backprop", "guided_grad_cam"]
CHUNK = 16
TIMES: dict[str, float] = {}


def _floor_rows(method: str, b: int) -> int:
    """Rows of full forwards a method cannot avoid, the shared forward of the batch included."""
    windows = ((SIZE - 16) // 16 + 1) ** 2
    own = {
        "saliency": 0,
        "input_x_gradient": 0,
        "integrated_gradients": PARAMS["integrated_gradients"]["n_steps"] * b,
        "gradient_shap": PARAMS["gradient_shap"]["n_samples"] * b,
        "occlusion": (1 + windows) * b,
        "deeplift": 2 * b + 1,
        "guided_backprop": b,
        "guided_grad_cam": b,
    }
    return b + own[method]


def _layer(method: str) -> str:
    return LAYER if method == "guided_grad_cam" else "input"


@pytest.mark.parametrize("method", METHODS)
def test_pass_counts_are_the_floor(method, unet, images):
    cls = {c.name: c for c in BUILTIN}[method]
    counter = PassCounter()
    engine = HeatmapEngine(LoadedModel(unet, "binary"), {method: cls(**PARAMS.get(method, {}))}, chunk_size=CHUNK, counter=counter)
    engine.run(images, [LAYER] if method == "guided_grad_cam" else [], pairs=[(method, _layer(method))])
    for what in ("forwards", "forward_rows", "backwards"):
        RESULTS[f"{method} {what}"] = getattr(counter, what)
    RESULTS[f"{method} floor of forward_rows"] = _floor_rows(method, len(images))
    assert counter.forward_rows == _floor_rows(method, len(images))
    rows_per_forward = math.ceil(counter.forward_rows / counter.forwards)
    assert rows_per_forward <= max(CHUNK, 2 * len(images))  # DeepLift: inputs and baselines in one


def test_captum_method_by_method(benchmark, unet, images):
    with torch.no_grad():
        region = (unet(images)[:, 0] > 0).float()

    def score(x, region):
        return (unet(x)[:, 0] * region).sum(dim=(1, 2))

    class Score(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = unet

        def forward(self, x):
            return (self.model(x)[:, 0] * region).sum(dim=(1, 2))

    zeros = torch.zeros_like(images)
    extra = {"additional_forward_args": (region,)}

    def loop():
        with quiet():
            ca.Saliency(score).attribute(images, **extra)
            ca.InputXGradient(score).attribute(images, **extra)
            ca.IntegratedGradients(score).attribute(images, baselines=zeros, n_steps=16, internal_batch_size=CHUNK, **extra)
            for i in range(len(images)):
                ca.GradientShap(score).attribute(images[i : i + 1], baselines=zeros[:1], n_samples=8, additional_forward_args=(region[i : i + 1],))
            ca.Occlusion(score).attribute(images, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16), baselines=zeros, **extra)
            # Captum's DeepLift refuses the ResNet encoder's reused ReLUs: not in the reference loop
            ca.GuidedBackprop(Score()).attribute(images)
            ca.GuidedGradCam(Score(), dict(Score().named_modules())[f"model.{LAYER}"]).attribute(images)

    benchmark.pedantic(loop, rounds=1, iterations=1)
    TIMES["captum"] = benchmark.stats.stats.mean


def test_xaibench_all_at_once(benchmark, unet, images):
    methods = [m for m in METHODS if m != "deeplift"]  # the methods of the Captum loop

    def ours():
        return xaibench.explain(unet, images, methods, [LAYER], method_params=PARAMS, chunk_size=CHUNK)

    benchmark.pedantic(ours, rounds=1, iterations=1)
    TIMES["xaibench"] = benchmark.stats.stats.mean


def test_report_ratio():
    if len(TIMES) < 2:
        pytest.skip("needs both timings of this module")
    RESULTS["captum method by method  s/image"] = TIMES["captum"] / N_IMAGES
    RESULTS["xaibench attributions    s/image"] = TIMES["xaibench"] / N_IMAGES
    RESULTS["attributions: speed-up vs captum (x)"] = TIMES["captum"] / TIMES["xaibench"]
