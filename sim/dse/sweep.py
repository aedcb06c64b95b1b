"""Run a sweep: points -> executor -> results store, resumable.

The parent walks the sweep's points lazily, skips those the store already holds (``ok`` and
``dropped``; ``failed`` too unless ``retry_failed``), records dropped points at once, and sends
the rest to the executor as small dicts (the resolved config as JSON data). Each finished point
is written to the store in its own transaction the moment it arrives, so a killed sweep loses at
most the points in flight, and a rerun computes exactly the missing ones.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config.schema import ExperimentConfig
from .executors import EXECUTORS, WorkerDied
from .spec import Sweep, load_sweep
from .store import Store

__all__ = ["run_point", "run_sweep", "SweepSummary"]


def point_rows(result) -> list[dict]:
    """Metric rows of one point (one per variant and run) as plain JSON values."""
    area = {str(k): float(v) * 1e-6 for k, v in
            result.area.groupby("variant", sort=False).area_um2.sum().items()}
    rows = []
    for r in result.run_records:
        row = {"variant": str(r["variant"]), "run": str(r["run"]),
               "latency_s": float(r["seconds"]), "energy_j": float(r["energy_total_j"]),
               "area_mm2": area.get(str(r["variant"]))}
        for k, v in r.items():
            if k in ("variant", "run", "seconds", "energy_total_j"):
                continue
            row[k] = v.item() if hasattr(v, "item") else v
        rows.append(row)
    return rows


def run_point(task: dict) -> dict:
    """Worker side: validate the point's config, simulate it (``sim.run``, or ``sim.serve``
    for a serving point), return its rows (or its error). A Python exception is returned as
    text, so the sweep goes on."""
    from .. import api
    from ..config import load_experiment

    t0 = time.perf_counter()
    try:
        serving = task.get("kind") == "serving"
        if serving:
            from ..config.loader import load_validated
            from ..system.experiment import ServingExperiment
            from .serving import run_serving
            # the experiment file's path: a relative trace: path resolves from its folder
            exp = load_validated(task["config"], ServingExperiment, source=task.get("source"),
                                 kind="experiments")
        else:
            exp = load_experiment(task["config"])
        want = task.get("config_hash", task["hash"])
        if exp.hash() != want:
            raise RuntimeError(f"config hash changed in transit ({exp.hash()[:12]} != "
                               f"{want[:12]}); parent and worker versions differ?")
        rows = run_serving(exp) if serving else point_rows(api.run(exp))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=8),
                "wall_s": time.perf_counter() - t0}
    return {"rows": rows, "wall_s": time.perf_counter() - t0}


def task_of(point) -> dict:
    """The small dict a worker gets for one point: its identity and resolved config as data."""
    task = {"hash": point.hash, "index": point.index, "overrides": point.overrides,
            "config": point.exp.model_dump(mode="json")}
    if not isinstance(point.exp, ExperimentConfig):     # a serving experiment: sim.serve
        origin = point.exp.origin
        task.update(kind="serving", config_hash=point.exp.hash(),
                    source=os.path.abspath(origin) if origin else None)
    return task


def record_outcome(store: Store, task: dict, out) -> str:
    """Write what a worker returned for ``task`` (rows, an error, or a dead worker) to the
    store in one transaction; returns the point's status."""
    if isinstance(out, WorkerDied):
        store.record(task["hash"], task["index"], task["overrides"], "failed",
                     error=out.why, executed=False)
        return "failed"
    if "error" in out:
        store.record(task["hash"], task["index"], task["overrides"], "failed",
                     error=out["error"], wall_s=out.get("wall_s"))
        return "failed"
    store.record(task["hash"], task["index"], task["overrides"], "ok",
                 rows=out["rows"], wall_s=out.get("wall_s"))
    return "ok"


@dataclass
class SweepSummary:
    name: str
    store: Path
    total: int = 0
    skipped: int = 0
    ran: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0
    wall_s: float = 0.0

    def line(self) -> str:
        return (f"{self.name}: {self.total} points; ran {self.ran} ({self.ok} ok, "
                f"{self.failed} failed), {self.dropped} dropped, {self.skipped} already in the "
                f"store; {self.wall_s:.1f} s")


def run_sweep(sweep: Sweep | str, store_path: str | Path, *, executor: str = "process",
              workers: int | None = None, scheduler: str | None = None,
              retry_failed: bool = False, progress: bool = False,
              fn: Callable = run_point, limit: int | None = None,
              **executor_options) -> SweepSummary:
    """Run every missing point of ``sweep`` into the SQLite store at ``store_path``.
    ``limit`` stops after that many points have been handed out (for tests and trials)."""
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    t0 = time.perf_counter()
    store = Store(store_path)
    store.set_meta(name=sweep.name, file=sweep.file, keys=list(sweep.keys),
                   base_hash=sweep.base.hash())
    summary = SweepSummary(sweep.name, Path(store_path), total=sweep.size())
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=summary.total, desc=sweep.name, unit="pt", file=sys.stderr,
                       smoothing=0.05)
        except ImportError:     # tqdm is a dependency; this only guards odd installs
            bar = None

    run_id = uuid.uuid4().hex     # marks the points this call hands out

    def tasks():
        handed = 0
        for pt in sweep.points():
            st, by = store.status(pt.hash)
            if st in ("ok", "dropped") or (st == "failed" and not retry_failed):
                summary.skipped += 1
                if bar is not None:
                    bar.update(1)
                continue
            if pt.dropped is not None:
                store.record(pt.hash, pt.index, pt.overrides, "dropped", error=pt.dropped,
                             executed=False)
                summary.dropped += 1
                if bar is not None:
                    bar.update(1)
                continue
            if st == "running" and by == run_id:
                summary.skipped += 1       # the same resolved config twice in one sweep
                if bar is not None:
                    bar.update(1)
                continue
            if limit is not None and handed >= limit:
                return
            handed += 1
            store.record(pt.hash, pt.index, pt.overrides, "running", executed=False,
                         run_id=run_id)
            yield task_of(pt)

    run = EXECUTORS[executor]
    try:
        for task, out in run(fn, tasks(), workers=workers, scheduler=scheduler,
                             **executor_options):
            summary.ran += 1
            if record_outcome(store, task, out) == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        store.close()
    summary.wall_s = time.perf_counter() - t0
    return summary
