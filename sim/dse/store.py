"""The results store of a sweep: one SQLite file, one row per design point.

Why SQLite rather than Parquet: a sweep writes one small row at a time, from one parent
process, and must survive being killed between any two rows. SQLite (standard library) gives
that directly: every row is one transaction in WAL mode, so a SIGKILL leaves either the whole row
or nothing, and resuming is an indexed lookup of the point's hash. Parquet files are immutable
column chunks: appending a row means a new file (thousands of tiny files) or rewriting, and a
kill mid-write leaves a truncated file. Parquet stays the *export* format (``points.parquet``).

Table ``points``: ``hash`` (primary key: the resolved config's content hash, seed included),
``idx`` (position in the sweep), ``overrides`` (JSON: swept and derived key -> value),
``status`` (``ok`` | ``failed`` | ``dropped``, or ``running`` while handed out: a sweep killed
then leaves ``running`` rows, which a resume runs again), ``error`` (text), ``rows`` (JSON
list, one mapping of metrics per variant and run), ``executions`` (how many times the point was computed
to completion), ``wall_s``, ``finished`` (unix time), ``run_id`` (the sweep call that last
handed the point out). Table ``meta``: key/value (sweep name,
file, keys). Guided search and plots read the same table (``frame()``). Table ``trials`` (guided
search only): ``number`` (the trial's position in the search), ``hash`` (its point; several
trials may name one point), ``params`` and ``system_attrs`` (JSON, what the sampler proposed and
noted), from which a resumed search rebuilds its study.
"""
from __future__ import annotations

import csv
import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["Store", "METRIC_ORDER"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    hash TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    overrides TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'dropped', 'running')),
    error TEXT,
    rows TEXT,
    executions INTEGER NOT NULL DEFAULT 0,
    wall_s REAL,
    finished REAL,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS points_status ON points(status);
CREATE TABLE IF NOT EXISTS trials (
    number INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    params TEXT NOT NULL,
    system_attrs TEXT NOT NULL
);
"""
# The leading metric columns of the export (the rest follow in the order the runs give them).
METRIC_ORDER = ("latency_s", "energy_j", "area_mm2", "cycles", "tokens_per_s")


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")   # WAL+NORMAL: durable against a kill
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ meta ----
    def set_meta(self, **items) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for k, v in items.items():
                self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                                "SET value = excluded.value", (k, json.dumps(v)))

    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    # ---------------------------------------------------------------- points ----
    def status(self, h: str) -> tuple[str | None, str | None]:
        """(status, run_id) of a point, (None, None) if the store lacks it."""
        row = self.db.execute("SELECT status, run_id FROM points WHERE hash = ?",
                              (h,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def record(self, h: str, idx: int, overrides: dict, status: str, *, rows=None,
               error: str | None = None, wall_s: float | None = None,
               executed: bool = True, run_id: str | None = None) -> None:
        """Write one point in one transaction (insert, or replace an earlier failure)."""
        self.db.execute(
            "INSERT INTO points (hash, idx, overrides, status, error, rows, executions, wall_s,"
            " finished, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(hash) DO UPDATE SET "
            "idx = excluded.idx, overrides = excluded.overrides, status = excluded.status, "
            "error = excluded.error, rows = excluded.rows, "
            "executions = points.executions + excluded.executions, wall_s = excluded.wall_s, "
            "finished = excluded.finished, run_id = COALESCE(excluded.run_id, points.run_id)",
            (h, idx, json.dumps(overrides, sort_keys=True), status, error,
             None if rows is None else json.dumps(rows), int(executed), wall_s, time.time(),
             run_id))

    def rows(self, h: str) -> tuple[str | None, list | None, str | None]:
        """(status, metric rows, error) of a point; (None, None, None) if the store lacks it."""
        row = self.db.execute("SELECT status, rows, error FROM points WHERE hash = ?",
                              (h,)).fetchone()
        if row is None:
            return None, None, None
        return row[0], (json.loads(row[1]) if row[1] else None), row[2]

    def record_trial(self, number: int, h: str, params: dict, system_attrs: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO trials VALUES (?, ?, ?, ?)",
                        (number, h, json.dumps(params, sort_keys=True),
                         json.dumps(system_attrs, sort_keys=True)))

    def trials(self) -> list[tuple[int, str, dict, dict]]:
        """Every trial of a guided search in order: (number, hash, params, system_attrs)."""
        return [(n, h, json.loads(p), json.loads(a)) for n, h, p, a in
                self.db.execute("SELECT number, hash, params, system_attrs FROM trials "
                                "ORDER BY number")]

    def counts(self) -> dict:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM points GROUP BY status"))

    def executions(self) -> dict:
        return dict(self.db.execute("SELECT hash, executions FROM points"))

    def iter_points(self, chunk: int = 1000) -> Iterator[tuple]:
        cur = self.db.execute("SELECT hash, idx, overrides, status, error, rows, executions, "
                              "wall_s FROM points ORDER BY idx, hash")
        while True:
            batch = cur.fetchmany(chunk)
            if not batch:
                return
            yield from batch

    # ---------------------------------------------------------------- export ----
    def tidy_rows(self, keys: Iterable[str] | None = None) -> Iterator[dict]:
        """One mapping per (point, variant, run); failed and dropped points give one row with
        their status and error and no metrics."""
        keys = list(keys if keys is not None else self.meta().get("keys", []))
        for h, idx, ov, status, error, rows, execs, wall in self.iter_points():
            ov = json.loads(ov)
            head = {"point": idx, "hash": h, "status": status,
                    **{k: ov.get(k) for k in keys}}
            if status == "ok" and rows:
                for r in json.loads(rows):
                    yield {**head, **r, "error": None}
            else:
                yield {**head, "error": error}

    def columns(self, keys) -> list[str]:
        cols: dict[str, None] = {}
        for r in self.tidy_rows(keys):
            cols.update(dict.fromkeys(r))
        lead = ["point", "hash", "status", *keys, "variant", "run"]
        rest = [c for c in cols if c not in lead and c != "error"]
        rest.sort(key=lambda c: (METRIC_ORDER.index(c) if c in METRIC_ORDER else
                                 len(METRIC_ORDER), 0))
        return [c for c in lead if c in cols or c in ("variant", "run")] + rest + ["error"]

    def frame(self, keys=None):
        """The tidy DataFrame: one row per point and run, a column per swept key and metric."""
        import pandas as pd

        keys = list(keys if keys is not None else self.meta().get("keys", []))
        return pd.DataFrame(list(self.tidy_rows(keys)), columns=self.columns(keys))

    def write_csv(self, path: str | Path, keys=None) -> Path:
        """Stream the tidy table to CSV (two passes over the store, nothing held in memory);
        written to a temporary name and renamed."""
        keys = list(keys if keys is not None else self.meta().get("keys", []))
        cols = self.columns(keys)
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in self.tidy_rows(keys):
                w.writerow({k: _cell(v) for k, v in r.items()})
        tmp.replace(path)
        return path

    def write_parquet(self, path: str | Path, keys=None) -> Path | None:
        """The tidy table as Parquet if pyarrow is installed, else None."""
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return None
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        self.frame(keys).to_parquet(tmp, index=False)
        tmp.replace(path)
        return path


def _cell(v):
    if isinstance(v, float) and math.isnan(v):
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v
