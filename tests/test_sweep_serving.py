"""Sweeps over serving experiments (a cluster: section): key paths into cluster, engine and
workload, '*' parts, derived keys and constraints, one row of serving metrics per point checked
against sim.serve, the same rows on every executor, resume, input files in the point identity,
and bad specs as one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import sim
from sim.config import ConfigError, load_arch
from sim.dse import Store, load_sweep, run_point, run_sweep
from sim.dse.sweep import task_of

ROOT = Path(__file__).resolve().parents[1]

CLIENT = {"arch": "h100-sxm", "model": "llama-3.2-1b", "mode": "exact",
          "engine": {"scheduler": "continuous", "max_num_seqs": 4}}
BASE = {"name": "serve_sweep", "seed": 0,
        "workload": {"arrivals": {"process": "poisson", "rate": 20.0},
                     "lengths": {"prompt": {"dist": "uniform", "low": 16, "high": 96},
                                 "output": {"dist": "uniform", "low": 2, "high": 8}},
                     "requests": 8, "seed": 3},
        "cluster": {"clients": [{"name": "a", **CLIENT}, {"name": "b", **CLIENT}]}}
# policy x rate, the split zipped with the policy so co-located points do not multiply by it
SWEEP = {"grid": {"workload.arrivals.rate": [10.0, 80.0]},
         "zip": {"cluster.clients.*.engine.scheduler": ["continuous", "chunked", "continuous"],
                 "cluster.clients.0.role": ["both", "both", "prefill"],
                 "cluster.clients.1.role": ["both", "both", "decode"]}}


def write(tmp_path, sweep=SWEEP, base=BASE, name="serve_sweep.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump({**base, "sweep": sweep}, sort_keys=False))
    return p


def rows_by_hash(db):
    with Store(db) as st:
        return {h: (s, json.loads(r) if r else None, e)
                for h, _, _, s, e, r, _, _ in st.iter_points()}


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serial")
    p = write(tmp)
    run_sweep(p, tmp / "serial.sqlite", executor="serial")
    return p, tmp / "serial.sqlite"


def test_points_expand_stars_and_hold_serving_configs(tmp_path):
    sw = load_sweep(write(tmp_path))
    assert sw.serving and sw.size() == 6
    pts = list(sw.points())
    assert [p.overrides["workload.arrivals.rate"] for p in pts] == [10.0] * 3 + [80.0] * 3
    for p in pts:
        sched = p.overrides["cluster.clients.*.engine.scheduler"]
        assert [c.engine.scheduler for c in p.exp.cluster.clients] == [sched, sched]
        assert [c.role for c in p.exp.cluster.clients] == [
            p.overrides["cluster.clients.0.role"], p.overrides["cluster.clients.1.role"]]
        assert p.exp.workload.arrivals.rate == p.overrides["workload.arrivals.rate"]
    assert len({p.hash for p in pts}) == 6


def test_each_row_is_what_sim_serve_gives(serial):
    p, db = serial
    sw = load_sweep(p)
    got = rows_by_hash(db)
    assert [s for s, _, _ in got.values()] == ["ok"] * 6
    for pt in sw.points():
        (row,) = got[pt.hash][1]
        res = sim.serve(pt.exp)
        req = res.requests
        done = req[req.status == "completed"]
        span = max(req.arrival_s.max(), req.finish_s.max()) - req.arrival_s.min()
        assert row["variant"] == "serve_sweep" and row["run"] == "serve"
        assert row["throughput_rps"] == pytest.approx(len(done) / span, rel=1e-12)
        assert row["throughput_tokens_per_s"] == pytest.approx(done.output_tokens.sum() / span,
                                                               rel=1e-12)
        # energy: the steps' energy plus each GPU's idle power while it had no step to run
        steps_j = res.clients.energy_j.sum()
        idle_w = load_arch("h100-sxm").calibration.power.idle_w
        idle_j = sum(idle_w * (span - b) for b in res.clients.busy_s)
        assert row["step_energy_j"] == pytest.approx(steps_j, rel=1e-12)
        assert row["energy_j"] == pytest.approx(steps_j + idle_j, rel=1e-12)
        assert row["tokens_per_j"] == pytest.approx(done.output_tokens.sum() / (steps_j + idle_j),
                                                    rel=1e-12)
        assert row["step_tokens_per_j"] == pytest.approx(done.output_tokens.sum() / steps_j,
                                                         rel=1e-12)
        ttft = (done.first_token_s - done.arrival_s).to_numpy()
        assert row["ttft_p99_s"] == pytest.approx(np.percentile(ttft, 99), rel=1e-9)
        e2e = (done.finish_s - done.arrival_s).to_numpy()
        assert row["e2e_p50_s"] == pytest.approx(np.percentile(e2e, 50), rel=1e-9)
        # goodput: completed requests within the tier-90 limits (TTFT 0.75 s, TPOT 37.5 ms)
        tpot = (done.finish_s - done.first_token_s) / (done.output_tokens - 1)
        ok = (ttft <= 0.75) & ((done.output_tokens <= 1) | (tpot <= 0.0375)).to_numpy()
        assert row["goodput_rps"] == pytest.approx(ok.sum() / span, rel=1e-12)
        assert row["goodput_rps"] <= row["throughput_rps"] + 1e-12
        assert row["completed"] + row["rejected"] == row["requests"] == 8
        assert row["preemptions"] == int(req.preemptions.sum())
        roles = [c.role for c in pt.exp.cluster.clients]
        want = ("disaggregated 1P1D" if roles == ["prefill", "decode"]
                else pt.exp.cluster.clients[0].engine.scheduler)
        assert row["policy"] == want


def test_process_and_dask_executors_store_the_same_rows(serial, tmp_path):
    p, db = serial
    ref = rows_by_hash(db)
    run_sweep(p, tmp_path / "process.sqlite", executor="process", workers=2)
    assert rows_by_hash(tmp_path / "process.sqlite") == ref
    pytest.importorskip("distributed")
    run_sweep(p, tmp_path / "dask.sqlite", executor="dask", workers=2, processes=False)
    assert rows_by_hash(tmp_path / "dask.sqlite") == ref


def test_resume_runs_only_the_missing_points(serial, tmp_path):
    p, ref_db = serial
    db = tmp_path / "r.sqlite"
    first = run_sweep(p, db, executor="serial", limit=2)
    assert first.ran == 2
    again = run_sweep(p, db, executor="process", workers=2)
    assert again.ran == 4 and again.skipped == 2
    with Store(db) as st:
        assert set(st.executions().values()) == {1}
    assert rows_by_hash(db) == rows_by_hash(ref_db)
    assert run_sweep(p, db, executor="serial").ran == 0


def test_an_edited_trace_is_a_new_point(tmp_path):
    """The trace is named, not inside the config: its content is part of the point's key."""
    trace = tmp_path / "conv.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,40,3\n0.1,24,5\n"
                     "0.3,64,2\n0.4,32,4\n")
    base = {**BASE, "workload": {"trace": "conv.csv", "requests": 4,
                                 "arrivals": {"process": "poisson", "rate": 5.0}}}
    sweep = {"grid": {"workload.arrivals.rate": [5.0, 50.0]}}
    p = write(tmp_path, sweep, base)
    db = tmp_path / "r.sqlite"
    h0 = {pt.hash for pt in load_sweep(p).points()}
    assert run_sweep(p, db, executor="serial").ran == 2
    assert run_sweep(p, db, executor="serial").ran == 0
    trace.write_text(trace.read_text().replace("0.3,64,2", "0.3,48,6"))
    h1 = {pt.hash for pt in load_sweep(p).points()}
    assert not h0 & h1
    assert run_sweep(p, db, executor="process", workers=2).ran == 2
    tokens = {r[1][0]["throughput_tokens_per_s"] * r[1][0]["duration_s"]
              for r in rows_by_hash(db).values()}
    assert tokens == {14.0, 18.0}            # output tokens of the old and the edited trace


def test_derived_keys_and_constraints_over_serving_keys(tmp_path):
    sweep = {"grid": {"workload.requests": [4, 8, 16],
                      "cluster.clients.*.engine.max_num_seqs": [2, 8]},
             "derive": {"workload.arrivals.rate": "workload.requests * 2.5"},
             "constraints": ["workload.requests * cluster.clients.0.engine.max_num_seqs <= 64"]}
    pts = list(load_sweep(write(tmp_path, sweep)).points())
    assert len(pts) == 6
    for pt in pts:
        n, seqs = pt.overrides["workload.requests"], pt.overrides[
            "cluster.clients.*.engine.max_num_seqs"]
        assert pt.overrides["workload.arrivals.rate"] == n * 2.5
        assert (pt.dropped is None) == (n * seqs <= 64)
        if pt.exp is not None:
            assert pt.exp.workload.arrivals.rate == n * 2.5
            assert {c.engine.max_num_seqs for c in pt.exp.cluster.clients} == {seqs}


def test_a_point_the_serving_schema_rejects_is_dropped_with_the_reason(tmp_path):
    # clients of one pool must be identical: one chunked client among continuous ones
    sweep = {"grid": {"cluster.clients.1.engine.scheduler": ["continuous", "chunked"]}}
    pts = list(load_sweep(write(tmp_path, sweep)).points())
    assert pts[0].dropped is None
    assert "invalid config" in pts[1].dropped and "clients.1.engine.scheduler" in pts[1].dropped


def test_run_point_checks_the_config_in_transit(tmp_path):
    pt = next(load_sweep(write(tmp_path)).points())
    task = task_of(pt)
    assert task["kind"] == "serving" and task["config_hash"] == pt.exp.hash()
    bad = run_point({**task, "config_hash": "0" * 64})
    assert "hash changed" in bad["error"]


@pytest.mark.parametrize("sweep, key, words", [
    ({"grid": {"cluster.clients.0.engine.max_num_seq": [2]}},
     "sweep.grid.cluster.clients.0.engine.max_num_seq", "max_num_seqs"),
    ({"grid": {"cluster.clients.7.role": ["prefill"]}},
     "sweep.grid.cluster.clients.7.role", "0..1"),
    ({"grid": {"cluster.router.*.name": ["round_robin"]}},
     "sweep.grid.cluster.router.*.name", "'*'"),
    ({"zip": {"workload.arrival.rate": [1.0, 2.0]}},
     "sweep.zip.workload.arrival.rate", "arrivals"),
    ({"grid": {"workload.arrivals.rate": {"start": 8, "stop": 2, "step": 2}}},
     "sweep.grid.workload.arrivals.rate", "empty"),
    ({"grid": {"workload.arrivals.rate": [1.0]}, "constraints": ["workload.rate > 1"]},
     "sweep.constraints.0", "workload.rate"),
])
def test_bad_serving_sweep_specs_are_one_line_errors(tmp_path, sweep, key, words):
    with pytest.raises(ConfigError) as e:
        load_sweep(write(tmp_path, sweep))
    msg = str(e.value)
    assert "\n" not in msg and key in msg and words in msg and "serve_sweep.yaml" in msg


def test_cli_sweeps_a_serving_experiment(tmp_path, capsys):
    from sim.cli import main

    p = write(tmp_path, {"grid": {"workload.arrivals.rate": [10.0, 40.0]}})
    out = tmp_path / "out"
    assert main(["sweep", str(p), "--executor", "serial", "--out", str(out)]) == 0
    import pandas as pd

    df = pd.read_csv(out / "serve_sweep" / "points.csv")
    assert len(df) == 2 and set(df.status) == {"ok"}
    assert {"workload.arrivals.rate", "policy", "goodput_rps", "throughput_rps",
            "tokens_per_j", "ttft_p99_s", "tpot_p50_s", "e2e_p99_s", "slo_attainment",
            "preemptions", "rejected"} <= set(df.columns)
    capsys.readouterr()
    assert main(["sweep", str(p), "--executor", "serial", "--out", str(out), "--resume"]) == 0
    assert "ran 0" in capsys.readouterr().out
    # `strata run` serves the base experiment of a sweep file
    assert main(["run", str(p), "--out", str(tmp_path / "run")]) == 0


TINY = {"name": "tiny", "source": "test", "hidden_size": 128, "num_layers": 1, "num_heads": 2,
        "num_kv_heads": 1, "intermediate_size": 256, "ffn": "gated", "vocab_size": 500,
        "max_position": 512, "norm": "rmsnorm"}


def test_step_tables_are_shared_per_process_and_keyed_on_content(monkeypatch):
    """A sweep worker builds a client's step table once; another model or option builds anew."""
    from sim.system.backends import StrataBackend

    builds = []
    real = sim.step_table

    def counting(*a, **k):
        builds.append(k)
        return real(*a, **k)
    monkeypatch.setattr(sim, "step_table", counting)
    opts = dict(max_tokens=32, max_chunk=16, max_past=32, max_context=64,
                points_per_octave=1, tol=0.05)

    def backend(model=TINY, **over):
        return StrataBackend("arch/quickstart.yaml", dict(model), mode="table",
                             table_options={**opts, **over})
    a, b = backend(), backend()
    assert a.table is b.table and len(builds) == 1
    assert backend(max_context=48).table is not a.table and len(builds) == 2
    other = backend({**TINY, "intermediate_size": 384})
    assert other.table is not a.table and len(builds) == 3
    step = dict(prefill=[(9, 4)], decode=[20, 33])
    assert a.price(**step) == b.price(**step)
    assert other.price(**step).seconds > a.price(**step).seconds    # a wider FFN costs more
    # the shared table's arrays are read-only: a holder cannot change what b is answered
    before = b.price(**step)
    arrays = [v for v in vars(a.table).values() if isinstance(v, np.ndarray)]
    assert arrays
    for arr in arrays:
        with pytest.raises(ValueError):
            arr[...] = 0
    assert b.price(**step) == before


def test_guided_search_over_a_serving_space(serial, tmp_path):
    """strata search maximises serving metrics over the same space; trials reuse the points a
    sweep's store would hold (same identity), and the front is non-dominated."""
    from sim.dse import run_search
    from sim.dse.plots import pareto_mask

    p, db = serial
    ref = rows_by_hash(db)
    front = run_search(p, tmp_path / "s.sqlite", budget_points=4, seed=1, population=2,
                       objectives=["goodput_rps:max", "tokens_per_j:max"])
    got = rows_by_hash(tmp_path / "s.sqlite")
    assert got and set(got) <= set(ref)
    assert all(got[h] == ref[h] for h in got)
    vals = np.array([[r[1][0]["goodput_rps"], r[1][0]["tokens_per_j"]] for r in got.values()])
    assert len(front) == int(pareto_mask(vals, ("max", "max")).sum())


def test_shipped_serving_sweep_is_policy_by_rate_with_splits_zipped():
    from sim.dse.serving import policy_of

    sw = load_sweep("sweep_serving")
    pts = list(sw.points())
    assert sw.serving and len(pts) == 35 and not [p for p in pts if p.dropped]
    layouts = {(policy_of(p.exp.cluster)[0], p.exp.workload.arrivals.rate) for p in pts}
    assert len(layouts) == 35       # 5 layouts x 7 rates, no layout repeated by the split
    assert {lay for lay, _ in layouts} == {"continuous", "chunked", "disaggregated 2P6D",
                                           "disaggregated 4P4D", "disaggregated 6P2D"}
    for p in pts:
        assert p.exp.workload.trace == "synthetic_conv_1k"
        assert p.exp.workload.arrivals.process == "poisson"
        assert all(c.mode == "table" and c.arch == "h100-sxm" for c in p.exp.cluster.clients)
        assert len(p.exp.cluster.clients) == 8
    for name in ("sweep_serving_goodput.png", "sweep_serving_tokens_per_joule.png"):
        assert (ROOT / "plots" / name).stat().st_size > 10_000


def test_star_keys_on_a_hardware_experiment(tmp_path):
    p = tmp_path / "hw.yaml"
    p.write_text(yaml.safe_dump({
        "name": "hw", "arch": "quickstart", "model": "llama-3-8b",
        "runs": [{"name": "a", "phase": "decode", "batch": 1, "context": 128},
                 {"name": "b", "phase": "decode", "batch": 2, "context": 256}],
        "sweep": {"grid": {"runs.*.context": [64, 512]},
                  "constraints": ["runs.1.context < 512"]}}))
    pts = list(load_sweep(p).points())
    assert [r.context for r in pts[0].exp.runs] == [64, 64]
    assert pts[1].dropped is not None and "constraint" in pts[1].dropped


def test_the_figure_script_draws_both_figures_from_a_store(serial, tmp_path, capsys):
    import runpy

    _, db = serial
    script = runpy.run_path(str(ROOT / "bench" / "serving_sweep_plots.py"), run_name="fig")
    assert script["main"]([str(db), "--plots", str(tmp_path)]) == 0
    for name in ("sweep_serving_goodput.png", "sweep_serving_tokens_per_joule.png"):
        assert (tmp_path / name).stat().st_size > 5_000
    assert "highest goodput per policy" in capsys.readouterr().out


def test_a_point_keeps_metric_rows_only_whatever_its_outputs_say(serial, tmp_path):
    """A base experiment that streams steps to a file and plots a timeline (which a single
    run allows) still sweeps: a point neither writes steps nor plots, and its rows are the same
    as with the default in-memory steps."""
    base = {**BASE, "outputs": {"steps": "file", "plots": ["timeline", "latency_cdf"]}}
    p = write(tmp_path, base=base)
    db = tmp_path / "file.sqlite"
    run_sweep(p, db, executor="serial")

    def rows(store):
        out = [r for _, (_, rs, _) in rows_by_hash(store).items() for r in rs]
        for r in out:
            r.pop("wall_s", None)
        return sorted(out, key=lambda r: (r["policy"], r["offered_rps"]))

    have, want = rows(db), rows(serial[1])
    assert len(have) == len(want) == 6 and have == want
    assert not list(tmp_path.glob("**/steps.csv")) and not list(tmp_path.glob("**/*.png"))
