"""Guided search: the space it builds from a sweep block, seeded trial sequences, resume through
the store (no point computed twice), the Pareto front against a brute-force filter, and the
one-line errors of bad budgets and objectives."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from sim.cli import main  # noqa: E402
from sim.config import ConfigError  # noqa: E402
from sim.dse import Store, load_sweep, run_search  # noqa: E402
from sim.dse.search import Space  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

EXP = """\
name: srch
arch: quickstart
model: llama-3-8b
runs:
  - {name: decode, phase: decode, batch: 1, context: 512}
sweep:
  grid:
    arch.array.rows: {start: 8, stop: 128, step: 8}
    arch.memory.dram.bandwidth_gbps: {start: 64, stop: 1024, num: 5, scale: log}
  random:
    samples: 1
    space:
      arch.clock_ghz: {low: 0.5, high: 2.0, scale: log}
      arch.memory.sram.ifmap_kb: {choice: [128, 256, 512]}
  derive:
    arch.array.cols: "2048 // arch.array.rows"
  constraints:
    - "arch.array.rows != 24"
"""
OBJ = [("latency_s", "min"), ("energy_j", "min"), ("area_mm2", "min")]


class Counting:
    """A stand-in simulator with conflicting metrics computed from the overrides; counts its
    calls per config hash."""

    def __init__(self):
        self.calls: dict[str, int] = {}

    def __call__(self, task):
        self.calls[task["hash"]] = self.calls.get(task["hash"], 0) + 1
        ov = task["overrides"]
        r, bw, ghz = ov["arch.array.rows"], ov["arch.memory.dram.bandwidth_gbps"], \
            ov["arch.clock_ghz"]
        kb = ov["arch.memory.sram.ifmap_kb"]
        return {"rows": [{"variant": "v", "run": "decode",
                          "latency_s": 1.0 / (bw * ghz) + abs(r - 40) * 1e-4,
                          "energy_j": ghz * ghz + bw * 1e-3 + 64.0 / kb,
                          "area_mm2": bw * 0.01 + kb * 0.001 + r * 1e-3}], "wall_s": 0.0}


@pytest.fixture
def exp(tmp_path):
    p = tmp_path / "srch.yaml"
    p.write_text(EXP)
    return p


def trials(db):
    with Store(db) as s:
        return [(n, h, p) for n, h, p, _ in s.trials()]


def test_space_follows_the_sweep_block(exp):
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)
    sw = load_sweep(exp)
    sp = Space.of(sw)
    d = sp.distributions
    assert d["arch.array.rows"] == IntDistribution(8, 128, step=8)
    assert isinstance(d["arch.memory.dram.bandwidth_gbps"], CategoricalDistribution)
    assert list(d["arch.memory.dram.bandwidth_gbps"].choices) == sw.grid[
        "arch.memory.dram.bandwidth_gbps"]
    assert d["arch.clock_ghz"] == FloatDistribution(0.5, 2.0, log=True)
    assert list(d["arch.memory.sram.ifmap_kb"].choices) == [128, 256, 512]
    assert "arch.array.cols" not in d                         # derived, not searched


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_same_seed_same_trials_and_derive_constraints_apply(exp, tmp_path, sampler):
    fn = Counting()
    front = run_search(exp, tmp_path / "a.sqlite", budget_points=24, sampler=sampler, seed=3,
                       fn=fn, objectives=OBJ)
    a = trials(tmp_path / "a.sqlite")
    run_search(exp, tmp_path / "b.sqlite", budget_points=24, sampler=sampler, seed=3,
               fn=Counting(), objectives=OBJ)
    other = run_search(exp, tmp_path / "c.sqlite", budget_points=24, sampler=sampler, seed=4,
                       fn=Counting(), objectives=OBJ)
    assert len(a) == 24 and a == trials(tmp_path / "b.sqlite")
    assert [p for _, _, p in a] != [p for _, _, p in trials(tmp_path / "c.sqlite")]
    assert front.attrs["summary"].trials == 24 and len(other) >= 1
    with Store(tmp_path / "a.sqlite") as s:
        for h, idx, ov, status, error, rows, execs, wall in s.iter_points():
            ov = json.loads(ov)
            assert ov["arch.array.cols"] == 2048 // ov["arch.array.rows"]
            if ov["arch.array.rows"] == 24:
                assert status == "dropped" and "arch.array.rows != 24" in error
                assert execs == 0
            else:
                assert status == "ok" and execs == 1
    assert max(fn.calls.values()) == 1


def test_resume_continues_the_study_without_rerunning(exp, tmp_path):
    whole = tmp_path / "whole.sqlite"
    run_search(exp, whole, budget_points=30, seed=5, fn=Counting(), objectives=OBJ,
               population=6)
    part = tmp_path / "part.sqlite"
    first = Counting()
    run_search(exp, part, budget_points=13, seed=5, fn=first, objectives=OBJ, population=6)
    with Store(part) as s:
        stored = {h for h, st in s.db.execute("SELECT hash, status FROM points")
                  if st == "ok"}
    with pytest.raises(ConfigError, match="--resume"):
        run_search(exp, part, budget_points=30, seed=5, fn=Counting(), objectives=OBJ)
    second = Counting()
    front = run_search(exp, part, budget_points=30, seed=5, fn=second, objectives=OBJ,
                       population=6, resume=True)
    assert not stored & set(second.calls)                    # nothing stored ran again
    with Store(part) as s:
        assert set(s.executions().values()) <= {0, 1}
    assert trials(part) == trials(whole)                     # as if never interrupted
    summary = front.attrs["summary"]
    assert summary.trials == 30 and summary.new == 17 and summary.ran == len(second.calls)
    again = Counting()                                        # budget reached: nothing new
    run_search(exp, part, budget_points=30, seed=5, fn=again, objectives=OBJ, resume=True)
    assert again.calls == {}


def dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


@pytest.mark.parametrize("objectives", [OBJ, [("latency_s", "min"), ("area_mm2", "max")],
                                        [("energy_j", "min")]])
def test_front_is_the_brute_force_non_dominated_set(exp, tmp_path, objectives):
    db = tmp_path / "f.sqlite"
    front = run_search(exp, db, budget_points=40, seed=1, fn=Counting(), objectives=objectives)
    with Store(db) as s:
        pts = s.frame()
    pts = pts[pts.status == "ok"]
    names = [n for n, _ in objectives]
    sign = [1 if d == "min" else -1 for _, d in objectives]
    vec = {h: [s_ * v for s_, v in zip(sign, row)] for h, row in
           zip(pts.hash, pts[names].itertuples(index=False))}
    expect = {h for h in vec if not any(dominates(vec[o], vec[h]) for o in vec if o != h)}
    assert set(front.hash) == expect and len(front) == len(expect) >= min(2, len(names))
    by_hash = pts.set_index("hash")
    for _, row in front.iterrows():
        for n in names:
            assert row[n] == by_hash.loc[row.hash, n]
        assert row["arch.array.cols"] == 2048 // row["arch.array.rows"]


@pytest.mark.parametrize("kw, key", [
    ({"budget_points": 0}, "--budget"),
    ({"budget_points": -3}, "--budget"),
    ({"budget_seconds": -1.0}, "--time"),
    ({"budget_seconds": 0}, "--time"),
    ({}, "--budget"),
    ({"budget_points": 5, "objectives": [("latency_s", "lowest")]}, "--objective"),
    ({"budget_points": 5, "objectives": [("latnecy_s", "min")]}, "--objective"),
    ({"budget_points": 5, "sampler": "grid"}, "--sampler"),
])
def test_bad_budgets_and_objectives(exp, tmp_path, kw, key):
    kw.setdefault("objectives", OBJ)
    with pytest.raises(ConfigError) as e:
        run_search(exp, tmp_path / "x.sqlite", fn=Counting(), **kw)
    msg = str(e.value)
    assert "\n" not in msg and key in msg
    if "latnecy_s" in msg:
        assert "latency_s" in msg                                 # did you mean


@pytest.mark.parametrize("argv, key", [
    (["--budget", "0"], "--budget"),
    (["--budget", "5", "--time", "-2"], "--time"),
    (["--budget", "5", "--objective", "latency_s:up"], "--objective"),
    ([], "--budget"),
])
def test_cli_bad_budget_is_one_line(exp, tmp_path, capsys, argv, key):
    rc = main(["search", str(exp), "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "\n" not in err and key in err
    assert not (tmp_path / "o").exists()


def test_shipped_search_experiment_loads():
    sw = load_sweep(ROOT / "experiments" / "search_microscopiq_llama-3-8b.yaml")
    pts = list(sw.points())
    keep = [p for p in pts if p.dropped is None]
    assert len(pts) == 200 and 0 < len(keep) < 200
    for p in keep:
        o = p.overrides
        assert o["arch.array.rows"] * o["arch.array.cols"] <= 16384
        assert o["arch.recon.units"] * 8 <= o["arch.array.rows"]
    assert set(Space.of(sw).distributions) == set(sw.grid)
    assert list(itertools.islice(sw.points(), 1))[0].exp.arch.type == "microscopiq"


def test_cli_unknown_objective_is_one_line(exp, tmp_path, capsys):
    """Real simulation of one quickstart point: the metric columns are those it returns."""
    rc = main(["search", str(exp), "--out", str(tmp_path / "o"), "--budget", "3",
               "--objective", "latnecy_s:min"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "\n" not in err
    assert "--objective" in err and "'latnecy_s'" in err and "latency_s" in err
