"""Markdown leaderboards from a run's tidy results and summary.

Every table ranks in the metric's declared direction and shows the mean with its 95%
bootstrap CI; ``p vs best`` is the paired Wilcoxon test against the best explainer of the
column (same model, layer and threshold; ``best`` marks it) and ``p vs #1`` the same test
against the first row of a ranking. The WHU study's three analyses get their own sections:
(a) best method per perturbation mode and threshold, (b) ranking by IoU drop,
(c) one layer against the other for each method and metric.

With replicates (folds x training seeds) the means are means over replicates, the CIs two-level
bootstraps, rankings show the spread across replicates and how often each row is #1, and a
ranking-stability section (:mod:`xaibench.report.stability`) says how much the rankings move.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench.config.vocabulary import (
    CONFIDENCE,
    ENTROPY,
    HIGHLIGHTED_PLUS_TARGET,
    INPUT_LAYER,
    IOU_DROP,
    MODE_LABELS,
    MODE_SHORT,
    SANITY_FLAG_ABOVE,
    SANITY_METRIC,
    higher_is_better,
)
from xaibench.report import methods
from xaibench.report import models as quality_report
from xaibench.report.markdown import ARROW, ci, fmt, p_vs_best, pval, reference_line, saturation, table
from xaibench.report.method_tests import holm
from xaibench.report.methods import method_scores
from xaibench.report.selection import held_out_best_thresholds, selection_groups
from xaibench.report.stability import ranking_stability, times_first
from xaibench.report.stats import CELL, REPLICATE, estimate, paired_p, replicate_statistics, values_by_cell, with_replicates


def _sorted(block: pd.DataFrame) -> pd.DataFrame:
    higher = higher_is_better(block["direction"].iloc[0])
    return block.dropna(subset=["mean"]).sort_values("mean", ascending=not higher, kind="stable")


def rankings(summary: pd.DataFrame, results: pd.DataFrame | None = None, top: int = 10, refs: dict | None = None) -> str:
    """Per metric (and perturbation mode): the top cells, best first. With ``results``, a
    ``p vs #1`` column: the paired Wilcoxon test of each row against the ranking's first row, on
    the images both have (a ranking mixes explainers, layers, thresholds and models, while
    ``p vs best`` only compares the explainers of one model, layer and threshold)."""
    values = values_by_cell(results) if results is not None else None
    reps = int(summary["replicates"].max()) if "replicates" in summary and len(summary) else 1
    parts = []
    for (metric, pert), block in summary.groupby(["metric", "perturbation"], sort=True, dropna=False):
        block = _sorted(block)
        if block.empty:
            continue
        title = f"### {metric}" + (f" — {MODE_LABELS.get(pert, pert)}" if pert else "") + f" ({block['direction'].iloc[0]} is better {ARROW[block['direction'].iloc[0]]})"
        head = block.head(top)
        keys = list(head[CELL].itertuples(index=False, name=None))
        first = values.get(keys[0]) if values is not None else None
        rows = []
        vs_first = [np.nan] + [paired_p(values.get(k), first) if first is not None and values.get(k) is not None else np.nan
                               for k in keys[1:]] if values is not None else []
        vs_first = holm(vs_first) if values is not None else []  # one family: the rows shown
        for i, (_, r) in enumerate(head.iterrows()):
            row = [str(i + 1), r["model"], r["explainer"] or "(model)", r["layer"] or "–", r["threshold"] or "–", ci(r), str(r["n"]), p_vs_best(r)]
            if values is not None:
                row.append("#1" if i == 0 else pval(vs_first[i]))
            if reps > 1:
                share = r.get("top1_share")
                row += [fmt(r["replicate_sd"]), times_first(share, r["replicates"])]
            rows.append(row)
        stat = block["statistic"].iloc[0] if "statistic" in block else "mean"
        header = ["rank", "model", "explainer", "layer", "threshold", f"{stat} [95% CI]", "n", "p vs best"] + (["p vs #1"] if values is not None else [])
        header += ["sd across replicates", "#1 in"] if reps > 1 else []
        flag = saturation(block["mean"], block["direction"].iloc[0])
        ref = reference_line(refs, metric, block["model"])
        parts.append(title + "\n\n" + table(header, rows) + "".join(f"\n\n{x}" for x in (flag, ref) if x))
    note = (
        "Exploratory: cells (method x layer x threshold) ranked on the same images that their settings were picked on, "
        "so the top of each ranking is optimistic; the Methods section is the headline. p-values are Holm-corrected: "
        "`p vs best` over every comparison of the metric and mode, `p vs #1` over the rows shown."
    )
    return "\n\n".join([note, *parts]) if parts else ""


def best_per_mode(summary: pd.DataFrame) -> str:
    """(a) For each mode and threshold: the best method, with its confidence and entropy. M1 and
    M2 are ranked by confidence; M3 by entropy (lower is better), as the WHU study judges M3."""
    keys = ["model", "explainer", "layer", "threshold", "perturbation"]
    by = {m: summary[(summary["metric"] == m) & (summary["perturbation"] != "")] for m in (CONFIDENCE, ENTROPY)}
    if by[CONFIDENCE].empty:
        return ""
    indexed = {m: t.set_index(keys) for m, t in by.items()}
    parts = []
    for mode in by[CONFIDENCE]["perturbation"].drop_duplicates():
        metric = ENTROPY if mode == HIGHLIGHTED_PLUS_TARGET and not by[ENTROPY].empty else CONFIDENCE
        block = by[metric][by[metric]["perturbation"] == mode]
        rows = []
        for thr, tb in block.groupby("threshold", sort=True):
            tb = _sorted(tb)
            if tb.empty:
                continue
            key = (tb.iloc[0]["model"], tb.iloc[0]["explainer"], tb.iloc[0]["layer"], thr, mode)
            c, e = (indexed[m].loc[key] if key in indexed[m].index else None for m in (CONFIDENCE, ENTROPY))
            rows.append([thr, key[0], key[1], key[2], ci(c) if c is not None else "–", ci(e) if e is not None else "–"])
        d = block["direction"].iloc[0]
        parts.append(f"### {MODE_LABELS.get(mode, mode)} (ranked by {metric}, {d} is better)\n\n" + table(["threshold", "model", "best method", "layer", "confidence [95% CI]", "entropy [95% CI]"], rows))
    return "\n\n".join(parts)


def iou_drop_ranking(results: pd.DataFrame, seed: int = 0) -> str:
    """(b) Methods ranked by IoU drop, averaged over thresholds per image (most negative first);
    with replicates, per image and replicate, and the CI is the two-level bootstrap."""
    df = with_replicates(results[results["metric"] == IOU_DROP])
    if df.empty:
        return ""
    per_image = df.groupby(["model", "explainer", "layer", *REPLICATE, "image_id"])["value"].mean().reset_index()
    rows = []
    for (mo, e, l), g in per_image.groupby(["model", "explainer", "layer"]):
        mean, lo, hi, _ = estimate(g, seed)
        rows.append((mean, mo, e, l, lo, hi, int(g["value"].notna().sum())))
    rows.sort(key=lambda r: (math.isnan(r[0]), r[0]))
    body = [[str(i + 1), mo, e, l, f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]", str(n)] for i, (m, mo, e, l, lo, hi, n) in enumerate(rows)]
    return table(["rank", "model", "explainer", "layer", "IoU drop [95% CI] (lower is better)", "n"], body)


def layer_comparison(summary: pd.DataFrame) -> str:
    """(c) For each method and metric (averaged over thresholds): each layer's mean, and which is
    better. Only methods with two layers or more: a pixel attribution's one layer, ``input``,
    gets no row and no column."""
    summary = summary[(summary["metric"] != SANITY_METRIC) & (summary["layer"] != "")]
    per_method = summary.groupby(["model", "explainer"])["layer"].transform("nunique")
    summary = summary[per_method > 1]
    layers = sorted(summary["layer"].unique())
    if len(layers) < 2:
        return ""
    agg = summary.groupby(["model", "explainer", "metric", "perturbation", "layer"], dropna=False).agg(mean=("mean", "mean"), direction=("direction", "first")).reset_index()
    rows = []
    for (mo, e, m, p), g in agg.groupby(["model", "explainer", "metric", "perturbation"], dropna=False):
        by = dict(zip(g["layer"], g["mean"]))
        d = g["direction"].iloc[0]
        vals = [by.get(l, np.nan) for l in layers]
        finite = [(v, l) for v, l in zip(vals, layers) if not math.isnan(v)]
        better = (max(finite)[1] if higher_is_better(d) else min(finite)[1]) if len(finite) > 1 else "–"
        if len(finite) < 2:
            continue  # a model measured at one layer has nothing to compare
        rows.append([mo, e, m + (f" ({MODE_SHORT.get(p, p)})" if p else ""), *[fmt(v) for v in vals], better])
    return table(["model", "explainer", "metric", *layers, "better"], rows) if rows else ""


def sanity_table(summary: pd.DataFrame) -> str:
    """Rank correlation of each method's maps with those of a randomised model; flags the insensitive."""

    block = summary[summary["metric"] == SANITY_METRIC].sort_values("mean")
    if block.empty:
        return ""
    rows = []
    for _, r in block.iterrows():
        flag = "⚠ insensitive to the model" if r["mean"] > SANITY_FLAG_ABOVE else "passes"
        rows.append([r["model"], r["explainer"], r["layer"], ci(r), flag])
    note = (
        f"Spearman correlation between each image's map and the map of the same method on a model whose top layers were "
        f"re-initialised (Adebayo et al. 2018). Lower is better; above {SANITY_FLAG_ABOVE} the method is flagged."
    )
    return note + "\n\n" + table(["model", "explainer", "layer", "rank correlation [95% CI]", "verdict"], rows)


def best_thresholds(results: pd.DataFrame, seed: int = 0, aggregates: dict | None = None) -> str:
    """For metrics measured at several numeric thresholds: each method's best threshold, chosen
    on other images than those it is reported on (:mod:`xaibench.report.selection`)."""
    chosen_table = held_out_best_thresholds(results, seed, aggregates=aggregates)
    if chosen_table.empty:
        return ""
    rows = []
    for _, r in chosen_table.iterrows():
        chosen = ", ".join(f"{t} ({c}/{sum(r['chosen'].values())})" for t, c in sorted(r["chosen"].items(), key=lambda kv: -kv[1]))
        p = r["perturbation"]
        metric = r["metric"] + (f" ({MODE_SHORT.get(p, p)})" if p else "")
        rows.append([r["model"], r["explainer"], r["layer"], metric, chosen, ci(r), f"{r['in_sample_threshold']}: {fmt(r['in_sample_mean'])}"])
    _, how = selection_groups(results, seed)
    note = (
        f"The best threshold is {how}; `held-out mean` is what the chosen thresholds score on the images they were not "
        "chosen on, `in-sample` the best threshold on all images and its (optimistic) mean."
    )
    return note + "\n\n" + table(["model", "explainer", "layer", "metric", "chosen threshold (groups)", "held-out mean [95% CI]", "in-sample"], rows)


def _entry(e: tuple, with_model: bool = True) -> str:
    """``model / explainer @ layer @ threshold`` (the model left out where there is one)."""
    model, explainer, layer, threshold = e
    return (f"{model} / " if with_model else "") + (explainer or "(model)") + (f" @ {layer}" if layer else "") + (f" @ {threshold}" if threshold else "")


def stability_section(results: pd.DataFrame, per_replicate: pd.DataFrame | None = None) -> str:
    """How much each ranking moves across replicates: #1 counts, Kendall's W, mean tau, swaps
    (``per_replicate``: :func:`xaibench.report.stats.replicate_statistics` of ``results``)."""
    results = with_replicates(results)
    if results.groupby(REPLICATE).ngroups < 2:
        return ""
    per_replicate = replicate_statistics(results) if per_replicate is None else per_replicate
    found = ranking_stability(per_replicate[per_replicate["metric"] != SANITY_METRIC])
    if not found:
        return ""
    rows = []
    many = results["model"].nunique() > 1
    for s in found:
        top1 = "; ".join(f"{_entry(e, many)} ({c}/{s.replicates})" for e, c in sorted(s.top1.items(), key=lambda kv: -kv[1]))
        swaps = "; ".join(f"{_entry(a, many)} ↔ {_entry(b, many)} ({c}/{s.replicates})" for a, b, c in s.swaps[:5]) or "none"
        name = s.metric + (f" — {MODE_SHORT.get(s.perturbation, s.perturbation)}" if s.perturbation else "")
        rows.append([name, str(s.replicates), str(s.entries), fmt(s.w, 3), fmt(s.tau, 3), top1, swaps])
    note = (
        "Each ranking ranked again in every replicate (its own trained models; with folds, on its own held-out images). "
        "Kendall's W: agreement of the replicates' rankings over all entries (1 = identical, 0 = none); "
        "mean τ: the mean Kendall tau of every pair of replicates; `#1`: how often each entry is first; "
        "`swaps`: pairs of the overall top 10 (the better one first) whose order flips, and in how many replicates."
    )
    header = ["ranking", "replicates", "entries", "Kendall's W", "mean τ", "#1 (replicates)", "swaps (up to 5)"]
    return note + "\n\n" + table(header, rows)


def _input_layer_line(results: pd.DataFrame) -> list[str]:
    """What layer ``input`` means, where pixel attributions sit beside layer explainers."""
    layers = set(results["layer"].unique()) if not results.empty else set()
    if INPUT_LAYER not in layers or len(layers - {INPUT_LAYER, ""}) == 0:
        return []
    return [
        "",
        f"Layer `{INPUT_LAYER}`: a pixel attribution, which explains the input image, so it has one cell where a CAM has one "
        f"per layer; its `p vs best` compares it with the other methods at layer `{INPUT_LAYER}`, its `p vs #1` with the ranking's first row.",
    ]


def _layer_alias_line(layers: dict | None) -> list[str]:
    """What each layer alias is in the model: ``decoder1`` = ``decoder.blocks.4`` ..."""
    said = [f"`{a}` = `{p}`" for m in sorted(layers or {}) for a, p in sorted(layers[m].items()) if a != p]
    if not said:
        return []
    unet = any("decoder1" in v for v in (layers or {}).values())
    return ["", f"Layers: {', '.join(dict.fromkeys(said))} (module paths in the model" + ("; `decoder1` is the last decoder block, `decoder2` the one before it" if unet else "") + ")."]


def _replicate_line(results: pd.DataFrame) -> list[str]:
    reps = with_replicates(results)[REPLICATE].drop_duplicates()
    if len(reps) < 2:
        return []
    folds = sorted(f for f in reps["fold"].unique() if f != "")
    seeds = sorted(reps["seed"].unique())
    parts = ([f"{len(folds)} folds"] if folds else []) + [f"{len(seeds)} training seed" + ("s" if len(seeds) > 1 else "")]
    return [
        "",
        f"Replicates: {' x '.join(parts)} = {len(reps)} replicates (every model trained once per replicate). Means are means over "
        "replicates; CIs are two-level bootstraps (replicates drawn with replacement, then images within each); "
        "paired tests pair images (averaged over the replicates that scored them).",
    ]


def _models_first(results, summary, per_replicate, notes, chance: str):
    """The Models section and the tables without model-quality rows; a model at chance is taken
    out of every ranking (listed apart) unless ``chance`` is ``"rank"``, and a note says so."""
    at_chance = quality_report.at_chance(summary)
    apart = {} if chance == "rank" else at_chance
    listed = "" if chance == "rank" else "; its explanations are listed apart, not ranked"
    notes = [*(notes or ()), *(f"model {m!r} is at chance: {why}{listed}" for m, why in at_chance.items())]
    quality = quality_report.section(summary, per_replicate)
    results, summary = quality_report.without_quality(results), quality_report.without_quality(summary)
    apart_table = quality_report.apart(summary, apart)
    keep = lambda frame: frame[~frame["model"].isin(list(apart))]  # noqa: E731
    if per_replicate is not None:
        per_replicate = keep(quality_report.without_quality(per_replicate))
    return keep(results), keep(summary), per_replicate, notes, quality, apart_table


def render(
    results: pd.DataFrame, summary: pd.DataFrame, title: str = "xaibench leaderboard", seed: int = 0, plots: list[str] | None = None,
    per_replicate: pd.DataFrame | None = None, notes: list[str] | None = None, chance: str = "warn", aggregates: dict | None = None,
    layers: dict | None = None, scores: methods.MethodScores | None = None,
) -> str:
    """The whole leaderboard as markdown (``per_replicate``: the replicates' statistics per cell,
    :func:`xaibench.report.stats.replicate_statistics`, with the metrics' own aggregates; ``notes``:
    warnings shown under the header, e.g. non-finite model outputs). The *Models* section comes
    first; a model at chance is ranked only with ``chance = "rank"``, else its cells are listed apart.
    ``aggregates``: the metrics' own statistics (:func:`xaibench.report.stats.metric_aggregates`),
    which the held-out method table (:mod:`xaibench.report.methods`) computes with; ``layers``:
    model -> layer alias -> module path (the manifest's), said in the header; ``scores``: that
    method table where the caller has made it already (a run, for its CD diagrams)."""
    datasets = ", ".join(sorted(results["dataset"].unique())) if not results.empty else "–"
    models = ", ".join(sorted(results["model"].unique())) if not results.empty else "–"
    n_images = results["image_id"].nunique() if not results.empty else 0
    n_rows = len(results)
    refs = quality_report.references(summary)
    results, summary, per_replicate, notes, quality, apart_table = _models_first(results, summary, per_replicate, notes, chance)
    out = [
        f"# {title}",
        "",
        f"Dataset: {datasets} · model: {models} · images: {n_images} · rows: {n_rows}",
        "",
        "Means with 95% bootstrap confidence intervals over images; `p vs best` is the paired Wilcoxon signed-rank",
        "test against the best explainer of the same model, layer and threshold, `p vs #1` the same test against",
        "the first row of the ranking, both Holm-corrected for the comparisons made (`*`: p < 0.05, a real difference).",
        *_replicate_line(results),
        *_layer_alias_line(layers),
        *_input_layer_line(results),
        *[line for note in notes or () for line in ("", f"> ⚠ {note}.")],
    ]
    sections = [
        ("Models", quality),
        ("Methods at settings chosen on held-out images", methods.section(method_scores(results, seed, aggregates) if scores is None else scores, plots, refs)),
        ("Best method per perturbation mode and threshold", best_per_mode(summary)),
        ("Faithfulness ranking by IoU drop", iou_drop_ranking(results, seed)),
        ("Layer comparison", layer_comparison(summary)),
        ("Rankings per metric (exploratory)", rankings(summary[summary["metric"] != SANITY_METRIC], results, refs=refs)),
        ("Ranking stability across replicates", stability_section(results, per_replicate)),
        ("Best threshold per method", best_thresholds(results, seed, aggregates)),
        ("Sanity check: model randomisation", sanity_table(summary)),
        ("Explanations of models at chance (not ranked)", apart_table),
    ]
    for name, body in sections:
        if body:
            out += ["", f"## {name}", "", body]
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots if not Path(p).name.startswith("cd_")]
    return "\n".join(out) + "\n"
