import pytest
import torch
import torch.nn.functional as F

from xaibench.datasets.base import Sample
from xaibench.engine.capture import shared_pass
from xaibench.engine.heatmaps import HeatmapEngine
from xaibench.errors import UserError
from xaibench.models.timm_classifier import TimmClassifier, classifier_tail
from xaibench.models.training import LoadContext
from xaibench.registry.discovery import load_registry

SMALL = dict(width=4, epochs=8, batch_size=4, lr=0.02, lr_schedule="constant")  # 16 steps: too few to warm up and anneal


class Labelled:
    """Tiles whose class is their brightness; the masks say the opposite (a model trained on
    the masks would invert its predictions)."""

    name = "labelled"

    def __init__(self, num_classes=2, size=64, n=8, labels=True):
        self.num_classes, self.size, self.n, self.labels = num_classes, size, n, labels

    def split(self, name):
        g = torch.Generator().manual_seed(len(name))
        out = []
        for i in range(self.n if name == "train" else 6):
            c = i % self.num_classes
            image = (0.15 + 0.6 * c / (self.num_classes - 1) + 0.25 * torch.rand(3, self.size, self.size, generator=g)).clamp(0, 1)
            mask = torch.full((self.size, self.size), self.num_classes - 1 - c, dtype=torch.long)
            out.append(Sample(image, mask, f"{name}{i}", c if self.labels else None))
        return out


def _ctx(tmp_path, ds, key="k"):
    return LoadContext(dataset=ds, dataset_key=key, cache_dir=tmp_path, show_progress=False)


def _batch(ds, split="test"):
    items = ds.split(split)
    return torch.stack([s.image for s in items]), torch.tensor([s.label for s in items])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = Labelled()
    return ds, TimmClassifier(**SMALL).load(_ctx(tmp_path_factory.mktemp("cache"), ds))


def test_trains_on_the_labels_only_and_separates_two_obvious_classes(trained):
    ds, model = trained
    assert model.task == "classifier" and not model.module.training
    x, y = _batch(ds)
    with torch.no_grad():
        logits = model.module(x)
    assert logits.shape == (6, 1)
    assert torch.equal((logits[:, 0] > 0).long(), y)  # the labels, not the (inverted) masks
    xt, yt = _batch(ds, "train")
    untrained = TimmClassifier(**SMALL).build(1).eval()
    with torch.no_grad():
        before = F.binary_cross_entropy_with_logits(untrained(xt)[:, 0], yt.float())
        after = F.binary_cross_entropy_with_logits(model.module(xt)[:, 0], yt.float())
    assert after < 0.7 * before


def test_grad_cam_and_score_cam_explain_the_classifier(trained):
    ds, model = trained
    x, y = _batch(ds)
    assert model.layers == {"last_conv": "layer4", "prev_conv": "layer3"}
    assert model.randomizable == ("layer4", "fc")
    registry = load_registry()
    for name in ("grad_cam", "score_cam"):
        path = model.resolve_layer("last_conv")
        maps = HeatmapEngine(model, {name: registry.get("explainers", name)()}).run(x, [path], pairs=[(name, path)]).maps[(name, path)]
        assert maps.shape == (6, 64, 64) and torch.isfinite(maps).all()
        # the positive images' maps (4 x 4 at output stride 16) are not constant; the negatives' may be
        # all zero: nothing in them raises the landslide logit
        assert (maps[y == 1].flatten(1).std(1) > 0).all(), name


def test_the_tail_from_a_stage_reproduces_the_logits(trained):
    _, model = trained
    x, _ = _batch(trained[0])
    idx = torch.tensor([3, 0])
    for path in ("layer2", "layer3", "layer4"):
        tail = classifier_tail(model.module, path)
        cap = shared_pass(model.module, x, [path])
        assert torch.allclose(tail.fn(cap.activations[path][idx], {}, idx), cap.logits[idx], atol=1e-5)
    assert classifier_tail(model.module, "layer4.0") is None and classifier_tail(model.module, "fc") is None


def test_trains_once_per_dataset_and_parameters_then_loads_from_the_cache(tmp_path):
    ds = Labelled(size=32, n=4)
    few = dict(width=2, epochs=1, batch_size=4)
    a = TimmClassifier(**few).load(_ctx(tmp_path, ds))
    files = list((tmp_path / "models").glob("timm_classifier-*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    b = TimmClassifier(**few, momentum=0.9, in_channels=3).load(_ctx(tmp_path, ds))  # explicit defaults: same model
    assert files[0].stat().st_mtime_ns == stamp and a.identity == b.identity
    TimmClassifier(**few).load(_ctx(tmp_path, ds, key="fold-1"))  # another fold's training split
    TimmClassifier(**{**few, "epochs": 2}).load(_ctx(tmp_path, ds))
    TimmClassifier(**few, momentum=0.5).load(_ctx(tmp_path, ds))
    assert len(list((tmp_path / "models").glob("*.pt"))) == 4


def test_several_classes_get_one_logit_each_and_a_checkpoint_loads(tmp_path):
    ds = Labelled(num_classes=3, size=32, n=6)
    model = TimmClassifier(width=2, epochs=1, batch_size=3).load(_ctx(tmp_path, ds))
    assert model.module(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    weights = tmp_path / "w.pt"
    torch.save({"state_dict": model.module.state_dict()}, weights)
    again = TimmClassifier(width=2, checkpoint=str(weights)).load(_ctx(tmp_path / "other", ds))
    assert again.identity == model.identity and not (tmp_path / "other").exists()
    with pytest.raises(UserError, match="does not fit this model"):
        TimmClassifier(width=4, checkpoint=str(weights)).load(_ctx(tmp_path, ds))


def test_a_dataset_without_image_labels_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="trains on image-level labels, but train sample 'train0' has label None") as err:
        TimmClassifier(width=2, epochs=1).load(_ctx(tmp_path, Labelled(size=32, n=2, labels=False)))
    assert "\n" not in str(err.value)


def test_an_out_of_range_label_is_a_user_error(tmp_path):
    class ThreeLabelsTwoClasses(Labelled):
        def split(self, name):
            return [Sample(s.image, s.mask, s.image_id, 2) for s in super().split(name)]

    with pytest.raises(UserError, match="label 2, outside 0..1"):
        TimmClassifier(width=2, epochs=1).load(_ctx(tmp_path, ThreeLabelsTwoClasses(size=32, n=2)))


def test_parameter_errors_are_one_line_user_errors():
    with pytest.raises(UserError, match=r"'resnet19' is not a timm model\. Did you mean 'resnet18'") as err:
        TimmClassifier(arch="resnet19")
    assert "\n" not in str(err.value) and "timm.list_models()" in str(err.value)
    with pytest.raises(UserError, match="model.width applies to timm's ResNet family only"):
        TimmClassifier(arch="vgg16", width=32)
    with pytest.raises(UserError, match="model.output_stride"):
        TimmClassifier(output_stride=4)
    with pytest.raises(UserError, match="momentum"):
        TimmClassifier(momentum=1.0)


def test_vgg16_builds_and_classifies_small_tiles():
    plugin = TimmClassifier(arch="vgg16")  # the ResNet-only defaults do not apply to it
    assert plugin.width == 0 and plugin.output_stride == 32
    net = plugin.build(1).eval()
    x = torch.rand(2, 3, 32, 32)  # conv5_3 is 2 x 2; the head pools it up to its 7 x 7 kernel
    cap = shared_pass(net, x, ["features.22", "features.29"])
    assert cap.logits.shape == (2, 1) and cap.activations["features.29"].shape == (2, 512, 2, 2)
    tail = classifier_tail(net, "features.22")
    assert torch.allclose(tail.fn(cap.activations["features.22"], {}, torch.arange(2)), cap.logits, atol=1e-5)
    assert not any(getattr(m, "inplace", False) for m in net.modules())
