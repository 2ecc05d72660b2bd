"""Pixel attributions give Captum's maps (to 1e-5), called directly on the same model and target."""

import copy

import pytest
import torch
from captum import attr as ca
from torch import nn

import xaibench
from tests.conftest import perturbed_copy
from xaibench.engine.cache import image_key
from xaibench.engine.capture import PassCounter
from xaibench.engine.heatmaps import HeatmapEngine, normalize
from xaibench.errors import UserError
from xaibench.explainers.attribution import DeepLift, GradientShap, IntegratedGradients, Occlusion, seeded
from xaibench.models.base import LoadedModel

PARAMS = {
    "integrated_gradients": {"n_steps": 8},
    "gradient_shap": {"n_samples": 6, "stdevs": 0.05, "seed": 3},
    "occlusion": {"window": 8, "stride": 4},
}
METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "gradient_shap", "occlusion", "deeplift", "guided_backprop", "guided_grad_cam"]
LAYER = "decoder.blocks.1"
pytestmark = pytest.mark.filterwarnings("ignore:.*(did not already require gradients|Setting .*hooks)")


class Classifier(nn.Module):
    """ReLU modules used once each (Captum's DeepLift accepts it as it is)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def unet(tiny_unet):
    return perturbed_copy(tiny_unet).eval()


def _without_inplace(model):
    m = copy.deepcopy(model)  # Captum's backward hooks refuse in-place activations; the maths is the same
    for mod in m.modules():
        if getattr(mod, "inplace", False):
            mod.inplace = False
    return m


def _captum(method, model, images, layer, forward, target, extra):
    """Captum's attribution [B, C, H, W] of ``forward`` (the explained score) for ``method``."""
    p = PARAMS.get(method, {})
    args = {"additional_forward_args": extra, "target": target}
    zeros = torch.zeros_like(images)
    if method == "saliency":
        return ca.Saliency(forward).attribute(images, **args)
    if method == "input_x_gradient":
        return ca.InputXGradient(forward).attribute(images, **args)
    if method == "integrated_gradients":
        return ca.IntegratedGradients(forward).attribute(images, baselines=zeros, n_steps=p["n_steps"], **args)
    if method == "occlusion":
        return ca.Occlusion(forward).attribute(images, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=zeros, **args)
    if method == "gradient_shap":  # one image at a time, seeded as the explainer seeds it
        out = []
        for i in range(len(images)):
            one = {"additional_forward_args": None if extra is None else tuple(e[i : i + 1] for e in extra), "target": None if target is None else target[i : i + 1]}
            with seeded(image_key(images[i]), p["seed"]):
                out.append(ca.GradientShap(forward).attribute(images[i : i + 1], baselines=zeros[:1], n_samples=p["n_samples"], stdevs=p["stdevs"], **one))
        return torch.cat(out)
    module = forward if isinstance(forward, nn.Module) else _Score(model, extra)
    if method == "deeplift":
        return ca.DeepLift(module).attribute(images, baselines=zeros, target=target)
    if method == "guided_backprop":
        return ca.GuidedBackprop(module).attribute(images, target=target)
    if method == "guided_grad_cam":
        layer_module = dict(module.named_modules())[layer if module is forward else f"model.{layer}"]
        return ca.GuidedGradCam(module, layer_module).attribute(images, target=target)
    raise AssertionError(method)


class _Score(nn.Module):
    """The segmentation target as a module: the class-1 logit summed over a fixed region."""

    def __init__(self, model, extra):
        super().__init__()
        self.model = model
        self.region = extra[0]

    def forward(self, x):
        return (self.model(x)[:, 0] * self.region.repeat(x.shape[0] // len(self.region), 1, 1)).sum(dim=(1, 2))


def _expected(method, model, images, segmentation):
    model = _without_inplace(model)
    with torch.no_grad():
        logits = model(images)
    if segmentation:
        region = (logits[:, 0] > 0).float()

        def forward(x, region):
            return (model(x)[:, 0] * region).sum(dim=(1, 2))

        attribution = _captum(method, model, images, LAYER, forward, None, (region,))
    else:
        attribution = _captum(method, model, images, "features.2", model, logits.argmax(1), None)
    return normalize(attribution.detach().sum(dim=1), images.shape[-2:])


# Captum's own DeepLift refuses the U-Net (its ResNet blocks call one ReLU twice): the test of
# reused activations below holds ours against Captum on a model with the ReLU made two
@pytest.mark.parametrize("method", [m for m in METHODS if m != "deeplift"])
def test_segmentation_maps_are_captums(method, unet, tiny_images):
    ours = xaibench.explain(unet, tiny_images, method, LAYER if method == "guided_grad_cam" else "input", method_params=PARAMS)
    ref = _expected(method, unet, tiny_images, segmentation=True)
    assert ours.shape == ref.shape == tiny_images.shape[:1] + tiny_images.shape[2:]
    assert ref.max() > 0.99  # not a blank map
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_classifier_maps_are_captums(method, tiny_images):
    # in float64: the small score changes of occlusion are min-max scaled up, and float32
    # rounding differs with the batch size (ours batches windows, Captum's default does not)
    model, tiny_images = Classifier().double().eval(), tiny_images.double()
    ours = xaibench.explain(model, tiny_images, method, "features.2" if method == "guided_grad_cam" else "input", method_params=PARAMS)
    ref = _expected(method, model, tiny_images, segmentation=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


class Reuse(nn.Module):
    """One ReLU module called twice per forward (as a ResNet block's ``relu``)."""

    def __init__(self, twin=False):
        super().__init__()
        torch.manual_seed(2)
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU() if twin else self.relu
        self.head = nn.Conv2d(6, 1, 1)

    def forward(self, x):
        return self.head(self.relu2(self.b(self.relu(self.a(x)))))


def test_deeplift_gives_each_call_of_a_reused_activation_its_own_rule(tiny_images):
    model, twin = Reuse().eval(), Reuse(twin=True).eval()
    ours = xaibench.explain(model, tiny_images, "deeplift", "input")
    ref = _expected("deeplift", twin, tiny_images, segmentation=True)  # Captum on the model with two ReLUs
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert model.relu2 is model.relu and model.relu.inplace  # the model is left as it was
    assert [type(m) for m in model.modules()] == [type(m) for m in Reuse().modules()]


def _engine(model, explainers, chunk, counter):
    return HeatmapEngine(LoadedModel(model, "segmentation"), explainers, chunk_size=chunk, counter=counter)


def _rows_per_forward(model):
    rows = []
    model.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    return rows


@pytest.mark.parametrize("explainer", [IntegratedGradients(n_steps=9), GradientShap(n_samples=7, stdevs=0.1), Occlusion(window=8, stride=8)], ids=lambda e: e.name)
def test_many_pass_methods_batch_within_chunk_size_and_chunking_changes_nothing(explainer, unet, tiny_images):
    maps = {}
    for chunk in (4, 64):
        model = copy.deepcopy(unet)
        rows = _rows_per_forward(model)
        engine = _engine(model, {explainer.name: explainer}, chunk, PassCounter())
        maps[chunk] = engine.run(tiny_images, [], pairs=[(explainer.name, "input")]).maps[(explainer.name, "input")]
        assert max(rows) <= max(chunk, len(tiny_images))
        if chunk == 64:  # the shared forward, then all steps in one forward; the samples of each
            # image in one; Captum's forward of the unoccluded input, then all 16 windows in one
            assert len(rows) == {"integrated_gradients": 2, "gradient_shap": 1 + 3, "occlusion": 3}[explainer.name]
    torch.testing.assert_close(maps[4], maps[64], atol=1e-5, rtol=0)


def test_saliency_and_input_x_gradient_share_the_cams_backward(unet, tiny_images):
    from xaibench.registry.builtin.explainers import BUILTIN

    cls = {c.name: c for c in BUILTIN}
    counter = PassCounter()
    engine = _engine(unet, {n: cls[n]() for n in ("grad_cam", "saliency", "input_x_gradient")}, 16, counter)
    out = engine.run(tiny_images, [LAYER], pairs=[("grad_cam", LAYER), ("saliency", "input"), ("input_x_gradient", "input")])
    assert (counter.forwards, counter.backwards) == (1, 1)
    assert all(m.max() > 0.99 for m in out.maps.values())


def test_gradient_shap_map_of_an_image_does_not_depend_on_its_batch(unet, tiny_images):
    alone = xaibench.explain(unet, tiny_images[1:2], "gradient_shap", "input", method_params=PARAMS)
    batch = xaibench.explain(unet, tiny_images, "gradient_shap", "input", method_params=PARAMS)
    torch.testing.assert_close(alone[0], batch[1], atol=1e-6, rtol=0)


def test_passes_are_counted(unet, tiny_images):
    counter = PassCounter()
    _engine(unet, {"deeplift": DeepLift()}, 16, counter).run(tiny_images, [], pairs=[("deeplift", "input")])
    # the shared forward; one probe forward that finds reused activations; DeepLift's forward
    # of inputs and baselines together and its one backward
    assert (counter.forwards, counter.backwards) == (3, 1)
    assert counter.forward_rows == 3 + 1 + 2 * 3


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("integrated_gradients", {"n_steps": 0}, "n_steps must be a positive integer"),
        ("integrated_gradients", {"method": "simpson"}, "method = 'simpson' is not one of"),
        ("gradient_shap", {"stdevs": -1}, "stdevs must be a number >= 0"),
        ("occlusion", {"window": 0}, "window must be a positive integer"),
        ("deeplift", {"baseline": "noise"}, "baseline = 'noise' is not a number or one of"),
        ("saliency", {"sign": "negative"}, "sign = 'negative' is not one of"),
    ],
)
def test_bad_parameters_are_user_errors(method, params, message, unet, tiny_images):
    with pytest.raises(UserError, match=message):
        xaibench.explain(unet, tiny_images, method, "input", method_params={method: params})


def test_a_layer_explainer_at_the_input_is_a_user_error(unet, tiny_images):
    with pytest.raises(UserError, match="'grad_cam' explains a layer"):
        xaibench.explain(unet, tiny_images, "grad_cam", "input")


def test_pixel_attributions_are_given_once_under_every_layer(unet, tiny_images):
    counter_maps = xaibench.explain(unet, tiny_images, ["saliency", "grad_cam"], ["decoder.blocks.1", "decoder.blocks.2"])
    assert torch.equal(counter_maps[("saliency", "decoder.blocks.1")], counter_maps[("saliency", "decoder.blocks.2")])


def test_a_composite_reads_a_pixel_attribution_at_the_input_computed_once(unet, tiny_images):
    from xaibench.explainers.masks import MaskOr

    counter = PassCounter()
    engine = _engine(unet, {"integrated_gradients": IntegratedGradients(n_steps=4), "mask_or": MaskOr(bases=["integrated_gradients"], thresholds=[0.5])}, 64, counter)
    out = engine.run(tiny_images, [LAYER], pairs=[("integrated_gradients", "input"), ("mask_or", LAYER)])
    assert engine.computed.count(("integrated_gradients", "input")) == 1 and len(engine.computed) == 2
    torch.testing.assert_close(out.maps[("mask_or", LAYER)], (out.maps[("integrated_gradients", "input")] >= 0.5).float())
