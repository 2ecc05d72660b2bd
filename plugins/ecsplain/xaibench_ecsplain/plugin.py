"""The ``xaibench`` entry point of xaibench-ecsplain: registers every plugin of this package.

* datasets:   ``insar_moving_areas`` (synthetic, eq-insar), ``insar_folder`` (real tiles)
* models:     ``ecsplain`` (CAM-constrained classifier); baselines ``unet``, ``resunet``,
              ``sepunet``, ``fcn``, ``deeplabv3``
* explainers: ``norm_cam`` (the paper's Norm-CAM; at one layer or a fused ``mean(...)`` layer)
* metrics:    ``classification_accuracy``, ``classification_precision``,
              ``classification_recall``, ``classification_specificity``
"""

from __future__ import annotations

from xaibench.plugin import hookimpl
from xaibench_ecsplain.baselines import BASELINES
from xaibench_ecsplain.cams import NormCAM
from xaibench_ecsplain.folder import InsarFolder
from xaibench_ecsplain.metrics import METRICS
from xaibench_ecsplain.model import Ecsplain
from xaibench_ecsplain.synthetic import InsarMovingAreas


@hookimpl
def register_datasets(register):
    register(InsarMovingAreas)
    register(InsarFolder)


@hookimpl
def register_models(register):
    register(Ecsplain)
    for cls in BASELINES:
        register(cls)


@hookimpl
def register_explainers(register):
    register(NormCAM)


@hookimpl
def register_metrics(register):
    for cls in METRICS:
        register(cls)
