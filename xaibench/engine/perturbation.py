"""Perturbed inputs for faithfulness metrics, built from binarised maps and batched.

Modes (the grid's ``perturbations`` axis), with ``H`` = map >= threshold:

- ``background_only`` (M1): keep pixels outside H; the highlighted region is removed;
- ``highlighted_only`` (M2): keep H only;
- ``highlighted_plus_target`` (M3): keep H and the target region.

Removed pixels take the fill: ``zero``, ``mean`` (the dataset's channel mean) or ``blur`` (a
Gaussian blur of the image). :class:`PerturbationBatch` collects every perturbed input of an
image batch, computes identical ones once, and forwards them in chunks.
"""

from __future__ import annotations

import torch
from torchvision.transforms.functional import gaussian_blur

from xaibench.config.hashing import content_hash
from xaibench.config.vocabulary import BACKGROUND_ONLY, HIGHLIGHTED_ONLY, HIGHLIGHTED_PLUS_TARGET, MODES


def keep_mask(mode: str, binary: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
    """Pixels [B, H, W] kept by ``mode`` given the binarised map and the target region."""
    if mode == BACKGROUND_ONLY:
        return ~binary
    if mode == HIGHLIGHTED_ONLY:
        return binary
    if mode == HIGHLIGHTED_PLUS_TARGET:
        if region is None:
            raise ValueError("highlighted_plus_target needs a target region")
        return binary | (region > 0)
    raise ValueError(f"unknown perturbation mode {mode!r}; known: {', '.join(MODES)}")


def top_fraction(maps: torch.Tensor, percent: float) -> torch.Tensor:
    """Bool masks [B, H, W]: per image, the ``round(percent / 100 * H * W)`` pixels of highest
    map value (at least one); ties broken by pixel order, row-major, so the area is exact."""
    flat = maps.reshape(maps.shape[0], -1)
    k = max(1, round(flat.shape[1] * percent / 100))
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True).reshape(maps.shape)


def fill_values(images: torch.Tensor, fill: str, channel_mean: torch.Tensor | None = None) -> torch.Tensor:
    """What removed pixels become, [B, C, H, W]."""
    if fill == "zero":
        return torch.zeros_like(images)
    if fill == "mean":
        if channel_mean is None:
            raise ValueError("fill 'mean' needs the dataset's channel mean")
        return channel_mean.to(images)[None, :, None, None].expand_as(images).clone()
    if fill == "blur":
        k = max(3, (min(images.shape[-2:]) // 8) | 1)
        return gaussian_blur(images, kernel_size=[k, k], sigma=k / 3)
    raise ValueError(f"unknown fill {fill!r}")


def perturb(images: torch.Tensor, keep: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    keep = keep[:, None].to(images.dtype)
    return images * keep + fill * (1 - keep)


class PerturbationBatch:
    """Collects perturbed inputs (one per image and request) and forwards each distinct one once:
    the same keep mask on the same image (thresholds, layers or methods that binarise alike), a
    mask that removes everything where the fill is the same for every image (one row for the
    batch), and a mask that keeps everything (the clean input: its logits are ``clean_logits``
    when given, no forward at all)."""

    def __init__(self, images: torch.Tensor, fill: torch.Tensor, clean_logits: torch.Tensor | None = None):
        self.images = images
        self.fill = fill
        self.clean_logits = None if clean_logits is None else clean_logits.detach()
        self._shared_fill = bool(fill.shape[0]) and bool((fill == fill[:1]).all())
        self._rows: dict[tuple[int, str], int] = {}  # (image index or -1, keep-mask hash) -> row
        self._inputs: list[tuple[int, torch.Tensor]] = []
        self._requests: dict[object, list[int]] = {}  # row >= 0: a forwarded input; -1 - i: image i's clean logits
        self.logits: torch.Tensor | None = None

    def add(self, key: object, keep: torch.Tensor) -> None:
        """Request the perturbed batch for ``key`` with keep mask [B, H, W]."""
        flat = keep.reshape(keep.shape[0], -1)
        kept_all, kept_none = flat.all(1).tolist(), (~flat.any(1)).tolist()
        rows = []
        for i, k in enumerate(keep):
            if kept_all[i] and self.clean_logits is not None:
                rows.append(-1 - i)
                continue
            image = -1 if kept_none[i] and self._shared_fill else i  # all fill: the same input for every image
            digest = content_hash(k.cpu().numpy().tobytes())
            row = self._rows.get((image, digest))
            if row is None:
                row = len(self._inputs)
                self._rows[(image, digest)] = row
                self._inputs.append((max(image, 0), k))
            rows.append(row)
        self._requests[key] = rows

    def __contains__(self, key: object) -> bool:
        return key in self._requests

    @property
    def unique(self) -> int:
        """Rows that are forwarded."""
        return len(self._inputs)

    @property
    def requested(self) -> int:
        """Rows the requests name, before de-duplication."""
        return sum(len(r) for r in self._requests.values())

    @torch.no_grad()
    def run(self, forward, chunk_size: int) -> None:
        """Forward every distinct perturbed input, ``chunk_size`` at a time."""
        outs = []
        for s in range(0, len(self._inputs), chunk_size):
            part = self._inputs[s : s + chunk_size]
            idx = torch.tensor([i for i, _ in part], device=self.images.device)
            keep = torch.stack([k for _, k in part]).to(self.images.device)
            outs.append(forward(perturb(self.images[idx], keep, self.fill[idx])))
        if self.clean_logits is not None and any(r < 0 for rows in self._requests.values() for r in rows):
            outs.append(self.clean_logits.to(outs[0]) if outs else self.clean_logits)
        self.logits = torch.cat(outs) if outs else None

    def result(self, key: object) -> torch.Tensor:
        """Logits [B, ...] of the perturbed batch requested as ``key``."""
        assert self.logits is not None, "run() first"
        n = len(self._inputs)  # the clean logits follow the forwarded rows
        index = [r if r >= 0 else n + (-1 - r) for r in self._requests[key]]
        return self.logits[torch.tensor(index, device=self.logits.device)]
