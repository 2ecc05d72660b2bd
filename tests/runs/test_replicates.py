"""Folds and seeds: the fold split, the fold view a model trains on, the config keys."""

import textwrap

import pytest
import torch

from xaibench.config.parse import load_config
from xaibench.datasets.base import Sample
from xaibench.errors import UserError
from xaibench.runs.replicates import FoldView, Replicate, fold_pool, replicates, stratified_folds, stratum


def _samples(labels, prefix="img"):
    return [Sample(torch.full((1, 2, 2), float(i)), torch.zeros(2, 2, dtype=torch.long), f"{prefix}{i}", lab) for i, lab in enumerate(labels)]


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_folds_are_disjoint_cover_the_pool_and_keep_the_label_ratio(k):
    labels = [1] * 13 + [0] * 24 + [2] * 4
    folds = stratified_folds(labels, k, seed=3)
    flat = [i for f in folds for i in f]
    assert sorted(flat) == list(range(len(labels)))  # cover, and no index twice (disjoint)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for value in set(labels):
        counts = [sum(labels[i] == value for i in f) for f in folds]
        assert max(counts) - min(counts) <= 1, (value, counts)


def test_folds_depend_on_the_seed_and_only_on_it():
    labels = [i % 3 == 0 for i in range(30)]
    assert stratified_folds(labels, 3, 0) == stratified_folds(labels, 3, 0)
    assert stratified_folds(labels, 3, 0) != stratified_folds(labels, 3, 1)


def test_stratum_is_the_label_else_whether_the_mask_has_foreground():
    mask = torch.zeros(2, 2, dtype=torch.long)
    assert stratum(Sample(torch.zeros(1, 2, 2), mask, "a", 1)) == 1
    assert stratum(Sample(torch.zeros(1, 2, 2), mask, "a")) == 0
    mask[0, 0] = 1
    assert stratum(Sample(torch.zeros(1, 2, 2), mask, "a")) == 1


def test_a_fold_view_trains_on_the_other_folds_and_tests_on_its_own():
    pool = _samples([0, 1] * 5)
    folds = stratified_folds([s.label for s in pool], 3, 0)
    for f in range(3):
        view = FoldView(object(), pool, folds, f)
        train = {s.image_id for s in view.split("train")}
        test = {s.image_id for s in view.split("test")}
        assert not train & test and train | test == {s.image_id for s in pool}
        assert len(view.split("val")) == 0
        expected = torch.stack([s.image.mean(dim=(1, 2)) for s in view.split("train")]).mean(0)
        assert torch.allclose(view.channel_mean(), expected)
    with pytest.raises(UserError, match="'holdout' is not one of train, val, test"):
        view.split("holdout")


class _NoFolds:
    name = "nofolds"

    def split(self, name):
        return _samples([0, 1])


class _Dup(_NoFolds):
    name = "dup"
    fold_splits = ("train", "test")


def test_a_dataset_that_cannot_do_folds_says_so():
    with pytest.raises(UserError, match="dataset 'nofolds' cannot do folds"):
        fold_pool(_NoFolds(), "b.toml")
    with pytest.raises(UserError, match="image id 'img0' in both 'train' and 'test'"):
        fold_pool(_Dup(), "b.toml")


def test_replicates_combine_folds_and_seeds():
    assert replicates(0, (), 7) == [Replicate(None, 7)]
    assert replicates(2, (0, 1), 7) == [Replicate(0, 0), Replicate(0, 1), Replicate(1, 0), Replicate(1, 1)]
    assert Replicate(None, 7).fold_label == "" and Replicate(3, 0).fold_label == "3"


def _config(tmp_path, run, dataset_extra=""):
    from tests.conftest import TINY_CONFIG

    text = textwrap.dedent(TINY_CONFIG).replace("[run]\n", f"[run]\n{run}\n").replace('n_test = 6\n', f"n_test = 6\n{dataset_extra}")
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("run", "extra", "message"),
    [
        ("folds = 1", "", "run.folds: 1 is not allowed; give K >= 2 folds"),
        ("folds = -2", "", "run.folds: -2 is not allowed"),
        ("seeds = [0, 0]", "", "run.seeds: \\[0, 0\\] repeats a seed"),
        ("seeds = [0, -1]", "", "run.seeds: expected a list of integers >= 0"),
        ("seeds = 3", "", "run.seeds: expected list"),
        ("folds = 3", 'split = "test"\n', "dataset.split: is not used with run.folds"),
    ],
)
def test_bad_replicate_keys_are_user_errors(tmp_path, run, extra, message):
    with pytest.raises(UserError, match=message):
        load_config(_config(tmp_path, run, extra))


def test_folds_are_part_of_the_identity_and_seeds_are_not(tmp_path):
    plain = load_config(_config(tmp_path, ""))
    assert load_config(_config(tmp_path, "seeds = [0, 1]")).identity() == plain.identity()
    assert load_config(_config(tmp_path, "folds = 2")).identity() != plain.identity()


def test_scored_samples_are_read_when_asked_and_not_held():
    import gc
    import weakref

    from xaibench.datasets.base import LazySplit
    from xaibench.runs.replicates import ReplicateData, ScoredSamples

    reads = []
    made = []

    def load(i):
        reads.append(i)
        s = Sample(torch.full((1, 2, 2), float(i)), torch.zeros(2, 2, dtype=torch.long), f"img{i}")
        made.append(weakref.ref(s))
        return s

    scored = ScoredSamples(LazySplit("test", 10, load), 6)  # n_images = 6 of 10
    assert reads == list(range(6)) and scored.image_ids == [f"img{i}" for i in range(6)]  # ids read once, up front
    gc.collect()
    assert all(r() is None for r in made)  # and the samples not held
    data = ReplicateData(Replicate(None, 0), object(), "k", scored)
    assert data.image_ids is scored.image_ids and len(reads) == 6  # no second read for the ids
    batch = scored[4:8]
    assert [s.image_id for s in batch] == ["img4", "img5"] and reads[6:] == [4, 5]  # a batch: read then
    assert scored[-1].image_id == "img5" and len(scored) == 6
    with pytest.raises(IndexError):
        scored[6]
