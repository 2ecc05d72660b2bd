"""Methods, not cells: each model x explainer at the setting (layer and threshold) chosen for it
on other images, reported on the images that did not choose it, beside the trivial baselines.

The cells of a run are settings of a method; picking a method's best cell on the images it is
then scored on is optimistic. Here, per method, metric and perturbation mode, the images are
split into groups (:func:`xaibench.report.selection.selection_groups`: the folds, or two halves
drawn with the benchmark seed); for each group the setting with the best statistic on the
*other* groups is chosen and the group's own images are scored with it. The held-out values of
all groups make the method's entry: its statistic and CI, and per image the value that the
paired tests and the Friedman test (:mod:`xaibench.report.method_tests`) use.

Each entry is compared with the better trivial baseline of its model, metric and mode
(``random``, ``center_prior``): the mean paired difference on the images both have, and its
Wilcoxon p-value; an entry beats the baseline when the difference is in the better direction
with p < 0.05.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench.config.vocabulary import MODE_LABELS, SANITY_METRIC, TRIVIAL_BASELINES, best_label, higher_is_better
from xaibench.report.markdown import ARROW, ci, fmt, pval, reference_line, saturation, table
from xaibench.report.method_tests import Friedman, friedman, holm
from xaibench.report.selection import cross_fit, selection_groups
from xaibench.report.stats import Aggregate, Pooled, estimate, paired_p, with_replicates

METHOD = ["model", "explainer"]
BLOCK = ["metric", "perturbation"]
ALPHA = 0.05


@dataclass
class MethodScores:
    """``table``: one row per model x explainer x metric x mode (see :func:`method_scores`);
    ``values``: (model, explainer, metric, perturbation) -> held-out value per image id (the mean
    over the replicates that scored the image); ``how``: how the images were split."""

    table: pd.DataFrame
    values: dict[tuple, pd.Series] = field(default_factory=dict)
    how: str = ""
    #: :func:`blocks` of this table, made on first use (a run's CD diagrams and its leaderboard both read them)
    tested: list | None = field(default=None, repr=False, compare=False)


COLUMNS = METHOD + BLOCK + ["settings", "mean", "ci_low", "ci_high", "n", "direction", "statistic", "baseline", "vs_baseline", "p_vs_baseline", "beats_baseline"]


def _setting(row_layer: str, row_threshold: str) -> str:
    return " @ ".join(x for x in (row_layer, row_threshold) if x) or "–"


def _held_out(g: pd.DataFrame, groups: dict[str, str], agg) -> tuple[pd.DataFrame, Counter]:
    """The rows of ``g`` (one method, metric, mode) at the setting each group's others chose."""
    g = g.assign(_setting=[_setting(l, t) for l, t in zip(g["layer"], g["threshold"])])
    return cross_fit(g, g["image_id"].map(groups), "_setting", agg, g["direction"].iloc[0])


def method_scores(results: pd.DataFrame, seed: int = 0, aggregates: Mapping[str, Aggregate | Pooled] | None = None) -> MethodScores:
    """Every method's held-out entry per metric and mode (module docstring). Model-level metrics
    (no explainer) and the sanity check have no setting to choose and are left out."""
    aggregates = aggregates or {}
    df = with_replicates(results)
    df = df[(df["explainer"].fillna("") != "") & (df["metric"] != SANITY_METRIC)]
    if df.empty:
        return MethodScores(pd.DataFrame(columns=COLUMNS))
    groups, how = selection_groups(results, seed)
    rows, values = [], {}
    for key, g in df.groupby(METHOD + BLOCK, sort=True, dropna=False):
        agg = aggregates.get(key[2])
        held, chosen = _held_out(g, groups, agg)
        if held.empty:
            continue
        mean, lo, hi, _ = estimate(held, seed, agg)
        per_image = held.groupby("image_id")["value"].mean()
        values[key] = per_image
        total = sum(chosen.values())
        settings = ", ".join(f"{s} ({c}/{total})" for s, c in sorted(chosen.items(), key=lambda kv: (-kv[1], kv[0])))
        rows.append(dict(zip(METHOD + BLOCK, key), settings=settings, mean=mean, ci_low=lo, ci_high=hi, n=int(per_image.notna().sum()),
                         direction=g["direction"].iloc[0], statistic=getattr(agg, "__name__", "aggregate") if agg else "mean"))
    table = pd.DataFrame(rows, columns=COLUMNS[:-4])
    return MethodScores(add_baseline_comparison(table, values), values, how)


def add_baseline_comparison(table: pd.DataFrame, values: dict[tuple, pd.Series]) -> pd.DataFrame:
    """Columns ``baseline`` (the better trivial baseline of the same model, metric and mode; for a
    metric without perturbation, whose baseline values do not depend on the model, of any model),
    ``vs_baseline`` (mean paired difference, entry minus baseline, on the images both have),
    ``p_vs_baseline`` (Wilcoxon, Holm-corrected over the block's methods) and ``beats_baseline`` (better direction and p < 0.05; None for
    the baselines themselves and where no baseline ran)."""
    table = table.assign(baseline="", vs_baseline=np.nan, p_vs_baseline=np.nan, beats_baseline=None)
    trivial = table[table["explainer"].isin(TRIVIAL_BASELINES)].dropna(subset=["mean"])
    for (_, metric, pert), idx in table.groupby(["model", *BLOCK], dropna=False).groups.items():
        block = table.loc[idx]
        base = block[block["explainer"].isin(TRIVIAL_BASELINES)].dropna(subset=["mean"])
        if base.empty and pert == "":
            # no perturbation: the metric compares the map with the truth, and the baselines' maps do not
            # depend on the model, so another model's baselines (same images) are this one's too
            base = trivial[(trivial["metric"] == metric) & (trivial["perturbation"] == pert)]
        if base.empty:
            continue
        direction = base["direction"].iloc[0]
        b = base.loc[best_label(base["mean"], direction)]
        ref = values[(b["model"], b["explainer"], b["metric"], b["perturbation"])]
        found = {}
        for i in block.index:
            r = table.loc[i]
            if r["explainer"] in TRIVIAL_BASELINES:
                continue
            own = values[(r["model"], r["explainer"], r["metric"], r["perturbation"])]
            pair = pd.concat([own.rename("a"), ref.rename("b")], axis=1, join="inner").dropna()
            found[i] = (float((pair["a"] - pair["b"]).mean()) if len(pair) else np.nan, paired_p(own, ref))
        if not found:
            continue
        for i, p in zip(found, holm([p for _, p in found.values()])):  # one family: the block's methods
            diff = found[i][0]
            better = diff > 0 if higher_is_better(direction) else diff < 0
            table.loc[i, ["baseline", "vs_baseline", "p_vs_baseline"]] = [b["explainer"], diff, p]
            table.at[i, "beats_baseline"] = bool(better and p < ALPHA)
    return table


@dataclass
class Block:
    """One metric and mode of the method table: ``full`` (ranked, best first), ``fewer`` (scored
    on fewer images, after them), the Friedman test of ``full`` (None where it cannot run) and
    the label of each entry in the test (``model / explainer`` where there are several models)."""

    metric: str
    perturbation: str
    full: pd.DataFrame
    fewer: pd.DataFrame
    test: Friedman | None
    labels: dict

    @property
    def cd_name(self) -> str:
        """The file name of this block's critical-difference diagram."""
        return f"cd_{self.metric}" + (f"_{self.perturbation}" if self.perturbation else "") + ".png"


def blocks(scores: MethodScores) -> list[Block]:
    """The method table per metric and mode, ranked and tested (once per table: kept in ``scores.tested``)."""
    if scores.tested is not None:
        return scores.tested
    out = []
    for (metric, pert), block in scores.table.groupby(BLOCK, sort=True, dropna=False):
        full, fewer = ranked(block)
        if full.empty:
            continue
        many = block["model"].nunique() > 1
        labels = {i: (f"{r['model']} / {r['explainer']}" if many else r["explainer"]) for i, r in block.iterrows()}
        key = lambda r: (r["model"], r["explainer"], r["metric"], r["perturbation"])  # noqa: E731
        test = friedman({labels[i]: scores.values[key(r)] for i, r in full.iterrows()}, full["direction"].iloc[0])
        out.append(Block(metric, pert, full, fewer, test, labels))
    scores.tested = out
    return out


def ranked(block: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One metric and mode's entries: those scored on the most images, best first, and those
    scored on fewer (never ranked above the others: their means are of other images)."""
    block = block.dropna(subset=["mean"])
    if block.empty:
        return block, block
    full = block["n"] == block["n"].max()
    higher = higher_is_better(block["direction"].iloc[0])
    order = lambda b: b.sort_values("mean", ascending=not higher, kind="stable")  # noqa: E731
    return order(block[full]), order(block[~full])


def section(scores: MethodScores, plots: list[str] | None = None, refs: dict | None = None) -> str:
    """The headline: per metric and mode, each method at its held-out setting, its difference from
    the better trivial baseline, the Friedman test with mean ranks and a link to its CD diagram
    (and, beside an mIoU, the empty mask's value: ``refs``)."""
    links = {Path(p).name: p for p in plots or ()}
    parts = [
        f"Each method (model x explainer) at the layer and threshold chosen for it on other images: {scores.how}. "
        "`settings`: the chosen settings (groups that chose each). `Δ vs baseline`: the mean paired difference from the better "
        "trivial baseline (`random` or `center_prior`) on the same images, with its Wilcoxon p, Holm-corrected over the block's "
        "methods; `✗` marks a method that does not beat it. `mean rank`: over the images every ranked method scored (1 = best), "
        "Friedman test and Nemenyi critical difference below each table. Entries scored on fewer images are listed after the "
        "others, never ranked above them."
    ]
    for blk in blocks(scores):
        full, fewer, test, metric, pert = blk.full, blk.fewer, blk.test, blk.metric, blk.perturbation
        d = full["direction"].iloc[0]
        rows = []
        for i, (idx, r) in enumerate(pd.concat([full, fewer]).iterrows()):
            rank = str(i + 1) if idx in full.index else f"– (n < {int(full['n'].max())})"
            mr = fmt(float(test.mean_ranks.get(blk.labels[idx], np.nan)), 2) if test is not None else "–"
            vs = "baseline" if r["explainer"] in TRIVIAL_BASELINES else ("–" if not r["baseline"] else f"{fmt(r['vs_baseline'])} ({pval(r['p_vs_baseline'])})" + ("" if r["beats_baseline"] else " ✗"))
            rows.append([rank, r["model"], r["explainer"], r["settings"], ci(r), str(r["n"]), mr, vs])
        stat = full["statistic"].iloc[0]
        title = f"### {metric}" + (f" — {MODE_LABELS.get(pert, pert)}" if pert else "") + f" ({d} is better {ARROW[d]})"
        body = [title, "", table(["rank", "model", "method", "settings", f"{stat} [95% CI]", "n", "mean rank", "Δ vs baseline (p)"], rows)]
        flag = saturation(full["mean"], d)
        body += ["", flag] if flag else []
        ref = reference_line(refs, metric, full["model"])
        body += ["", ref] if ref else []
        if test is not None:
            body += ["", f"Friedman χ² = {test.statistic:.2f}, p = {test.pvalue:.2g} ({len(test.mean_ranks)} methods, {test.n} images); Nemenyi CD = {test.cd:.2f}."]
            if blk.cd_name in links:
                body += ["", f"![critical differences: {metric} {pert}]({links[blk.cd_name]})"]
        parts.append("\n".join(body))
    return "\n\n".join(parts) if len(parts) > 1 else ""
