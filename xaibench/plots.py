"""PNG plots next to the leaderboard: metric-versus-threshold curves and a gallery of maps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from xaibench.results import atomic_write  # noqa: E402

MODE_SHORT = {"background_only": "M1 background only", "highlighted_only": "M2 highlighted only", "highlighted_plus_target": "M3 highlighted + target", "": "no perturbation"}


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def threshold_curves(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per metric: mean vs threshold, a line per explainer x layer, a panel per mode."""
    s = summary[pd.to_numeric(summary["threshold"], errors="coerce").notna()].copy()
    s["t"] = pd.to_numeric(s["threshold"])
    paths = []
    for metric, block in s.groupby("metric"):
        modes = sorted(block["perturbation"].unique())
        fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 3.4), squeeze=False, sharey=True)
        for ax, mode in zip(axes[0], modes):
            mb = block[block["perturbation"] == mode]
            for (e, l), g in mb.groupby(["explainer", "layer"]):
                g = g.sort_values("t")
                line = ax.plot(g["t"], g["mean"], marker="o", ms=3, label=f"{e} @ {l}", linestyle="-" if l == sorted(mb["layer"].unique())[0] else "--")
                ax.fill_between(g["t"], g["ci_low"], g["ci_high"], alpha=0.12, color=line[0].get_color())
            ax.set_title(f"{MODE_SHORT.get(mode, mode)} ({mb['direction'].iloc[0]} is better)", fontsize=9)
            ax.set_xlabel("threshold")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(metric)
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        path = out_dir / f"threshold_{metric}.png"
        _save(fig, path)
        paths.append(path)
    return paths


def gallery(images: torch.Tensor, truth: torch.Tensor | None, maps: dict[tuple[str, str], torch.Tensor], path: Path, n: int = 4) -> Path:
    """A grid: a row per image (image, ground truth, then each explainer x layer map)."""
    keys = sorted(maps)
    n = min(n, images.shape[0])
    cols = 2 + len(keys)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.7 * n), squeeze=False)
    for i in range(n):
        img = images[i].detach().cpu().permute(1, 2, 0).numpy()
        img = img[..., :3] if img.shape[-1] >= 3 else img[..., 0]
        axes[i][0].imshow(np.clip(img, 0, 1), cmap=None if img.ndim == 3 else "gray")
        if truth is not None:
            axes[i][1].imshow(truth[i].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        for j, k in enumerate(keys):
            axes[i][2 + j].imshow(maps[k][i].detach().cpu().numpy(), cmap="jet", vmin=0, vmax=1)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("image", fontsize=7)
    axes[0][1].set_title("ground truth", fontsize=7)
    for j, (e, l) in enumerate(keys):
        axes[0][2 + j].set_title(f"{e}\n{l}", fontsize=6)
    _save(fig, path)
    return path
