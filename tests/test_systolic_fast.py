"""The fast array model against an independent fold-by-fold evaluation and SCALE-Sim's formulas.

The register-level reference (tests/test_systolic_ref.py) proves the fast model on small shapes;
here the fast model's closed-form extrapolation of fold issue times is checked against a plain
per-fold recurrence on thousands of larger shapes, where stepping cycles would be too slow.
"""
import math
import random

import numpy as np
import pytest

from sim.hw.systolic import array_timing, ideal_cycles, lanes_and_fusion, map_gemm


def folds_one_by_one(M, K, N, R, C, df, m):
    """Issue every fold in order with the spec's rules (no periodicity shortcut)."""
    mp = map_gemm(M, K, N, R, C, df, m)
    n, T, CL, FR = mp.folds, mp.T, mp.logical_cols, mp.fold_rows
    cols = [mp.last_cols if f // FR == mp.fold_cols - 1 else mp.full_cols for f in range(n)]
    rows = [mp.last_rows if f % FR == FR - 1 else R for f in range(n)]
    if df == "os":
        s = [0]
        for f in range(1, n):
            s.append(s[-1] + max(T, rows[f - 1]))
        return s, max(s[f] + T + rows[f] + cols[f] - 1 for f in range(n))
    load, s = [0], [R]
    for f in range(1, n):
        lf = load[-1] + R
        if f >= 2:
            lf = max(lf, s[f - 2] + T + CL - 1)
        load.append(lf)
        s.append(max(s[-1] + T, lf + R))
    return s, max(s[f] + T + R + cols[f] - 2 for f in range(n))


def random_cases(n, seed, max_dim=300, max_arr=24):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        M, K, N = (rng.randint(1, max_dim) for _ in range(3))
        R, C = rng.randint(1, max_arr), rng.randint(1, max_arr)
        df = rng.choice(["ws", "os", "is"])
        m = rng.choice([4, 2, 1, 0.5, 0.25, 0.125])
        if m < 1 and C * m < 1:
            continue
        out.append((M, K, N, R, C, df, m))
    return out


@pytest.mark.parametrize("case", random_cases(3000, seed=7), ids=lambda c: "x".join(map(str, c)))
def test_closed_form_equals_fold_by_fold(case):
    s_ref, total_ref = folds_one_by_one(*case)
    t = array_timing(*case)
    assert t.total == total_ref
    np.testing.assert_array_equal(t.issue_times(), np.asarray(s_ref))


def test_long_fold_sequences_extrapolate_exactly():
    # thousands of folds: the periodic extrapolation must match stepping every fold
    for case in [(1, 4096, 4096, 64, 64, "ws", 1), (3, 4096, 11008, 64, 64, "ws", 2),
                 (7, 1000, 900, 16, 12, "is", 0.5), (64, 4096, 4096, 32, 32, "os", 1)]:
        s_ref, total_ref = folds_one_by_one(*case)
        assert array_timing(*case).total == total_ref
        np.testing.assert_array_equal(array_timing(*case).issue_times(), s_ref)


@pytest.mark.parametrize("M,K,N,R,C,df,expected", [
    # values printed by SCALE-Sim 3.0.0 on a 32x32 array (not rerun here); they follow the closed
    # form of bench/vs_scalesim.py's scalesim_closed_form, e.g. OS 4 folds x (64+32+32-2) - 1
    (64, 64, 64, 32, 32, "os", 503),
    (64, 64, 64, 32, 32, "ws", 631),
    (128, 768, 768, 32, 32, "os", 79679),
    (128, 768, 768, 32, 32, "ws", 127871),
])
def test_scalesim_convention_matches_published_runs(M, K, N, R, C, df, expected):
    assert array_timing(M, K, N, R, C, df, 1, "scalesim").total == expected


def test_strata_hides_weight_preload_that_scalesim_pays():
    # with T >= R the WS preload of every fold but the first is hidden behind streaming
    strata = array_timing(128, 768, 768, 32, 32, "ws").total
    scalesim = array_timing(128, 768, 768, 32, 32, "ws", 1, "scalesim").total
    folds = map_gemm(128, 768, 768, 32, 32, "ws").folds
    assert strata == 32 + folds * 128 + 32 + 32 - 2
    assert scalesim - strata > (folds - 1) * (32 + 32)


@pytest.mark.parametrize("case", random_cases(500, seed=11), ids=lambda c: "x".join(map(str, c)))
def test_bounds_and_utilization(case):
    M, K, N, R, C, df, m = case
    t = array_timing(*case)
    assert t.total >= ideal_cycles(M, K, N, R, C, m)
    assert 0 < t.utilization <= 1
    assert t.macs == M * K * N


def test_lanes_double_throughput_and_fusion_halves_it():
    base = array_timing(512, 512, 512, 32, 32, "ws", 1).total
    two = array_timing(512, 512, 512, 32, 32, "ws", 2).total
    half = array_timing(512, 512, 512, 32, 32, "ws", 0.5).total
    assert two < base < half
    assert math.isclose(base / two, 2, rel_tol=0.1)
    assert math.isclose(half / base, 2, rel_tol=0.1)


@pytest.mark.parametrize("bad", [0, -1, 0.3, 1.5])
def test_bad_macs_per_cycle_rejected(bad):
    with pytest.raises(ValueError):
        lanes_and_fusion(bad)


def test_fusion_needs_enough_columns():
    with pytest.raises(ValueError, match="columns"):
        map_gemm(4, 4, 4, 4, 2, "ws", 0.25)


def test_bad_dataflow_and_convention():
    with pytest.raises(ValueError, match="dataflow"):
        array_timing(4, 4, 4, 4, 4, "xs")
    with pytest.raises(ValueError, match="convention"):
        array_timing(4, 4, 4, 4, 4, "ws", 1, "timeloop")
