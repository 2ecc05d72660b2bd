"""``xaibench leaderboard --check / --all / --index`` on a repository with one committed leaderboard."""

import textwrap
from pathlib import Path

import pytest

from tests.conftest import TINY_CONFIG
from xaibench.cli import main
from xaibench.report import provenance
from xaibench.runs import regenerate


@pytest.mark.slow
def test_a_config_edit_makes_check_fail_with_the_moved_rows_and_all_makes_it_pass(board_repo, capsys):
    board, readme = board_repo / "leaderboard" / "tiny.md", board_repo / "leaderboard" / "README.md"
    assert "[`tiny.md`](tiny.md)" in readme.read_text() and "What they say, written by people." in readme.read_text()
    capsys.readouterr()
    assert main(["leaderboard", "--check", "--quiet"]) == 0  # every file and the index
    assert "leaderboard/tiny.md: up to date" in capsys.readouterr().out

    config = board_repo / "benchmarks" / "tiny.toml"
    config.write_text(config.read_text().replace("epochs = 1", "epochs = 2"))  # another model: other numbers
    before = board.read_bytes()
    assert main(["leaderboard", "--check", "leaderboard/tiny.md", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "leaderboard/tiny.md: stale:" in out and "config hash of run 'tiny'" in out
    assert "in Models" in out or "in Methods at settings chosen on held-out images / confidence" in out  # the first section that moved
    assert "    - | 1 | smp_unet |" in out and "    + | 1 | smp_unet |" in out  # the moved rows, old and new
    assert board.read_bytes() == before  # --check changes nothing

    assert main(["leaderboard", "--all", "--runs", "runs", "--quiet"]) == 0
    assert board.read_bytes() != before and "regenerated leaderboard/tiny.md" in capsys.readouterr().out
    assert (board_repo / "runs" / "tiny" / "manifest.json").is_file()  # --runs keeps the run for artifacts
    new_hash = provenance.read(board.read_text()).runs[0].config_hash
    assert f"`{new_hash[:12]}`" in readme.read_text()  # the index follows
    assert main(["leaderboard", "--check", "--quiet"]) == 0


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--check", "leaderboard/nope.md"], "leaderboard file 'leaderboard/nope.md' does not exist"),
        (["--all", "--only", "nope"], "--only 'nope'"),
        (["--check", "--tolerance", "-1"], "--tolerance -1 is negative"),
        (["--check", "--runs", "busy"], "'busy/tiny' exists and is not a run directory"),
        (["--all", "leaderboard/tiny.md"], "--all regenerates every leaderboard"),
        ([], "give run directories"),
        (["--check", "--dir", "elsewhere"], "leaderboard directory 'elsewhere' does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_write_nothing(argv, words, tmp_path, monkeypatch, capsys):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "tiny.toml").write_text(textwrap.dedent(TINY_CONFIG))
    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "leaderboard" / "tiny.md").write_text("# xaibench leaderboard: tiny\n")
    (tmp_path / "busy" / "tiny").mkdir(parents=True)
    (tmp_path / "busy" / "tiny" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["leaderboard", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and words in err, err
    assert (tmp_path / "leaderboard" / "tiny.md").read_text() == "# xaibench leaderboard: tiny\n"
    assert (tmp_path / "busy" / "tiny" / "notes.txt").read_text() == "mine"


def test_a_file_without_a_footer_comes_from_the_benchmark_of_its_name(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "tiny.toml").write_text(textwrap.dedent(TINY_CONFIG))
    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "leaderboard" / "tiny.md").write_text("# xaibench leaderboard: tiny\n\n| a |\n")
    src = regenerate.source(tmp_path / "leaderboard" / "tiny.md")
    assert src.title == "xaibench leaderboard: tiny" and src.provenance is None
    assert src.runs == [("tiny", (tmp_path / "benchmarks" / "tiny.toml").resolve())]


def test_index_without_markers_is_a_user_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "leaderboard" / "README.md").write_text("# no markers\n")
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "--index"]) == 2
    err = capsys.readouterr().err
    assert "has no index markers" in err and Path("leaderboard/README.md").read_text() == "# no markers\n"


def test_a_check_on_another_cpu_type_says_so_without_making_the_file_stale(tmp_path):
    from tests.report.test_provenance import _facts
    from xaibench.report.staleness import Comparison

    def board(cpu):
        return "# b\n\n" + provenance.render(provenance.Provenance("b", [_facts(cpu=cpu)]), tmp_path / "b.md")

    src = regenerate.Source(tmp_path / "b.md", board("Intel Xeon, AVX512"), provenance.read(board("Intel Xeon, AVX512")), "b", [])
    hints = regenerate._cpu_hints(src, board("AMD EPYC, AVX2"))
    assert len(hints) == 1 and "'Intel Xeon, AVX512'" in hints[0] and "'AMD EPYC, AVX2'" in hints[0]
    assert regenerate._cpu_hints(src, board("Intel Xeon, AVX512")) == []
    assert not Comparison(hints=hints).stale
    stale = Comparison(notes=["config hash moved"], hints=hints)
    assert "  note: run 'tiny' was committed on CPU" in stale.report("b.md", 1e-4)


def test_a_benchmark_whose_data_package_is_absent_is_skipped_not_failed(tmp_path, monkeypatch, capsys):
    """neon-trees without deepforest: --all and --check say it is skipped and how to install the
    package, leave the file as committed and exit 0; the other leaderboards go on."""
    from xaibench.datasets import neon_trees
    from xaibench.report.leaderboard_index import END, START

    monkeypatch.setattr(neon_trees, "PACKAGE", "xaibench_no_such_package")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "trees.toml").write_text(textwrap.dedent("""
        [benchmark]
        name = "trees"
        [dataset]
        name = "neon_trees"
        [model]
        name = "smp_unet"
        [grid]
        explainers = ["grad_cam"]
        layers = ["decoder1"]
        thresholds = [0.5]
        metrics = ["pointing_game"]
    """))
    (tmp_path / "leaderboard").mkdir()
    committed = "# xaibench leaderboard: trees\n\n| as committed |\n"
    (tmp_path / "leaderboard" / "trees.md").write_text(committed)
    (tmp_path / "leaderboard" / "README.md").write_text(f"# Leaderboards\n\n{START}\n{END}\n")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["leaderboard", "--all", "--quiet"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("leaderboard/trees.md"))
    assert line.startswith("leaderboard/trees.md: skipped: ") and "neon_trees: " in line and "pip install --no-deps deepforest==2.1.0" in line, out
    assert "regenerated" not in out and (tmp_path / "leaderboard" / "trees.md").read_text() == committed
    assert main(["leaderboard", "--check", "--quiet"]) == 0
    assert "leaderboard/trees.md: skipped:" in capsys.readouterr().out
