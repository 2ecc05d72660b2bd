"""What a run prints when it ends: warnings about metrics with no value, and the best cell per metric."""

from __future__ import annotations

import pandas as pd

from xaibench.config.vocabulary import MODE_SHORT, NOT_RANKED, higher_is_better
from xaibench.report.stability import times_first
from xaibench.util.progress import console, warn


def empty_metrics(summary: pd.DataFrame) -> dict[str, int]:
    """Metrics with no value on any image in every one of their cells: metric -> cells."""
    summary = summary[~summary["metric"].isin(NOT_RANKED)]  # NaN for the other kind of model by design
    by = summary.groupby("metric")["n"]
    return {m: int(c) for m, c in by.size().items() if by.get_group(m).sum() == 0}


def warn_empty_metrics(summary: pd.DataFrame) -> None:
    """A metric that is NaN on every image would vanish from the tables without a word: say so."""
    for metric, cells in empty_metrics(summary).items():
        warn(
            f"metric {metric!r} has no value (NaN) on any image in its {cells} cells, so no table ranks it; "
            "check its parameters (e.g. images = 'with_object' on data without objects) or the metric itself"
        )


def print_top(summary: pd.DataFrame) -> None:
    """A closing table: the best cell of each metric (and perturbation mode). Columns that say
    nothing (no mode, one model) are left out; long names fold, the numbers never do. With
    replicates it also gives the cell's spread across them and how often it is #1."""
    from rich.table import Table

    _print_models(summary)
    summary = summary[~summary["metric"].isin(NOT_RANKED)]
    reps = int(summary["replicates"].max()) if "replicates" in summary and len(summary) else 1
    header = ["metric", "mode", "model", "explainer", "layer", "thr", "mean [95% CI]"] + (["sd", "#1", "W"] if reps > 1 else [])
    rows = []
    for (metric, pert), block in summary.groupby(["metric", "perturbation"], sort=True, dropna=False):
        block = block.dropna(subset=["mean"])
        if block.empty:
            continue
        r = block.sort_values("mean", ascending=not higher_is_better(block["direction"].iloc[0])).iloc[0]
        ci = f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        row = [metric, MODE_SHORT.get(pert, pert or "–"), r["model"], r["explainer"] or "(model)", r["layer"] or "–", r["threshold"] or "–", ci]
        if reps > 1:
            row += [
                "–" if pd.isna(r["replicate_sd"]) else f"{r['replicate_sd']:.3f}",
                times_first(r["top1_share"], r["replicates"]),
                "–" if pd.isna(r["ranking_w"]) else f"{r['ranking_w']:.2f}",
            ]
        rows.append(row)
    keep = [
        i for i, name in enumerate(header)
        if not (name == "model" and summary["model"].nunique() < 2)  # one model: its name is in the header already
        and not (name in ("mode", "thr") and all(row[i] == "–" for row in rows))
    ]
    title = "best cell per metric (full ranking in leaderboard.md)" + (f"; sd across the {reps} replicates, times #1, Kendall's W of the ranking" if reps > 1 else "")
    table = Table(title=title)
    for i in keep:
        table.add_column(header[i], no_wrap=header[i] in ("mode", "thr", "mean [95% CI]", "sd", "#1", "W"), overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)


def _print_models(summary: pd.DataFrame) -> None:
    """The models' quality, before any explanation (the leaderboard's Models section)."""
    from rich.table import Table

    from xaibench.report.models import at_chance, quality_of

    q, chance = quality_of(summary), at_chance(summary)
    if q.empty:
        return
    table = Table(title="models: clean performance on the scored images")
    for c in ("model", "metric", "value [95% CI]"):
        table.add_column(c, no_wrap=c != "model")
    for _, r in q.iterrows():
        table.add_row(str(r["model"]), str(r["metric"]), f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
    console.print(table)
    for model, why in chance.items():
        warn(f"model {model!r} is at chance: {why}")


def non_finite_notes(timings: dict) -> list[str]:
    """One line per model whose outputs or maps had NaN/inf (counts from the run's timings)."""
    notes = []
    for key, n in sorted(timings.items()):
        if key.startswith("non_finite_outputs[") and n:
            label = key[len("non_finite_outputs[") : -1]
            notes.append(f"model {label!r} produced non-finite (NaN or inf) outputs on {n} image(s): every score on them is NaN and unranked")
        elif key.startswith("non_finite_maps[") and n:
            label = key[len("non_finite_maps[") : -1]
            notes.append(f"{n} map(s) of model {label!r} were non-finite (NaN or inf): their scores are NaN and unranked")
    return notes


def warn_non_finite(timings: dict) -> None:
    for note in non_finite_notes(timings):
        warn(f"{note} (manifest.json: timings.non_finite_*)")
