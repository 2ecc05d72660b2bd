"""Replicates: the (fold, training seed) pairs a benchmark is run over, and each one's data.

``[run] folds = K`` splits the dataset's fold pool (the splits its ``fold_splits`` names,
e.g. train + test) into K stratified folds; replicate k trains every model on the other K - 1
folds and scores it on fold k, through a :class:`FoldView` that a model plugin sees as an
ordinary dataset (its ``split("train")`` is the training folds). ``[run] seeds = [..]``
trains every model once per seed. Folds and seeds combine: K x len(seeds) replicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xaibench.config.hashing import stable_hash as _hash
from xaibench.errors import UserError
from xaibench.registry.contracts import check_first_samples

#: what a replicate's rows carry in the tidy table's ``fold`` column when there are no folds
NO_FOLD = ""


@dataclass(frozen=True)
class Replicate:
    """One training of every model: a fold (None: no folds) and a training seed."""

    fold: int | None
    seed: int

    @property
    def fold_label(self) -> str:
        """The ``fold`` column's value: the fold number as text, or empty without folds."""
        return NO_FOLD if self.fold is None else str(self.fold)

    def describe(self) -> str:
        return ("" if self.fold is None else f"fold {self.fold}, ") + f"seed {self.seed}"


def replicates(folds: int, seeds: Sequence[int], benchmark_seed: int) -> list[Replicate]:
    """Every (fold, seed) pair, fold-major; one replicate (no fold, the benchmark seed) when unused."""
    fold_ids: list[int | None] = list(range(folds)) if folds else [None]
    return [Replicate(f, s) for f in fold_ids for s in (list(seeds) or [benchmark_seed])]


def stratum(sample) -> int:
    """What a fold split is stratified by: the image label, else whether the mask has foreground."""
    return int(sample.label) if sample.label is not None else int(bool((sample.mask > 0).any()))


def stratified_folds(strata: Sequence[int], k: int, seed: int) -> list[list[int]]:
    """Indices 0..n-1 dealt into ``k`` folds, stratum by stratum in a seeded random order.

    Dealing round-robin, and carrying on from the fold where the previous stratum stopped,
    makes every fold's count of each stratum differ by at most one from another's, and the
    fold sizes too. Each fold's indices are sorted.
    """
    if k < 2:
        raise ValueError("k must be >= 2")
    folds: list[list[int]] = [[] for _ in range(k)]
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata)
    at = 0
    for value in sorted(set(strata.tolist())):
        members = np.flatnonzero(strata == value)
        for i in rng.permutation(members):
            folds[at].append(int(i))
            at = (at + 1) % k
    return [sorted(f) for f in folds]


def fold_splits(dataset, source: str) -> tuple[str, ...]:
    """The splits ``dataset`` draws folds from, or a user error that says it cannot do folds."""
    splits = getattr(dataset, "fold_splits", None)
    if not splits:
        name = getattr(dataset, "name", type(dataset).__name__)
        raise UserError(
            f"{source}: run.folds: dataset {name!r} cannot do folds (it declares no fold_splits, the splits to draw folds from); "
            "remove run.folds or use a dataset that has them"
        )
    return tuple(splits)


def fold_pool(dataset, source: str) -> list:
    """The samples folds are drawn from: the dataset's ``fold_splits``, in order, with unique ids."""
    splits = fold_splits(dataset, source)
    name = getattr(dataset, "name", type(dataset).__name__)
    pool, seen = [], {}
    for split in splits:
        for sample in dataset.split(split):
            if sample.image_id in seen:
                raise UserError(f"{source}: run.folds: dataset {name!r} has image id {sample.image_id!r} in both {seen[sample.image_id]!r} and {split!r}; folds need unique ids")
            seen[sample.image_id] = split
            pool.append(sample)
    return pool


class _Subset(Sequence):
    def __init__(self, pool: Sequence, indices: list[int]):
        self._pool, self._indices = pool, indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._pool[j] for j in self._indices[i]]
        return self._pool[self._indices[i]]


class FoldView:
    """The dataset as replicate ``fold`` of a K-fold split sees it.

    ``split("train")`` is the pool without fold ``fold``, ``split("test")`` the fold itself and
    ``split("val")`` is empty (a model plugin that validates on "val" gets nothing from the
    held-out fold). ``channel_mean`` is the mean of the training folds' images. Everything else
    (``num_classes``, a plugin's own attributes) is the wrapped dataset's.
    """

    def __init__(self, dataset, pool: Sequence, folds: list[list[int]], fold: int, mean_images: int = 64):
        self.dataset, self.fold, self.k = dataset, fold, len(folds)
        self.name = getattr(dataset, "name", type(dataset).__name__)
        held = set(folds[fold])
        self._splits = {
            "train": _Subset(pool, [i for i in range(len(pool)) if i not in held]),
            "val": _Subset(pool, []),
            "test": _Subset(pool, folds[fold]),
        }
        self._mean_images = mean_images
        self._mean: torch.Tensor | None = None

    def __getattr__(self, name: str):
        if name == "dataset":  # not yet set (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def split(self, name: str) -> Sequence:
        if name not in self._splits:
            raise UserError(f"split {name!r} is not one of train, val, test (fold {self.fold} of {self.k} of dataset {self.name!r})")
        return self._splits[name]

    def channel_mean(self) -> torch.Tensor:
        if self._mean is None:
            train = self._splits["train"]
            n = min(self._mean_images, len(train))
            self._mean = torch.stack([train[i].image.float().mean(dim=(1, 2)) for i in range(n)]).mean(0)
        return self._mean.clone()

    def __repr__(self) -> str:
        return f"FoldView({self.dataset!r}, fold={self.fold}, k={self.k})"


class ScoredSamples(Sequence):
    """The first ``n`` samples of a split, read from it when asked and not held (a run's memory
    must not grow with its images: a 512 x 512 tile and its mask are about 5 MB), with their
    ids read once, up front. A split that memoises its samples (generated data) keeps them anyway."""

    def __init__(self, split: Sequence, n: int):
        self._split, self._n = split, n
        self.image_ids = [split[i].image_id for i in range(n)]

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._split[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(f"scored sample {i} out of range (len {self._n})")
        return self._split[i % self._n]


@dataclass
class ReplicateData:
    """What one replicate trains on and scores: the dataset model plugins see (the dataset, or
    its :class:`FoldView`), that dataset's cache key, and the samples scored (read per batch;
    a list where they travel decoded, to Ray actors)."""

    replicate: Replicate
    dataset: object
    dataset_key: str
    samples: Sequence

    @property
    def image_ids(self) -> list[str]:
        """The scored samples' ids, without reading them again."""
        known = getattr(self.samples, "image_ids", None)
        return known if known is not None else [s.image_id for s in self.samples]


def replicate_data(config, dataset, base_key: str) -> list[ReplicateData]:
    """The data of every replicate of ``config`` (``[dataset] split`` / ``n_images`` applied to
    the scored images; with folds, ``n_images`` limits each held-out fold)."""
    src, limit = config.source, config.n_images
    check_first_samples(dataset, config.dataset.name, tuple(dict.fromkeys(("train", config.split))), src)
    cut = lambda s: ScoredSamples(s, len(s) if not limit else min(limit, len(s)))  # noqa: E731
    reps = replicates(config.run.folds, config.run.seeds, config.seed)
    if not config.run.folds:
        try:
            samples = cut(dataset.split(config.split))
        except (KeyError, IndexError) as exc:
            raise UserError(f"{src}: dataset.split = {config.split!r}: {exc}") from exc
        if not samples:
            raise UserError(f"{src}: dataset {config.dataset.name!r} has no images in split {config.split!r}")
        return [ReplicateData(r, dataset, base_key, samples) for r in reps]
    pool = fold_pool(dataset, src)
    k = config.run.folds
    if len(pool) < k:
        raise UserError(f"{src}: run.folds = {k}: dataset {config.dataset.name!r} has only {len(pool)} images in {', '.join(dataset.fold_splits)}")
    folds = stratified_folds([stratum(s) for s in pool], k, config.seed)
    ids = _hash({"ids": [s.image_id for s in pool]})
    views = [FoldView(dataset, pool, folds, f) for f in range(k)]
    keys = [_hash({"dataset": base_key, "folds": k, "fold": f, "fold_seed": config.seed, "pool": ids}) for f in range(k)]
    return [ReplicateData(r, views[r.fold], keys[r.fold], cut(views[r.fold].split("test"))) for r in reps]
