"""Fixtures of the xaibench-ecsplain tests: a private model cache, two torch threads, tiny data."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XAIBENCH_CACHE", str(tmp_path_factory.mktemp("xaibench-ecsplain-cache")))
    torch.set_num_threads(2)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_insar():
    """Eight 32 x 32 synthetic train tiles and four test tiles."""
    from xaibench_ecsplain.synthetic import InsarMovingAreas

    return InsarMovingAreas(size=32, n_train=8, n_val=0, n_test=4, seed=3)
