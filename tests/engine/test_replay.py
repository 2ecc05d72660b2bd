"""Tails derived by replaying a model's forward: any module, tail-only Ablation-CAM, same maps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xaibench
from xaibench.engine.capture import PassCounter, forward_replacing, shared_pass
from xaibench.engine.heatmaps import HeatmapEngine
from xaibench.engine.replay import derive_tail, tail_at
from xaibench.explainers.ablation_cam import AblationCAM
from xaibench.models.base import LoadedModel, Tail
from xaibench.testing import check_tail

SMP = [  # (family, options): small enough for CI
    ("Unet", dict(encoder_depth=3, decoder_channels=[16, 8, 4])),
    ("FPN", dict(encoder_depth=3, upsampling=2)),
    ("Linknet", dict(encoder_depth=3)),
    ("PSPNet", dict(encoder_depth=3)),
    ("DeepLabV3Plus", dict(encoder_depth=4, decoder_channels=16)),
    ("MAnet", dict(encoder_depth=3, decoder_channels=[16, 8, 4])),
    ("UnetPlusPlus", dict(encoder_depth=3, decoder_channels=[16, 8, 4])),
]


def _smp(arch: str, options: dict) -> nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.create_model(arch, encoder_name="resnet18", encoder_weights=None, classes=1, **options).eval()


@pytest.mark.parametrize("arch, options", SMP, ids=[a for a, _ in SMP])
def test_every_smp_family_replays_from_its_decoder_layers_and_inside_its_encoder(arch, options):
    from xaibench.models.model_sources import smp_layers

    module = _smp(arch, options)
    paths = [*smp_layers(module).values(), "encoder.layer2"]
    plain = LoadedModel(module, "binary")  # no tail of its own anywhere
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for path in paths:
        check_tail(plain, path, images)


class _Skips(nn.Module):
    """Not a known family: Python control flow, a skip from the input, a dict between modules."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.Conv2d(16, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        feats = {"stem": self.stem(x * 2 - 1)}
        deep = self.down(feats["stem"])
        if deep.shape[-1] > 1:
            deep = self.mid(deep)
        up = torch.cat([nn.functional.interpolate(deep, scale_factor=2.0), feats["stem"]], dim=1)
        return self.head(self.up(up)) + x.mean(1, keepdim=True)


def test_any_module_gets_a_tail_that_matches_full_forwards():
    torch.manual_seed(0)
    model = LoadedModel(_Skips().eval(), "binary", {"mid": "mid"})
    images = torch.rand(4, 3, 16, 16)
    for layer in ("mid", "down", "down.1", "up"):
        check_tail(model, layer, images)
    tail = tail_at(model, "mid", images)
    assert tail.extra[0] == "input" and set(tail.extra[1:]) == {"stem", "down"}  # the frontier: what returned before


def test_a_layer_called_twice_or_changed_in_place_gets_no_tail():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 1, 1)

        def forward(self, x):
            return self.b(self.a(self.a(x)))

    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 1, 1)

        def forward(self, x):
            s = self.a(x)
            y = self.b(s)
            s.mul_(2)  # the captured output of a frontier module changes after the layer
            return self.c(y + s)

    x = torch.rand(1, 3, 8, 8)
    assert derive_tail(Twice().eval(), "a", x) is None
    assert derive_tail(Twice().eval(), "b", x) is None  # a, before it, ran twice
    assert derive_tail(InPlace().eval(), "b", x) is None


def test_a_model_with_no_tail_anywhere_runs_ablation_on_the_replay_alone(capsys):
    """The issue's test: a user's module with no tail makes as many full-forward rows as the same
    model with a hand-made tail (the shared pass only), and the same maps."""
    torch.manual_seed(0)
    module = _Skips().eval()
    images = torch.rand(3, 3, 16, 16)

    def hand_tail(path):  # what a user would write for "mid"
        if path != "mid":
            return None

        def fn(act, extras, idx):
            x = extras["input"][idx]
            stem = extras["stem"][idx]
            up = torch.cat([nn.functional.interpolate(act, scale_factor=2.0), stem], dim=1)
            return module.head(module.up(up)) + x.mean(1, keepdim=True)

        return Tail(extra=("input", "stem"), fn=fn)

    runs = {}
    for name, model in {"hand": LoadedModel(module, "binary", tail=hand_tail), "derived": LoadedModel(module, "binary")}.items():
        counter = PassCounter()
        maps = HeatmapEngine(model, {"ablation_cam": AblationCAM()}, counter=counter).run(images, ["mid"]).maps
        runs[name] = (counter.forward_rows, counter.tail_rows, maps[("ablation_cam", "mid")])
    assert runs["derived"][:2] == runs["hand"][:2] == (3, 3 * 8)  # one shared row per image; 8 channels ablated per image
    assert torch.allclose(runs["derived"][2], runs["hand"][2], atol=1e-5)
    assert "no tail" not in capsys.readouterr().err
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    plain = xaibench.explain(module, images, "ablation_cam", "mid")  # a plain module too
    assert torch.allclose(plain, runs["hand"][2], atol=1e-5)
    assert "no tail" not in capsys.readouterr().err


def test_without_a_replay_the_engine_says_so_once_and_the_maps_are_the_same(capsys):
    class Shared(nn.Module):  # one activation module called before and after the layer
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 1, 1), nn.ReLU()

        def forward(self, x):
            return self.c(self.act(self.b(self.act(self.a(x)))))

    torch.manual_seed(0)
    module, images = Shared().eval(), torch.rand(2, 3, 8, 8)
    engine = HeatmapEngine(LoadedModel(module, "binary"), {"ablation_cam": AblationCAM()})
    got = engine.run(images, ["b"]).maps[("ablation_cam", "b")]
    engine.run(images.flip(-1), ["b"])  # a second batch: no second warning
    assert capsys.readouterr().err.count("no tail there") == 1
    cap = shared_pass(module, images, ["b"])
    assert torch.allclose(forward_replacing(module, images, "b", cap.activations["b"]), cap.logits)
    assert got.shape == (2, 8, 8) and torch.isfinite(got).all()


def test_a_layer_that_returns_a_list_is_replaced_at_its_first_element():
    class Features(nn.Module):  # a features_only backbone: a list of maps
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return [y, y.mean(1, keepdim=True)]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = Features(), nn.Conv2d(5, 1, 1)

        def forward(self, x):
            first, second = self.backbone(x)
            return self.head(torch.cat([first, second], 1))

    torch.manual_seed(0)
    model, images = LoadedModel(Net().eval(), "binary"), torch.rand(3, 3, 8, 8)
    check_tail(model, "backbone", images)  # the tail against full forwards with the first element replaced
    cap = shared_pass(model.module, images, ["backbone"])
    act = cap.activations["backbone"] * 0.5
    first_halved = model.module.head(torch.cat([act, cap.activations["backbone"].mean(1, keepdim=True)], 1))
    assert torch.allclose(forward_replacing(model.module, images, "backbone", act), first_halved, atol=1e-6)
