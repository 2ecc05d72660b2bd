"""The statistics that tie the ``landslides`` proxy to the real Bijie data, measured on both.

``python -m xaibench_weaksup.stats ROOT`` reads a Bijie folder through the ``bijie`` loader
(every image, resized to ``--size``), draws ``--tiles`` tiles of the proxy at the same size, and
prints one table: each statistic on the proxy, on the real folder, and the published figure.
Without ROOT it prints the proxy and the published figures only.

Per image it measures the label, the landslide's share of the image, its connected components
(8-connected), how far the mask's bounding box is from the image centre and how unequal its
margins are (fractions of the side), and two colour features: mean brightness and mean soil
index (R - G) / (R + G). Over the images: the positive share, the components per positive image,
the share's mean / median / p10 / p90 / range, the centring, and the image-level AUROC of the
better colour feature (how far a colour rule alone separates the classes; the CNN probes are in
``plugins/weaksup/probes``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from xaibench.plugin import Sample, UserError

#: the real Bijie figures (issue 25's table: Ji et al. 2020 and public loaders of the dataset)
PUBLISHED = {
    "images": "2773",
    "positive share": "27.8 % (770 / 2773)",
    "components per positive image": "1 (one landslide per crop)",
    "positive images with one component": "100 %",
    "box centre offset (of the side)": "0 (centred crop)",
    "margin inequality (of the side)": "0 (equal margins)",
    "landslide share: mean": "about 8-10 %",
    "landslide share: median": "7 %",
    "landslide share: p10 / p90": "3.4 % / 15 %",
    "landslide share: range": "1 % - 26 %",
    "colour-feature AUROC (label)": "-",
}
_EIGHT = np.ones((3, 3), dtype=bool)


def image_stats(sample: Sample) -> dict[str, float]:
    """What one image contributes (NaN for the mask statistics of an image without landslide)."""
    rgb = sample.image[:3].double().numpy()
    mask = sample.mask.numpy() > 0
    out = {
        "label": float(sample.label if sample.label is not None else mask.any()),
        "brightness": float(rgb.mean()),
        "soil": float(((rgb[0] - rgb[1]) / (rgb[0] + rgb[1] + 1e-6)).mean()),
        "share": float(mask.mean()),
        "components": float("nan"),
        "offset": float("nan"),
        "margins": float("nan"),
    }
    if mask.any():
        h, w = mask.shape
        ys, xs = np.nonzero(mask)
        out["components"] = float(ndimage.label(mask, structure=_EIGHT)[1])
        out["offset"] = float(max(abs((ys.min() + ys.max()) / 2 - (h - 1) / 2) / h, abs((xs.min() + xs.max()) / 2 - (w - 1) / 2) / w))
        out["margins"] = float(max(abs(ys.min() - (h - 1 - ys.max())) / h, abs(xs.min() - (w - 1 - xs.max())) / w))
    return out


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC of ``scores`` for labels 1 against 0 (ties half); NaN with one class."""
    pos, neg = int(labels.sum()), int((1 - labels).sum())
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def summarise(samples: Iterable[Sample]) -> dict[str, float]:
    """The table's statistics over ``samples`` (numbers; :func:`format_stats` writes them)."""
    rows = [image_stats(s) for s in samples]
    if not rows:
        raise UserError("stats: no images to measure")
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    labels = col["label"]
    pos = labels == 1
    share = col["share"][pos]
    separability = max(max(a, 1 - a) for a in (auroc(col["brightness"], labels), auroc(col["soil"], labels)))
    q = (lambda p: float(np.quantile(share, p))) if len(share) else (lambda p: float("nan"))
    return {
        "images": float(len(rows)),
        "positive share": float(pos.mean()),
        "components per positive image": float(np.mean(col["components"][pos])) if pos.any() else float("nan"),
        "positive images with one component": float(np.mean(col["components"][pos] == 1)) if pos.any() else float("nan"),
        "box centre offset (of the side)": float(np.mean(col["offset"][pos])) if pos.any() else float("nan"),
        "margin inequality (of the side)": float(np.mean(col["margins"][pos])) if pos.any() else float("nan"),
        "landslide share: mean": float(share.mean()) if len(share) else float("nan"),
        "landslide share: median": q(0.5),
        "landslide share: p10 / p90": (q(0.1), q(0.9)),  # type: ignore[dict-item]
        "landslide share: range": (float(share.min()), float(share.max())) if len(share) else (float("nan"),) * 2,  # type: ignore[dict-item]
        "colour-feature AUROC (label)": separability,
        "_components max": float(np.nanmax(col["components"])) if pos.any() else float("nan"),
    }


def format_stats(stats: dict) -> dict[str, str]:
    """The statistics as the table's text (percentages where they are shares)."""
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    out = {}
    for key, value in stats.items():
        if key.startswith("_"):
            continue
        if key == "images":
            out[key] = f"{int(value)}"
        elif key.startswith("landslide share") or key in ("positive share", "positive images with one component"):
            out[key] = " / ".join(pct(v) for v in value) if isinstance(value, tuple) else pct(value)
            if key.endswith("range"):
                out[key] = out[key].replace(" / ", " - ")
        elif key == "components per positive image":
            out[key] = f"{value:.2f} (max {int(stats['_components max'])})" if value == value else "-"
        else:
            out[key] = f"{value:.3f}"
    return out


def proxy_samples(size: int, tiles: int, seed: int) -> Sequence[Sample]:
    """``tiles`` tiles of the default proxy at ``size`` (its test split)."""
    from xaibench_weaksup.landslides import Landslides

    return Landslides(size=size, n_train=0, n_val=0, n_test=tiles, seed=seed).split("test")


def real_samples(root: str, size: int) -> list[Sample]:
    """Every image of the Bijie folder ``root`` through the ``bijie`` loader, at ``size``."""
    from xaibench_weaksup.bijie import Bijie

    ds = Bijie(root=root, size=size, test_fraction=0.0, val_fraction=0.0)
    return list(ds.split("train"))


def table(columns: dict[str, dict[str, str]], caption: str | None = None):
    """A rich table: one row per statistic, one column per source."""
    from rich.table import Table

    out = Table(title="landslide statistics: proxy and real Bijie", caption=caption)
    out.add_column("statistic")
    for name in columns:
        out.add_column(name, justify="right")
    for key in PUBLISHED:
        out.add_row(key, *(col.get(key, "-") for col in columns.values()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xaibench_weaksup.stats", description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", help="a Bijie folder in its published layout (optional)")
    parser.add_argument("--size", type=int, default=64, help="image side for both (default 64, the benchmark's)")
    parser.add_argument("--tiles", type=int, default=400, help="proxy tiles to draw (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="the proxy's seed (default 0)")
    args = parser.parse_args(argv)
    from rich.console import Console

    try:
        columns = {f"proxy ({args.tiles} tiles)": format_stats(summarise(proxy_samples(args.size, args.tiles, args.seed)))}
        if args.root:
            columns["real Bijie"] = format_stats(summarise(real_samples(args.root, args.size)))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    columns["published (Ji et al. 2020)"] = PUBLISHED
    caption = f"images at {args.size} x {args.size}" + (f"; real Bijie: {args.root}" if args.root else "")
    Console(width=160).print(table(columns, caption))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
