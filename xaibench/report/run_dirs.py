"""Reading run directories for a leaderboard, and merging several into one ranking.

Runs of different models or plugins on the same benchmark (a third party's run beside ours)
rank together only if they scored the same images the same way: the same dataset and split,
the same seed (bootstrap resamples), the same folds and the same definitions of the metrics
both tables hold (their parameters, the perturbation fill, the explained target). Anything
else is refused with one error naming the first difference. Merged rows carry their run: each
model label is prefixed with its run directory's name (``ours/smp_unet``), and the
leaderboard's provenance section has one line per run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xaibench.errors import UserError
from xaibench.runs.results import ResultStore


def _definitions(manifest: dict, metrics: set[str]) -> dict[str, object]:
    """What two runs must share to be ranked together, by the name the error uses."""
    config = manifest.get("config", {})
    run = config.get("run", {})
    params = config.get("metric_params", {}) or {}
    return {
        "dataset": config.get("dataset"),
        "split": (config.get("split"), config.get("n_images")),
        "seed": config.get("seed"),
        "folds": (run.get("folds"), manifest.get("folds")),
        "metric definitions": (
            {m: params.get(m, {}) for m in sorted(metrics)},
            {k: run.get(k) for k in ("fill", "target", "class_id")},
        ),
    }


def check_compatible(run_dirs: list[Path], manifests: list[dict], tables: list[pd.DataFrame]) -> None:
    """Refuse runs that cannot share a ranking (see the module docstring)."""
    names = [d.name for d in run_dirs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"run directories {', '.join(map(repr, twice))} share a name; merged rows are labelled by it: rename or move one")
    for d, m in zip(run_dirs, manifests):
        if not m:
            raise UserError(f"{str(d)!r} has no manifest.json, so what it measured cannot be compared with the other runs; rerun it with `xaibench run`")
    first = manifests[0]
    first_metrics = set(tables[0]["metric"])
    for d, m, t in zip(run_dirs[1:], manifests[1:], tables[1:]):
        shared = first_metrics & set(t["metric"])
        a, b = _definitions(first, shared), _definitions(m, shared)
        for what in a:
            if a[what] != b[what]:
                raise UserError(
                    f"cannot rank {str(d)!r} with {str(run_dirs[0])!r}: their {what} differ ({_short(b[what])} vs {_short(a[what])}); "
                    "a merged leaderboard needs the same images, split, seed and metric definitions"
                )


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_runs(run_dirs: list[Path]) -> tuple[pd.DataFrame, list[dict]]:
    """The tidy results of one or more run directories (merged: labels prefixed by run) and their manifests."""
    tables, manifests = [], []
    for d in run_dirs:
        if not (d / "results.parquet").exists():
            raise UserError(f"{str(d)!r} is not a run directory: {d / 'results.parquet'} does not exist")
        store = ResultStore(d)
        tables.append(store.read())
        manifests.append(store.read_manifest() or {})
    if len(run_dirs) > 1:
        check_compatible(run_dirs, manifests, tables)
        tables = [t.assign(model=d.name + "/" + t["model"]) for d, t in zip(run_dirs, tables)]
    return pd.concat(tables, ignore_index=True), manifests
