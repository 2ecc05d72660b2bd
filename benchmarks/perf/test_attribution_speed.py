"""Pixel attributions: xaibench's shared and batched passes against Captum called method by
method (each with its defaults), and every method's pass count against its floor.

Timed: the Captum loop against ``xaibench.explain`` of all its methods at once; then, method by
method, each Captum call against ``xaibench.explain`` of that method alone, back to back, so the
summary gives every method's speed against its Captum call (Captum s / xaibench s: 1 is parity,
above 1 faster). Plugin discovery imports every installed plugin once per process: that import
is timed apart, before the rest (the first call's cost, not a per-call one).
``XAIBENCH_PERF_ROUNDS`` (default 2) repeats each timing, keeping the fastest;
``XAIBENCH_PERF_ATTRIBUTIONS`` (comma-separated method names; default all) times fewer methods,
for a quick look.

The target. ``xaibench.explain(model, images, method)`` explains the model's predicted mask and
finds it itself, from a forward of the images. A Captum user explaining a segmentation model's
predicted mask must do the same: run the model once for the mask, then hand it to the score
function (as Captum's segmentation tutorial computes its argmax mask before attributing). So the
fair reference is the Captum call *plus* that target forward, timed together
(``speed vs captum+target``). The Captum call with the mask handed to it for free
(``speed vs captum given``) is reported beside it as a bound that a Captum user reaches
only for the methods whose own forward is of the clean images (Saliency, Input x Gradient,
Guided Backprop, Guided Grad-CAM), by deriving the mask inside the score function; for
Integrated Gradients, GradientSHAP and Occlusion, whose forwards see changed inputs, the mask
costs a forward of its own. The Captum loop is timed with its mask given (one mask serves all
its methods), and its fair time adds the ``target forward`` timed apart. xaibench pays the
target forward where it cannot fold it into the method's own: for Saliency and Input x Gradient
the shared forward both resolves the target and is differentiated; for the other methods it is
a forward of its own (in their floor below).

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
TIMED = [m.strip() for m in os.environ.get("XAIBENCH_PERF_ATTRIBUTIONS", "").split(",") if m.strip()] or METHODS
CHUNK = 16
ROUNDS = int(os.environ.get("XAIBENCH_PERF_ROUNDS", "2"))
TIMES: dict[str, float] = {}
CAPTUM: dict[str, float] = {}  # method -> seconds of its Captum call, target given (fastest round)
CAPTUM_TARGET: dict[str, float] = {}  # method -> seconds of its target forward and Captum call
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
    """Captum's call of each method, a function of the target region (the model's predicted mask)."""

    def score(x, region):
        return (unet(x)[:, 0] * region).sum(dim=(1, 2))

    class Score(torch.nn.Module):
        def __init__(self, region):
            super().__init__()
            self.model = unet
            self.region = region

        def forward(self, x):
            return (self.model(x)[:, 0] * self.region).sum(dim=(1, 2))

    zeros = torch.zeros_like(images)

    def gradient_shap(region):
        for i in range(len(images)):
            ca.GradientShap(score).attribute(images[i : i + 1], baselines=zeros[:1], n_samples=8, additional_forward_args=(region[i : i + 1],))

    def guided_grad_cam(region):
        scorer = Score(region)
        return ca.GuidedGradCam(scorer, dict(scorer.named_modules())[f"model.{LAYER}"]).attribute(images)

    return {  # Captum's DeepLift refuses the ResNet encoder's reused ReLUs: not in the reference loop
        "saliency": lambda region: ca.Saliency(score).attribute(images, additional_forward_args=(region,)),
        "input_x_gradient": lambda region: ca.InputXGradient(score).attribute(images, additional_forward_args=(region,)),
        "integrated_gradients": lambda region: ca.IntegratedGradients(score).attribute(
            images, baselines=zeros, n_steps=16, internal_batch_size=CHUNK, additional_forward_args=(region,)
        ),
        "gradient_shap": gradient_shap,
        "occlusion": lambda region: ca.Occlusion(score).attribute(
            images, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16), baselines=zeros, additional_forward_args=(region,)
        ),
        "guided_backprop": lambda region: ca.GuidedBackprop(Score(region)).attribute(images),
        "guided_grad_cam": guided_grad_cam,
    }


def _predicted(unet, images) -> torch.Tensor:
    """The target region a Captum user computes first: the model's predicted mask (one forward)."""
    with torch.no_grad():
        return (unet(images)[:, 0] > 0).float()


def test_captum_method_by_method(benchmark, unet, images):
    calls, region = _captum_calls(unet, images), _predicted(unet, images)

    def loop():  # the target given: one forward for all methods, timed apart (``target forward``)
        with quiet():
            for method, call in calls.items():
                if method in TIMED:
                    call(region)

    benchmark.pedantic(loop, rounds=ROUNDS, iterations=1)
    TIMES["captum"] = benchmark.stats.stats.min


def test_xaibench_all_at_once(benchmark, unet, images, discovered):
    methods = [m for m in TIMED if m != "deeplift"]  # the methods of the Captum loop

    def ours():
        return xaibench.explain(unet, images, methods, [LAYER], method_params=PARAMS, chunk_size=CHUNK)

    benchmark.pedantic(ours, rounds=ROUNDS, iterations=1)
    TIMES["xaibench"] = benchmark.stats.stats.min


def test_method_by_method_pairs(unet, images, discovered):
    """Each method's Captum call (its target given, and after its target forward) and
    ``xaibench.explain`` of it alone, back to back (the order rotated every round), so a slower
    stretch of a shared machine hits all three."""
    calls, region = _captum_calls(unet, images), _predicted(unet, images)
    for r in range(ROUNDS):
        _timed(TIMES, "target forward", functools.partial(_predicted, unet, images))
        for method, call in calls.items():
            if method not in TIMED:
                continue
            ours = functools.partial(xaibench.explain, unet, images, method, _layer(method), method_params=PARAMS, chunk_size=CHUNK)
            given = functools.partial(call, region)

            def fair(call=call):
                return call(_predicted(unet, images))

            runs = [(CAPTUM, given), (CAPTUM_TARGET, fair), (OURS, ours)]
            for into, run in runs[r % 3 :] + runs[: r % 3]:
                with quiet():
                    _timed(into, method, run)


def test_report_ratio():
    if "captum" in TIMES and "xaibench" in TIMES:
        RESULTS["captum method by method  s/image"] = TIMES["captum"] / N_IMAGES
        RESULTS["xaibench attributions    s/image"] = TIMES["xaibench"] / N_IMAGES
        RESULTS["attributions: speed-up vs captum, target given (x)"] = TIMES["captum"] / TIMES["xaibench"]
        if "target forward" in TIMES:  # the Captum loop's one target forward, timed apart: a sum
            RESULTS["attributions: speed-up vs captum+target (x)"] = (TIMES["captum"] + TIMES["target forward"]) / TIMES["xaibench"]
    methods = [m for m in CAPTUM if m in OURS and m in CAPTUM_TARGET]
    if not methods:
        pytest.skip("needs the timings of this module")
    RESULTS["target forward s"] = TIMES["target forward"]
    for method in methods:
        RESULTS[f"speed vs captum+target {method}"] = CAPTUM_TARGET[method] / OURS[method]
    for method in methods:
        RESULTS[f"speed vs captum given  {method}"] = CAPTUM[method] / OURS[method]
    for method in methods:
        RESULTS[f"captum+target s {method}"] = CAPTUM_TARGET[method]
        RESULTS[f"captum s        {method}"] = CAPTUM[method]
        RESULTS[f"xaibench s      {method}"] = OURS[method]
