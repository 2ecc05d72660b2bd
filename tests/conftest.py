"""Shared fixtures: a private cache per test session, tiny models and images made here."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XAIBENCH_CACHE", str(tmp_path_factory.mktemp("xaibench-cache")))
    torch.set_num_threads(2)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_unet():
    """An untrained smp U-Net small enough for CPU tests (3 decoder blocks)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4], classes=1).eval()


def perturbed_copy(model, scale: float = 0.05, seed: int = 3):
    """A copy of ``model`` with its weights moved off the initialisation (seeded), so gradients
    and activations are not degenerate; the copy also keeps an oracle's side effects (parameter
    gradients, swapped modules) off the shared fixture."""
    g = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return m


@pytest.fixture(scope="session")
def tiny_images():
    torch.manual_seed(1)
    return torch.rand(3, 3, 32, 32)


TINY_CONFIG = """
[benchmark]
name = "tiny"
seed = 0

[dataset]
name = "rooftops"
size = 64
n_train = 8
n_val = 0
n_test = 6

[model]
name = "smp_unet"
encoder_depth = 3
decoder_channels = [16, 8, 4]
epochs = 1
batch_size = 8

[grid]
explainers = ["grad_cam", "eigen_cam"]
layers = ["decoder1", "decoder2"]
thresholds = [0.2, 0.5]
perturbations = ["background_only", "highlighted_only"]
metrics = ["confidence", "iou_drop"]

[run]
batch_size = 4
chance = "rank"  # a U-Net trained for one epoch on 8 tiles is at chance; the tests rank it anyway
"""


def tiny_config_with(name: str, grid: str) -> str:
    """TINY_CONFIG named ``name``, with ``grid`` (TOML from ``[grid]`` on) instead of its own grid."""
    text = textwrap.dedent(TINY_CONFIG)
    return text[: text.index("[grid]")].replace('name = "tiny"', f'name = "{name}"') + textwrap.dedent(grid)


@pytest.fixture
def tiny_config(tmp_path):
    """Path of a tiny benchmark config; ``tiny_config.write(text)`` makes variants."""
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(TINY_CONFIG))
    return path


def _kill_9_after_parts(config, out, parts: int, poll: float = 0.02, sig: int = signal.SIGKILL) -> tuple[int, str]:
    """Run ``xaibench run CONFIG --out OUT`` in a child process and send it ``sig`` (SIGKILL)
    once ``parts`` result parts are on disk (or after 240 s); returns its exit status and stderr."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "xaibench.cli", "run", str(config), "--out", str(out), "--quiet"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list((out / "parts").glob("part-*.parquet")) if (out / "parts").exists() else []) < parts:
            time.sleep(poll)
        os.kill(proc.pid, sig)
    finally:
        _, err = proc.communicate()
    return proc.returncode, err


@pytest.fixture
def kill_9_after_parts():
    """``kill_9_after_parts(config, out, parts)``: a run killed with SIGKILL mid-way."""
    return _kill_9_after_parts


@pytest.fixture
def board_repo(tmp_path, monkeypatch):
    """A repository with one committed leaderboard, made as the README says: benchmarks/tiny.toml,
    leaderboard/tiny.md (``xaibench run`` + ``xaibench leaderboard``) and leaderboard/README.md
    with its generated index. The working directory is the repository."""
    from xaibench.cli import main
    from xaibench.report.leaderboard_index import END, START

    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "leaderboard").mkdir()
    (repo / "benchmarks" / "tiny.toml").write_text(textwrap.dedent(TINY_CONFIG))
    (repo / "leaderboard" / "README.md").write_text(f"# Leaderboards\n\n{START}\n{END}\n\nWhat they say, written by people.\n")
    monkeypatch.chdir(repo)
    assert main(["run", "benchmarks/tiny.toml", "--out", "runs/tiny", "--quiet"]) == 0
    assert main(["leaderboard", "runs/tiny", "--output", "leaderboard/tiny.md", "--title", "xaibench leaderboard: tiny"]) == 0
    assert main(["leaderboard", "--index"]) == 0
    return repo
