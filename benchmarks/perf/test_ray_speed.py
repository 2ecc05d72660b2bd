"""Ray's speed-up on one machine: the demo grid (`benchmarks/rooftops-demo.toml`, model cached)
with the Ray executor on 1 and on 2 workers, in one run, and what Ray itself costs: starting
the cluster, shipping the plan, images and weights into the object store, and gathering the
rows (``manifest.json`` ``executor``). Run with ``tox -e perf``; figures in the terminal summary.

``XAIBENCH_PERF_RAY_IMAGES`` (default 16, the demo's) scores fewer tiles for a quick look.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import xaibench
from xaibench.config.parse import load_config

from .conftest import RESULTS

pytest.importorskip("ray")
DEMO = Path(__file__).resolve().parents[1] / "rooftops-demo.toml"
N = int(os.environ.get("XAIBENCH_PERF_RAY_IMAGES", "16"))


def _config(tmp: Path) -> Path:
    text = DEMO.read_text()
    if N != 16:
        text = text.replace("[run]\n", f"[run]\n# perf: {N} images\n").replace("n_test = 16", f"n_test = {N}")
    path = tmp / "rooftops-demo.toml"
    path.write_text(text)
    return path


def test_ray_one_and_two_workers(tmp_path, monkeypatch):
    cfg = _config(tmp_path)
    load_config(cfg)
    xaibench.run(cfg, tmp_path / "warm", show_progress=False)  # the model trained (or read) and cached, once
    seconds, info = {}, {}
    for workers in (1, 2):
        monkeypatch.setenv("XAIBENCH_RAY_CPUS", str(workers))
        t = time.perf_counter()
        xaibench.run(cfg, tmp_path / f"ray{workers}", fresh=True, executor="ray", show_progress=False)
        seconds[workers] = time.perf_counter() - t
        info[workers] = json.loads((tmp_path / f"ray{workers}" / "manifest.json").read_text())["executor"]
    RESULTS["ray 1 worker, demo grid (s)"] = seconds[1]
    RESULTS["ray 2 workers, demo grid (s)"] = seconds[2]
    RESULTS["ray speed-up 2 vs 1 workers (x)"] = seconds[1] / seconds[2]
    for key in ("start_s", "ship_s", "gather_s"):
        RESULTS[f"ray 2 workers: {key}"] = info[2].get(key, float("nan"))
    RESULTS["ray 2 workers: MB of weights shipped"] = sum(info[2]["shipped_bytes"].values()) / 1e6
    assert info[2]["actors"] == 2
