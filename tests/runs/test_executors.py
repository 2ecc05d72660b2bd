"""Where the grid runs (:mod:`xaibench.runs.executors`): a Ray run survives a worker killed mid-run."""

import os
import signal
import sys
import types

import pytest

from xaibench.config.parse import load_config
from xaibench.plugin import hookimpl
from xaibench.registry.passes import Pass
from xaibench.runs.runner import run_benchmark


class KillsItsWorkerOnce:
    """Activations' mean, but the first call anywhere SIGKILLs its own process (a dead Ray actor)."""

    name = "kills_once"
    needs = Pass.ACTIVATIONS

    def explain(self, ctx):
        mark = os.environ["XAIBENCH_TEST_KILL_MARK"]
        if not os.path.exists(mark):
            open(mark, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return ctx.activations.mean(1)


@pytest.mark.slow
def test_a_killed_ray_worker_is_restarted_and_the_table_equals_the_local_one(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    monkeypatch.setenv("XAIBENCH_TEST_KILL_MARK", str(tmp_path / "killed"))  # XAIBENCH_* reach the actors
    monkeypatch.setenv("XAIBENCH_RAY_CPUS", "2")
    plugin = types.ModuleType("killer_plugin")
    plugin.register_explainers = hookimpl(lambda register: register(KillsItsWorkerOnce))
    cfg = tmp_path / "k.toml"
    cfg.write_text(tiny_config.read_text().replace('explainers = ["grad_cam", "eigen_cam"]', 'explainers = ["kills_once", "grad_cam"]'))
    remote = run_benchmark(load_config(cfg), tmp_path / "ray", executor="ray", show_progress=False, extra_plugins=[plugin])
    assert (tmp_path / "killed").exists()  # a worker did die
    local = run_benchmark(load_config(cfg), tmp_path / "local", show_progress=False, extra_plugins=[plugin])
    key = ["cell_key", "image_id"]
    a, b = local.sort_values(key).reset_index(drop=True), remote.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key]) and a["value"].isna().equals(b["value"].isna())
    assert (a["value"] - b["value"]).abs().max() < 1e-5
