"""PNG plots next to the leaderboard: metric-versus-threshold curves and a gallery of maps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from xaibench.config.vocabulary import MODE_LABELS, NOT_RANKED, SANITY_METRIC, higher_is_better  # noqa: E402
from xaibench.runs.results import REPLICATE_COLUMNS, atomic_write  # noqa: E402

#: a plot title per mode (cells without a perturbation are plotted as one more)
MODE_TITLES = {**MODE_LABELS, "": "no perturbation"}


def _save(fig, path: Path) -> None:
    """A PNG at 110 dpi, compressed at zlib level 1: about 7 % larger than the default level's,
    written four times faster (encoding was half of drawing a run's plots)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", pil_kwargs={"compress_level": 1}))
    plt.close(fig)


LAYER_STYLES = ("-", "--", ":", "-.")


def _line_looks(block: pd.DataFrame) -> tuple[dict, dict]:
    """A colour per explainer (tab10, or tab20 past ten) and a line style per layer, so one
    method's layers share a colour and no two methods do."""
    explainers = sorted(block["explainer"].unique())
    cmap = plt.get_cmap("tab10" if len(explainers) <= 10 else "tab20")
    colour = {e: cmap(i % cmap.N) for i, e in enumerate(explainers)}
    style = {l: LAYER_STYLES[i % len(LAYER_STYLES)] for i, l in enumerate(sorted(block["layer"].unique()))}
    return colour, style


def threshold_curves(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per metric: mean vs threshold, a line per explainer x layer, a panel per mode."""
    s = summary[pd.to_numeric(summary["threshold"], errors="coerce").notna()].copy()
    s["t"] = pd.to_numeric(s["threshold"])
    paths = []
    for metric, block in s.groupby("metric"):
        modes = sorted(block["perturbation"].unique())
        fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 3.4), squeeze=False, sharey=True)
        colour, style = _line_looks(block)  # one legend for every panel: the same looks in each
        for ax, mode in zip(axes[0], modes):
            mb = block[block["perturbation"] == mode]
            for (e, l), g in mb.groupby(["explainer", "layer"]):
                g = g.sort_values("t")
                ax.plot(g["t"], g["mean"], marker="o", ms=3, label=f"{e} @ {l}", color=colour[e], linestyle=style[l])
                ax.fill_between(g["t"], g["ci_low"], g["ci_high"], alpha=0.12, color=colour[e])
            ax.set_title(f"{MODE_TITLES.get(mode, mode)} ({mb['direction'].iloc[0]} is better)", fontsize=9)
            ax.set_xlabel("threshold")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(metric)
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        path = out_dir / f"threshold_{metric}.png"
        _save(fig, path)
        paths.append(path)
    return paths


def _rgb(image: torch.Tensor) -> np.ndarray:
    """An image [C, H, W] as RGB [H, W, 3] in [0, 1]: its first three channels, or its first as gray."""
    img = np.clip(image.detach().float().cpu().permute(1, 2, 0).numpy(), 0, 1)
    return img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, axis=-1)


def _colour(values: torch.Tensor, cmap: str) -> np.ndarray:
    """A map [H, W] in [0, 1] through a colormap, as RGB [H, W, 3]."""
    return plt.get_cmap(cmap)(np.clip(values.detach().float().cpu().numpy(), 0, 1))[..., :3]


def gallery(
    images: torch.Tensor, truth: torch.Tensor | None, maps: dict[tuple[str, str], torch.Tensor], path: Path, n: int = 4,
    extras: dict[str, torch.Tensor] | None = None,
) -> Path:
    """A grid: a row per image (image, ground truth, each of ``extras`` (title -> images
    [B, C, H, W] an explainer made, e.g. a CycleGAN's G(x)), then each explainer x layer map),
    drawn as one mosaic in one axes (an axes per tile cost about a second a run)."""
    keys, extras = sorted(maps), dict(extras or {})
    n = min(n, images.shape[0])
    h, w = images.shape[-2:]
    titles = ["image", "ground truth", *extras, *(f"{e}\n{l}" for e, l in keys)]
    gap = max(2, w // 16)
    mosaic = np.ones((n * (h + gap) - gap, len(titles) * (w + gap) - gap, 3))
    for i in range(n):
        tiles = [_rgb(images[i]), _colour(truth[i].float(), "gray") if truth is not None else np.ones((h, w, 3))]
        tiles += [_rgb(F.interpolate(extra[i : i + 1].float(), size=(h, w))[0]) for extra in extras.values()]
        tiles += [_colour(maps[k][i], "jet") for k in keys]
        for j, tile in enumerate(tiles):
            mosaic[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = tile
    fig, ax = plt.subplots(figsize=(1.6 * len(titles), 1.7 * n))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for j, title in enumerate(titles):
        ax.text(j * (w + gap) + w / 2, -gap, title, ha="center", va="bottom", fontsize=7 if j < 2 else 6)
    _save(fig, path)
    return path


def replicate_spread(per_replicate: pd.DataFrame, out_dir: Path, top: int = 10) -> list[Path]:
    """With replicates, one PNG per metric: its ranking's top entries (best at the top), a dot
    per replicate's statistic and a bar at their mean, a panel per mode; so one sees whether
    the leader's lead is larger than what another training run moves it by."""
    per_replicate = per_replicate[~per_replicate["metric"].isin(NOT_RANKED)]  # the Models section shows them
    if per_replicate.empty or per_replicate.groupby(REPLICATE_COLUMNS).ngroups < 2:
        return []
    paths = []
    for metric, block in per_replicate[per_replicate["metric"] != SANITY_METRIC].groupby("metric"):
        modes = sorted(block["perturbation"].unique())
        fig, axes = plt.subplots(1, len(modes), figsize=(4.6 * len(modes), 0.32 * top + 1.2), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            mb = block[block["perturbation"] == mode]
            higher = higher_is_better(mb["direction"].iloc[0])
            entries = mb.groupby(["model", "explainer", "layer", "threshold"])["value"].mean().dropna()
            entries = entries.sort_values(ascending=not higher).head(top)
            for y, (entry, mean) in enumerate(entries.items()):
                vals = mb[(mb[["model", "explainer", "layer", "threshold"]] == pd.Series(entry, index=["model", "explainer", "layer", "threshold"])).all(axis=1)]["value"]
                ax.scatter(vals, np.full(len(vals), y), s=14, alpha=0.7, color="tab:blue", zorder=2)
                ax.plot([mean, mean], [y - 0.3, y + 0.3], color="black", lw=1.5, zorder=3)
            many = mb["model"].nunique() > 1
            ax.set_yticks(range(len(entries)))
            ax.set_yticklabels(
                [(f"{m} / " if many else "") + (e or "(model)") + (f" @ {l}" if l else "") + (f" @ {t}" if t else "") for m, e, l, t in entries.index], fontsize=7
            )
            ax.invert_yaxis()
            ax.set_title(f"{MODE_TITLES.get(mode, mode)} ({'higher' if higher else 'lower'} is better)", fontsize=9)
            ax.set_xlabel(f"{metric}: dot = one replicate, bar = mean")
            ax.grid(alpha=0.3, axis="x")
        path = out_dir / f"replicates_{metric}.png"
        _save(fig, path)
        paths.append(path)
    return paths


def cd_diagrams(scores, out_dir: Path) -> list[Path]:
    """One critical-difference diagram per metric and mode of the held-out method table
    ``scores`` (:func:`xaibench.report.methods.method_scores` of the ranked rows,
    :func:`xaibench.report.models.ranked_results`), where its Friedman test can run."""
    from xaibench.report.method_tests import cd_diagram
    from xaibench.report.methods import blocks

    paths = []
    for blk in blocks(scores):
        if blk.test is not None:
            title = f"{blk.metric}" + (f" — {MODE_TITLES.get(blk.perturbation, blk.perturbation)}" if blk.perturbation else "")
            paths.append(cd_diagram(blk.test, title, out_dir / blk.cd_name))
    return paths
