"""A leaderboard file from run directories: tables, plots beside it, and its provenance footer.

This is what ``xaibench leaderboard RUN_DIR... --output FILE`` writes and what ``--check`` and
``--all`` regenerate (:mod:`xaibench.runs.regenerate`): the same function, so a check compares
exactly what a regeneration would commit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from xaibench.report import leaderboard, provenance
from xaibench.report.console import non_finite_notes
from xaibench.report.run_dirs import read_runs


def _aggregates(names: set[str]) -> dict:
    """The dataset statistics of the metrics in a results table that declare one (metrics no
    longer installed fall back to the mean)."""
    from xaibench.registry.discovery import load_registry
    from xaibench.report.stats import metric_aggregates

    registry = load_registry()
    known = {n: registry.get("metrics", n) for n in names if n in registry.names("metrics")}
    return metric_aggregates(known)


def plot_links(run_dir: Path, output: Path) -> list[str]:
    """Links, relative to ``output``, of the run's plots once copied into ``<output stem>/``."""
    return [f"{output.stem}/{png.name}" for png in sorted((run_dir / "plots").glob("*.png"))]


def copy_plots(run_dir: Path, output: Path) -> None:
    """Copy the run's plots next to ``output`` (into ``<output stem>/``, dropping plots the run
    no longer makes) so the leaderboard file and its images can be committed together."""
    pngs = sorted((run_dir / "plots").glob("*.png"))
    dest = output.resolve().parent / output.stem
    if not pngs and not dest.is_dir():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.png"):
        if old.name not in {p.name for p in pngs}:
            old.unlink()
    for png in pngs:
        shutil.copyfile(png, dest / png.name)


def render_runs(run_dirs: list[Path], output: Path | None, title: str | None = None, configs: list[Path] | None = None) -> str:
    """The leaderboard of ``run_dirs`` as it would be written to ``output`` (``None``: stdout,
    no plots). ``configs``: the runs' config files, where known better than their manifests."""
    from xaibench.report.stats import summary_of

    df, manifests = read_runs(run_dirs)
    seed = int(manifests[0].get("seed", 0))
    aggregates = _aggregates(set(df["metric"]))
    summary, per_replicate = summary_of(df, seed, aggregates)
    title = title or ("xaibench leaderboard: " + ", ".join(d.name for d in run_dirs))
    plots = plot_links(run_dirs[0], output) if len(run_dirs) == 1 and output is not None else []
    facts = [
        provenance.run_facts(d, m, output, configs[i] if configs else None) for i, (d, m) in enumerate(zip(run_dirs, manifests))
    ]
    notes = [f"{d.name}: {n}" if len(run_dirs) > 1 else n for d, m in zip(run_dirs, manifests) for n in non_finite_notes(m.get("timings", {}))]
    chance = str(manifests[0].get("config", {}).get("run", {}).get("chance", "warn"))
    layers = {k: v for m in manifests for k, v in (m.get("layers") or {}).items()}
    return compose(df, summary, per_replicate, seed, title, plots, facts, output, notes, chance, aggregates, layers)


def compose(
    df, summary, per_replicate, seed: int, title: str, plots: list[str], facts: list[provenance.RunFacts], output: Path | None, notes: list[str],
    chance: str = "warn", aggregates: dict | None = None, layers: dict | None = None, scores=None,
) -> str:
    """The leaderboard's tables (:func:`xaibench.report.leaderboard.render`; ``scores``: its method
    table where made already) and its provenance footer: what a run writes as its
    ``leaderboard.md`` and what :func:`render_runs` makes from run directories."""
    text = leaderboard.render(df, summary, title, seed, plots, per_replicate, notes, chance, aggregates, layers, scores)
    return text + "\n" + provenance.render(provenance.Provenance(title, facts), output)
