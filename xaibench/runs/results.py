"""Where results are written: the run directory's tidy table, in atomic parts, under a lock.

``parts/part-*.parquet`` are written one per image batch (temporary file, fsync, rename), and
``results.parquet`` is rewritten the same atomic way after each part, so a kill -9 at any
moment leaves a readable table. Resume reads the parts: a (cell, image) already there is not
computed again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from xaibench.errors import UserError
from xaibench.util.atomic import atomic_write as atomic_write
from xaibench.util.atomic import atomic_write_text as atomic_write_text

#: what names a cell (a row without its image and value)
CELL_COLUMNS = ["dataset", "model", "explainer", "layer", "threshold", "perturbation", "metric"]
FIXED_COLUMNS = CELL_COLUMNS + ["image_id", "value"]
#: the replicate of a row: ``fold`` (text, empty without folds) and the training ``seed``
REPLICATE_COLUMNS = ["fold", "seed"]
#: a pooled metric's additive per-image counts (JSON object, ``{"fn":2,"fp":1,"tp":3}``); empty otherwise
COUNTS = "counts"
COLUMNS = FIXED_COLUMNS + ["threshold_value", "direction", "cell_key"] + REPLICATE_COLUMNS + [COUNTS]
SCHEMA = pa.schema(
    [(c, pa.string()) for c in FIXED_COLUMNS[:-1]]
    + [("value", pa.float64()), ("threshold_value", pa.float64()), ("direction", pa.string()), ("cell_key", pa.string())]
    + [("fold", pa.string()), ("seed", pa.int64()), (COUNTS, pa.string())]
)
OUTPUTS = ("results.parquet", "summary.csv", "leaderboard.md", "manifest.json", "parts", "plots", ".parts.dropped", ".parts.corrupt")


def encode_counts(counts: Mapping[str, float]) -> str:
    """One image's counts as the text of the ``counts`` column (integral counts without ``.0``)."""
    return json.dumps({k: int(v) if float(v).is_integer() else float(v) for k, v in sorted(counts.items())}, separators=(",", ":"))


def decode_counts(texts: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """The count names and a float matrix [rows with counts, names] of ``counts`` column texts
    (empty texts, the rows without counts, are left out)."""
    parsed = [json.loads(t) for t in texts if isinstance(t, str) and t]
    names = sorted(parsed[0]) if parsed else []
    if any(sorted(p) != names for p in parsed):
        raise UserError(f"the {COUNTS} of one cell have different names: {sorted({tuple(sorted(p)) for p in parsed})}")
    return names, np.array([[p[k] for k in names] for p in parsed], dtype=float).reshape(len(parsed), len(names))


class ResultStore:
    """The run directory."""

    def __init__(self, out: Path | str, default_seed: int = 0):
        self.out = Path(out)
        #: the seed of rows written before tables had replicate columns (the benchmark seed)
        self.default_seed = default_seed
        self.parts = self.out / "parts"
        self.table = self.out / "results.parquet"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the run directory; a second concurrent run fails with a clear error."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / ".lock"
        f = open(path, "a+")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise UserError(f"run directory {str(self.out)!r} is in use by another xaibench run ({holder}); wait for it or use --out") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            yield
        finally:
            f.close()  # closing releases the lock (so does the process dying)

    def clear(self) -> None:
        """Remove everything xaibench wrote here (``--fresh``)."""
        for name in OUTPUTS:
            p = self.out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def drop_explainers(self, names: Iterable[str]) -> int:
        """Remove the rows of these explainers (``--fresh-maps``), so that a resume computes
        them again; returns how many went. Crash-safe: the kept rows are written to
        ``results.parquet`` first (atomically), then ``parts/`` goes in one rename; until that
        rename the parts are the table, after it ``results.parquet`` is (:meth:`read`)."""
        df = self.read()
        gone = df["explainer"].isin(list(names))
        if not gone.any():
            return 0
        kept = pa.Table.from_pandas(df.loc[~gone, COLUMNS], schema=SCHEMA, preserve_index=False)
        atomic_write(self.table, lambda tmp: pq.write_table(kept, tmp))
        if self.parts.is_dir():
            dropped = self.out / ".parts.dropped"
            shutil.rmtree(dropped, ignore_errors=True)
            os.replace(self.parts, dropped)
            shutil.rmtree(dropped, ignore_errors=True)
        return int(gone.sum())

    def _has_parts(self) -> bool:
        return self.parts.is_dir() and any(self.parts.glob("part-*.parquet"))

    def has_results(self) -> bool:
        return self._has_parts() or self.table.is_file()

    def read(self) -> pd.DataFrame:
        """All rows written so far (from the parts; the consolidated table is a convenience copy,
        read when a run directory has no parts, e.g. one copied without them)."""
        files = sorted(self.parts.glob("part-*.parquet")) if self._has_parts() else []
        if not files and self.table.is_file():  # a run directory copied without its parts/
            files = [self.table]
        tables = []
        for f in files:
            try:
                tables.append(self._read_part(f))
            except (OSError, pa.ArrowInvalid, KeyError) as exc:  # a renamed part is whole: this one was damaged since
                self._set_aside(f, exc)
        return pa.concat_tables(tables).to_pandas() if tables else self.read_empty()  # empty: no rows yet

    def _set_aside(self, path: Path, exc: Exception) -> None:
        """Move an unreadable part into ``.parts.corrupt/`` (kept for a look; its rows are computed
        again on resume) and say so."""
        from xaibench.util.progress import warn

        where = f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if path.parent != self.parts:  # the consolidated table of a directory without parts
            warn(f"cannot read {where}; it holds no rows for this run")
            return
        dest = self.out / ".parts.corrupt" / path.name
        try:
            dest.parent.mkdir(exist_ok=True)
            os.replace(path, dest)
            moved = f"moved to {dest}; its rows are computed again when the run is resumed"
        except OSError as move_exc:
            moved = f"and cannot be moved aside ({move_exc.strerror or move_exc}); it is skipped"
        warn(f"unreadable result part {where}; {moved}")

    def _read_part(self, path: Path) -> pa.Table:
        """A part in SCHEMA; one written before the replicate columns gets fold "" and the default
        seed, one written before the counts column gets empty counts."""
        table = pq.read_table(path)
        n = table.num_rows
        for name, fill, kind in (("fold", "", pa.string()), ("seed", self.default_seed, pa.int64()), (COUNTS, "", pa.string())):
            if name not in table.column_names:
                table = table.append_column(name, pa.array([fill] * n, kind))
        return table.select(SCHEMA.names).cast(SCHEMA)

    def read_empty(self) -> pd.DataFrame:
        return SCHEMA.empty_table().to_pandas()

    def done(self) -> set[tuple[str, str, str, int]]:
        """(cell key, image id, fold, seed) already in the table."""
        df = self.read()
        return set(zip(df["cell_key"], df["image_id"], df["fold"], df["seed"].astype(int)))

    def append(self, rows: pd.DataFrame) -> None:
        """Write one part atomically, then refresh ``results.parquet`` atomically."""
        if rows.empty:
            return
        rows = rows.assign(**{k: v for k, v in (("fold", ""), ("seed", self.default_seed), (COUNTS, "")) if k not in rows})
        table = pa.Table.from_pandas(rows[COLUMNS], schema=SCHEMA, preserve_index=False)
        if not self._has_parts() and self.table.is_file():  # resuming a directory copied without parts/:
            earlier = self._read_part(self.table)  # its table becomes the first part, so no row is lost
            self.parts.mkdir(parents=True, exist_ok=True)
            atomic_write(self.parts / "part-000000-table.parquet", lambda tmp: pq.write_table(earlier, tmp))
        self.parts.mkdir(parents=True, exist_ok=True)
        n = len(list(self.parts.glob("part-*.parquet")))
        part = self.parts / f"part-{n:06d}-{uuid.uuid4().hex[:8]}.parquet"
        atomic_write(part, lambda tmp: pq.write_table(table, tmp))
        self.consolidate()

    def consolidate(self) -> None:
        df = self.read()
        table = pa.Table.from_pandas(df[COLUMNS], schema=SCHEMA, preserve_index=False)
        atomic_write(self.table, lambda tmp: pq.write_table(table, tmp))

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_text(self.out / name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def read_manifest(self) -> dict | None:
        path = self.out / "manifest.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
