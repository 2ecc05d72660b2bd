"""The closing table a run prints (:mod:`xaibench.report.console`)."""

import pandas as pd

from xaibench.report import console as report


def _summary_row(**kw):
    row = dict(dataset="d", model="m", explainer="grad_cam", layer="decoder1", threshold="0.1", perturbation="background_only", metric="confidence", mean=0.25, ci_low=0.2, ci_high=0.3, direction="lower")
    return {**row, **kw}


def _columns(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if "explainer" in line)
    return [c.strip() for c in line.strip("┃ ").split("┃")]


def test_closing_table_leaves_out_columns_that_say_nothing_and_keeps_numbers_whole(monkeypatch):
    from rich.console import Console

    narrow = Console(width=80, force_terminal=False, color_system=None)
    monkeypatch.setattr(report, "console", narrow)
    one_model = pd.DataFrame([_summary_row(), _summary_row(metric="iou_drop", mean=-0.5, ci_low=-0.61, ci_high=-0.42)])
    with narrow.capture() as cap:
        report.print_top(one_model)
    text = cap.get()
    header = _columns(text)
    assert "mode" in header and "thr" in header and "model" not in header
    assert "-0.500 [-0.610, -0.420]" in text
    long_names = pd.DataFrame([
        _summary_row(model="ecsplain-layer_cam", explainer="layer_cam", layer="mean(c1, conv2, conv3, conv4, conv5)", threshold="", perturbation="", metric="localization_f1_with_a_long_name", mean=0.61, ci_low=0.55, ci_high=0.67, direction="higher"),
        _summary_row(model="fcn", explainer="", layer="", threshold="", perturbation="", metric="classification_accuracy", mean=0.984, ci_low=0.953, ci_high=1.0, direction="higher"),
    ])
    with narrow.capture() as cap:
        report.print_top(long_names)
    text = cap.get()
    header = _columns(text)
    assert "model" in header and "mode" not in header and "thr" not in header
    assert "0.610 [0.550, 0.670]" in text and "0.984 [0.953, 1.000]" in text and "(model)" in text
    assert "…" not in text  # nothing cut off: long names fold onto more lines
