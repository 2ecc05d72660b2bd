"""Perturbed inputs batched in chunks against one forward per perturbed input (same scores)."""

from __future__ import annotations

import pytest
import torch

from xaibench.engine.perturbation import MODES, PerturbationBatch, keep_mask, perturb

from .conftest import RESULTS

THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5]
N_MAPS = 4  # explainer x layer pairs
STORE: dict[str, torch.Tensor] = {}


@pytest.fixture(scope="module")
def requests(images):
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(images.shape[0], 1, 8, 8, generator=g) for _ in range(N_MAPS)]
    maps = [torch.nn.functional.interpolate(m, size=images.shape[-2:], mode="bilinear")[:, 0] for m in maps]
    region = maps[0] > 0.6
    return [(i, t, mode, keep_mask(mode, m >= t, region)) for i, m in enumerate(maps) for t in THRESHOLDS for mode in MODES]


def test_one_forward_per_input(benchmark, unet, images, requests):
    fill = torch.zeros_like(images)

    @torch.no_grad()
    def one_by_one():
        out = []
        for _, _, _, keep in requests:
            for b in range(images.shape[0]):
                out.append(unet(perturb(images[b : b + 1], keep[b : b + 1], fill[b : b + 1])))
        return torch.cat(out)

    STORE["single"] = benchmark.pedantic(one_by_one, rounds=1, iterations=1)
    RESULTS["perturbations one at a time  s"] = benchmark.stats.stats.mean


@pytest.mark.parametrize("chunk", [16])
def test_batched_in_chunks(benchmark, unet, images, requests, chunk):
    fill = torch.zeros_like(images)

    @torch.no_grad()
    def batched():
        batch = PerturbationBatch(images, fill)
        for i, t, mode, keep in requests:
            batch.add((i, t, mode), keep)
        batch.run(unet, chunk)
        return torch.cat([batch.result((i, t, mode)) for i, t, mode, _ in requests])

    STORE["batched"] = benchmark.pedantic(batched, rounds=1, iterations=1)
    RESULTS[f"perturbations in chunks of {chunk}   s"] = benchmark.stats.stats.mean


def test_batched_scores_equal_single():
    if len(STORE) < 2:
        pytest.skip("needs both timings of this module")
    diff = float((STORE["batched"] - STORE["single"]).abs().max())
    RESULTS["perturbation |logit difference|"] = diff
    single = RESULTS["perturbations one at a time  s"]
    batched = [v for k, v in RESULTS.items() if k.startswith("perturbations in chunks")][0]
    RESULTS["perturbation batching speed-up (x)"] = single / batched
    assert diff < 1e-4
