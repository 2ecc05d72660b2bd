"""Several run directories of one benchmark in one leaderboard (:mod:`xaibench.report.run_dirs`)."""

import json
import shutil

import pytest

from xaibench.cli import main
from xaibench.report import provenance


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Ours (two CAMs) and a third party's (another explainer) on the same tiny benchmark."""
    import textwrap

    from tests.conftest import TINY_CONFIG

    root = tmp_path_factory.mktemp("merge")
    ours, theirs = root / "ours.toml", root / "theirs.toml"
    ours.write_text(textwrap.dedent(TINY_CONFIG))
    theirs.write_text(textwrap.dedent(TINY_CONFIG).replace('explainers = ["grad_cam", "eigen_cam"]', 'explainers = ["x_grad_cam"]'))
    for cfg in (ours, theirs):
        assert main(["run", str(cfg), "--out", str(root / "runs" / cfg.stem), "--quiet"]) == 0
    return root / "runs"


@pytest.mark.slow
def test_merged_runs_rank_together_with_their_run_on_every_row(two_runs, tmp_path, capsys):
    out = tmp_path / "merged.md"
    assert main(["leaderboard", str(two_runs / "ours"), str(two_runs / "theirs"), "--output", str(out)]) == 0
    text = out.read_text()
    ranking = text[text.index("## Rankings per metric"):text.index("## Provenance")]
    assert "| ours/smp_unet | grad_cam |" in ranking and "| theirs/smp_unet | x_grad_cam |" in ranking
    prov = provenance.read(text)
    assert [r.name for r in prov.runs] == ["ours", "theirs"] and all(r.config_hash for r in prov.runs)
    # its provenance is enough to check it: both runs are made again and merged the same way
    assert main(["leaderboard", "--check", str(out), "--runs", str(tmp_path / "again"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["ours", "theirs"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit, what",
    [
        (lambda m: m["config"].update(seed=1), "seed"),
        (lambda m: m["config"]["dataset"]["params"].update(size=32), "dataset"),
        (lambda m: m["config"].update(n_images=3), "split"),
        (lambda m: m["config"]["metric_params"].update(iou_drop={"fill": "mean"}), "metric definitions"),
        (lambda m: m["config"]["run"].update(fill="mean"), "metric definitions"),
    ],
)
def test_runs_that_scored_differently_are_refused(two_runs, tmp_path, capsys, edit, what):
    other = tmp_path / "other"
    shutil.copytree(two_runs / "theirs", other)
    manifest = json.loads((other / "manifest.json").read_text())
    edit(manifest)
    (other / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["leaderboard", str(two_runs / "ours"), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"their {what} differ" in err and "other" in err, err


@pytest.mark.slow
def test_two_runs_of_one_name_are_refused(two_runs, tmp_path, capsys):
    shutil.copytree(two_runs / "theirs", tmp_path / "ours")
    assert main(["leaderboard", str(two_runs / "ours"), str(tmp_path / "ours")]) == 2
    assert "share a name" in capsys.readouterr().err
