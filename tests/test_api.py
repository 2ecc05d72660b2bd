"""xaibench.explain's errors for what a notebook user gets wrong."""

import pytest
import torch

import xaibench
from xaibench.errors import UserError


def test_a_mistyped_method_parameter_is_a_user_error_that_lists_the_allowed_keys(tiny_unet, tiny_images):
    with pytest.raises(UserError, match=r"method_params\['score_cam'\]: unknown key 'baselin'.*allowed keys: .*baseline"):
        xaibench.explain(tiny_unet, tiny_images, "score_cam", "decoder.blocks.2", method_params={"score_cam": {"baselin": True}})
    with pytest.raises(UserError, match="Did you mean 'grad_cam'"):
        xaibench.explain(tiny_unet, tiny_images, "score_cam", "decoder.blocks.2", method_params={"gradcam": {}})


SMP_FAMILIES = [
    ("Unet", dict(encoder_depth=3, decoder_channels=[16, 8, 4])),
    ("FPN", dict(decoder_pyramid_channels=32, decoder_segmentation_channels=32)),
    ("DeepLabV3Plus", dict(encoder_depth=4, decoder_channels=16)),
    ("Linknet", dict(encoder_depth=3)),
    ("UnetPlusPlus", dict(encoder_depth=3, decoder_channels=[16, 8, 4])),
]


def _smp(arch: str, options: dict):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.create_model(arch, encoder_name="resnet18", encoder_weights=None, classes=1, **options).eval()


@pytest.mark.parametrize("arch, options", SMP_FAMILIES, ids=[a for a, _ in SMP_FAMILIES])
def test_a_plain_smp_module_gets_a_tail_that_reproduces_its_logits(arch, options):
    """xaibench.explain(plain smp module): the derived tail from decoder1 gives the full forward's
    logits to 1e-5, so Ablation-CAM runs on the tail alone."""
    from xaibench.api import _plain
    from xaibench.engine.capture import shared_pass

    module, images = _smp(arch, options), torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loaded = _plain(module, "binary")
    path = loaded.resolve_layer("decoder1")
    tail = loaded.tail(path)
    assert tail is not None, f"{arch}: no tail at {path}"
    cap = shared_pass(module, images, [path], extra=list(tail.extra))
    idx = torch.tensor([2, 0])
    assert torch.allclose(tail.fn(cap.activations[path][idx], cap.extras, idx), cap.logits[idx], atol=1e-5)


def test_ablation_cam_on_a_plain_smp_module_makes_no_full_forward_beyond_the_shared_pass(capsys):
    from xaibench.models.base import LoadedModel

    module, images = _smp("Unet", dict(encoder_depth=3, decoder_channels=[16, 8, 4])), torch.rand(2, 3, 32, 32)
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    plain = xaibench.explain(module, images, "ablation_cam", "decoder1")
    assert calls == [1, 2]  # the probe of the task, then the one shared pass
    assert "warning" not in capsys.readouterr().err
    calls.clear()
    slow = xaibench.explain(LoadedModel(module=module, task="binary", layers={"decoder1": "decoder.blocks.2"}), images, "ablation_cam", "decoder1")
    assert sum(calls) > 2 + 4  # a full forward per ablated channel (4 in the last block)
    assert torch.allclose(plain, slow, atol=1e-5)  # the same maps
    assert capsys.readouterr().err.count("no tail there") == 1  # said once, with what to do
