"""The plugin contract: authors' mistakes become one clear error (issue table, row by row)."""

import textwrap
import types

import pytest
import torch

import xaibench
from xaibench.errors import UserError
from xaibench.plugin import Pass, hookimpl
from xaibench.registry.discovery import load_registry, plugin_manager

pytestmark = pytest.mark.slow


def _module(name, **hooks):
    mod = types.ModuleType(name)
    for k, v in hooks.items():
        setattr(mod, k, v)
    return mod


def _explainers(*classes):
    return _module("authors_plugin", register_explainers=hookimpl(lambda register: [register(c) for c in classes]))


class _Cam:
    name = "authors_cam"
    needs = Pass.ACTIVATIONS | Pass.GRADIENTS

    def explain(self, ctx):
        return (ctx.gradients.mean(dim=(2, 3), keepdim=True) * ctx.activations).sum(1)


def _variant(**attrs):
    return type("Variant", (_Cam,), attrs)


# -- at registration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"needs": "activations"}, "needs must be xaibench.plugin.Pass flags"),
        ({"explain": None}, "has no method explain()"),
        ({"composes": "grad_cam"}, "composes must be a tuple of explainer names"),
    ],
)
def test_a_badly_declared_explainer_is_refused_at_registration(attrs, message):
    with pytest.raises(UserError, match=message) as e:
        load_registry([_explainers(_variant(**attrs))])
    assert "authors_cam" in str(e.value) and "authors_plugin" in str(e.value)


class _Metric:
    name = "authors_metric"
    direction = "higher"
    uses_threshold = False
    perturbation = None

    def compute(self, ctx):
        return ctx.heatmap.mean(dim=(1, 2))


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"direction": "max"}, "direction must be 'higher' or 'lower', got 'max'"),
        ({"perturbation": "blur_everything"}, "perturbation must be None, 'cell' or one of"),
        ({"directions": {"background_only": "up"}}, "directions maps perturbation modes"),
        ({"uses_threshold": "yes"}, "uses_threshold must be True or False"),
    ],
)
def test_a_badly_declared_metric_is_refused_at_registration(attrs, message):
    cls = type("Variant", (_Metric,), attrs)
    with pytest.raises(UserError, match=message):
        load_registry([_module("authors_plugin", register_metrics=hookimpl(lambda register: register(cls)))])


def test_a_class_without_needs_or_direction_is_refused():
    class NoNeeds:
        name = "no_needs"

        def explain(self, ctx):
            return None

    with pytest.raises(UserError, match="needs must be"):
        load_registry([_explainers(NoNeeds)])


def test_a_hook_name_typo_suggests_the_right_one():
    typo = _module("typo_plugin", register_metric=hookimpl(lambda register: None))
    with pytest.raises(UserError, match="Did you mean 'register_metrics'"):
        plugin_manager([typo])


def test_a_register_function_without_hookimpl_is_an_error_not_silence():
    bare = _module("bare_plugin", register_explainers=lambda register: register(_Cam))
    with pytest.raises(UserError, match=r"register_explainers\(\) is not decorated with @hookimpl"):
        plugin_manager([bare])


# -- at run time -----------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path):
    from tests.conftest import TINY_CONFIG

    def make(explainers='["grad_cam"]', metrics='["localization_iou"]', extra=""):
        text = textwrap.dedent(TINY_CONFIG)
        text = text.replace('explainers = ["grad_cam", "eigen_cam"]', f"explainers = {explainers}")
        text = text.replace('metrics = ["confidence", "iou_drop"]', f"metrics = {metrics}") + extra
        path = tmp_path / "c.toml"
        path.write_text(text)
        return path

    return make


def _run(path, plugin, out):
    return xaibench.run(path, out, show_progress=False, extra_plugins=[plugin])


@pytest.mark.parametrize(
    ("explain", "message"),
    [
        (lambda self, ctx: ctx.activations.sum(1, keepdim=True), r"returned shape \(4, 1, \d+, \d+\); expected \[B, h, w\].*squeeze\(1\)"),
        (lambda self, ctx: torch.rand(ctx.images.shape[0], 64, 4), "returned a 64 x 4 map for 64 x 64 images"),
        (lambda self, ctx: [0.0], "returned list; expected a tensor"),
    ],
)
def test_a_map_of_the_wrong_shape_is_one_error_naming_the_explainer(config, tmp_path, explain, message):
    cls = _variant(explain=explain)
    with pytest.raises(UserError, match=message) as e:
        _run(config('["authors_cam"]'), _explainers(cls), tmp_path / "o")
    assert "authors_cam" in str(e.value) and not (tmp_path / "o").exists()  # nothing half-written


def test_an_explainer_that_writes_into_its_inputs_is_stopped_before_it_poisons_the_cache(config, tmp_path):
    def evil(self, ctx):
        ctx.activations.mul_(-1)
        return ctx.activations.sum(1)

    with pytest.raises(UserError, match=r"changed ctx.activations in place.*clone\(\)"):
        _run(config('["authors_cam", "grad_cam"]'), _explainers(_variant(explain=evil, needs=Pass.ACTIVATIONS)), tmp_path / "o")


@pytest.mark.parametrize(
    "write",
    [
        lambda t: t[0, 1, 2, 3].add_(1),  # one value, through a view
        lambda t: t.detach().clamp_(0.5),
        lambda t: torch.mul(t, 1, out=t),  # an in-place write that keeps every value
        lambda t: t.data.mul_(-1),  # around the version counter: seen in the sample
        lambda t: t.numpy().__setitem__(slice(None), 0),
    ],
)
def test_the_fingerprint_sees_every_kind_of_in_place_write(write):
    from xaibench.registry.contracts import SAMPLE, fingerprint, same

    t = torch.rand(4, 8, 16, 16).to(memory_format=torch.channels_last)  # as activations on CPU
    before = fingerprint(t)
    assert same(before, fingerprint(t)) and before[1].numel() <= SAMPLE  # a sample, not a copy of t
    write(t)
    assert not same(before, fingerprint(t))


def test_a_lent_tensor_with_nan_is_not_mistaken_for_a_written_one():
    from xaibench.registry.contracts import fingerprint, same

    t = torch.rand(2, 3, 5, 5)
    t[0, 0] = float("nan")  # a model's activations can hold NaN; reading them changes nothing
    with torch.inference_mode():
        i = torch.full((4,), float("nan"))  # no version counter: its sum stands in
    assert same(fingerprint(t), fingerprint(t)) and same(fingerprint(i), fingerprint(i))


def test_lending_for_a_batch_names_the_plugin_of_an_in_place_op_at_once_and_a_write_around_the_counter_at_the_end():
    from types import SimpleNamespace

    from xaibench.registry.contracts import Lending

    heat, binary = torch.rand(2, 4, 4), torch.rand(2, 4, 4) > 0.5
    ctx = SimpleNamespace(heatmap=heat, binary=binary, threshold=None)
    lending = Lending()
    with lending.lend(ctx, ("heatmap", "binary", "threshold"), "metric 'a'"):
        pass
    with pytest.raises(UserError, match=r"^metric 'b' changed ctx.heatmap in place"):  # the version counter, on the host
        with lending.lend(ctx, ("heatmap", "binary"), "metric 'b'"):
            heat.mul_(1)
    lending = Lending()
    for name in ("a", "b"):
        with lending.lend(ctx, ("heatmap", "binary"), f"metric {name!r}"):
            if name == "b":
                heat.data.mul_(-1)  # around the counter: seen in the sample, at the end of the batch
    with pytest.raises(UserError, match=r"^one of metric 'a', metric 'b' changed ctx.heatmap in place"):
        lending.finish()
    lending = Lending()
    with lending.lend(ctx, ("heatmap", "binary"), "metric 'a'"):
        heat.sum()
    lending.finish()  # read only: nothing to say


def test_an_undeclared_pass_is_none_and_the_error_names_needs(config, tmp_path):
    cls = _variant(needs=Pass.ACTIVATIONS)  # uses gradients without declaring them
    with pytest.raises(UserError, match=r"ctx.gradients = None.*add Pass.GRADIENTS to its needs"):
        _run(config('["authors_cam", "grad_cam"]'), _explainers(cls), tmp_path / "o")  # also beside grad_cam


@pytest.mark.parametrize(
    ("compute", "message"),
    [
        (lambda self, ctx: 0.5, "returned float; expected a float tensor"),
        (lambda self, ctx: ctx.heatmap.mean(dim=(1, 2))[:, None], r"returned shape \(4, 1\); expected \[B\] = \[4\]"),
        (lambda self, ctx: ctx.heatmap.mean(dim=2).reshape(-1)[: 2 * ctx.images.shape[0]], r"returned shape \(8,\)"),
    ],
)
def test_metric_scores_of_the_wrong_kind_are_one_error_naming_metric_and_cell(config, tmp_path, compute, message):
    cls = type("Variant", (_Metric,), {"compute": compute})
    plugin = _module("authors_plugin", register_metrics=hookimpl(lambda register: register(cls)))
    with pytest.raises(UserError, match=message) as e:
        _run(config(metrics='["authors_metric"]'), plugin, tmp_path / "o")
    assert "authors_metric" in str(e.value) and "cell tiny" not in str(e.value) and "|authors_metric" in str(e.value)


def test_a_metric_user_error_names_the_metric_and_the_cell(config, tmp_path):
    def refuse(self, ctx):
        raise UserError("needs labels")

    cls = type("Variant", (_Metric,), {"compute": refuse})
    plugin = _module("authors_plugin", register_metrics=hookimpl(lambda register: register(cls)))
    with pytest.raises(UserError, match=r"metric 'authors_metric' .* on cell smp_unet\|grad_cam\|decoder1.*: needs labels"):
        _run(config(metrics='["authors_metric"]'), plugin, tmp_path / "o")


class _BadMasks:
    """rooftops with a mistake: masks at half size, or 0/255."""

    fold_splits = ("train", "test")

    def __init__(self, kind: str = "half", seed: int = 0):
        from xaibench.datasets.rooftops import Rooftops

        self.base, self.kind = Rooftops(size=64, n_train=4, n_val=0, n_test=4, seed=seed), kind

    def split(self, name):
        from xaibench.plugin import Sample

        out = []
        for s in self.base.split(name):
            mask = s.mask[::2, ::2] if self.kind == "half" else s.mask * 255
            out.append(Sample(s.image, mask, s.image_id, s.label))
        return out

    def channel_mean(self):
        return self.base.channel_mean()


@pytest.mark.parametrize(("kind", "message"), [("half", r"mask is \(32, 32\) but the image is \(64, 64\)"), ("255", r"found 0..255 \(a 0/255 mask: divide it by 255\)")])
def test_bad_dataset_masks_are_caught_by_validate_and_before_training(config, tmp_path, monkeypatch, capsys, kind, message):
    from xaibench.cli import main

    cls = type("BadMasks", (_BadMasks,), {"name": "bad_masks", "num_classes": 2})
    plugin = _module("authors_plugin", register_datasets=hookimpl(lambda register: register(cls)))
    path = config()
    path.write_text(path.read_text().replace('name = "rooftops"\nsize = 64\nn_train = 8\nn_val = 0\nn_test = 6', f'name = "bad_masks"\nkind = "{kind}"'))
    with pytest.raises(UserError, match=message):
        _run(path, plugin, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    import xaibench.runs.runner

    monkeypatch.setattr(xaibench.runs.runner, "load_registry", lambda extra=(): load_registry([plugin, *extra]))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "bad_masks" in err


def test_a_metric_that_is_nan_everywhere_is_named_in_a_warning(config, tmp_path, capsys):
    cls = type("Variant", (_Metric,), {"compute": lambda self, ctx: torch.full((ctx.images.shape[0],), float("nan"))})
    plugin = _module("authors_plugin", register_metrics=hookimpl(lambda register: register(cls)))
    _run(config(metrics='["authors_metric", "localization_iou"]'), plugin, tmp_path / "o")
    err = capsys.readouterr().err
    assert "warning: metric 'authors_metric' has no value (NaN) on any image in its 2 cells" in err
    assert "localization_iou" not in err.split("warning:")[1]


def test_a_metric_that_writes_into_the_shared_map_is_stopped(config, tmp_path):
    def evil(self, ctx):
        ctx.heatmap.zero_()
        return ctx.images.new_zeros(ctx.images.shape[0])

    cls = type("Variant", (_Metric,), {"compute": evil})
    plugin = _module("authors_plugin", register_metrics=hookimpl(lambda register: register(cls)))
    with pytest.raises(UserError, match=r"metric 'authors_metric' .* changed ctx.heatmap in place"):
        _run(config(metrics='["authors_metric", "localization_iou"]'), plugin, tmp_path / "o")


# -- pooled metrics: per-image counts and a pool ---------------------------------------------------


class _Counted(_Metric):
    uses_threshold = True

    @staticmethod
    def pool(c):
        return c["tp"] / (c["tp"] + c["fp"])

    def compute(self, ctx):
        hit = (ctx.binary & (ctx.ground_truth == 1)).flatten(1).sum(1)
        return {"tp": hit, "fp": ctx.binary.flatten(1).sum(1) - hit}


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (torch.ones(4), r"returned torch.float32 tensor of shape \(4,\); expected a dict of per-image counts \{name: tensor \[B\] = \[4\]\} \(the metric declares pool\(\)\)"),
        ({}, "returned an empty dict; expected a dict of per-image counts"),
        ({"tp": torch.ones(4, 1), "fp": torch.ones(4)}, r"returned counts\['tp'\] = torch.float32 tensor of shape \(4, 1\)"),
        ({"tp": [1, 2, 3, 4], "fp": torch.ones(4)}, r"returned counts\['tp'\] = list"),
        ({"tp": torch.ones(4, dtype=torch.bool), "fp": torch.ones(4)}, r"counts\['tp'\] = torch.bool tensor"),
        ({"tp": torch.ones(4), "fp": torch.full((4,), float("inf"))}, r"returned infinite counts\['fp'\]"),
        ({"tp": torch.ones(4)}, r"pool\(\) failed on its counts \['tp'\]: KeyError: 'fp'"),
    ],
)
def test_malformed_counts_of_a_pooled_metric_are_one_error_naming_the_metric(returned, message):
    from xaibench.registry.contracts import check_scores

    with pytest.raises(UserError, match=message) as e:
        check_scores(returned, _Counted(), "authors_metric", 4, "cell c")
    assert str(e.value).startswith("metric 'authors_metric'") and "\n" not in str(e.value)


def test_counts_without_a_pool_and_a_pool_that_is_not_elementwise_are_refused():
    from xaibench.registry.contracts import check_scores

    with pytest.raises(UserError, match=r"returned a dict of counts but declares no pool\(\)"):
        check_scores({"tp": torch.ones(4)}, _Metric(), "authors_metric", 4, "cell c")
    summed = type("Summed", (_Counted,), {"pool": staticmethod(lambda c: float(c["tp"].sum()))})
    with pytest.raises(UserError, match=r"pool\(\) returned shape \(\) for counts of shape \(4,\); it must compute elementwise"):
        check_scores({"tp": torch.ones(4), "fp": torch.ones(4)}, summed(), "authors_metric", 4, "cell c")
    values, counts = check_scores({"tp": torch.tensor([1, 0, 2, float("nan")]), "fp": torch.tensor([1, 0, 0, 3])}, _Counted(), "m", 4, "cell c")
    assert values[:1].tolist() == [0.5] and values[1:].isnan().tolist() == [True, False, True] and values[2] == 1
    assert counts["fp"][3].isnan()  # an image with a NaN count is left out in all of them


@pytest.mark.parametrize(("attrs", "message"), [({"pool": 1.0}, "pool must be a staticmethod"), ({"aggregate": staticmethod(lambda v: 0.0)}, "aggregate or pool, not both")])
def test_a_badly_declared_pooled_metric_is_refused_at_registration(attrs, message):
    cls = type("Variant", (_Counted,), attrs)
    with pytest.raises(UserError, match=message):
        load_registry([_module("authors_plugin", register_metrics=hookimpl(lambda register: register(cls)))])


def test_a_pooled_plugin_metric_runs_and_malformed_counts_stop_the_run_with_one_line(config, tmp_path):
    import pandas as pd

    df = _run(config(metrics='["authors_metric"]'), _module("authors_plugin", register_metrics=hookimpl(lambda register: register(_Counted))), tmp_path / "ok")
    df = df[df["metric"] == "authors_metric"]  # (the model-quality rows every run adds have their own counts)
    assert (df["counts"] != "").all() and df["counts"].str.contains('"tp":').all()
    summary = pd.read_csv(tmp_path / "ok" / "summary.csv")
    assert (summary[summary["metric"] == "authors_metric"]["statistic"] == "pooled").all()
    bad = type("Bad", (_Counted,), {"compute": lambda self, ctx: {"tp": ctx.binary.float().sum((1, 2))[:, None]}})
    with pytest.raises(UserError, match=r"metric 'authors_metric' .* on cell smp_unet\|grad_cam.* returned counts\['tp'\] = torch.float32 tensor of shape \(4, 1\)") as e:
        _run(config(metrics='["authors_metric"]'), _module("authors_plugin", register_metrics=hookimpl(lambda register: register(bad))), tmp_path / "bad")
    assert "\n" not in str(e.value)


def _png_folder(root, splits):
    """``root/SPLIT/{images,masks}/*.png`` (16x16 RGB, 0/255 masks) for each of ``splits``."""
    import numpy as np
    from PIL import Image

    for split in splits:
        for k in range(2):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), 40 * k, np.uint8)).save(root / split / "images" / f"{split}{k}.png")
            m = np.zeros((16, 16), np.uint8)
            m[4:9, 4:9] = 255
            Image.fromarray(m).save(root / split / "masks" / f"{split}{k}.png")
    return root


def test_a_bad_first_train_sample_is_an_error_but_a_missing_train_split_is_not(tmp_path, capsys):
    """A checkpoint-only model needs no training data, so a dataset without a train split passes;
    a train split that is there but unreadable is reported at validate, naming the file."""
    import numpy as np
    from PIL import Image

    from xaibench.cli import main
    from xaibench.datasets.image_folder import ImageFolder
    from xaibench.registry.contracts import check_first_samples

    only_test = _png_folder(tmp_path / "only_test", ["test"])
    check_first_samples(ImageFolder(root=str(only_test)), "image_folder", ("train", "test"), "b.toml")  # no train split: fine
    root = _png_folder(tmp_path / "data", ["train", "test"])
    check_first_samples(ImageFolder(root=str(root)), "image_folder", ("train", "test"), "b.toml")
    bad = root / "train" / "masks" / "train0.png"
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(bad)  # 7 in a binary mask
    with pytest.raises(UserError, match="train0.png"):
        check_first_samples(ImageFolder(root=str(root)), "image_folder", ("train", "test"), "b.toml")
    config = tmp_path / "b.toml"
    config.write_text(textwrap.dedent(f"""
        [benchmark]
        name = "b"
        [dataset]
        name = "image_folder"
        root = "{root}"
        [model]
        name = "smp_unet"
        encoder_depth = 3
        decoder_channels = [8, 4, 4]
        epochs = 1
        [grid]
        explainers = ["grad_cam"]
        layers = ["decoder1"]
        thresholds = [0.5]
        perturbations = ["background_only"]
        metrics = ["confidence"]
        """))
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and str(bad) in err
