import copy

import pytest
import torch

from xaibench.engine.capture import PassCounter, forward_replacing, shared_pass


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_one_forward_one_backward_no_parameter_gradients_and_hooks_removed(tiny_unet, tiny_images):
    m = tiny_unet
    before = _state(m)
    modules_before = [type(x) for x in m.modules()]
    counter = PassCounter()
    layers = ["decoder.blocks.2", "decoder.blocks.1"]
    cap = shared_pass(m, tiny_images, layers, score=lambda out: out.sum(dim=(1, 2, 3)), extra=["encoder"], counter=counter)
    assert (counter.forwards, counter.backwards) == (1, 1)
    assert set(cap.activations) == set(cap.gradients) == set(layers)
    assert cap.activations["decoder.blocks.2"].shape[:2] == (3, 4)
    assert isinstance(cap.extras["encoder"], list)
    assert all(p.grad is None for p in m.parameters())
    for mod in m.modules():
        assert not mod._forward_hooks and not mod._backward_hooks and not getattr(mod, "_forward_pre_hooks", {})
    after = _state(m)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [type(x) for x in m.modules()] == modules_before


def test_gradients_equal_autograd_reference(tiny_unet, tiny_images):
    m = tiny_unet
    cap = shared_pass(m, tiny_images, ["decoder.blocks.1"], score=lambda out: out.sum(dim=(1, 2, 3)))
    ref_model = copy.deepcopy(m)
    store = {}
    h = dict(ref_model.named_modules())["decoder.blocks.1"].register_forward_hook(lambda mod, i, o: store.setdefault("a", o))
    out = ref_model(tiny_images)
    h.remove()
    (g,) = torch.autograd.grad(out.sum(), store["a"])
    assert torch.allclose(cap.gradients["decoder.blocks.1"], g, atol=1e-6)


def test_hooks_are_removed_when_the_forward_fails(tiny_unet):
    with pytest.raises(RuntimeError):  # the forward must really fail, or the test proves nothing
        shared_pass(tiny_unet, torch.rand(1, 5, 32, 32), ["decoder.blocks.1"])  # 5 channels for a 3-channel stem
    assert all(not mod._forward_hooks for mod in tiny_unet.modules())


def test_frozen_models_still_get_activation_gradients(tiny_images):
    import segmentation_models_pytorch as smp

    m = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4], classes=1).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    cap = shared_pass(m, tiny_images, ["decoder.blocks.1"], score=lambda out: out.sum(dim=(1, 2, 3)))
    assert cap.gradients["decoder.blocks.1"].abs().sum() > 0


def test_forward_replacing_swaps_no_module(tiny_unet, tiny_images):
    modules = dict(tiny_unet.named_modules())
    cap = shared_pass(tiny_unet, tiny_images, ["decoder.blocks.1"])
    same = forward_replacing(tiny_unet, tiny_images, "decoder.blocks.1", cap.activations["decoder.blocks.1"])
    assert torch.allclose(same, cap.logits, atol=1e-6)
    zero = forward_replacing(tiny_unet, tiny_images, "decoder.blocks.1", torch.zeros_like(cap.activations["decoder.blocks.1"]))
    assert not torch.allclose(zero, cap.logits)
    assert all(not mod._forward_hooks for mod in tiny_unet.modules())
    assert dict(tiny_unet.named_modules()) == modules  # the same module objects at the same paths
