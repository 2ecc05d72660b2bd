"""xaibench-ecsplain's plugins against the core's contract checks (xaibench.testing)."""

import pytest
from xaibench_ecsplain.baselines import BASELINES
from xaibench_ecsplain.cams import NormCAM
from xaibench_ecsplain.metrics import METRICS
from xaibench_ecsplain.model import Ecsplain
from xaibench_ecsplain.synthetic import InsarMovingAreas

from xaibench.testing import check_dataset, check_explainer, check_metric, check_model

SMALL_INSAR = {"size": 32, "n_train": 8, "n_val": 0, "n_test": 4, "seed": 3}


def test_norm_cam_keeps_the_explainer_contract():
    check_explainer(NormCAM)
    check_explainer(NormCAM, layer="decoder2")


@pytest.mark.parametrize("cls", METRICS, ids=lambda c: c.name)
def test_detection_metrics_keep_the_metric_contract(cls):
    check_metric(cls)


def test_the_synthetic_interferograms_keep_the_dataset_contract():
    check_dataset(InsarMovingAreas, SMALL_INSAR)


@pytest.mark.parametrize(("cls", "params"), [(Ecsplain, {"width": 4, "nb_epochs": 1, "batch_size": 4})] + [(c, {"nb_epochs": 1, "batch_size": 4}) for c in BASELINES[:1]], ids=lambda x: getattr(x, "name", ""))
def test_models_keep_the_model_contract(cls, params, tiny_insar):
    model = check_model(cls, params, dataset=tiny_insar)
    assert model.task in ("classifier", "binary")
