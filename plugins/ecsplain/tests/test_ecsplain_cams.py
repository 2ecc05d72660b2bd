"""CAM definitions (hand-made tensors), differentiability of every CAM type, and the explainers."""

from __future__ import annotations

import math

import pytest
import torch
from xaibench_ecsplain.cams import CAM_TYPES, NormCAM, finish, multilayer_cam, raw_gradient_cam
from xaibench_ecsplain.model import ALIASES, Ecsplain

import xaibench
from xaibench.errors import UserError
from xaibench.models.base import LoadedModel

# activations and gradients [B=1, K=2, h=1, w=2]
A = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
G = torch.tensor([[[[2.0, 1.0]], [[1.0, -1.0]]]])


def test_norm_cam_definition_on_a_hand_made_tensor():
    # G * A = [[2, 2], [3, -4]] -> ReLU -> [[2, 2], [3, 0]] -> L2 over channels -> [sqrt(13), 2]
    expected = torch.tensor([[[math.sqrt(13), 2.0]]])
    ctx = type("Ctx", (), {"activations": A, "gradients": G})()
    assert torch.allclose(NormCAM().explain(ctx), expected)
    assert torch.allclose(raw_gradient_cam("norm_cam", A, G)[:, 0], expected)
    # ReLU, upsampling and min-max: the larger pixel is 1, the smaller 0
    assert torch.allclose(finish(raw_gradient_cam("norm_cam", A, G), (1, 2)), torch.tensor([[[[1.0, 0.0]]]]), atol=1e-6)


def test_grad_cam_and_layer_cam_definitions():
    # Grad-CAM: channel weights mean(G) = [1.5, 0] -> 1.5 * [1, 2]
    assert torch.allclose(raw_gradient_cam("grad_cam", A, G)[0, 0], torch.tensor([[1.5, 3.0]]))
    # Layer-CAM: ReLU(G) * A summed over channels = [2 + 3, 2 + 0]
    assert torch.allclose(raw_gradient_cam("layer_cam", A, G)[0, 0], torch.tensor([[5.0, 2.0]]))


def _tiny_net(cam_type="grad_cam"):
    plugin = Ecsplain(cam_type=cam_type, width=4, cam_layers=["c1", "conv2", "conv3"])
    return plugin, plugin.build(2)


@pytest.mark.parametrize("cam_type", CAM_TYPES)
def test_training_cam_is_differentiable_wrt_the_weights(cam_type):
    plugin, model = _tiny_net(cam_type)
    torch.manual_seed(0)
    x = torch.rand(2, 2, 32, 32)
    target = (torch.rand(2, 1, 32, 32) > 0.5).float()
    cam, logits = multilayer_cam(model.net, x, plugin.cam_paths(), cam_type, create_graph=True, fraction=0.5)
    assert cam.shape == (2, 1, 32, 32) and logits.shape == (2, 1)
    assert cam.requires_grad
    assert float(cam.detach().min()) >= 0 and float(cam.detach().max()) <= 1 + 1e-6
    loss = (cam - target).pow(2).mean()
    # fc only reaches the CAM through d logit / d activation (gradient CAMs) or the masked
    # scores (Score-CAM): a non-zero gradient there proves the CAM's own graph is kept
    g_fc, g_conv = torch.autograd.grad(loss, [model.net.fc.weight, model.net.conv1.weight])
    for g in (g_fc, g_conv):
        assert torch.isfinite(g).all()
        assert float(g.abs().sum()) > 0
    # without create_graph (inference) the CAM is detached
    cam2, _ = multilayer_cam(model.net, x, plugin.cam_paths(), cam_type)
    assert not cam2.requires_grad
    if cam_type != "score_cam":  # Score-CAM in training used a random half of the channels
        assert torch.allclose(cam.detach(), cam2, atol=1e-5)


def test_score_cam_uses_a_random_share_of_channels_in_training():
    plugin, model = _tiny_net("score_cam")
    x = torch.rand(2, 2, 32, 32)
    calls = []
    handle = model.net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        multilayer_cam(model.net, x, ["layer2.0.act1"], "score_cam", fraction=0.25, chunk_size=1000)
        assert calls == [2, 2 * 2]  # clean forward, then 25 % of 8 channels for 2 images
        calls.clear()
        multilayer_cam(model.net, x, ["layer2.0.act1"], "score_cam", chunk_size=1000)
        assert calls == [2, 2 * 8]
    finally:
        handle.remove()


def test_layer_aliases_are_modules_of_timm_resnets():
    for model_type in ("resnet18", "resnet50"):
        model = Ecsplain(model_type=model_type, width=4).build(2)
        paths = dict(model.named_modules())
        for alias, path in ALIASES.items():
            assert path in paths, (model_type, alias, path)


def test_core_engine_reads_the_fused_cam_and_per_layer_norm_cam():
    plugin, model = _tiny_net("norm_cam")
    model.eval()
    loaded = LoadedModel(module=model, task="classifier", layers=dict(ALIASES))
    x = torch.rand(3, 2, 32, 32)
    fused = xaibench.explain(loaded, x, "ecsplain_cam", "cam")
    assert fused.shape == (3, 32, 32)
    assert torch.allclose(fused, model.fused_cam(x)[:, 0], atol=1e-5)
    # one layer through the core's shared pass == this package's definition at that layer
    core = xaibench.explain(loaded, x, "norm_cam", "conv2")
    ours, _ = multilayer_cam(model.net, x, ["layer2.0.act1"], "norm_cam")
    assert torch.allclose(core, ours[:, 0], atol=1e-4)
    # the pipeline's segmentation: the fused CAM where the classifier detects, empty elsewhere
    with torch.no_grad():  # shift the logit so that one image is detected and two are not
        low = model.net(x)[:, 0].sort().values
        model.net.fc.bias -= (low[1] + low[2]) / 2
    seg = xaibench.explain(loaded, x, "ecsplain_segmentation", "cam")
    detected = model.net(x)[:, 0] > 0
    assert detected.sum() == 1
    for i in range(3):
        assert torch.allclose(seg[i], fused[i] if detected[i] else torch.zeros_like(fused[i]), atol=1e-5)
    # without a hook on `cam` the forward is the plain classifier
    assert torch.allclose(model(x), model.net(x))
    with pytest.raises(UserError, match="ecsplain_cam"):
        xaibench.explain(loaded, x, "ecsplain_cam", "conv2")
