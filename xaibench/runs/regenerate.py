"""Committed leaderboards: check them against their benchmarks, and regenerate the stale ones.

A committed leaderboard ``DIR/NAME.md`` names what produced it in its provenance footer (the
config file of each run, relative to the file, and the title); a file without one (made before
footers existed) is taken to come from ``../benchmarks/NAME.toml`` with the title of its first
line. :func:`check` runs each config again into a run directory of its own, emptied first
(cached models and maps in ``$XAIBENCH_CACHE`` are reused: that is the warm case), renders the
leaderboard exactly as ``xaibench leaderboard`` would write it and compares the two
(:mod:`xaibench.report.staleness`). ``xaibench leaderboard --all`` checks every committed file and
writes the stale ones with their plots (:func:`write`). A benchmark whose data ships in a Python
package that is not installed (a :class:`~xaibench.errors.MissingPackage`, e.g. ``neon-trees``
without ``deepforest``) is skipped: reported with the install command, neither stale nor written.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xaibench.errors import MissingPackage, UserError
from xaibench.report import provenance, staleness
from xaibench.report.leaderboard_index import committed
from xaibench.report.publish import copy_plots, render_runs
from xaibench.util.atomic import atomic_write_text


@dataclass(frozen=True)
class Source:
    """How a committed leaderboard is made: its title and, per run, the run name and config;
    with the committed text and its provenance (``None``: a file without a footer)."""

    path: Path
    text: str
    provenance: provenance.Provenance | None
    title: str
    runs: list[tuple[str, Path]]


@dataclass
class Outcome:
    path: Path
    comparison: staleness.Comparison
    text: str  #: the regenerated leaderboard
    run_dirs: list[Path]
    seconds: float


def source(path: Path) -> Source:
    """What produced the leaderboard at ``path`` (see the module docstring)."""
    if not path.is_file():
        raise UserError(f"leaderboard file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    prov = provenance.read(text)
    if prov is not None:
        missing = [r.name for r in prov.runs if not r.config]
        if missing:
            raise UserError(f"{path}: the provenance of run {missing[0]!r} names no config file, so it cannot be regenerated")
        runs = [(r.name, (path.parent / r.config).resolve()) for r in prov.runs]
        title = prov.title
    else:
        first = text.splitlines()[0] if text else ""
        title = first[2:].strip() if first.startswith("# ") else f"xaibench leaderboard: {path.stem}"
        runs = [(path.stem, (path.parent / ".." / "benchmarks" / f"{path.stem}.toml").resolve())]
    for name, config in runs:
        if not config.is_file():
            raise UserError(f"{path}: its benchmark config {str(config)!r} (run {name!r}) does not exist")
    return Source(path, text, prov, title, runs)


def _empty_run_dir(run_dir: Path) -> None:
    """Make ``run_dir`` empty for a regeneration; refuse to empty a folder that is not a run directory."""
    if run_dir.exists():
        if any(run_dir.iterdir()) and not (run_dir / "manifest.json").is_file():
            raise UserError(f"{str(run_dir)!r} exists and is not a run directory; choose another --runs folder")
        shutil.rmtree(run_dir)


@contextmanager
def runs_folder(runs: Path | None) -> Iterator[Path]:
    """``runs`` itself, or a temporary folder removed afterwards."""
    if runs is not None:
        runs.mkdir(parents=True, exist_ok=True)
        yield runs
        return
    with tempfile.TemporaryDirectory(prefix="xaibench-check-") as tmp:
        yield Path(tmp)


def check(src: Source, runs: Path, tolerance: float = staleness.TOLERANCE, show_progress: bool = False) -> Outcome:
    """Regenerate the leaderboard of ``src`` (:func:`source`) from its benchmarks (runs in
    ``runs/<run name>``) and compare it with the committed text."""
    from xaibench.config.parse import load_config
    from xaibench.runs.runner import run_benchmark

    t0 = time.perf_counter()
    run_dirs = []
    try:
        for name, config_path in src.runs:
            config = load_config(config_path)
            run_dir = runs / name
            _empty_run_dir(run_dir)
            run_benchmark(config, run_dir, show_progress=show_progress)
            run_dirs.append(run_dir)
    except MissingPackage as exc:  # data from a package not installed here: skipped, not stale
        skipped = staleness.Comparison(skipped=f"{exc} (run {name!r}; the leaderboard is left as committed)")
        return Outcome(src.path, skipped, src.text, [], time.perf_counter() - t0)
    text = render_runs(run_dirs, src.path, src.title, [c for _, c in src.runs])
    comparison = staleness.compare(src.text, text, tolerance)
    comparison.notes += _provenance_notes(src, text)
    comparison.hints += _cpu_hints(src, text)
    return Outcome(src.path, comparison, text, run_dirs, time.perf_counter() - t0)


def _provenance_notes(src: Source, text: str) -> list[str]:
    """Why a file is stale in its footer although its numbers agree: no footer, or another config."""
    if src.provenance is None:
        return ["no provenance footer"]
    notes = []
    for a, b in zip(src.provenance.runs, provenance.read(text).runs):
        if a.config_hash != b.config_hash:
            notes.append(f"config hash of run {a.name!r} {a.config_hash[:12]} -> {b.config_hash[:12]} ({b.config} changed)")
    return notes


def _cpu_hints(src: Source, text: str) -> list[str]:
    """A run whose committed numbers came from another CPU type: models trained there can differ
    beyond the printed digits (other vector kernels), so such a check compares machines, not code."""
    if src.provenance is None:
        return []
    hints = []
    for a, b in zip(src.provenance.runs, provenance.read(text).runs):
        if a.cpu != b.cpu:
            hints.append(
                f"run {a.name!r} was committed on CPU {a.cpu or '(not recorded)'!r} and regenerated on {b.cpu!r}; numbers of trained "
                "models can move between CPU types, so regenerate the file (--all) on the machine type that checks it"
            )
    return hints


def write(outcome: Outcome) -> None:
    """Commit a regeneration: the leaderboard file and its plots."""
    atomic_write_text(outcome.path, outcome.text)
    if len(outcome.run_dirs) == 1:
        copy_plots(outcome.run_dirs[0], outcome.path)


def select(directory: Path, only: list[str]) -> list[Path]:
    """The committed leaderboards ``--all`` works on: all of ``directory``, or those named in ``only``."""
    files = committed(directory)
    if only:
        known = {p.stem: p for p in files}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise UserError(f"--only {unknown[0]!r}: {directory} has no {unknown[0]}.md; it has {', '.join(sorted(known)) or 'none'}")
        files = [known[n] for n in only]
    return files
