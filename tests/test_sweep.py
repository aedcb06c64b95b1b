"""Sweeps: the spec (points, ranges, random, derived keys, constraints, errors), the identity of a
point, the SQLite store (resume after SIGKILL, failures, --retry-failed) and the executors."""
from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.cli import main
from sim.config import ConfigError
from sim.dse import Expr, ExprError, Store, load_sweep, run_point, run_sweep
from sim.dse.executors import WorkerDied, processes

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "experiments" / "sweep_systolic_array.yaml"

BASE = """\
name: sw
arch: quickstart
model: llama-3-8b
runs:
  - {name: decode, phase: decode, batch: 1, context: 512}
"""


def write(tmp_path, sweep: str, name="exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(BASE + "sweep:\n" + "\n".join("  " + ln for ln in sweep.splitlines()) + "\n")
    return p


# ----------------------------------------------------------------------- fake workers ----
def fake_point(task):
    """A stand-in simulator: a metric computed from the overrides, no simulation."""
    ov = task["overrides"]
    if ov.get("arch.array.rows") == 13:
        raise_inside = {"error": "ValueError: thirteen"}
        return raise_inside
    return {"rows": [{"variant": "v", "run": "r", "latency_s": float(sum(ov.values()))}],
            "wall_s": 0.0}


def slow_point(task):
    time.sleep(0.03)
    return fake_point(task)


def dying_point(task):
    if task["overrides"].get("arch.array.rows") == 13:
        os._exit(3)                         # the worker process dies, no exception
    return fake_point(task)


# ------------------------------------------------------------------------------- spec ----
def test_grid_zip_ranges_match_a_reference(tmp_path):
    p = write(tmp_path, """\
grid:
  arch.array.rows: [8, 16, 32]
  arch.memory.dram.bandwidth_gbps: {start: 64, stop: 1024, num: 5, scale: log}
  runs.0.context: {start: 128, stop: 512, step: 128}
zip:
  arch.memory.sram.ifmap_kb: [128, 256]
  arch.memory.sram.weight_kb: [64, 512]""")
    sw = load_sweep(p)
    bw = [64 * 2 ** i for i in range(5)]              # 64..1024 geometric, 5 values
    ref = [{"arch.array.rows": r, "arch.memory.dram.bandwidth_gbps": b, "runs.0.context": c,
            "arch.memory.sram.ifmap_kb": i, "arch.memory.sram.weight_kb": w}
           for r, b, c in itertools.product([8, 16, 32], bw, [128, 256, 384, 512])
           for i, w in [(128, 64), (256, 512)]]
    pts = list(sw.points())
    assert sw.size() == len(ref) == 120
    assert [pt.overrides for pt in pts] == ref
    pt = pts[7]
    assert pt.exp.arch.array.rows == ref[7]["arch.array.rows"]
    assert pt.exp.runs[0].context == ref[7]["runs.0.context"]
    assert len({pt.hash for pt in pts}) == len(pts)


def test_float_ranges_random_derive_and_constraints(tmp_path):
    p = write(tmp_path, """\
grid:
  arch.clock_ghz: {start: 0.5, stop: 1.5, num: 3}
random:
  samples: 6
  seed: 7
  space:
    arch.memory.dram.bandwidth_gbps: {low: 50, high: 800, scale: log}
    arch.array.rows: {low: 8, high: 64, int: true}
derive:
  arch.array.cols: "max(8, 2048 // arch.array.rows)"
constraints:
  - "arch.array.rows * arch.array.cols <= 2048 and arch.memory.dram.bandwidth_gbps > 100" """)
    sw = load_sweep(p)
    pts = list(sw.points())
    assert [pt.overrides["arch.clock_ghz"] for pt in pts[::6]] == [0.5, 1.0, 1.5]
    assert [pt.overrides for pt in load_sweep(p).points()] == [pt.overrides for pt in pts]
    for pt in pts:
        ov = pt.overrides
        assert 50 <= ov["arch.memory.dram.bandwidth_gbps"] <= 800
        assert isinstance(ov["arch.array.rows"], int) and 8 <= ov["arch.array.rows"] <= 64
        assert ov["arch.array.cols"] == max(8, 2048 // ov["arch.array.rows"])
        keep = ov["arch.array.rows"] * ov["arch.array.cols"] <= 2048 \
            and ov["arch.memory.dram.bandwidth_gbps"] > 100
        assert (pt.dropped is None) == keep
        if keep:
            assert pt.exp.arch.array.cols == ov["arch.array.cols"]
        else:
            assert "constraint" in pt.dropped and "is false" in pt.dropped
    # another seed, other samples
    q = p.read_text().replace("seed: 7", "seed: 8")
    (tmp_path / "b.yaml").write_text(q)
    assert [x.overrides for x in load_sweep(tmp_path / "b.yaml").points()] != \
        [pt.overrides for pt in pts]


def test_identity_is_content_not_spelling(tmp_path):
    a = write(tmp_path, "grid:\n  arch.array.rows: [32, 64]", "a.yaml")
    b = write(tmp_path, "grid:\n  arch.array.rows: {start: 32, stop: 64, step: 32}\n"
              "derive:\n  arch.array.cols: '64'", "b.yaml")       # cols is 64 already
    ha = [pt.hash for pt in load_sweep(a).points()]
    hb = [pt.hash for pt in load_sweep(b).points()]
    assert ha == hb
    c = tmp_path / "c.yaml"
    c.write_text(a.read_text().replace("name: sw", "name: sw\nseed: 5"))
    assert [pt.hash for pt in load_sweep(c).points()][0] not in ha


@pytest.mark.parametrize("block, key, words", [
    ("grid:\n  arch.array.rowz: [1, 2]", "sweep.grid.arch.array.rowz", "rows"),
    ("grid:\n  arch.array.rows: []", "sweep.grid.arch.array.rows", "non-empty"),
    ("grid:\n  arch.array.rows: {start: 64, stop: 8, step: 8}", "sweep.grid.arch.array.rows",
     "empty"),
    ("grid:\n  arch.array.rows: {start: 8, stop: 64, num: 0}", "sweep.grid.arch.array.rows",
     "num >= 1"),
    ("grid:\n  arch.array.rows: [8]\nconstraints: ['1 < 2']", "sweep.constraints.0",
     "naming at least one"),
    ("grid:\n  arch.array.rows: [8]\nconstraints: ['arch.array.rowz > 2']",
     "sweep.constraints.0", "existing config keys"),
    ("grid:\n  arch.array.rows: [8]\nconstraints: [\"__import__('os')\"]",
     "sweep.constraints.0", "call of __import__"),
    ("grid:\n  arch.array.rows: [8]\nderive:\n  arch.array.cols: 'arch.array.__class__'",
     "sweep.derive.arch.array.cols", "existing config keys"),
    ("random: {samples: 0, space: {arch.array.rows: {low: 8, high: 9}}}",
     "sweep.random.samples", "budget"),
    ("random: {samples: 3, space: {arch.array.rows: {low: 9, high: 8}}}",
     "sweep.random.space.arch.array.rows", "empty"),
    ("zip:\n  arch.array.rows: [8, 16]\n  arch.array.cols: [8]", "sweep.zip", "equal length"),
    ("grdi:\n  arch.array.rows: [8]", "sweep.grdi", "grid"),
])
def test_bad_specs_are_one_line_errors(tmp_path, block, key, words):
    p = write(tmp_path, block)
    with pytest.raises(ConfigError) as e:
        load_sweep(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and f"{key}:" in msg and words in msg, msg


def test_expressions_are_safe_and_correct():
    vals = {"a.b": 12, "c.d": 3}
    for text, ref in [("a.b // c.d + 1", 5), ("max(a.b, 20) - min(1, c.d)", 19),
                      ("ceil(log2(a.b))", math.ceil(math.log2(12))), ("a.b > 10 and c.d < 3", False),
                      ("2 ** c.d if a.b % 2 == 0 else 0", 8), ("1 < c.d <= 3", True)]:
        assert Expr(text).evaluate(vals) == ref, text
    for bad in ["a.b.__class__()", "(lambda: 1)()", "[1, 2]", "'x'", "open('f')", "a.b[0]",
                "().__class__"]:
        with pytest.raises(ExprError):
            Expr(bad)
    with pytest.raises(ExprError):
        Expr("10 ** 100000").evaluate({})


# ------------------------------------------------------------------------------ store ----
def test_failures_are_recorded_and_retried(tmp_path):
    p = write(tmp_path, "grid:\n  arch.array.rows: [8, 13, 16]")
    db = tmp_path / "r.sqlite"
    s = run_sweep(p, db, executor="serial", fn=fake_point)
    assert (s.ok, s.failed) == (2, 1)
    with Store(db) as st:
        assert st.counts() == {"ok": 2, "failed": 1}
        df = st.frame()
        bad = df[df.status == "failed"]
        assert list(bad["arch.array.rows"]) == [13] and "thirteen" in bad.error.iloc[0]
        assert sorted(df.latency_s.dropna()) == [8.0, 16.0]
    s = run_sweep(p, db, executor="serial", fn=fake_point)
    assert s.ran == 0 and s.skipped == 3                      # failed kept, not rerun
    s = run_sweep(p, db, executor="serial", fn=fake_point, retry_failed=True)
    assert s.ran == 1
    with Store(db) as st:
        ex = st.executions()
        assert sorted(ex.values()) == [1, 1, 2]   # the failed point ran twice, others once


def test_sigkill_half_way_then_resume_loses_and_repeats_nothing(tmp_path):
    p = write(tmp_path, "grid:\n  arch.array.rows: {start: 16, stop: 55, step: 1}")   # 40
    db = tmp_path / "r.sqlite"
    code = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
            "from test_sweep import slow_point\nfrom sim.dse import run_sweep\n"
            f"run_sweep({str(p)!r}, {str(db)!r}, executor='serial', fn=slow_point)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 30
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as c:
                    done = c.execute("SELECT COUNT(*) FROM points WHERE status = 'ok'"
                                     ).fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if done >= 10:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Store(db) as st:
        before = {h for h, _, _, s, *_ in st.iter_points() if s == "ok"}
        assert st.counts().get("running", 0) <= 1          # serial: at most one in flight
    assert 10 <= len(before) < 40
    s = run_sweep(p, db, executor="serial", fn=fake_point)
    assert s.skipped == len(before) and s.ran == 40 - len(before)
    with Store(db) as st:
        ex = st.executions()
        df = st.frame()
    assert len(ex) == 40 and set(ex.values()) == {1}         # all present, none twice
    assert sorted(df["arch.array.rows"]) == list(range(16, 56))
    assert (df.latency_s == df["arch.array.rows"]).all()


def test_a_config_twice_in_one_sweep_runs_once(tmp_path):
    p = write(tmp_path, "grid:\n  arch.array.rows: [8, 16, 8, 16.0]")
    db = tmp_path / "r.sqlite"
    pts = list(load_sweep(p).points())
    assert pts[0].hash == pts[2].hash and pts[1].hash != pts[0].hash
    assert "invalid config" in pts[3].dropped        # 16.0: rows must be an integer
    s = run_sweep(p, db, executor="process", workers=2, fn=fake_point)
    with Store(db) as st:
        ex = st.executions()
    distinct = {pt.hash for pt in pts if pt.dropped is None}
    assert set(ex) >= distinct and all(ex[h] == 1 for h in distinct)
    assert s.ran == len(distinct) and s.skipped + s.dropped == len(pts) - len(distinct)


# -------------------------------------------------------------------------- executors ----
def test_process_executor_survives_a_dying_worker(tmp_path):
    tasks = [{"hash": str(r), "overrides": {"arch.array.rows": r}} for r in (8, 13, 16, 24, 32)]
    out = dict((t["hash"], o) for t, o in processes(dying_point, tasks, workers=2))
    assert set(out) == {t["hash"] for t in tasks}
    assert isinstance(out["13"], WorkerDied)
    for r in (8, 16, 24, 32):
        assert out[str(r)]["rows"][0]["latency_s"] == r


def _sorted_rows(db):
    with Store(db) as st:
        return {h: (s, json.loads(r) if r else None, e) for h, _, _, s, e, r, _, _ in
                st.iter_points()}


def test_real_points_same_on_serial_process_and_dask(tmp_path):
    res = {}
    for ex, opts in [("serial", {}), ("process", {"workers": 2})]:
        run_sweep(SHIPPED, tmp_path / f"{ex}.sqlite", executor=ex, **opts)
        res[ex] = _sorted_rows(tmp_path / f"{ex}.sqlite")
    assert res["serial"] == res["process"]
    statuses = [s for s, _, _ in res["serial"].values()]
    assert statuses.count("ok") == 10 and statuses.count("dropped") == 2
    try:
        import distributed  # noqa: F401
    except ImportError:
        pytest.skip("dask.distributed not installed (pip install 'strata-sim[dask]')")
    run_sweep(SHIPPED, tmp_path / "dask.sqlite", executor="dask", workers=2, processes=False)
    assert _sorted_rows(tmp_path / "dask.sqlite") == res["serial"]


def test_run_point_rows_match_the_api(tmp_path):
    from sim import api

    pt = next(iter(load_sweep(SHIPPED).points()))
    out = run_point({"hash": pt.hash, "config": pt.exp.model_dump(mode="json")})
    ref = api.run(pt.exp)
    r = out["rows"][0]
    assert r["latency_s"] == ref.runs.seconds.iloc[0]
    assert r["energy_j"] == ref.runs.energy_total_j.iloc[0]
    assert r["area_mm2"] == pytest.approx(ref.area.area_um2.sum() * 1e-6, rel=1e-12)
    assert r["energy_dram_j"] == ref.runs.energy_dram_j.iloc[0]
    bad = run_point({"hash": "0" * 64, "config": pt.exp.model_dump(mode="json")})
    assert "hash changed" in bad["error"]


# -------------------------------------------------------------------------------- cli ----
def test_cli_sweep_resume_and_errors(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(SHIPPED), "--executor", "serial", "--out", str(out)]) == 0
    folder = out / "sweep_systolic_array"
    import pandas as pd

    df = pd.read_csv(folder / "points.csv")
    assert len(df) == 12 and (df.status == "ok").sum() == 10
    assert {"arch.array.rows", "arch.array.cols", "latency_s", "energy_j", "area_mm2",
            "cycles", "energy_dram_j"} <= set(df.columns)
    assert main(["sweep", str(SHIPPED), "--executor", "serial", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["sweep", str(SHIPPED), "--executor", "serial", "--out", str(out),
                 "--resume"]) == 0
    assert "ran 0" in capsys.readouterr().out
    bad = write(tmp_path, "grid:\n  arch.array.rows: []")
    assert main(["sweep", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sweep.grid.arch.array.rows" in err


def test_a_shipped_sweep_by_name_and_a_missing_file(tmp_path):
    assert load_sweep("sweep_systolic_array").file == str(SHIPPED)
    with pytest.raises(ConfigError) as e:
        load_sweep(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value) and "\n" not in str(e.value)
    plain = ROOT / "experiments" / "quickstart.yaml"
    with pytest.raises(ConfigError) as e:
        load_sweep(plain)
    assert "sweep" in str(e.value) and "quickstart.yaml" in str(e.value)
