"""ReCoN: switch count, Fig. 8, routing of every legal permutation, timing fast == reference,
monotonicity and invariants, and a GEMM through PE products + ReCoN equal to numpy."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from sim.config.errors import ConfigError
from sim.hw.recon import (
    AUX, MAIN, OutlierPair, ReconNetwork, configure, functional_gemm, merge_exact,
    merge_truncating, pairs_from_perm, recon_depth, recon_fold_cycles, recon_row_latency,
)
from sim.hw.recon_ref import simulate_recon_fold
from sim.numerics.mx import quantize


# ---------------------------------------------------------------------------------------------
# topology


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32, 64, 128])
def test_switch_count_is_n_times_log2n_plus_1(n):
    net = ReconNetwork(n)
    L = n.bit_length() - 1
    assert net.stages == L + 1 == recon_depth(n)
    assert net.switch_count == n * (L + 1)
    cfg = configure(n, [], ub=min(n, 8))
    ops = cfg.ops()
    assert len(ops) == net.stages and all(len(stage) == n for stage in ops)
    # no outliers: every column on its straight path, aux lanes idle, nothing merges
    assert cfg.counts()["merge"] == 0
    assert all(op[1] == "." for stage in ops for op in stage)


def test_paper_and_rtl_sizes():
    assert ReconNetwork(64).switch_count == 448          # 7 stages of 64 (research notes)
    assert ReconNetwork(8).switch_count == 32            # the RTL's 8x8 toy: 8 * (3 + 1)


def test_network_rejects_non_power_of_two():
    with pytest.raises(ConfigError):
        ReconNetwork(12)
    with pytest.raises(ConfigError):
        ReconNetwork(1)


# ---------------------------------------------------------------------------------------------
# Fig. 8


def test_fig8_merge_gives_56():
    """muB = 4 on 4 columns, MX-INT-2 inliers, outlier 1.10b = 1.5 (s=0, m1=1, m0=0),
    iAct = 32, iAcc = 8: Upper {s,m1} = 01 -> Res 32, Lower {s,m0} = 00 in column 3 -> Res 0.
    The paper: stage-1 swap, stage-2 swap, stage-3 merge = (32>>1) + (0>>2) + 8 + 32 = 56."""
    bb, iact = 2, 32
    q = np.array([1, -1, 1, 0])               # slots: Upper at column 0, Lower at column 3
    res = q * iact
    iacc = np.array([8, 3, -5, 11])
    cfg = configure(4, [OutlierPair(upper=0, lower=3, sign=+1)], ub=4)
    out = cfg.evaluate(res, iacc, iact, bb=bb, truncate=True)
    assert out[0] == 56
    assert out[3] == 11                        # the pruned slot passes its own iAcc
    assert out[1] == res[1] + iacc[1] and out[2] == res[2] + iacc[2]   # inliers pass
    # exact form: the same number in the 2**(2(bb-1)) = 4x frame
    exact = cfg.evaluate(res, iacc, iact, bb=bb)
    assert exact[0] == 56 * 4 == 224
    assert 1.5 * iact + 8 == 56
    # the switches the Lower crosses: swap (stage 1), swap (stage 2), merge (stage 3)
    ops = cfg.ops()
    assert [ops[0][3][0], ops[1][2][0], ops[2][0][0]] == ["x", "x", "m"]
    assert cfg.lanes == (MAIN,)
    assert cfg.counts()["merge"] == 1


@pytest.mark.parametrize("upper", [0, 1, 2])
def test_fig8_value_for_any_upper_position(upper):
    res = np.zeros(4, dtype=np.int64)
    res[upper] = 32
    iacc = np.zeros(4, dtype=np.int64)
    iacc[upper] = 8
    cfg = configure(4, [(upper, 3)], ub=4)
    assert cfg.evaluate(res, iacc, 32, bb=2, truncate=True)[upper] == 56


# ---------------------------------------------------------------------------------------------
# routing of every legal permutation


def _legal_patterns(ub: int, max_outliers: int) -> list[list[tuple[int, int]]]:
    pats = []
    for k in range(max_outliers + 1):
        for ups in itertools.combinations(range(ub), k):
            rest = [c for c in range(ub) if c not in ups]
            for lows in itertools.permutations(rest, k):
                pats.append(list(zip(ups, lows)))
    return pats


PATTERNS_8 = _legal_patterns(8, 4)
PATTERNS_4 = _legal_patterns(4, 2)


def _expected(cfg, res, iacc, iact, bb, truncate):
    exp = res + iacc
    for p in cfg.pairs:
        exp[..., p.lower] = iacc[..., p.lower]
        if truncate:
            exp[..., p.upper] = merge_truncating(res[..., p.upper], res[..., p.lower], iact,
                                                 iacc[..., p.upper], p.sign, bb)
        else:
            exp[..., p.upper] = merge_exact(res[..., p.upper], res[..., p.lower], iact,
                                            iacc[..., p.upper], p.sign, bb)
    return exp


class _Vectors:
    """Random row vectors drawn in bulk (2 rows per check)."""

    def __init__(self, rng, n, count):
        self.res = rng.integers(-2**24, 2**24, size=(count, 2, n))
        self.iacc = rng.integers(-2**24, 2**24, size=(count, 2, n))
        self.iact = rng.integers(-128, 128, size=(count, 2))
        self.i = 0

    def next(self):
        i, self.i = self.i, self.i + 1
        return self.res[i], self.iacc[i], self.iact[i]


def _check_row(cfg, vecs, bb, truncate):
    res, iacc, iact = vecs.next()
    out, ports = cfg.evaluate(res, iacc, iact, bb=bb, truncate=truncate, full=True)
    exp = _expected(cfg, res, iacc, iact, bb, truncate)
    assert (out == exp).all(), (cfg.pairs, bb, truncate)
    # nothing is left on the unused output port or in the output stage's aux lane
    assert not ports[..., 1, :].any() and not ports[..., 0, AUX].any()


def test_pattern_count():
    # sum_k C(8,k) C(8-k,k) k!  for k = 0..4
    assert len(PATTERNS_8) == 1 + 56 + 840 + 3360 + 1680 == 5937
    assert len(PATTERNS_4) == 1 + 12 + 12


def test_every_permutation_of_a_microblock_of_8_on_8_columns():
    rng = np.random.default_rng(8)
    vecs = _Vectors(rng, 8, 2 * len(PATTERNS_8))
    signs = rng.choice([-1, 1], size=(len(PATTERNS_8), 4))
    aux_used = 0
    for i, pat in enumerate(PATTERNS_8):
        cfg = configure(8, [(u, l, int(s)) for (u, l), s in zip(pat, signs[i])], ub=8)
        aux_used += sum(cfg.lanes)
        _check_row(cfg, vecs, bb=2 if i % 2 else 4, truncate=False)
        _check_row(cfg, vecs, bb=2 if i % 3 else 4, truncate=True)
    assert aux_used > 0        # the second lane is really needed by some permutations


@pytest.mark.parametrize("n", [16, 64])
def test_every_permutation_of_a_microblock_of_8_on_wider_rows(n):
    """Each row carries n/8 micro-blocks side by side, filled from a shuffled list of all
    patterns, so every pattern appears at least once at some position."""
    rng = np.random.default_rng(n)
    blocks = n // 8
    order = rng.permutation(len(PATTERNS_8))
    order = np.concatenate([order, order[:(-len(order)) % blocks]]).reshape(-1, blocks)
    vecs = _Vectors(rng, n, len(order))
    signs = rng.choice([-1, 1], size=(len(order), blocks, 4))
    for r, row in enumerate(order):
        pairs = [(8 * b + u, 8 * b + l, int(signs[r, b, j]))
                 for b, idx in enumerate(row) for j, (u, l) in enumerate(PATTERNS_8[idx])]
        cfg = configure(n, pairs, ub=8)
        _check_row(cfg, vecs, bb=4 if r % 2 else 2, truncate=r % 3 == 0)


def test_every_permutation_of_a_microblock_of_4():
    rng = np.random.default_rng(4)
    vecs = _Vectors(rng, 8, 2 * 3 * len(PATTERNS_4))
    for n in (4, 8):
        for pat in PATTERNS_4:
            for base in range(0, n, 4):
                cfg = configure(n, [(base + u, base + l, -1) for u, l in pat], ub=4)
                vecs_n = vecs if n == 8 else _Vectors(rng, n, 2)
                _check_row(cfg, vecs_n, bb=2, truncate=False)
                _check_row(cfg, vecs_n, bb=2, truncate=True)


def test_why_links_need_two_lanes():
    # Lower 0 -> Upper 5 shares a link with column 1's straight path: it must ride aux
    assert configure(8, [(5, 0)]).lanes == (AUX,)
    # Lower 2 -> Upper 0 and Lower 3 -> Upper 4 need the same spare link: different lanes
    assert sorted(configure(8, [(0, 2), (4, 3)]).lanes) == [MAIN, AUX]


def test_pairs_from_permutation_list():
    perm = np.full((2, 4, 2), -1)
    perm[0, 0] = (1, 6)
    perm[1, 0], perm[1, 1] = (0, 2), (3, 7)
    signs = np.zeros((2, 4), dtype=int)
    signs[0, 0], signs[1, 0], signs[1, 1] = -1, 1, -1
    pairs = pairs_from_perm(perm, signs, micro=8)
    assert pairs == [OutlierPair(1, 6, -1), OutlierPair(8, 10, 1), OutlierPair(11, 15, -1)]
    configure(16, pairs, ub=8)     # routes


@pytest.mark.parametrize("pairs", [
    [(0, 1), (0, 2)],              # a column twice
    [(0, 1), (2, 1)],
    [(3, 9)],                      # Upper and Lower in different micro-blocks
    [(0, 1), (2, 3), (4, 5), (6, 7), (1, 0)],   # a fifth entry reusing columns
    [(0, 0)],                      # Upper is its own Lower
    [(0, 16)],                     # out of range
    [(0, 1, 2)],                   # bad sign
])
def test_routing_rejects_illegal_lists(pairs):
    with pytest.raises(ConfigError):
        configure(16, pairs, ub=8)


def test_routing_rejects_bad_microblock_geometry():
    with pytest.raises(ConfigError):
        configure(8, [(0, 4)], ub=4)              # crosses micro-blocks of 4
    with pytest.raises(ConfigError):
        configure(8, [(0, 1)], ub=16)             # micro-block wider than the row
    with pytest.raises(ConfigError):
        configure(8, [(0, 1)], ub=6)              # not a power of two
    # a full micro-block of 8 (4 outliers, 4 pruned slots) is the limit and routes
    configure(8, [(0, 4), (1, 5), (2, 6), (3, 7)], ub=8)


# ---------------------------------------------------------------------------------------------
# timing: fast closed form == cycle-stepped reference


def _random_fold(rng):
    R = int(rng.integers(2, 17))
    C = int(rng.integers(2, 17))
    T = int(rng.integers(1, 41))
    units = int(rng.choice([u for u in (1, 2, 4, 8) if R % u == 0]))
    m = int(rng.integers(0, R + 1))
    rows = sorted(rng.choice(R, size=m, replace=False).tolist())
    return T, rows, R, C, units


def test_fast_equals_reference_on_random_folds():
    rng = np.random.default_rng(2024)
    cases = [_random_fold(rng) for _ in range(220)]
    # make sure the contention paths are exercised: dense outlier rows, one unit
    cases += [(40, list(range(R)), R, C, 1) for R, C in ((16, 16), (8, 3), (4, 16))]
    cases += [(25, [0, 1, 2, 3, 9, 10, 15], 16, 7, u) for u in (1, 2, 4, 8)]
    stalled = 0
    for T, rows, R, C, units in cases:
        fast = recon_fold_cycles(T, rows, R, C, units)
        ref = simulate_recon_fold(T, rows, R, C, units)
        got = (ref.extra_cycles, ref.accesses, ref.conflicts, ref.stall_cycles, ref.depth)
        want = (fast.extra_cycles, fast.accesses, fast.conflicts, fast.stall_cycles, fast.depth)
        assert got == want, (T, rows, R, C, units)
        if rows:
            # the controller's throttle is exactly the sync + ReCoN pipeline, never early
            assert ref.min_slack == 0
        assert ref.max_wait <= max(0, len(rows) - 1)
        stalled += fast.stall_cycles > 0
    assert stalled > 50


def test_zero_outlier_rows_cost_nothing():
    for R, C, T, u in ((4, 4, 10, 1), (16, 8, 33, 4), (64, 64, 2048, 8)):
        t = recon_fold_cycles(T, [], R, C, u)
        assert (t.extra_cycles, t.accesses, t.conflicts, t.stall_cycles) == (0, 0, 0, 0)
    ref = simulate_recon_fold(7, [], 5, 3, 1)
    assert ref.extra_cycles == ref.accesses == ref.stall_cycles == 0


@pytest.mark.parametrize("C", [1, 2, 3, 8, 16, 64])
def test_one_outlier_row_adds_sync_plus_depth(C):
    t = recon_fold_cycles(50, [3], 8, C, 1)
    assert t.depth == (C - 1).bit_length() + 1
    assert t.sync_cycles == C - 1
    assert t.extra_cycles == t.row_latency == recon_row_latency(C) == (C - 1) + t.depth
    assert t.conflicts == t.stall_cycles == 0 and t.accesses == 50


def test_contention_by_hand():
    # rows 0 and 1 on one unit, C = 4 (D = 3, delta = 6), T = 100: row 0 requests in cycles
    # [0, 100), row 1 (delayed by delta) in [7, 107); the 93 common cycles each stall once
    t = recon_fold_cycles(100, [0, 1], 8, 4, 1)
    assert t.row_latency == 6
    assert t.stall_cycles == t.conflicts == 93
    assert t.extra_cycles == 2 * 6 + 93
    # the same rows on different units (4 rows per unit with 2 units: both in unit 0) ...
    assert recon_fold_cycles(100, [0, 1], 8, 4, 2).stall_cycles == 93
    # ... and on their own units with 8 units: no conflicts
    assert recon_fold_cycles(100, [0, 1], 8, 4, 8).stall_cycles == 0
    # C = 1: delta = 1, rows k complete vectors from cycle 2k on. T = 1: no overlap
    ref = simulate_recon_fold(1, [0, 1, 2], 4, 1, 1)
    assert ref.max_wait == 0 and ref.stall_cycles == 0
    # T = 30: batches 2..3 hold rows {0,1}, 4..29 rows {0,1,2}, 30..31 rows {1,2}. Fixed
    # priority serves the lowest row first, so the N-th waits N-1 cycles: row 0 never waits,
    # row 1 waits 1 in batches 2..29, row 2 waits 2 in 4..29 and 1 in 30..31
    ref = simulate_recon_fold(30, [0, 1, 2], 4, 1, 1)
    assert ref.max_wait == 2
    assert ref.wait_by_row[:3] == (0, 2 + 26, 26 * 2 + 2)
    assert ref.stall_cycles == 2 * 1 + 26 * 2 + 2 * 1
    assert sum(ref.wait_by_row) > ref.stall_cycles == recon_fold_cycles(30, [0, 1, 2], 4, 1,
                                                                       1).stall_cycles


def test_long_stream_on_one_unit_runs_m_times_slower():
    m, T = 8, 4096
    t = recon_fold_cycles(T, range(m), 64, 64, 1)
    assert (m - 1) * T - m * t.row_latency <= t.stall_cycles <= (m - 1) * T


def test_monotonicity():
    rng = np.random.default_rng(7)
    for _ in range(1500):
        R = int(rng.choice([2, 4, 8, 16, 32, 64]))
        C = int(rng.integers(1, 70))
        T = int(rng.integers(1, 300))
        m = int(rng.integers(0, R))
        rows = rng.choice(R, size=m, replace=False)
        units = [u for u in (1, 2, 4, 8) if R % u == 0]
        extra = [recon_fold_cycles(T, rows, R, C, u).extra_cycles for u in units]
        assert all(a >= b for a, b in zip(extra, extra[1:])), "more units never slower"
        u = int(rng.choice(units))
        more = np.append(rows, rng.choice(np.setdiff1d(np.arange(R), rows)))
        assert (recon_fold_cycles(T, more, R, C, u).extra_cycles
                >= recon_fold_cycles(T, rows, R, C, u).extra_cycles), "more rows never faster"
        assert (recon_fold_cycles(T + 1, rows, R, C, u).extra_cycles
                >= recon_fold_cycles(T, rows, R, C, u).extra_cycles)


def test_invariants():
    rng = np.random.default_rng(11)
    for _ in range(1000):
        R = int(rng.choice([1, 2, 4, 8, 16, 64]))
        C = int(rng.integers(1, 130))
        T = int(rng.integers(1, 500))
        rows = rng.choice(R, size=int(rng.integers(0, R + 1)), replace=False)
        u = int(rng.choice([x for x in (1, 2, 4, 8) if R % x == 0]))
        t = recon_fold_cycles(T, rows, R, C, u)
        m = len(rows)
        assert t.stall_cycles >= 0 and t.conflicts >= t.stall_cycles
        assert t.accesses == m * T and t.conflicts <= t.accesses
        assert t.extra_cycles == m * t.row_latency + t.stall_cycles
        if u == 1:
            assert t.conflicts == t.stall_cycles
        if u == R:                       # a unit per row: nobody ever waits
            assert t.stall_cycles == 0
        assert t.stall_cycles <= max(0, m - 1) * T


@pytest.mark.parametrize("kwargs", [
    dict(T=10, outlier_rows=[0], rows=8, cols=8, units=3),      # units must divide rows
    dict(T=10, outlier_rows=[8], rows=8, cols=8, units=1),      # row out of range
    dict(T=0, outlier_rows=[0], rows=8, cols=8, units=1),
    dict(T=10, outlier_rows=[0], rows=8, cols=0, units=1),
    dict(T=10, outlier_rows=[0.5], rows=8, cols=8, units=1),
])
def test_timing_rejects_bad_input(kwargs):
    with pytest.raises(ConfigError):
        recon_fold_cycles(**kwargs)
    with pytest.raises(ConfigError):
        simulate_recon_fold(**kwargs)


# ---------------------------------------------------------------------------------------------
# end to end: GEMM through PE products + ReCoN vs numpy on the dequantized weights


def _planted(rng, K, N, frac=0.03):
    W = rng.normal(0.0, 0.02, size=(K, N))
    hit = rng.random((K, N)) < frac
    W[hit] *= rng.uniform(8.0, 30.0, hit.sum()) * rng.choice([-1.0, 1.0], hit.sum())
    return W


@pytest.mark.parametrize("bb", [2, 4])
@pytest.mark.parametrize("micro_exp", ["shared", "per_outlier"])
def test_functional_gemm_equals_numpy_on_dequantized_weights(bb, micro_exp):
    rng = np.random.default_rng(100 + bb)
    K, N, M = 40, 256, 6
    mx = quantize(_planted(rng, K, N), bb=bb, micro_exp=micro_exp)
    assert mx.n_outliers > 50 and mx.has_outlier.any(axis=1).mean() > 0.5
    A = rng.integers(-128, 128, size=(M, K))
    want = A.astype(np.float64) @ mx.dequantize()
    for cols in (64, 8):
        got = functional_gemm(A, mx, cols=cols)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
    # the outliers matter: treating the slots as plain inliers is far off
    plain = A.astype(np.float64) @ (mx.q * mx.inlier_scale())
    assert np.abs(plain - want).max() > 1e-3 * np.abs(want).max()


def test_functional_gemm_with_extreme_scale_spread():
    """Scales 2**-84 .. 2**39 in one matrix: partial sums exceed int64, Python ints take over."""
    rng = np.random.default_rng(5)
    W = rng.normal(0.0, 1.0, size=(8, 128))
    W[0] *= 1e-25
    W[1] *= 1e12
    W[2, 5], W[0, 9] = 400.0, 3e-23
    mx = quantize(W, bb=4)
    assert mx.n_outliers >= 2
    A = rng.integers(-128, 128, size=(3, 8))
    want = A.astype(np.float64) @ mx.dequantize()
    np.testing.assert_allclose(functional_gemm(A, mx), want, rtol=1e-9, atol=0)
