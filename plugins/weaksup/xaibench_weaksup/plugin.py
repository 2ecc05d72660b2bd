"""The ``xaibench`` entry point of xaibench-weaksup: registers every plugin of this package.

* datasets: ``landslides`` (synthetic hillside tiles with landslide scars), ``bijie`` (the
  real Bijie landslide dataset from a folder)
* explainers: ``cyclegan_diff`` (|G(x) - x| of a CycleGAN trained per fold, landslide ->
  landslide-free)
"""

from __future__ import annotations

from xaibench.plugin import hookimpl
from xaibench_weaksup.bijie import Bijie
from xaibench_weaksup.explainers import CycleGANDiff
from xaibench_weaksup.landslides import Landslides


@hookimpl
def register_datasets(register):
    register(Landslides)
    register(Bijie)


@hookimpl
def register_explainers(register):
    register(CycleGANDiff)
