import pandas as pd
import torch
from PIL import Image

from xaibench.report.plots import gallery, threshold_curves


def test_threshold_curves_and_gallery_are_pngs(tmp_path):
    rows = []
    for e in ("a", "b"):
        for t in ("0.1", "0.2", "otsu"):
            rows.append(dict(model="m", explainer=e, layer="l", threshold=t, perturbation="background_only", metric="confidence", mean=0.5, ci_low=0.4, ci_high=0.6, direction="lower"))
    paths = threshold_curves(pd.DataFrame(rows), tmp_path)
    assert [p.name for p in paths] == ["threshold_confidence.png"]
    assert Image.open(paths[0]).size[0] > 200
    g = gallery(torch.rand(2, 3, 16, 16), torch.zeros(2, 16, 16), {("a", "l"): torch.rand(2, 16, 16)}, tmp_path / "g.png")
    w, h = Image.open(g).size
    assert w > h > 50


def test_replicate_spread_is_drawn_only_with_replicates(tmp_path):
    from xaibench.report.plots import replicate_spread

    rows = [
        dict(dataset="d", model="m", explainer=e, layer="l", threshold="0.1", perturbation="", metric="iou_drop", fold="", seed=s, value=v + s, direction="lower")
        for e, v in (("a", 0.0), ("b", 1.0)) for s in (0, 1, 2)
    ]
    df = pd.DataFrame(rows)
    (path,) = replicate_spread(df, tmp_path)
    assert path.name == "replicates_iou_drop.png" and Image.open(path).size[0] > 200
    assert replicate_spread(df[df["seed"] == 0], tmp_path / "one") == []


def test_curves_give_each_method_its_own_colour_and_each_layer_its_own_style():
    from xaibench.report.plots import _line_looks

    rows = [dict(explainer=f"m{i:02d}", layer=layer) for i in range(12) for layer in ("decoder1", "decoder2")]
    colour, style = _line_looks(pd.DataFrame(rows))
    assert len(set(colour.values())) == 12  # past tab10's ten, no colour repeats
    assert style["decoder1"] != style["decoder2"]
