"""Pixel attributions: xaibench's shared and batched passes against Captum called method by
method (each with its defaults), and every method's pass count against its floor.

Timed: the Captum loop against ``xaibench.explain`` of all its methods at once; then, method by
method, each Captum call against ``xaibench.explain`` of that method alone, back to back, so the
summary gives every method's speed against its Captum call (Captum s / xaibench s: 1 is parity,
above 1 faster). The Captum calls are handed the target region; xaibench computes it in its
shared forward, timed (the summary gives that forward's time beside). Plugin discovery imports
every installed plugin once per process: that import is timed apart, before the rest (the
first call's cost, not a per-call one). ``XAIBENCH_PERF_ROUNDS`` (default 2) repeats each
timing, keeping the fastest.

The floor of a method is what it cannot avoid: the shared forward of the B images, plus its
own rows (IG: ``n_steps`` per image; GradientSHAP: ``n_samples``; Occlusion: 1 + P windows;
DeepLift: the B inputs and B baselines, plus its 1-row probe for reused activations; Guided
Backprop and Guided Grad-CAM: B), and one backward per batched forward that needs one. Run with
``tox -e perf``; the figures go to the terminal summary (seconds per image, ratios, passes).
"""

from __future__ import annotations

import functools
import gc
import math
import os
import time

import pytest
import torch
from captum import attr as ca

import xaibench
from xaibench.engine.capture import PassCounter
from xaibench.engine.heatmaps import HeatmapEngine
from xaibench.explainers.attribution import quiet
from xaibench.models.base import LoadedModel
from xaibench.registry.builtin.explainers import BUILTIN
from xaibench.registry.discovery import load_registry

from .conftest import N_IMAGES, RESULTS, SIZE

LAYER = "decoder.blocks.3"
PARAMS = {"integrated_gradients": {"n_steps": 16}, "gradient_shap": {"n_samples": 8}, "occlusion": {"window": 16, "stride": 16}}
METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "gradient_shap", "occlusion", "deeplift", "guided_backprop", "guided_grad_cam"]
CHUNK = 16
ROUNDS = int(os.environ.get("XAIBENCH_PERF_ROUNDS", "2"))
TIMES: dict[str, float] = {}
CAPTUM: dict[str, float] = {}  # method -> seconds of its Captum call (fastest round)
OURS: dict[str, float] = {}  # method -> seconds of xaibench.explain of it alone (fastest round)


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


def test_guided_grad_cam_reads_the_batchs_guided_backprop(unet, images):
    """In one grid, Guided Backprop and Guided Grad-CAM make one guided pass of the batch."""
    cls = {c.name: c for c in BUILTIN}
    counter = PassCounter()
    both = {n: cls[n]() for n in ("guided_backprop", "guided_grad_cam")}
    HeatmapEngine(LoadedModel(unet, "binary"), both, chunk_size=CHUNK, counter=counter).run(images, [LAYER], pairs=[(n, _layer(n)) for n in both])
    assert counter.forward_rows == 2 * len(images)  # the shared forward, one guided forward


def _timed(into: dict[str, float], name: str, call) -> None:
    """Run ``call``, keeping in ``into[name]`` the fastest of its times, with the collector off."""
    gc.disable()
    try:
        t = time.perf_counter()
        call()
        into[name] = min(into.get(name, math.inf), time.perf_counter() - t)
    finally:
        gc.enable()


@pytest.fixture(scope="module")
def discovered():
    """Plugin discovery, once per process (every installed plugin imported), timed apart."""
    t = time.perf_counter()
    load_registry()
    RESULTS["xaibench first call: plugin import s"] = time.perf_counter() - t


def _captum_calls(unet, images) -> dict:
    """Captum's call of each method, handed the target region (the model's predicted mask)."""
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

    def gradient_shap():
        for i in range(len(images)):
            ca.GradientShap(score).attribute(images[i : i + 1], baselines=zeros[:1], n_samples=8, additional_forward_args=(region[i : i + 1],))

    return {  # Captum's DeepLift refuses the ResNet encoder's reused ReLUs: not in the reference loop
        "saliency": lambda: ca.Saliency(score).attribute(images, **extra),
        "input_x_gradient": lambda: ca.InputXGradient(score).attribute(images, **extra),
        "integrated_gradients": lambda: ca.IntegratedGradients(score).attribute(images, baselines=zeros, n_steps=16, internal_batch_size=CHUNK, **extra),
        "gradient_shap": gradient_shap,
        "occlusion": lambda: ca.Occlusion(score).attribute(images, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16), baselines=zeros, **extra),
        "guided_backprop": lambda: ca.GuidedBackprop(Score()).attribute(images),
        "guided_grad_cam": lambda: ca.GuidedGradCam(Score(), dict(Score().named_modules())[f"model.{LAYER}"]).attribute(images),
    }


def test_captum_method_by_method(benchmark, unet, images):
    calls = _captum_calls(unet, images)

    def loop():
        with quiet():
            for call in calls.values():
                call()

    benchmark.pedantic(loop, rounds=ROUNDS, iterations=1)
    TIMES["captum"] = benchmark.stats.stats.min


def test_xaibench_all_at_once(benchmark, unet, images, discovered):
    methods = [m for m in METHODS if m != "deeplift"]  # the methods of the Captum loop

    def ours():
        return xaibench.explain(unet, images, methods, [LAYER], method_params=PARAMS, chunk_size=CHUNK)

    benchmark.pedantic(ours, rounds=ROUNDS, iterations=1)
    TIMES["xaibench"] = benchmark.stats.stats.min


def test_method_by_method_pairs(unet, images, discovered):
    """Each method's Captum call and ``xaibench.explain`` of it alone, back to back (the order
    swapped every round), so a slower stretch of a shared machine hits both."""
    with torch.no_grad():
        for _ in range(ROUNDS):
            _timed(TIMES, "target forward", functools.partial(unet, images))
    calls = _captum_calls(unet, images)
    for r in range(ROUNDS):
        for method, call in calls.items():
            ours = functools.partial(xaibench.explain, unet, images, method, _layer(method), method_params=PARAMS, chunk_size=CHUNK)
            pair = [(CAPTUM, call), (OURS, ours)]
            for into, run in pair[:: 1 if r % 2 == 0 else -1]:
                with quiet():
                    _timed(into, method, run)


def test_report_ratio():
    if len(TIMES) < 3:
        pytest.skip("needs both timings of this module")
    RESULTS["captum method by method  s/image"] = TIMES["captum"] / N_IMAGES
    RESULTS["xaibench attributions    s/image"] = TIMES["xaibench"] / N_IMAGES
    RESULTS["attributions: speed-up vs captum (x)"] = TIMES["captum"] / TIMES["xaibench"]
    RESULTS["target forward s (captum: untimed)"] = TIMES["target forward"]
    methods = [m for m in CAPTUM if m in OURS]
    for method in methods:
        RESULTS[f"speed vs captum (x) {method}"] = CAPTUM[method] / OURS[method]
    for method in methods:
        RESULTS[f"captum s   {method}"] = CAPTUM[method]
        RESULTS[f"xaibench s {method}"] = OURS[method]
