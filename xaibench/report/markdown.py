"""Markdown primitives the leaderboard's sections share: numbers, CIs, p-values, tables, and the
notes under a ranking (a saturated ranking; the empty mask's value beside an mIoU)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from xaibench.config.vocabulary import HIGHER, LOWER, higher_is_better

ARROW = {HIGHER: "↑", LOWER: "↓"}


def fmt(x: float, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def ci(row) -> str:
    return f"{fmt(row['mean'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


def pval(p: float | None) -> str:
    return "–" if p is None or (isinstance(p, float) and math.isnan(p)) else (f"{p:.3f}" + (" *" if p < 0.05 else ""))


def p_vs_best(row) -> str:
    return "best" if row.get("best") else pval(row.get("p_vs_best"))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def saturation(means: pd.Series, direction: str) -> str:
    """A warning when at least half of a ranking's entries (and 3 or more) sit at its best value
    (within 0.001, the tables' last digit): the metric is at a bound there (e.g. an IoU drop at
    minus the clean IoU: everything removed) and ranks ties and noise."""
    means = means.dropna()
    if len(means) < 3:
        return ""
    best = means.max() if higher_is_better(direction) else means.min()
    tied = int(np.isclose(means, best, rtol=0, atol=1e-3).sum())
    if tied < 3 or tied * 2 < len(means):
        return ""
    return f"> ⚠ saturated: {tied} of {len(means)} entries sit within 0.001 of the best value {fmt(float(best))}, a bound of the metric; it does not separate them."


def reference_line(refs: dict | None, metric: str, models) -> str:
    """The empty mask's value beside a background-inclusive mIoU, per model (``refs``:
    :func:`xaibench.report.models.references`); "" for other metrics."""
    got = [(m, refs[(m, metric)]) for m in sorted(set(models)) if refs and (m, metric) in refs]
    if not got:
        return ""
    same = len({ci(r) for _, r in got}) == 1  # the truth's, not the model's: usually one value
    values = ci(got[0][1]) if same else ", ".join(f"{ci(r)} ({m})" for m, r in got)
    return (f"> The empty mask (no object anywhere) scores {values} on these images: this mIoU counts the background, "
            "so a map says something about the object only above that.")
