"""``strata plot``: the Pareto front of sweep results against brute force, and the figure."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from sim.cli import main
from sim.dse.plots import pareto_mask, plot_results
from sim.config import ConfigError


def _brute(v, senses):
    s = np.array([1 if x == "min" else -1 for x in senses]) * v
    keep = []
    for i, a in enumerate(s):
        if np.isnan(a).any():
            keep.append(False)
            continue
        keep.append(not any(np.all(b <= a) and np.any(b < a)
                            for j, b in enumerate(s) if j != i and not np.isnan(b).any()))
    return np.array(keep)


@pytest.mark.parametrize("k, senses", [(2, ("min", "min")), (2, ("min", "max")),
                                       (3, ("min", "min", "max"))])
def test_pareto_mask_equals_brute_force_with_ties_and_nans(k, senses):
    rng = np.random.default_rng(k)
    for _ in range(40):
        v = rng.integers(0, 6, (int(rng.integers(1, 30)), k)).astype(float)   # many ties
        if len(v) > 3:
            v[rng.integers(len(v)), rng.integers(k)] = np.nan
        assert (pareto_mask(v, senses) == _brute(v, senses)).all()


def test_plot_cli_writes_the_figure_and_names_bad_columns(tmp_path, capsys):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"status": ["ok"] * 20 + ["dropped"], "run": "decode",
                       "latency_s": np.r_[rng.random(20), np.nan],
                       "energy_j": np.r_[rng.random(20), np.nan],
                       "arch.array.rows": list(itertools.islice(itertools.cycle([32, 64]), 21))})
    csv = tmp_path / "points.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "f.png"
    assert main(["plot", str(csv), "--x", "energy_j", "--y", "latency_s", "--color",
                 "arch.array.rows", "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert main(["plot", str(tmp_path), "--x", "energy", "--y", "latency_s"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--x" in err and "energy_j" in err
    with pytest.raises(ConfigError, match="one of the runs"):
        plot_results(df.assign(run=["a", "b"] * 10 + ["a"]), out, x="energy_j", y="latency_s")


def test_plot_of_missing_or_empty_results_is_a_one_line_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope"), "--x", "a", "--y", "b"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nope" in err and "no such file" in err
    assert main(["plot", str(tmp_path), "--x", "a", "--y", "b"]) == 2      # a folder without results
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "points.csv" in err
    pd.DataFrame({"status": ["failed"], "latency_s": [1.0], "energy_j": [1.0]}).to_csv(
        tmp_path / "points.csv", index=False)
    assert main(["plot", str(tmp_path), "--x", "energy_j", "--y", "latency_s"]) == 2
    assert "at least one point that ran" in capsys.readouterr().err


# ------------------------------------------------------------- the other kinds ----
def _sweep_frame(seed=0):
    """A sweep-like frame: three swept keys (one left out per combination so a heatmap cell
    is empty), two runs, objective metrics with ties, component energies summing to the total
    (one component zero everywhere), and a dropped point."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (p, q, r) in enumerate(itertools.product([1, 2, 4], [16, 32], [0.5, 0.7])):
        if (p, q) == (4, 32):
            continue
        for run in ("decode", "prefill"):
            parts = {"energy_cells_j": rng.integers(1, 5) / 10, "energy_dram_j": rng.random(),
                     "energy_noc_j": 0.0}
            rows.append({"point": i, "status": "ok", "a.p": p, "a.q": q, "a.r": r, "run": run,
                         "latency_s": float(rng.integers(1, 4)), "area_mm2": float(p * q),
                         "energy_j": sum(parts.values()), "tokens_per_s": rng.random(), **parts})
    rows.append({"point": 99, "status": "dropped", "a.p": 8, "a.q": 16, "a.r": 0.5})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("senses", [("min", "min", "min"), ("min", "max", "min")])
def test_pareto3d_front_is_the_brute_force_non_dominated_set(tmp_path, senses):
    from sim.dse.plots import plot_pareto3d

    df = _sweep_frame()
    cols = ["latency_s", "tokens_per_s", "area_mm2"]
    data = plot_pareto3d(df, tmp_path / "p3.png", x=cols[0], y=cols[1], z=cols[2],
                         run="decode", senses=senses)
    ran = df[(df.status == "ok") & (df.run == "decode")]
    assert list(data.table.index) == list(ran.index)
    want = _brute(ran[cols].to_numpy(float), senses)
    assert (data.table.pareto.to_numpy() == want).all() and 0 < want.sum() < len(ran)
    assert data.path.stat().st_size > 20_000


@pytest.mark.parametrize("agg, sense", [("best", "min"), ("best", "max"), ("mean", "min")])
def test_lines_are_the_groupby_aggregate(tmp_path, agg, sense):
    from sim.dse.plots import plot_lines

    df = _sweep_frame()
    data = plot_lines(df, tmp_path / "l.png", x="a.q", y="latency_s", color="a.p",
                      run="prefill", agg=agg, sense=sense)
    ran = df[(df.status == "ok") & (df.run == "prefill")]
    how = "mean" if agg == "mean" else sense
    want = ran.groupby(["a.p", "a.q"]).latency_s.agg(how).unstack("a.p")
    pd.testing.assert_frame_equal(data.table, want, check_names=False)
    assert ("mean" if agg == "mean" else sense) in data.note and "up to 2 points" in data.note
    # one line per run when the colour is the run column itself (no --run needed)
    by_run = plot_lines(df, tmp_path / "l2.png", x="a.r", y="energy_j", color="run")
    assert list(by_run.table.columns) == ["decode", "prefill"]


def test_heatmap_cells_are_the_pandas_pivot_with_empty_cells(tmp_path):
    from sim.dse.plots import plot_heatmap

    df = _sweep_frame(1)
    data = plot_heatmap(df, tmp_path / "h.png", x="a.p", y="a.q", z="energy_j", run="decode",
                        agg="mean")
    ran = df[(df.status == "ok") & (df.run == "decode")]
    want = ran.pivot_table(index="a.q", columns="a.p", values="energy_j", aggfunc="mean")
    pd.testing.assert_frame_equal(data.table, want, check_names=False)
    assert np.isnan(data.table.loc[32, 4]) and data.table.shape == (2, 3)
    best = plot_heatmap(df, tmp_path / "h.png", x="a.p", y="a.q", z="energy_j", run="decode")
    assert np.allclose(best.table.loc[16, 2], ran[(ran["a.p"] == 2) & (ran["a.q"] == 16)]
                       .energy_j.min())


def test_energy_stacks_sum_to_the_total(tmp_path):
    from sim.dse.plots import plot_energy

    df = _sweep_frame(2)
    ran = df[(df.status == "ok") & (df.run == "decode")]
    per_point = plot_energy(df, tmp_path / "e.png", run="decode")
    t = per_point.table
    assert list(t.columns) == ["energy_cells_j", "energy_dram_j", "total"]   # noc is all zero
    assert len(t) == len(ran) and t.index.is_unique and "p=1 q=16 r=0.5" == t.index[0]
    assert np.allclose(t.drop(columns="total").sum(axis=1), t.total)
    assert np.allclose(t.total, ran.energy_j)
    for agg in ("best", "mean"):
        t = plot_energy(df, tmp_path / "e.png", x="a.p", run="decode", agg=agg).table
        assert np.allclose(t.drop(columns="total").sum(axis=1), t.total)
        want = ran.groupby("a.p").energy_j.agg("min" if agg == "best" else "mean")
        assert np.allclose(t.total, want) and list(t.index) == ["1", "2", "4"]


@pytest.mark.parametrize("argv, words", [
    (["--kind", "pareto3d", "--x", "latency_s", "--y", "energy_j"], ["--z", "pareto3d"]),
    (["--kind", "heatmap", "--x", "a.p", "--y", "a.q", "--z", "energz_j"],
     ["--z", "energy_j"]),
    (["--kind", "heatmap", "--x", "a.p", "--y", "run", "--z", "energy_j"], ["numeric", "run"]),
    (["--kind", "heatmap", "--x", "a.p", "--y", "b", "--z", "energy_j"], ["at least 2", "'b'"]),
    (["--kind", "lines", "--x", "b", "--y", "latency_s"], ["at least 2", "--x"]),
    (["--kind", "lines", "--x", "a.p", "--y", "latency_s", "--z", "area_mm2"], ["no --z"]),
    (["--kind", "lines", "--x", "a.p", "--y", "latency_s", "--max", "x"], ["--max", "y"]),
    (["--kind", "lines", "--x", "a.p", "--y", "latency_s", "--agg", "median"], ["best, mean"]),
    (["--kind", "lines", "--x", "a.p", "--y", "a.p"], ["other than"]),
    (["--kind", "energy", "--y", "latency_s"], ["no --y"]),
    (["--kind", "violin", "--x", "a.p"], ["pareto3d", "violin"]),
])
def test_plot_kinds_bad_input_is_a_one_line_error(tmp_path, capsys, argv, words):
    df = _sweep_frame()
    df = df[df.run == "decode"].assign(b=1)
    df.to_csv(tmp_path / "points.csv", index=False)
    assert main(["plot", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path) in err
    for w in words:
        assert w in err


def test_plot_kinds_from_the_cli_write_their_figures(tmp_path, capsys):
    _sweep_frame().to_csv(tmp_path / "points.csv", index=False)
    r = str(tmp_path)
    for argv, name in (
            (["--kind", "lines", "--x", "a.r", "--y", "latency_s", "--group", "a.p", "--run",
              "decode", "--agg", "mean"], "latency_s_by_a.r.png"),
            (["--kind", "heatmap", "--x", "a.p", "--y", "a.q", "--z", "tokens_per_s", "--max",
              "z", "--run", "decode"], "tokens_per_s_over_a.p_a.q.png"),
            (["--kind", "energy", "--x", "run"], "energy_by_run.png")):
        assert main(["plot", r] + argv) == 0
        assert (tmp_path / name).stat().st_size > 10_000
        assert name in capsys.readouterr().out
