"""ReCoN over a stream of weight-stationary folds.

* the cycle-stepped reference (:func:`simulate_recon_folds`) on one fold is the single-fold
  machine (== :func:`recon_fold_cycles` == :func:`simulate_recon_fold`);
* its invariants (accesses, one grant per unit and cycle, capacity) and live hazard checks;
* the closed form :func:`recon_stream_cycles` equals the reference exactly;
  for both throttles (``per_fold``: each fold its own offsets; ``union``: one for all folds).
"""
from __future__ import annotations

import numpy as np
import pytest

from sim.config.errors import ConfigError
from sim.hw.recon import recon_fold_cycles, recon_row_latency
from sim.hw.recon_ref import RefHazard, _Stream, simulate_recon_fold, simulate_recon_folds
from sim.hw.recon_stream import recon_stream_cycles
from sim.hw.systolic import _stationary_issue


def _units(rng, R):
    return int(rng.choice([u for u in (1, 2, 4, 8) if R % u == 0]))


def _random_stream(rng, max_folds=8):
    R = int(rng.choice([2, 4, 8, 16]))
    C = int(rng.integers(1, 17))
    T = int(rng.integers(1, 41))
    F = int(rng.integers(1, max_folds + 1))
    p = float(rng.random())
    folds = [np.flatnonzero(rng.random(R) < p).tolist() for _ in range(F)]
    return T, folds, R, C, _units(rng, R)


# ---------------------------------------------------------------------------------------------
# one fold


def test_one_fold_is_the_single_fold_machine():
    rng = np.random.default_rng(31)
    cases = []
    for _ in range(120):
        R = int(rng.integers(2, 17))
        rows = sorted(rng.choice(R, size=int(rng.integers(0, R + 1)), replace=False).tolist())
        cases.append((int(rng.integers(1, 41)), rows, R, int(rng.integers(1, 17)),
                      _units(rng, R)))
    cases += [(40, list(range(16)), 16, 16, 1), (25, [0, 1, 2, 3, 9, 10, 15], 16, 7, 2)]
    for T, rows, R, C, units in cases:
        fast = recon_fold_cycles(T, rows, R, C, units)
        ref = simulate_recon_folds(T, [rows], R, C, units)
        one = simulate_recon_fold(T, rows, R, C, units)
        closed = recon_stream_cycles(T, [rows], R, C, units)
        want = (fast.extra_cycles, fast.accesses, fast.conflicts, fast.stall_cycles, fast.depth)
        assert (ref.extra_cycles, ref.accesses, ref.conflicts, ref.stall_cycles,
                ref.depth) == want, (T, rows, R, C, units)
        assert (one.extra_cycles, one.accesses, one.conflicts, one.stall_cycles,
                one.depth) == want
        assert (one.last_write, one.plain_last_write, one.min_slack, one.max_wait,
                one.wait_by_row) == (ref.last_write, ref.plain_last_write, ref.min_slack,
                                     ref.max_wait, ref.wait_by_row)
        assert (closed.extra_cycles, closed.accesses, closed.conflicts, closed.stall_cycles,
                closed.depth) == want
        assert ref.fold_extra == (ref.extra_cycles,) and ref.bubble_cycles == 0


# ---------------------------------------------------------------------------------------------
# invariants of the stepped stream


def test_stream_invariants():
    rng = np.random.default_rng(32)
    for _ in range(80):
        T, folds, R, C, units = _random_stream(rng)
        for clock in ("advance", "real"):
            ref = simulate_recon_folds(T, folds, R, C, units, issue_clock=clock, log=True)
            m_total = sum(len(o) for o in folds)
            assert ref.accesses == T * m_total == len(ref.grants)
            # every vector of every outlier row goes through exactly once, on its row's unit
            got = sorted((f, k, t) for _, _, k, f, t in ref.grants)
            assert got == sorted((f, k, t) for f, o in enumerate(folds) for k in o
                                 for t in range(T))
            assert all(g == k // (R // units) for _, g, k, _, _ in ref.grants)
            # a unit grants at most one row vector per cycle ...
            slots = [(cyc, g) for cyc, g, _, _, _ in ref.grants]
            assert len(set(slots)) == len(slots)
            # ... so the stream lasts at least as long as its busiest unit is busy
            busiest = max(np.bincount([g for _, g in slots], minlength=units)) if slots else 0
            assert ref.last_write + 1 >= busiest >= ref.accesses / units
            assert ref.conflicts >= ref.stall_cycles >= 0 and ref.conflicts <= ref.accesses
            assert ref.extra_cycles >= 0
            assert sum(ref.fold_extra) == ref.extra_cycles
            if m_total:
                assert ref.min_slack == 0        # the throttle is exactly the pipeline
            if clock == "advance":
                last_depth = len(folds[-1]) * recon_row_latency(C)
                assert ref.extra_cycles == ref.bubble_cycles + last_depth + ref.stall_cycles
                assert sum(ref.fold_stalls) == ref.stall_cycles


def test_real_issue_clock_only_matters_when_the_loader_binds():
    rng = np.random.default_rng(33)
    for _ in range(30):
        T, folds, R, C, units = _random_stream(rng)
        T = max(T, R + C - 1)        # the plain schedule is stream-bound: issue never binds
        adv = simulate_recon_folds(T, folds, R, C, units)
        real = simulate_recon_folds(T, folds, R, C, units, issue_clock="real")
        assert adv == real


def test_bubble_by_hand():
    # R = C = 4: D = 3, delta = 6; T = 10; the plain folds start 10 apart
    T, R, C = 10, 4, 4
    assert recon_row_latency(C) == 6
    # fold 0 has an outlier row at the top, fold 1 none: rows 1.. and the port see fold 0's
    # elements 6 advances late, fold 1 may not overtake them: it starts 16 after fold 0
    ref = simulate_recon_folds(T, [[0], []], R, C, 1)
    assert ref.plain_fold_start == (0, 10) and ref.fold_start == (0, 16)
    assert ref.bubble_cycles == 6 == ref.extra_cycles and ref.stall_cycles == 0
    assert ref.fold_extra == (6, 0)
    assert recon_stream_cycles(T, [[0], []], R, C, 1).bubble_cycles == 6
    # the other way round the skew is paid once, by the last fold's outputs
    ref = simulate_recon_folds(T, [[], [0]], R, C, 1)
    assert ref.fold_start == (0, 10) and ref.extra_cycles == 6 and ref.fold_extra == (0, 6)
    assert recon_stream_cycles(T, [[], [0]], R, C, 1).extra_cycles == 6
    # the same rows in both folds: no bubble, the depth once (8 folds: still once)
    ref = simulate_recon_folds(T, [[1, 2]] * 8, R, C, 4)
    assert ref.bubble_cycles == 0 and ref.extra_cycles == 2 * 6 == ref.fold_extra[-1]


def test_cross_fold_contention_by_hand():
    # C = 1: D = 1, delta = 0 + 1; R = T = 4: the folds start 4 apart. Fold 0: row 3
    # (vectors complete in advances 3..6); fold 1: row 0 (advances 4..7): alone neither
    # contends, together the batches of advances 4, 5 and 6 hold 2 requests each
    T, R, C = 4, 4, 1
    ref = simulate_recon_folds(T, [[3], [0]], R, C, 1)
    assert ref.fold_start == (0, 4) and ref.bubble_cycles == 0
    assert ref.stall_cycles == 3 and ref.conflicts == 3
    assert ref.extra_cycles == 3 + 1                       # stalls + fold 1's depth
    assert recon_fold_cycles(T, [3], R, C, 1).stall_cycles == 0
    assert recon_fold_cycles(T, [0], R, C, 1).stall_cycles == 0
    # two units: row 3 and row 0 on different units, nobody waits
    assert simulate_recon_folds(T, [[3], [0]], R, C, 2).stall_cycles == 0


def _run_stream(stream):
    cycle = 0
    while not stream.done():
        assert cycle < 100_000
        stream.step(cycle)
        cycle += 1


def test_reference_hazard_checks_are_live():
    T, R, C = 6, 4, 4
    issue = [0, 6, 12]
    folds = [[0, 2], [1], []]
    _run_stream(_Stream(T, folds, R, C, 1, issue, "advance", False))      # legal: no raise
    s = _Stream(T, folds, R, C, 1, issue, "advance", False)
    s.gap = [g - 1 for g in s.gap]            # a controller that lets fold f+1 start too soon
    with pytest.raises(RefHazard):
        _run_stream(s)
    s = _Stream(T, folds, R, C, 1, issue, "advance", False)
    s.pos0 = [[p - (1 if k == 1 else 0) for k, p in enumerate(row)] for row in s.pos0]
    with pytest.raises(RefHazard):           # a throttle one cycle short of the pipeline
        _run_stream(s)


# ---------------------------------------------------------------------------------------------
# closed form == reference


@pytest.mark.parametrize("throttle,n", [("per_fold", 220), ("union", 120)])
def test_closed_form_equals_reference_on_random_streams(throttle, n):
    rng = np.random.default_rng(34)
    cases = [_random_stream(rng) for _ in range(n)]
    cases += [(40, [list(range(16))] * 3 + [[]], 16, 16, 1), (3, [[0], [15], [0, 15]] * 3,
                                                            16, 16, 2)]
    stalled = bubbled = 0
    for i, (T, folds, R, C, units) in enumerate(cases):
        issue = None
        if i % 5 == 4:                           # any issue times, also loader-bound ones
            issue = np.cumsum(rng.integers(0, 2 * T + R, size=len(folds))).tolist()
        ref = simulate_recon_folds(T, folds, R, C, units, issue=issue, throttle=throttle)
        got = recon_stream_cycles(T, folds, R, C, units, issue=issue, throttle=throttle)
        assert (got.extra_cycles, got.stall_cycles, got.conflicts, got.accesses,
                got.bubble_cycles) == (ref.extra_cycles, ref.stall_cycles, ref.conflicts,
                                       ref.accesses, ref.bubble_cycles), (T, folds, R, C, units)
        # the closed form keeps issue's origin (s_0 = R by default), the reference starts at 0
        assert tuple(got.start - got.start[0]) == tuple(np.subtract(ref.fold_start,
                                                                    ref.fold_start[0]))
        assert tuple(got.start_cycle - got.start[0]) == tuple(
            np.subtract(ref.fold_start_cycle, ref.fold_start[0]))
        assert tuple(got.fold_extra) == ref.fold_extra
        assert tuple(got.fold_stalls) == ref.fold_stalls
        assert tuple(got.fold_conflicts) == ref.fold_conflicts
        stalled += got.stall_cycles > 0
        bubbled += got.bubble_cycles > 0
    assert stalled > n // 4
    if throttle == "per_fold":
        assert bubbled > n // 4
    else:                                        # one throttle for all folds: no bubbles
        assert bubbled == 0


def test_closed_form_properties_on_large_streams():
    rng = np.random.default_rng(35)
    for T in (1, 16, 512):
        mask = rng.random((1500, 64)) < 0.3
        prev = None
        for units in (1, 2, 4, 8):
            s = recon_stream_cycles(T, mask, 64, 64, units)
            assert s.accesses == T * mask.sum() == s.unit_busy.sum()
            assert s.fold_extra.sum() == s.extra_cycles
            assert s.extra_cycles == s.bubble_cycles + s.stall_cycles + s.depth_cycles
            assert s.conflicts >= s.stall_cycles >= 0
            plain_total = _stationary_issue(T, 64, 64, 1500)[1][-1] + T + 64 + 64 - 2
            assert plain_total + s.extra_cycles >= s.unit_busy.max()     # capacity
            if prev is not None:                 # finer unit groups never stall more
                assert s.stall_cycles <= prev.stall_cycles
                assert s.bubble_cycles == prev.bubble_cycles             # units don't matter
            prev = s
    # the row-list and the mask forms agree
    folds = [np.flatnonzero(r).tolist() for r in mask[:50]]
    assert recon_stream_cycles(16, folds, 64, 64, 2).extra_cycles == \
        recon_stream_cycles(16, mask[:50], 64, 64, 2).extra_cycles


@pytest.mark.parametrize("kwargs", [
    dict(T=0, fold_outlier_rows=[[0]], rows=8, cols=8),
    dict(T=4, fold_outlier_rows=[[8]], rows=8, cols=8),
    dict(T=4, fold_outlier_rows=[[0]], rows=8, cols=8, units=3),
    dict(T=4, fold_outlier_rows=[], rows=8, cols=8),
    dict(T=4, fold_outlier_rows=[[0], [1]], rows=8, cols=8, issue=[0]),
])
def test_stream_rejects_bad_input(kwargs):
    with pytest.raises(ConfigError):
        recon_stream_cycles(**kwargs)
    with pytest.raises(ConfigError):
        simulate_recon_folds(**kwargs)
