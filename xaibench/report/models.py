"""The explained model's quality, first: per model its clean performance on the scored images
(the model-quality metrics every run adds, :mod:`xaibench.metrics.model_quality`) with CIs and
per replicate, and whether it is at chance, in which case its explanations are listed apart.

At chance: a segmenter whose pooled IoU's CI reaches the better trivial mask's IoU (the empty
mask scores 0, the all-foreground mask the foreground share); a classifier whose accuracy's CI
reaches the majority-class rate, or whose AUROC's CI reaches 0.5.
"""

from __future__ import annotations

import pandas as pd

from xaibench.config.vocabulary import (
    EMPTY_MASK_REFERENCE,
    MODE_SHORT,
    MODEL_ACCURACY,
    MODEL_AUROC,
    MODEL_MAJORITY_RATE,
    MODEL_POOLED_IOU,
    MODEL_QUALITY,
    MODEL_TRIVIAL_IOU,
    NOT_RANKED,
)
from xaibench.runs.results import REPLICATE_COLUMNS

#: ``[run] chance``: what a model at chance gets
CHANCE_MODES = ("warn", "error", "rank")


def quality_of(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's model-quality rows that have a value, in the vocabulary's order."""
    rows = summary[summary["metric"].isin(MODEL_QUALITY) & (summary["explainer"].fillna("") == "") & summary["mean"].notna()]
    order = {m: i for i, m in enumerate(MODEL_QUALITY)}
    return rows.assign(_o=rows["metric"].map(order)).sort_values(["model", "_o"], kind="stable").drop(columns="_o")


def without_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a summary or results) without the model-level rows (the model's quality, the
    empty mask's mIoU): they rank no explanation."""
    return frame[~frame["metric"].isin(NOT_RANKED)]


def references(summary: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    """(model, ranked metric) -> the summary row of the reference it is shown with (the empty
    mask's value beside a background-inclusive mIoU, ``EMPTY_MASK_REFERENCE``)."""
    out = {}
    for metric, ref in EMPTY_MASK_REFERENCE.items():
        for _, r in summary[(summary["metric"] == ref) & summary["mean"].notna()].iterrows():
            out[(str(r["model"]), metric)] = r
    return out


def _row(q: pd.DataFrame, metric: str) -> pd.Series | None:
    got = q[q["metric"] == metric]
    return None if got.empty else got.iloc[0]


def at_chance(summary: pd.DataFrame) -> dict[str, str]:
    """Model label -> why it is at chance, for the models that are (see the module docstring)."""
    out = {}
    for model, q in quality_of(summary).groupby("model", sort=True):
        iou, trivial = _row(q, MODEL_POOLED_IOU), _row(q, MODEL_TRIVIAL_IOU)
        acc, majority, auroc = _row(q, MODEL_ACCURACY), _row(q, MODEL_MAJORITY_RATE), _row(q, MODEL_AUROC)
        reasons = []
        if iou is not None and trivial is not None and iou["ci_low"] <= trivial["mean"]:
            reasons.append(
                f"its pooled IoU {iou['mean']:.3f} [{iou['ci_low']:.3f}, {iou['ci_high']:.3f}] does not exceed the better trivial mask's {trivial['mean']:.3f}"
            )
        if acc is not None and majority is not None and acc["ci_low"] <= majority["mean"]:
            reasons.append(f"its accuracy {acc['mean']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}] reaches the majority-class rate {majority['mean']:.3f}")
        if auroc is not None and auroc["ci_low"] <= 0.5:
            reasons.append(f"its AUROC {auroc['mean']:.3f} [{auroc['ci_low']:.3f}, {auroc['ci_high']:.3f}] reaches 0.5")
        if reasons:
            out[str(model)] = "; ".join(reasons)
    return out


def _per_replicate(per_replicate: pd.DataFrame | None, model: str, metric: str) -> str:
    if per_replicate is None or per_replicate.empty:
        return ""
    rows = per_replicate[(per_replicate["model"] == model) & (per_replicate["metric"] == metric) & (per_replicate["explainer"].fillna("") == "")]
    if len(rows) < 2:
        return ""
    rows = rows.sort_values(REPLICATE_COLUMNS)
    return ", ".join("–" if pd.isna(v) else f"{v:.3f}" for v in rows["value"])


def section(summary: pd.DataFrame, per_replicate: pd.DataFrame | None = None) -> str:
    """The leaderboard's *Models* section: each model's quality with its CI (and per replicate)."""
    q = quality_of(summary)
    if q.empty:
        return ""
    chance = at_chance(summary)
    reps = any(_per_replicate(per_replicate, r["model"], r["metric"]) for _, r in q.iterrows())
    header = ["model", "metric", "value [95% CI]", "n", *(["per replicate"] if reps else []), "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in q.iterrows():
        verdict = "at chance" if r["model"] in chance else "above chance"
        if r["metric"] in (MODEL_TRIVIAL_IOU, MODEL_MAJORITY_RATE):
            verdict = "trivial baseline"
        cells = [str(r["model"]), str(r["metric"]), f"{r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]", str(int(r["n"]))]
        cells += [_per_replicate(per_replicate, r["model"], r["metric"]) or "–"] if reps else []
        lines.append("| " + " | ".join(cells + [verdict]) + " |")
    note = (
        "The explained model's clean performance on the scored images, before any explanation: a segmenter's mask "
        "(probability > 0.5) against the truth, per image and pooled over pixels, beside the better trivial mask "
        "(empty or all foreground); a classifier's image labels (accuracy, F1 and AUROC of class 1) beside the "
        "majority-class rate. A model whose CI reaches its trivial baseline is at chance: its explanations are listed apart, "
        "not ranked (`[run] chance`)."
    )
    return note + "\n\n" + "\n".join(lines)


def apart(summary: pd.DataFrame, models: dict[str, str]) -> str:
    """The cells of the models at chance, listed (not ranked) by metric, mode, explainer and layer."""
    rows = without_quality(summary)
    rows = rows[rows["model"].isin(list(models)) & rows["mean"].notna()]
    if rows.empty:
        return ""
    rows = rows.sort_values(["model", "metric", "perturbation", "explainer", "layer", "threshold"], kind="stable")
    header = ["model", "metric", "explainer", "layer", "threshold", "mean [95% CI]", "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in rows.iterrows():
        metric = r["metric"] + (f" ({MODE_SHORT.get(r['perturbation'], r['perturbation'])})" if r["perturbation"] else "")
        cells = [r["model"], metric, r["explainer"] or "–", r["layer"] or "–", r["threshold"] or "–"]
        cells += [f"{r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]", str(int(r["n"]))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "Not ranked: the model is at chance (Models), so what its maps score says nothing about a method.\n\n" + "\n".join(lines)


def ranked_results(results: pd.DataFrame, summary: pd.DataFrame, chance: str = "warn") -> pd.DataFrame:
    """The rows that rank explanations: no model-quality rows, and no rows of a model at chance
    unless ``chance`` is ``"rank"`` (what the leaderboard's rankings and its plots are made of)."""
    apart = {} if chance == "rank" else at_chance(summary)
    rows = without_quality(results)
    return rows[~rows["model"].isin(list(apart))]
