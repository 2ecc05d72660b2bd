"""The package registers its plugins through the ``xaibench`` entry point of its own distribution."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

OURS = {
    "datasets": ["insar_moving_areas", "insar_folder"],
    "models": ["ecsplain", "unet", "resunet", "sepunet", "fcn", "deeplabv3"],
    "explainers": ["norm_cam"],
    "metrics": ["classification_accuracy", "classification_precision", "classification_recall", "classification_specificity", "classification_f1"],
}


def test_entry_point_belongs_to_the_distribution():
    eps = [ep for ep in metadata.entry_points(group="xaibench") if ep.name == "ecsplain"]
    assert len(eps) == 1
    assert eps[0].value == "xaibench_ecsplain.plugin"
    assert eps[0].dist is not None and eps[0].dist.metadata["name"] == "xaibench-ecsplain"
    assert metadata.distribution("xaibench-ecsplain").version


def test_xaibench_list_shows_the_plugins_with_their_distribution():
    env = dict(os.environ, COLUMNS="250", NO_COLOR="1")
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from xaibench.cli import main; sys.exit(main(['list']))"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│|").split("│")]
        if len(cells) >= 3 and cells[0]:
            rows[cells[0]] = cells
    for kind, names in OURS.items():
        for name in names:
            assert name in rows, f"{name} missing from `xaibench list`"
            assert rows[name][1] == kind[:-1]
            assert rows[name][2] == "xaibench-ecsplain"


def test_plugin_module_hooks_register_every_class():
    from xaibench_ecsplain import plugin

    for kind, names in OURS.items():
        got: list[type] = []
        getattr(plugin, f"register_{kind}")(register=got.append)
        assert [cls.name for cls in got] == names
