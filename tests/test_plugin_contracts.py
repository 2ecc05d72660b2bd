"""xaibench.testing's contract checks over every registered plugin (built-ins, first-party
plugin packages and any installed third party), as timm's tests run over every model."""

import pytest
import torch

from xaibench.errors import UserError
from xaibench.registry.discovery import load_registry
from xaibench.registry.passes import Pass
from xaibench.testing import TinyDataset, check_dataset, check_explainer, check_metric, check_model

REGISTRY = load_registry()


def _entries(kind):
    return [pytest.param(e.cls, id=f"{e.name}[{e.distribution}]") for e in REGISTRY.entries(kind)]


@pytest.mark.parametrize("cls", _entries("explainers"))
def test_every_explainer_keeps_the_contract(cls):
    check_explainer(cls)


@pytest.mark.parametrize("cls", _entries("metrics"))
def test_every_metric_keeps_the_contract(cls):
    check_metric(cls)


@pytest.mark.parametrize("cls", _entries("datasets"))
def test_every_dataset_keeps_the_contract(cls):
    params = getattr(cls, "test_params", {})
    try:
        cls(**params)
    except UserError as exc:  # a dataset read from disk, without its data here
        pytest.skip(f"{cls.name}: {exc}")
    check_dataset(cls, params)


@pytest.mark.parametrize("cls", _entries("models"))
def test_every_model_with_test_params_keeps_the_contract(cls):
    if not hasattr(cls, "test_params"):
        pytest.skip(f"{cls.name} declares no test_params (small parameters for a contract check)")
    check_model(cls, cls.test_params)


def test_the_checks_catch_what_they_promise():
    class ChangesItsInput:
        name, needs = "changes", Pass.ACTIVATIONS

        def explain(self, ctx):
            ctx.images.mul_(0.5)
            return ctx.activations.sum(1)

    with pytest.raises(AssertionError, match="changed ctx.images in place"):
        check_explainer(ChangesItsInput)

    class Unseeded:
        name, needs = "unseeded", Pass.NONE

        def explain(self, ctx):
            return torch.rand(ctx.images.shape[0], 8, 8)

    with pytest.raises(AssertionError, match="different maps"):
        check_explainer(Unseeded)

    class Scalar:
        name, direction, uses_threshold, perturbation = "scalar", "higher", False, None

        def compute(self, ctx):
            return ctx.heatmap.mean()

    with pytest.raises(AssertionError, match=r"returned shape \(\); expected \[B\]"):
        check_metric(Scalar)

    class RandomIds(TinyDataset):
        name = "random_ids"

        def split(self, name):
            import uuid

            from xaibench.datasets.base import Sample

            return [Sample(s.image, s.mask, uuid.uuid4().hex, s.label) for s in super().split(name)]

    with pytest.raises(AssertionError, match="a second instance with the same parameters"):
        check_dataset(RandomIds)
