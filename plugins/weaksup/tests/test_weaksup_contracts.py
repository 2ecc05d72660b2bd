"""xaibench-weaksup's datasets against the core's contract checks (xaibench.testing)."""

from xaibench_weaksup.landslides import Landslides

from xaibench.testing import check_dataset


def test_landslides_keep_the_dataset_contract():
    check_dataset(Landslides, {"size": 32, "n_train": 4, "n_val": 2, "n_test": 4})
    check_dataset(Landslides, {"size": 32, "n_train": 4, "n_val": 0, "n_test": 4, "dem_channel": True})
