"""The ``torch_model`` plugin: each source of a network, checkpoints, training on first use,
layer aliases and tails, and the code a config runs. Tiny networks on tiny images."""

from __future__ import annotations

import textwrap

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from xaibench.errors import UserError
from xaibench.models.own_model import TorchModel
from xaibench.models.training import LoadContext
from xaibench.testing import TinyDataset

SMALL_FPN = {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32}


def ctx(tmp_path, size: int = 64) -> LoadContext:
    return LoadContext(dataset=TinyDataset(size=size), dataset_key="tiny", cache_dir=tmp_path / "cache", show_progress=False)


def images(size: int = 64) -> torch.Tensor:
    return torch.stack([s.image for s in TinyDataset(size=size).split("test")])


def saved(tmp_path, module: nn.Module, name: str = "w.pt", wrap=lambda sd: sd):
    path = tmp_path / name
    torch.save(wrap(module.state_dict()), path)
    return str(path)


def one_line(fn, *words: str) -> str:
    with pytest.raises(UserError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


# --- smp architectures --------------------------------------------------------------------------

FAMILIES = [
    ("FPN", SMALL_FPN, "decoder", "decoder.p2"),
    ("Unet", {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}, "decoder.blocks.2", "decoder.blocks.1"),
    ("UnetPlusPlus", {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}, "decoder.blocks.x_0_2", "decoder.blocks.x_0_1"),
    ("Linknet", {"encoder_depth": 3}, "decoder.blocks.2", "decoder.blocks.1"),
    ("DeepLabV3Plus", {"encoder_depth": 4, "encoder_output_stride": 16, "decoder_channels": 16}, "decoder", "decoder.aspp"),
]


@pytest.mark.parametrize(("arch", "options", "decoder1", "decoder2"), FAMILIES)
def test_any_smp_architecture_with_its_checkpoint_gives_the_saved_networks_logits(tmp_path, arch, options, decoder1, decoder2):
    torch.manual_seed(3)
    original = smp.create_model(arch, encoder_name="resnet18", encoder_weights=None, classes=1, **options).eval()
    plugin = TorchModel(arch=arch.lower(), encoder="resnet18", options=options, checkpoint=saved(tmp_path, original))
    model = plugin.load(ctx(tmp_path))
    x = images()
    with torch.no_grad():
        assert torch.allclose(model.module(x), original(x), atol=1e-4, rtol=1e-4)
    assert model.task == "binary" and model.resolve_layer("decoder1") == decoder1 and model.resolve_layer("decoder2") == decoder2
    assert model.resolve_layer("encoder.layer2") == "encoder.layer2"  # any module path
    # Ablation-CAM's tail at decoder1: the rest of the network from that layer's output reproduces the logits
    tail = model.tail(decoder1)
    store = {}
    modules = dict(model.module.named_modules())
    hooks = [modules[p].register_forward_hook(lambda m, i, o, p=p: store.__setitem__(p, o)) for p in (decoder1, *tail.extra)]
    with torch.no_grad():
        logits = model.module(x)
        for h in hooks:
            h.remove()
        assert torch.allclose(tail.fn(store[decoder1], store, torch.arange(len(x))), logits, atol=1e-4, rtol=1e-4)
    assert model.tail("encoder.layer2") is None


def test_an_arch_without_weights_is_an_error_unless_trained_or_explicitly_random(tmp_path):
    one_line(lambda: TorchModel(arch="FPN"), "random weights", "checkpoint", "train = true", "random_weights = true")
    one_line(lambda: TorchModel(torchvision="fcn_resnet50"), "checkpoint")
    TorchModel(arch="FPN", random_weights=True)
    TorchModel(factory="m:f")  # a factory's network is explained as it returns it


def test_the_sources_are_exclusive_and_the_settings_checked(tmp_path):
    one_line(lambda: TorchModel(), "set exactly one", "none of them")
    one_line(lambda: TorchModel(arch="FPN", factory="m:f"), "arch = 'FPN'", "factory = 'm:f'")
    one_line(lambda: TorchModel(arch="FPN", train=True, checkpoint="w.pt"), "set one of them")
    one_line(lambda: TorchModel(torchscript="m.pt", train=True), "TorchScript")
    one_line(lambda: TorchModel(arch="FNP", random_weights=True).load(ctx(tmp_path)), "Did you mean 'FPN'")
    one_line(lambda: TorchModel(arch="FPN", encoder="resnet1888", random_weights=True).load(ctx(tmp_path)), "resnet1888")


# --- checkpoints ----------------------------------------------------------------------------------


def test_a_checkpoint_that_does_not_fit_names_missing_unexpected_and_misshaped_keys(tmp_path):
    unet = smp.Unet(encoder_name="resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4], classes=1)
    path = saved(tmp_path, unet)
    msg = one_line(lambda: TorchModel(arch="FPN", encoder="resnet18", options=SMALL_FPN, checkpoint=path).load(ctx(tmp_path)), "does not fit model smp FPN (resnet18)")
    assert "keys missing (decoder.p" in msg and "more)" in msg and "unexpected (decoder.blocks" in msg and "xaibench layers" in msg
    two = smp.create_model("FPN", encoder_name="resnet18", encoder_weights=None, classes=2, **SMALL_FPN)
    msg = one_line(lambda: TorchModel(arch="FPN", encoder="resnet18", options=SMALL_FPN, checkpoint=saved(tmp_path, two, "two.pt")).load(ctx(tmp_path)), "of another shape")
    assert "segmentation_head.0.weight 2x32x" in msg and "missing" not in msg


def test_wrapped_checkpoints_load_and_pickles_are_refused(tmp_path):
    fpn = smp.create_model("FPN", encoder_name="resnet18", encoder_weights=None, classes=1, **SMALL_FPN).eval()
    for name, wrap in (("dp.pt", lambda sd: {f"module.{k}": v for k, v in sd.items()}), ("pl.pt", lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}})):
        model = TorchModel(arch="FPN", encoder="resnet18", options=SMALL_FPN, checkpoint=saved(tmp_path, fpn, name, wrap)).load(ctx(tmp_path))
        with torch.no_grad():
            assert torch.allclose(model.module(images()), fpn(images()), atol=1e-4, rtol=1e-4)
    torch.save(fpn, tmp_path / "whole.pt")  # a pickled module: code, never loaded
    one_line(lambda: TorchModel(arch="FPN", encoder="resnet18", options=SMALL_FPN, checkpoint=str(tmp_path / "whole.pt")).load(ctx(tmp_path)), "not a file of tensors")


# --- torchvision, TorchScript, factories -------------------------------------------------------------


def test_a_torchvision_model_keeps_its_module_paths_and_checkpoint_keys(tmp_path):
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    original = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1).eval()
    model = TorchModel(torchvision="deeplabv3_mobilenet_v3_large", checkpoint=saved(tmp_path, original)).load(ctx(tmp_path, size=64))
    x = images(64)
    with torch.no_grad():
        assert torch.allclose(model.module(x), original(x)["out"], atol=1e-4, rtol=1e-4)  # the dict's "out", as a tensor
    assert model.task == "binary" and model.resolve_layer("decoder1") == "classifier.3"
    assert "backbone.16" in dict(model.module.named_modules())  # torchvision's own paths, no wrapper prefix
    assert TorchModel(torchvision="deeplabv3_mobilenet_v3_large", random_weights=True).runs_code == []
    one_line(lambda: TorchModel(torchvision="fcn_resnet5", random_weights=True).load(ctx(tmp_path)), "Did you mean 'fcn_resnet50'")


@pytest.mark.parametrize("arch, alias", [("deeplabv3_mobilenet_v3_large", "decoder1"), ("fcn_resnet50", "decoder1"), ("fcn_resnet50", "encoder"), ("deeplabv3_resnet50", "encoder")])
def test_a_torchvision_model_gets_tails_that_reproduce_its_logits(tmp_path, arch, alias):
    """Tail-only Ablation-CAM for torchvision's FCN and DeepLabV3: the rest of the classifier and
    the upsampling give the full forward's logits to 1e-5, and the engine makes no full forward
    beyond the shared pass (checked at decoder1)."""
    import torchvision.models.segmentation as tvs

    from xaibench.engine.capture import PassCounter, shared_pass
    from xaibench.engine.heatmaps import HeatmapEngine
    from xaibench.explainers.ablation_cam import AblationCAM

    torch.manual_seed(0)
    original = getattr(tvs, arch)(weights=None, weights_backbone=None, num_classes=1, aux_loss=False).eval()
    model = TorchModel(torchvision=arch, checkpoint=saved(tmp_path, original)).load(ctx(tmp_path, size=64))
    path = model.resolve_layer(alias)
    tail = model.tail(path)
    assert tail is not None, f"{arch}: no tail at {path}"
    x = images(64)[:3]
    cap = shared_pass(model.module, x, [path], extra=list(tail.extra))
    idx = torch.tensor([2, 0])
    with torch.no_grad():
        assert torch.allclose(tail.fn(cap.activations[path][idx], cap.extras, idx), cap.logits[idx], atol=1e-5)
    if alias == "decoder1":  # (the encoder's 2048 channels would cost a minute here)
        counter = PassCounter()
        HeatmapEngine(model, {"ablation_cam": AblationCAM()}, counter=counter).run(x, [path])
        assert counter.forwards == 1 and counter.tail_rows > 0


class _Tiny(nn.Module):
    def __init__(self, width: int = 4, classes: int = 1, in_channels: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        return self.head(self.body(x))


def test_a_torchscript_file_is_explained_at_its_output_only(tmp_path):
    torch.manual_seed(0)
    net = _Tiny().eval()
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    plugin = TorchModel(torchscript=str(path))
    assert plugin.runs_code == [f"model.torchscript {str(path)!r}: the compiled code saved in that file runs on every forward"]
    model = plugin.load(ctx(tmp_path))
    with torch.no_grad():
        assert torch.allclose(model.module(images()), net(images()), atol=1e-4, rtol=1e-4)
    assert model.resolve_layer("output") == "" and model.resolve_layer("input") == "input"
    one_line(lambda: model.resolve_layer("body.0"), "compiled code", "model.factory")
    (tmp_path / "junk.ts").write_text("not a model")
    one_line(lambda: TorchModel(torchscript=str(tmp_path / "junk.ts")).load(ctx(tmp_path)), "not a TorchScript file")


FACTORY = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width, classes, as_dict):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, classes, 1)
        self.as_dict = as_dict

    def forward(self, x):
        out = self.head(self.body(x))
        return {"logits": out} if self.as_dict else out


def build(width=4, classes=1, as_dict=False):
    return Net(width, classes, as_dict)


def not_a_module():
    return 3
'''


def test_a_factory_is_called_with_its_options_and_named_as_code(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = TorchModel(factory="my_nets:build", options={"width": 6})
    assert plugin.runs_code == [f"model.factory 'my_nets:build': imports {tmp_path / 'my_nets.py'} and calls build(...)"]
    model = plugin.load(ctx(tmp_path))
    assert model.module.body[0].out_channels == 6 and model.module.head.out_channels == 1  # classes passed: 1 for a binary dataset
    assert model.resolve_layer("body.1") == "body.1" and model.layers == {}
    aliased = TorchModel(factory="my_nets:build", aliases={"features": "body.1"}).load(ctx(tmp_path))
    assert aliased.resolve_layer("features") == "body.1" and aliased.layer_name("body.1") == "features"
    one_line(lambda: TorchModel(factory="my_nets:build", options={"as_dict": True}).load(ctx(tmp_path)), "returns a dict", "output_key")
    as_dict = TorchModel(factory="my_nets:build", options={"as_dict": True}, output_key="logits").load(ctx(tmp_path))
    assert as_dict.module(images()).shape == (4, 1, 64, 64) and "body.0" in dict(as_dict.module.named_modules())
    one_line(lambda: TorchModel(factory="my_nets:not_a_module").load(ctx(tmp_path)), "returned int")
    one_line(lambda: TorchModel(factory="my_nets:nope").load(ctx(tmp_path)), "no callable 'nope'")
    one_line(lambda: TorchModel(factory="no_such_module_here:f").load(ctx(tmp_path)), "cannot import", "PYTHONPATH")
    one_line(lambda: TorchModel(factory="my_nets").load(ctx(tmp_path)), "package.module:function")
    one_line(lambda: TorchModel(factory="my_nets:build", options={"depth": 2}).load(ctx(tmp_path)), "depth")


def test_train_true_trains_on_first_use_loads_the_cache_after_and_trains_again_for_new_code(tmp_path, monkeypatch):
    (tmp_path / "my_nets2.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    params = {"factory": "my_nets2:build", "train": True, "epochs": 2, "batch_size": 4}
    cached = lambda: sorted((tmp_path / "cache" / "models").glob("torch_model-*.pt"))  # noqa: E731
    first = TorchModel(**params).load(ctx(tmp_path))
    assert len(cached()) == 1
    stamp = cached()[0].stat().st_mtime_ns
    untrained = TorchModel(**{**params, "train": False}).load(ctx(tmp_path))
    assert first.identity != untrained.identity  # it did train
    again = TorchModel(**params).load(ctx(tmp_path))
    assert again.identity == first.identity and cached()[0].stat().st_mtime_ns == stamp  # loaded, not trained
    assert TorchModel(**{**params, "seed": 1}).load(ctx(tmp_path)).identity != first.identity and len(cached()) == 2
    (tmp_path / "my_nets2.py").write_text(textwrap.dedent(FACTORY) + "\n# changed\n")
    TorchModel(**params).load(ctx(tmp_path))
    assert len(cached()) == 3  # the factory's code is part of the cache key


def test_logits_of_another_size_than_the_image_are_an_error(tmp_path):
    # smp's FPN upsamples its stride-4 output by 4 whatever the encoder's depth: at depth 3 the logits are 4x the image
    one_line(lambda: TorchModel(arch="FPN", encoder="resnet18", options={**SMALL_FPN, "encoder_depth": 3}, random_weights=True).load(ctx(tmp_path)), "logits of 256 x 256", "64 x 64")


def test_a_factory_that_returns_an_smp_model_gets_its_aliases_and_tails(tmp_path, monkeypatch):
    (tmp_path / "smp_nets.py").write_text(textwrap.dedent('''
        import segmentation_models_pytorch as smp

        def build(classes=1):
            return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4], classes=classes)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = TorchModel(factory="smp_nets:build").load(ctx(tmp_path))
    assert model.layers == {"decoder1": "decoder.blocks.2", "decoder2": "decoder.blocks.1"}
    assert model.tail("decoder.blocks.2") is not None and model.tail("decoder.blocks.1") is not None
