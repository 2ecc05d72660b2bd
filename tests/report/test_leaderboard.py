import pandas as pd

from xaibench.report.leaderboard import render
from xaibench.report.stats import summarize


def _results():
    rows = []
    vals = {"score_cam": -0.5, "grad_cam": -0.3, "eigen_cam": 0.05}
    for e, v in vals.items():
        for layer, shift in (("decoder1", 0.0), ("decoder2", 0.1)):
            for i in range(8):
                for t in ("0.1", "0.2"):
                    rows.append(dict(dataset="d", model="m", explainer=e, layer=layer, threshold=t, perturbation="background_only", metric="iou_drop", image_id=f"i{i}", value=v + shift + 0.01 * i, direction="lower"))
                    rows.append(dict(dataset="d", model="m", explainer=e, layer=layer, threshold=t, perturbation="background_only", metric="confidence", image_id=f"i{i}", value=0.5 + v + 0.01 * i, direction="lower"))
                    rows.append(dict(dataset="d", model="m", explainer=e, layer=layer, threshold=t, perturbation="background_only", metric="entropy", image_id=f"i{i}", value=0.3, direction="lower"))
    return pd.DataFrame(rows)


def test_leaderboard_has_the_three_analyses_ranked_in_the_declared_direction():
    df = _results()
    md = render(df, summarize(df), "t")
    assert "## Best method per perturbation mode and threshold" in md
    assert "## Faithfulness ranking by IoU drop" in md and "## Layer comparison" in md
    iou = md.split("## Faithfulness ranking by IoU drop")[1].split("##")[0]
    lines = [l for l in iou.splitlines() if l.startswith("| 1 ") or l.startswith("| 6 ")]
    assert "m | score_cam | decoder1" in lines[0] and "m | eigen_cam | decoder2" in lines[1]
    m1 = md.split("## Best method per perturbation mode")[1].split("M1 background only")[1].split("###")[0]
    assert "| 0.1 | m | score_cam | decoder1 |" in m1
    layer = md.split("## Layer comparison")[1].split("##")[0]
    assert "| m | grad_cam | iou_drop (M1) | " in layer and layer.count("decoder1 |") >= 3


def test_the_layer_comparison_leaves_out_a_pixel_attribution_and_its_input_column():
    df = _results()
    saliency = df[(df.explainer == "grad_cam") & (df.layer == "decoder1")].assign(explainer="saliency", layer="input")
    md = render(pd.concat([df, saliency]), summarize(pd.concat([df, saliency])), "t")
    layer = md.split("## Layer comparison")[1].split("##")[0]
    assert "| model | explainer | metric | decoder1 | decoder2 | better |" in layer
    assert "saliency" not in layer and "input" not in layer
    assert "| m | saliency | input |" in md  # still ranked in the other sections
    assert "Layer `input`: a pixel attribution" in md.split("##")[0]
    assert "Layer `input`" not in render(df, summarize(df), "t")  # CAMs only: no such line


def test_sanity_section_flags_insensitive_methods():
    rows = []
    for e, v in (("random", 0.9), ("grad_cam", 0.1)):
        for i in range(5):
            rows.append(dict(dataset="d", model="m", explainer=e, layer="l", threshold="", perturbation="", metric="sanity_rank_correlation", image_id=f"i{i}", value=v, direction="lower"))
    df = pd.DataFrame(rows)
    md = render(df, summarize(df), "t")
    section = md.split("## Sanity check")[1]
    assert "| m | random | l |" in section and "insensitive" in section.split("| m | random")[1].splitlines()[0]
    assert "passes" in section.split("| m | grad_cam")[1].splitlines()[0]


def test_rankings_test_every_row_against_rank_one_across_models():
    """One explainer per model: ``p vs best`` (same model, layer, threshold) has nothing to
    compare, ``p vs #1`` tests each row against the ranking's first row, paired by image."""
    rows = []
    for model, shift in (("good", 0.3), ("close", 0.3), ("bad", 0.0)):
        for i in range(12):
            noise = 0.001 * ((i * 7) % 5) if model == "close" else 0.0
            rows.append(dict(dataset="d", model=model, explainer="cam", layer="l", threshold="0.5", perturbation="", metric="localization_f1", image_id=f"i{i}", value=shift + 0.02 * i + noise, direction="higher"))
    df = pd.DataFrame(rows)
    md = render(df, summarize(df), "t")
    table = md.split("## Rankings per metric")[1].split("### localization_f1")[1]
    assert "p vs best | p vs #1 |" in table
    line = {r.split(" | ")[1]: r for r in table.splitlines() if r.startswith("| ") and " | cam | " in r}
    assert line["close"].startswith("| 1 ") and line["close"].endswith("| best | #1 |")  # the noise puts it first
    # close - good: 9 positive differences, 3 zeros (dropped): exact two-sided p = 2 / 2**9
    assert line["good"].endswith(f"| best | {2 / 2**9:.3f} * |")
    assert line["bad"].split(" | ")[-1].rstrip(" |").endswith("*")


def _sources_spelling(pattern: str, home: str) -> list[str]:
    """Lines of the project's Python sources (core, plugins, benchmarks) outside ``home`` that
    match ``pattern``."""
    import re
    from pathlib import Path

    import xaibench

    root = Path(xaibench.__file__).resolve().parents[1]
    found = []
    for sub in ("xaibench", "plugins", "benchmarks"):
        for path in sorted((root / sub).rglob("*.py")):
            if path.relative_to(root).as_posix() == home:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(pattern, line):
                    found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


def test_perturbation_modes_and_their_labels_have_one_home():
    """Mode names and labels are spelled in xaibench/config/vocabulary.py only; the config, the perturbations,
    the leaderboard, the plots and the closing table import them."""
    from xaibench.config import parse as config
    from xaibench.config import vocabulary as modes
    from xaibench.engine import perturbation as perturb
    from xaibench.registry import contracts
    from xaibench.report import console as report
    from xaibench.report import leaderboard, plots

    assert config.PERTURBATIONS is perturb.MODES is contracts.PERTURBATIONS is modes.MODES
    assert leaderboard.MODE_LABELS is modes.MODE_LABELS and leaderboard.MODE_SHORT is report.MODE_SHORT is modes.MODE_SHORT
    assert modes.MODE_SHORT == {"background_only": "M1", "highlighted_only": "M2", "highlighted_plus_target": "M3"}
    assert plots.MODE_TITLES == {**modes.MODE_LABELS, "": "no perturbation"}
    respelled = r"""M[123] (background|highlighted)|["']M[123]["']|["']background_only["']\s*,\s*["']highlighted_only["']"""
    assert _sources_spelling(respelled, "xaibench/config/vocabulary.py") == []


def test_result_columns_are_spelled_in_results_only():
    from xaibench.report import stats
    from xaibench.runs import results
    from xaibench.runs.results import FIXED_COLUMNS

    assert stats.CELL == results.CELL_COLUMNS == FIXED_COLUMNS[:-2] and stats.REPLICATE is results.REPLICATE_COLUMNS
    respelled = r"""["']fold["'],\s*["']seed["']|["']image_id["'],\s*["']value["']|["']perturbation["'],\s*["']metric["']\]"""
    assert _sources_spelling(respelled, "xaibench/runs/results.py") == []


def test_m3_is_ranked_by_entropy_and_m1_by_confidence():
    from xaibench.report.leaderboard import best_per_mode

    rows = []
    for mode, conf_dir in (("background_only", "lower"), ("highlighted_plus_target", "higher")):
        for e, conf, ent in (("a", 0.9, 0.5), ("b", 0.1, 0.2)):
            for metric, v, d in (("confidence", conf, conf_dir), ("entropy", ent, "lower")):
                rows.append(dict(dataset="d", model="m", explainer=e, layer="l", threshold="0.5", perturbation=mode, metric=metric,
                                 mean=v, ci_low=v, ci_high=v, direction=d))
    md = best_per_mode(pd.DataFrame(rows))
    m1, m3 = md.split("### M3")
    assert "(ranked by confidence, lower is better)" in m1 and "| 0.5 | m | b | l |" in m1  # lowest confidence
    assert "(ranked by entropy, lower is better)" in m3 and "| 0.5 | m | b | l |" in m3  # lowest entropy, not highest confidence (a)


def test_a_background_inclusive_miou_is_shown_beside_the_empty_masks_value_which_is_never_ranked():
    rows = []
    for i in range(8):
        for e, v in (("grad_cam", 0.6), ("random", 0.45)):
            rows.append(dict(dataset="d", model="m", explainer=e, layer="decoder1", threshold="0.5", perturbation="", metric="localization_miou", image_id=f"i{i}", value=v + 0.01 * i, direction="higher"))
        rows.append(dict(dataset="d", model="m", explainer="", layer="", threshold="", perturbation="", metric="empty_mask_miou", image_id=f"i{i}", value=0.47, direction="higher"))
    df = pd.DataFrame(rows)
    md = render(df, summarize(df), "t")
    methods = md.split("## Methods at settings chosen on held-out images")[1].split("\n## ")[0]
    exploratory = md.split("## Rankings per metric (exploratory)")[1].split("\n## ")[0]
    for part in (methods, exploratory):
        assert "The empty mask (no object anywhere) scores 0.4700 [0.4700, 0.4700]" in part
        assert "(model)" not in part  # a reference, not an entry
    assert "empty_mask_miou" not in md  # neither ranked nor shown as a model's quality
    plain = render(_results(), summarize(_results()), "t")
    assert "The empty mask" not in plain  # only beside an mIoU


def test_a_method_table_made_beforehand_is_the_one_the_leaderboard_would_make():
    # what a run does: one method table for its CD diagrams and its leaderboard, of the ranked rows
    from xaibench.report.methods import method_scores
    from xaibench.report.models import at_chance, ranked_results

    good, bad = _results(), _results().assign(model="bad")
    quality = [
        dict(dataset="d", model=m, explainer="", layer="", threshold="", perturbation="", metric=metric, image_id=f"i{i}", value=v, direction="higher")
        for m, iou in (("m", 0.8), ("bad", 0.02)) for i in range(8) for metric, v in (("model_pooled_iou", iou + 0.01 * i), ("model_trivial_iou", 0.06))
    ]
    df = pd.concat([good, bad, pd.DataFrame(quality)], ignore_index=True)
    s = summarize(df)
    assert list(at_chance(s)) == ["bad"]  # so the ranked rows are not all rows
    assert render(df, s, "t", scores=method_scores(ranked_results(df, s), 0)) == render(df, s, "t")
    assert render(df, s, "t", scores=method_scores(df, 0)) != render(df, s, "t")  # the chance model's entries would be ranked
