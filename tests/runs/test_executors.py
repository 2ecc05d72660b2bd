"""Where the grid runs (:mod:`xaibench.runs.executors`): a Ray run survives a worker killed mid-run."""

import os
import signal
import sys
import types

import pytest

from xaibench.config.parse import load_config
from xaibench.errors import UserError
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


@pytest.mark.slow
def test_ray_actors_get_the_weights_from_the_driver_not_from_a_disk(tiny_config, tmp_path, monkeypatch):
    """The cached model is removed after the driver has loaded it and before any actor starts:
    the actors still score the driver's model (the local table), and none trains one."""
    pytest.importorskip("ray")
    import json
    import shutil

    from xaibench.engine.cache import default_cache_dir
    from xaibench.runs import executors

    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XAIBENCH_RAY_CPUS", "2")
    local = run_benchmark(load_config(tiny_config), tmp_path / "local", show_progress=False)
    real = executors.load_state

    def load_then_forget(*args, **kwargs):
        state = real(*args, **kwargs)
        shutil.rmtree(default_cache_dir())  # what a worker node without the driver's disk sees
        return state

    monkeypatch.setattr(executors, "load_state", load_then_forget)
    remote = run_benchmark(load_config(tiny_config), tmp_path / "ray", executor="ray", show_progress=False)
    assert not (default_cache_dir() / "models").exists()  # no actor trained (and cached) a model
    key = ["cell_key", "image_id"]
    a, b = local.sort_values(key).reset_index(drop=True), remote.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key]) and (a["value"] - b["value"]).abs().max() < 1e-5
    info = json.loads((tmp_path / "ray" / "manifest.json").read_text())["executor"]
    assert info["executor"] == "ray" and len(info["nodes"]) == 1 and info["shipped_bytes"]["smp_unet"] > 0


@pytest.mark.slow
def test_gpu_actors_take_the_fraction_of_a_gpu_the_config_gives(tiny_config, tmp_path, monkeypatch):
    """``--device cuda`` with Ray on a cluster that declares 2 GPUs (this CPU machine: Ray accepts
    ``num_gpus`` anywhere; the actors compute on the CPU here): ``ray_gpus_per_worker = 0.5`` puts
    two actors on each GPU, and the table equals the local one."""
    pytest.importorskip("ray")
    import json

    monkeypatch.setenv("XAIBENCH_RAY_CPUS", "2")
    monkeypatch.setenv("XAIBENCH_RAY_GPUS", "2")
    monkeypatch.setenv("XAIBENCH_RAY_ACTOR_DEVICE", "cpu")
    text = tiny_config.read_text().replace("[run]\n", "[run]\nray_gpus_per_worker = 0.5\nray_cpus_per_worker = 0.5\n")
    text = text.replace("batch_size = 4", "batch_size = 1")
    tiny_config.write_text(text)
    remote = run_benchmark(load_config(tiny_config), tmp_path / "ray", executor="ray", device="cuda", show_progress=False)
    info = json.loads((tmp_path / "ray" / "manifest.json").read_text())["executor"]
    assert info["actors"] == 4 and info["gpus_per_worker"] == 0.5 and len(info["gpus"]) == 2  # 2 actors per GPU, both GPUs used
    local = run_benchmark(load_config(tiny_config), tmp_path / "local", show_progress=False)
    key = ["cell_key", "image_id"]
    a, b = local.sort_values(key).reset_index(drop=True), remote.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key]) and (a["value"] - b["value"]).abs().max() < 1e-5

    monkeypatch.setenv("XAIBENCH_RAY_GPUS", "0")
    with pytest.raises(UserError, match="declares no GPUs"):
        run_benchmark(load_config(tiny_config), tmp_path / "none", executor="ray", device="cuda", show_progress=False)
    assert not (tmp_path / "none").exists()  # nothing half-written


@pytest.fixture
def two_node_cluster():
    """A Ray cluster of two nodes on this machine (a head and a second node, one CPU each),
    started with ``ray start`` as on real machines; yields its address."""
    pytest.importorskip("ray")
    import shutil
    import socket
    import subprocess
    import tempfile

    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("no ray command")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # Ray 2.60 asks joining nodes for a token otherwise
    common = ["--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    temp = tempfile.mkdtemp(prefix="xr")  # short: Ray's socket paths live under it (108 bytes at most)
    head = [ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false", f"--temp-dir={temp}", *common]
    try:
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray_cli, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", *common], env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _run_in_subprocess(config, out, executor: str, env: dict) -> None:
    """``xaibench.run`` in a process of its own: Ray keeps a process's authentication settings
    once read, so a driver joining the test cluster (authentication off) must not be this one."""
    import subprocess

    code = f"import xaibench; xaibench.run({str(config)!r}, {str(out)!r}, executor={executor!r}, show_progress=False)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_a_two_node_cluster_at_ray_address_gives_the_local_table(tiny_config, tmp_path, two_node_cluster):
    import json

    import pandas as pd

    tiny_config.write_text(tiny_config.read_text().replace("batch_size = 4", "batch_size = 1"))  # 6 units for 2 actors
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(XAIBENCH_CACHE=str(tmp_path / "cache"), PYTHONPATH=os.pathsep.join(sys.path))
    _run_in_subprocess(tiny_config, tmp_path / "local", "local", env)
    _run_in_subprocess(tiny_config, tmp_path / "ray", "ray", {**env, "RAY_ADDRESS": two_node_cluster, "RAY_AUTH_MODE": "disabled"})
    key = ["cell_key", "image_id"]
    local, remote = (pd.read_parquet(tmp_path / d / "results.parquet").sort_values(key).reset_index(drop=True) for d in ("local", "ray"))
    assert local[key].equals(remote[key]) and (local["value"] - remote["value"]).abs().max() < 1e-5
    info = json.loads((tmp_path / "ray" / "manifest.json").read_text())["executor"]
    assert info["actors"] == 2 and len(info["nodes"]) == 2  # both nodes ran units


def test_a_worker_node_without_a_plugin_package_is_told_which_distribution_to_install():
    from xaibench.runs.executors import missing_module

    text = "The actor died because of an error raised in its creation task ... ModuleNotFoundError: No module named 'xaibench_weaksup.cyclegan'"
    assert "install distribution xaibench-weaksup on every node" in missing_module(text)
    assert "module 'nowhere_pkg'" in missing_module("No module named 'nowhere_pkg'") and missing_module("out of memory") is None


def test_no_cluster_at_ray_address_is_one_error_line_and_nothing_written(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(UserError, match=rf"no Ray cluster at RAY_ADDRESS='127.0.0.1:{port}'.*ray start --head"):
        run_benchmark(load_config(tiny_config), tmp_path / "out", executor="ray", show_progress=False)
    assert not (tmp_path / "out").exists()
