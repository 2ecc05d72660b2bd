import pandas as pd
import pytest

from xaibench.errors import UserError
from xaibench.runs.results import COLUMNS, FIXED_COLUMNS, ResultStore


def _rows(n, key="c"):
    return pd.DataFrame(
        {
            "dataset": ["d"] * n, "model": ["m"] * n, "explainer": ["e"] * n, "layer": ["l"] * n,
            "threshold": ["0.1"] * n, "perturbation": [""] * n, "metric": ["x"] * n,
            "image_id": [f"i{k}" for k in range(n)], "value": [float(k) for k in range(n)],
            "threshold_value": [0.1] * n, "direction": ["higher"] * n, "cell_key": [key] * n,
        }
    )


def test_append_writes_parts_and_a_readable_consolidated_table(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_rows(3, "a"))
    store.append(_rows(2, "b"))
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert list(table.columns) == COLUMNS and FIXED_COLUMNS == COLUMNS[: len(FIXED_COLUMNS)]
    assert len(table) == 5 and len(list((tmp_path / "parts").glob("part-*.parquet"))) == 2
    assert store.done() == {(k, i, "", 0) for k, i in [("a", "i0"), ("a", "i1"), ("a", "i2"), ("b", "i0"), ("b", "i1")]}


def test_a_part_written_before_the_replicate_columns_reads_as_fold_empty_and_the_benchmark_seed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "parts").mkdir()
    old = _rows(2, "a")[FIXED_COLUMNS + ["threshold_value", "direction", "cell_key"]]
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), tmp_path / "parts" / "part-000000-old.parquet")
    store = ResultStore(tmp_path, default_seed=7)
    store.append(_rows(1, "b").assign(fold="3", seed=1))
    df = store.read()
    assert len(df) == 3 and list(df.columns) == COLUMNS
    assert store.done() == {("a", "i0", "", 7), ("a", "i1", "", 7), ("b", "i0", "3", 1)}


def test_a_torn_temporary_file_is_ignored(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_rows(2))
    (tmp_path / "parts" / ".part-000009.parquet.tmp").write_bytes(b"PAR1 torn")  # what a kill leaves
    assert len(store.read()) == 2


def test_lock_refuses_a_second_run(tmp_path):
    a, b = ResultStore(tmp_path), ResultStore(tmp_path)
    with a.lock():
        with pytest.raises(UserError, match="in use by another xaibench run"):
            with b.lock():
                pass
    with b.lock():  # released
        pass


def test_clear_removes_only_our_outputs(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_rows(1))
    (tmp_path / "notes.txt").write_text("mine")
    store.clear()
    assert not (tmp_path / "results.parquet").exists() and not (tmp_path / "parts").exists()
    assert (tmp_path / "notes.txt").exists()


def test_a_run_directory_without_its_parts_reads_its_consolidated_table(tmp_path):
    import shutil

    store = ResultStore(tmp_path)
    store.append(_rows(3, "a"))
    shutil.rmtree(tmp_path / "parts")
    assert len(ResultStore(tmp_path).read()) == 3
    ResultStore(tmp_path).append(_rows(2, "b"))  # resuming there keeps the earlier rows
    assert len(ResultStore(tmp_path).read()) == 5 and len(pd.read_parquet(tmp_path / "results.parquet")) == 5


def test_counts_are_stored_per_row_and_a_part_written_before_the_counts_column_still_reads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xaibench.runs.results import COUNTS, decode_counts, encode_counts

    (tmp_path / "parts").mkdir()
    before = _rows(2, "a").assign(fold="", seed=0)  # the columns of the version before counts
    pq.write_table(pa.Table.from_pandas(before, preserve_index=False), tmp_path / "parts" / "part-000000-old.parquet")
    store = ResultStore(tmp_path)
    counted = _rows(2, "b").assign(counts=[encode_counts({"tp": 4, "fp": 0, "fn": 0}), encode_counts({"tp": 4, "fp": 2, "fn": 8.5})])
    store.append(counted)
    df = store.read()
    assert list(df.columns) == COLUMNS and COUNTS == COLUMNS[-1]
    assert df[COUNTS].tolist() == ["", "", '{"fn":0,"fp":0,"tp":4}', '{"fn":8.5,"fp":2,"tp":4}']
    names, matrix = decode_counts(df[COUNTS])  # rows without counts are left out
    assert names == ["fn", "fp", "tp"] and matrix.tolist() == [[0, 0, 4], [8.5, 2, 4]]
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 4
    with pytest.raises(UserError, match="different names"):
        decode_counts([encode_counts({"tp": 1}), encode_counts({"tp": 1, "fp": 0})])


def test_drop_explainers_removes_their_rows_and_a_resume_appends_beside_the_rest(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_rows(3, "a"))
    store.append(_rows(2, "b").assign(explainer="grad_cam"))
    assert store.drop_explainers(["score_cam"]) == 0 and len(list((tmp_path / "parts").glob("part-*"))) == 2  # nothing to drop: untouched
    assert store.drop_explainers(["grad_cam"]) == 2
    df = ResultStore(tmp_path).read()
    assert len(df) == 3 and set(df["explainer"]) == {"e"} and len(pd.read_parquet(tmp_path / "results.parquet")) == 3
    assert store.done() == {("a", f"i{k}", "", 0) for k in range(3)}
    assert not (tmp_path / ".parts.dropped").exists()
    store.append(_rows(2, "b").assign(explainer="grad_cam"))  # computed again
    assert len(ResultStore(tmp_path).read()) == 5


def test_a_drop_interrupted_before_the_parts_went_loses_no_row(tmp_path, monkeypatch):
    import os

    store = ResultStore(tmp_path)
    store.append(_rows(3, "a"))
    store.append(_rows(2, "b").assign(explainer="grad_cam"))

    def killed(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", lambda src, dst, real=os.replace: killed() if str(src).endswith("parts") else real(src, dst))
    with pytest.raises(KeyboardInterrupt):
        store.drop_explainers(["grad_cam"])
    assert len(ResultStore(tmp_path).read()) == 5  # the parts are still the table: the drop did not happen


def test_every_atomic_write_fsyncs_before_the_rename(tmp_path, monkeypatch):
    """Results, heatmap cache entries and checkpoints go through one helper: temporary file,
    fsync, rename; a failed write leaves the old file and no temporary one."""
    import os
    import pickle

    import torch

    from xaibench.engine.cache import HeatmapCache
    from xaibench.models.training import save_atomic

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    heatmap = torch.rand(4, 4)
    HeatmapCache(tmp_path / "maps").put("ab" * 20, heatmap)
    assert len(synced) == 1 and torch.equal(HeatmapCache(tmp_path / "maps").get("ab" * 20), heatmap)  # read from disk
    save_atomic({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert len(synced) == 2 and torch.equal(torch.load(tmp_path / "m.pt")["w"], torch.ones(2))
    with pytest.raises((AttributeError, pickle.PicklingError)):
        save_atomic({"w": lambda: 0}, tmp_path / "m.pt")  # cannot be pickled
    assert torch.equal(torch.load(tmp_path / "m.pt")["w"], torch.ones(2))
    ResultStore(tmp_path / "run").append(_rows(1))
    assert len(synced) == 4  # the part and results.parquet
    assert not [p for p in tmp_path.rglob("*.tmp")]



def test_a_damaged_part_is_moved_aside_with_a_warning_and_its_rows_are_missing_for_resume(tmp_path, capsys):
    store = ResultStore(tmp_path)
    store.append(_rows(3, "a"))
    store.append(_rows(2, "b"))
    damaged = sorted((tmp_path / "parts").glob("part-*.parquet"))[1]
    damaged.write_bytes(damaged.read_bytes()[:40])  # truncated after it was written
    capsys.readouterr()
    df = store.read()
    assert sorted(df["cell_key"].unique()) == ["a"] and len(df) == 3  # the other rows are all there
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert f"warning: unreadable result part {damaged}" in text and "computed again when the run is resumed" in text
    assert not damaged.exists() and (tmp_path / ".parts.corrupt" / damaged.name).is_file()
    assert {k for k, *_ in store.done()} == {"a"}  # so a resume computes b's rows again
    store.clear()
    assert not (tmp_path / ".parts.corrupt").exists()  # --fresh clears it too
