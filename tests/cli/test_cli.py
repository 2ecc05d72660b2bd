import subprocess
import sys

import pandas as pd
import pytest

from xaibench.cli import main
from xaibench.report import provenance


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return [l for l in err if l.startswith("error:")], err


def test_list_shows_name_kind_and_distribution(capsys):
    assert main(["list", "explainers"]) == 0
    out = capsys.readouterr().out
    assert "grad_cam" in out and "explainer" in out and "xaibench" in out and "confidence" not in out


def test_validate_ok(capsys, tiny_config):
    assert main(["validate", str(tiny_config)]) == 0
    assert "ok:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda t: t.replace('"grad_cam"', '"gradcam"'), ["Did you mean 'grad_cam'"]),
        (lambda t: t.replace("n_test = 6", "n_test = -1"), ["n_test"]),
        (lambda t: t.replace('"background_only"', '"m1"'), ["grid.perturbations", "allowed"]),
        (lambda t: t + "\n[oops]\n", ["unknown table [oops]"]),
    ],
)
def test_user_errors_exit_2_with_one_error_line_and_no_traceback(mutate, words, tiny_config, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(mutate(tiny_config.read_text()))
    out = tmp_path / "out"
    assert main(["run", str(bad), "--out", str(out), "--quiet"]) == 2
    errors, everything = _err(capsys)
    assert len(errors) == 1 and "Traceback" not in "\n".join(everything)
    for w in words:
        assert w in errors[0]
    assert not out.exists()


def test_fresh_maps_takes_comma_separated_explainers(tiny_config, tmp_path, monkeypatch):
    import xaibench.runs.runner

    seen = {}
    monkeypatch.setattr(xaibench.runs.runner, "run_benchmark", lambda config, **kw: seen.update(kw))
    assert main(["run", str(tiny_config), "--out", str(tmp_path / "out"), "--fresh-maps", "grad_cam, *eigen*", "--quiet"]) == 0
    assert seen["fresh_maps"] == ("grad_cam", "*eigen*") and seen["fresh"] is False
    assert main(["run", str(tiny_config), "--out", str(tmp_path / "out"), "--fresh", "--quiet"]) == 0
    assert seen["fresh_maps"] == () and seen["fresh"] is True


def test_fresh_maps_of_an_explainer_not_in_the_benchmark_is_a_user_error(tiny_config, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(tiny_config), "--out", str(out), "--fresh-maps", "grad_cam,score_cam", "--quiet"]) == 2
    errors, everything = _err(capsys)
    assert len(errors) == 1 and "Traceback" not in "\n".join(everything)
    assert "--fresh-maps: 'score_cam' names no explainer of this benchmark" in errors[0] and "eigen_cam, grad_cam" in errors[0]
    assert not out.exists()


def test_missing_config_and_bad_run_dir(capsys, tmp_path):
    assert main(["validate", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in _err(capsys)[0][0]
    assert main(["leaderboard", str(tmp_path)]) == 2
    assert "not a run directory" in _err(capsys)[0][0]


def test_debug_shows_the_traceback(capsys, tmp_path):
    assert main(["--debug", "validate", str(tmp_path / "nope.toml")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_console_script_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xaibench.cli", "validate", str(tmp_path / "x.toml")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_run_then_leaderboard_regenerates_it(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 0
    md = tmp_path / "board.md"
    assert main(["leaderboard", str(out), "--output", str(md)]) == 0
    text = md.read_text()
    assert "confidence" in text and "[95% CI]" in text
    tables = lambda md: [l for l in md.splitlines() if l.startswith("|")]  # noqa: E731
    # the same tables as the run's own leaderboard; the provenance links the config from where each file is
    assert tables(provenance.body(text)) == tables(provenance.body((out / "leaderboard.md").read_text()))
    assert provenance.read(text).runs[0].config == "tiny.toml"
    assert provenance.read((out / "leaderboard.md").read_text()).runs[0].config == "../tiny.toml"
    # the plots travel with the leaderboard file, linked relatively, so both can be committed
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs and sorted(p.name for p in (tmp_path / "board").glob("*.png")) == pngs
    for name in pngs:
        assert f"](board/{name})" in text


def test_a_mistyped_config_path_is_reported_before_torch_is_imported(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\nfrom xaibench.cli import main\n"
        f"rc = main(['run', {str(tmp_path / 'nope.toml')!r}])\n"
        "print('torch' in sys.modules, rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.stdout.strip() == "False 2" and r.stderr.startswith("error: config file")


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tiny_config, tmp_path, kill_9_after_parts):
    import signal

    out = tmp_path / "run"
    rc, err = kill_9_after_parts(tiny_config, out, parts=1, sig=signal.SIGTERM)
    assert rc == 143 and err.strip().splitlines()[-1] == "error: interrupted; rerun the same command to resume", err
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 0


@pytest.mark.slow
def test_a_full_disk_under_the_run_directory_is_one_error_line_and_the_run_resumes(tiny_config, tmp_path, monkeypatch, capsys):
    import errno

    import xaibench.runs.results

    written = []
    real = xaibench.runs.results.atomic_write

    def fills_up(path, write):
        if len(written) == 1:  # the first part fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        real(path, write)

    monkeypatch.setattr(xaibench.runs.results, "atomic_write", fills_up)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: No space left on device on ") and "free some space" in err, err
    assert "Traceback" not in err
    monkeypatch.setattr(xaibench.runs.results, "atomic_write", real)
    rows = len(pd.read_parquet(out / "parts"))  # what was written is readable
    assert rows > 0
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 0


@pytest.mark.slow
def test_an_unwritable_model_cache_warns_and_the_run_goes_on(tiny_config, tmp_path, monkeypatch, capsys):
    import errno

    import xaibench.models.training as training

    def read_only(state, path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))  # no model cached yet: it is trained
    monkeypatch.setattr(training, "save_atomic", read_only)
    assert main(["run", str(tiny_config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "warning: cannot cache the trained model at" in captured.out + captured.err and "Read-only file system" in captured.out + captured.err
