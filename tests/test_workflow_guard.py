"""The leaderboards workflow never runs a pull request's config with secrets or write access.

A benchmark config can name code (``model.factory = "pkg.mod:fn"``, a TorchScript file), so a
config from an untrusted pull request runs that code. The workflow is guarded by construction
(docs/leaderboards.md, "What a pull request's config can do"): these tests hold each part of it,
and check that they would catch the workflow losing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "leaderboards.yml"
WRITE = {"write", "write-all"}


def _load(text: str) -> dict:
    data = yaml.safe_load(text)
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def guard_problems(text: str) -> list[str]:
    """Everything that would let a pull request's code run with secrets or write access."""
    data, problems = _load(text), []
    triggers = data["on"] if isinstance(data["on"], dict) else {t: None for t in ([data["on"]] if isinstance(data["on"], str) else data["on"])}
    if "pull_request_target" in triggers or "workflow_run" in triggers:
        problems.append("a trigger that runs pull-request code with the base repository's secrets and token")
    if "pull_request" not in triggers:
        problems.append("no pull_request trigger (a pull request's configs would not be checked)")
    if data.get("permissions") != {"contents": "read"}:
        problems.append(f"workflow permissions are {data.get('permissions')!r}, not read-only contents")
    if "secrets." in text:
        problems.append("the workflow reads a secret")
    for name, job in data["jobs"].items():
        perms = job.get("permissions") or {}
        writes = perms in WRITE if isinstance(perms, str) else any(v in WRITE for v in perms.values())
        cond = str(job.get("if", ""))
        if writes and not ("github.event_name != 'pull_request'" in cond and "refs/heads/main" in cond):
            problems.append(f"job {name!r} can write and may run for a pull request")
        runs_on_pr = "github.event_name != 'pull_request'" not in cond
        for step in job.get("steps", []):
            if runs_on_pr and str(step.get("uses", "")).startswith("actions/checkout") and (step.get("with") or {}).get("persist-credentials") is not False:
                problems.append(f"job {name!r} keeps the checkout's token in .git for the pull request's code (persist-credentials)")
    return problems


def test_the_leaderboards_workflow_is_guarded():
    assert guard_problems(WORKFLOW.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("  pull_request:\n", "  pull_request_target:\n", "base repository's secrets"),
        ("permissions:\n  contents: read\n", "permissions:\n  contents: write\n", "not read-only"),
        ("    if: github.event_name != 'pull_request' && github.ref == 'refs/heads/main'\n", "", "can write and may run"),
        ("          persist-credentials: false\n", "", "persist-credentials"),
        ("  XAIBENCH_CACHE:", "  TOKEN: ${{ secrets.PUBLISH_TOKEN }}\n  XAIBENCH_CACHE:", "reads a secret"),
    ],
)
def test_the_guard_check_catches_each_weakening(old: str, new: str, words: str):
    text = WORKFLOW.read_text()
    assert old in text, f"the workflow changed: update this test's {old!r}"
    problems = guard_problems(text.replace(old, new, 1))
    assert any(words in p for p in problems), problems
