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
