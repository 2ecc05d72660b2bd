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
    assert calls == [2]  # the one shared pass: the task is read from the segmentation head, no probe
    assert "warning" not in capsys.readouterr().err
    calls.clear()
    bare = LoadedModel(module=module, task="binary", layers={"decoder1": "decoder.blocks.2"})  # no tail given
    replayed = xaibench.explain(bare, images, "ablation_cam", "decoder1")
    assert calls[:2] == [1, 1] and calls[2] == 2  # the replay's recorded image and its check, then the shared pass
    assert torch.allclose(plain, replayed, atol=1e-5)  # the same maps
    assert "no tail there" not in capsys.readouterr().err  # a tail derived by replay (tests/engine/test_replay.py)


class _Net(torch.nn.Module):
    """A plain (not smp) segmentation net with a replaceable head."""

    def __init__(self, classes: int):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Conv2d(4, classes, 1)

    def forward(self, x):
        return self.head(self.body(x))


def test_a_plain_module_is_probed_for_its_task_on_its_first_call_only_and_again_when_its_head_changes():
    """The probe forward (one image) that tells a plain module's task is made once per module,
    not on every call; a replaced head (another output channel count) is probed again."""
    import gc
    import weakref

    from xaibench.api import task_of

    net, images = _Net(classes=1).eval(), torch.rand(2, 3, 16, 16)
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    first = xaibench.explain(net, images, "saliency", "input")
    assert calls == [1, 2]  # the probe, then the shared pass
    calls.clear()
    again = xaibench.explain(net, images, "saliency", "input")
    assert calls == [2]  # remembered: no probe
    assert torch.equal(first, again)
    assert task_of(net, images) == "binary" and calls == [2]
    net.head = torch.nn.Conv2d(4, 3, 1)
    calls.clear()
    assert task_of(net, images) == "multiclass" and calls == [1]  # the new head noticed and probed
    xaibench.explain(net, images, "saliency", "input")
    assert calls == [1, 2]
    gone = weakref.ref(net)
    del net
    gc.collect()
    assert gone() is None  # the remembered task does not keep the module alive


@pytest.mark.parametrize("classes, task", [(1, "binary"), (3, "multiclass")])
def test_an_smp_models_task_is_read_from_its_segmentation_head_without_a_forward(classes, task):
    import segmentation_models_pytorch as smp

    from xaibench.api import task_of

    module = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4], classes=classes).eval()
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    assert task_of(module, torch.rand(2, 3, 32, 32)) == task
    assert calls == []
    module.segmentation_head = torch.nn.Conv2d(4, 2, 1)  # a head of the user's own: probed
    assert task_of(module, torch.rand(2, 3, 32, 32)) == "multiclass" and calls == [1]


def test_plugin_discovery_is_not_repeated_on_every_call_but_is_when_what_it_reads_changes(monkeypatch, tmp_path, tiny_unet, tiny_images):
    """explain() keeps its plugin registry while sys.path's folders, XAIBENCH_DISABLE_PLUGINS and
    the plugin modules' hook functions stay the same; a change to any of them discovers again."""
    import os
    import sys

    import xaibench.api as api
    from xaibench.plugin import hookimpl
    from xaibench.registry.discovery import load_registry

    calls = []
    monkeypatch.setattr(api, "load_registry", lambda: calls.append(1) or load_registry())
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    explain = lambda: xaibench.explain(tiny_unet, tiny_images, "saliency", "input")  # noqa: E731
    explain()
    explain()
    assert len(calls) == 1
    (tmp_path / "xaibench_new_plugin-1.0.dist-info").mkdir()  # a distribution installed there
    os.utime(tmp_path, ns=(1, 1))
    explain()
    explain()
    assert len(calls) == 2
    monkeypatch.setenv("XAIBENCH_DISABLE_PLUGINS", "no_such_plugin")
    explain()
    assert len(calls) == 3
    explain()
    assert len(calls) == 3
    builtin = sys.modules["xaibench.registry.builtin.explainers"]
    original = builtin.register_explainers
    monkeypatch.setattr(builtin, "register_explainers", hookimpl(lambda register: original(register)))  # as a reload makes it
    explain()
    assert len(calls) == 4
