"""Register-level systolic array reference: exact GEMM results, cycles that follow the spec.

The cycle counts are checked three ways: against small cases worked out by hand, against an
evaluation of the spec's fold recurrences written here (independent of both models), and against
the fast closed-form model in sim.hw.systolic (one model, two speeds, proven equal).
"""
from __future__ import annotations

import ast
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from sim.hw import systolic_ref
from sim.hw.systolic_ref import (DatapathHazard, RefResult, _OutputStationaryArray,
                                 _StationaryArray, simulate_array, split_weight)

MODES = (4, 2, 1, 0.5, 0.25)
DATAFLOWS = ("ws", "os", "is")


# ---------------------------------------------------------------------------------------------
# The spec's timing, evaluated fold by fold (written from the array spec -- the mapping, the
# bank-reuse bound l_f >= s_{f-2} + T + CL - 1 and the decisions listed in the docstring of
# sim/hw/systolic_ref.py -- not from either model's code)
# ---------------------------------------------------------------------------------------------

def lanes_fusion(m: float) -> tuple[int, int]:
    return (int(m), 1) if m >= 1 else (1, round(1 / m))


def spec_folds(M, K, N, R, C, dataflow, m):
    """(T, CL, [(rows used, PE columns used) per fold in issue order])."""
    p, q = lanes_fusion(m)
    CL = C // q
    if dataflow == "ws":
        Sr, Sc, T, per_pe = K, N, M, p
    elif dataflow == "os":
        Sr, Sc, T, per_pe = M, N, K, p
    else:
        Sr, Sc, T, per_pe = K, M, math.ceil(N / p), 1
    cap = CL * per_pe
    FR, FC = math.ceil(Sr / R), math.ceil(Sc / cap)
    folds = [(min(R, Sr - rf * R), math.ceil(min(cap, Sc - cf * cap) / per_pe))
             for cf in range(FC) for rf in range(FR)]
    return T, CL, folds


def spec_total(M, K, N, R, C, dataflow, m) -> int:
    T, CL, folds = spec_folds(M, K, N, R, C, dataflow, m)
    if dataflow == "os":
        s, total = 0, 0
        for r, c in folds:
            total = max(total, s + T + r + c - 1)
            s += max(T, r)
        return total
    load, stream = [], []
    for f in range(len(folds)):
        lf = 0 if f == 0 else load[f - 1] + R
        if f >= 2:
            lf = max(lf, stream[f - 2] + T + CL - 1)
        sf = lf + R if f == 0 else max(stream[f - 1] + T, lf + R)
        load.append(lf)
        stream.append(sf)
    return max(stream[f] + T + R + c - 2 for f, (_, c) in enumerate(folds))


# ---------------------------------------------------------------------------------------------
# Random cases (seeded), each simulated once and shared by the tests below
# ---------------------------------------------------------------------------------------------

def _signed(rng, bits, shape):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x = rng.integers(lo, hi + 1, size=shape)
    # make sure the extremes (the sign slice's hardest values) show up
    x.flat[rng.integers(x.size)] = lo
    x.flat[rng.integers(x.size)] = hi
    return x


def _make_cases(n=210, seed=20240611):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        dataflow = DATAFLOWS[i % 3]
        m = MODES[(i // 3) % len(MODES)]
        _, q = lanes_fusion(m)
        rows = int(rng.integers(2, 9))
        cols = int(rng.integers(max(2, q), 9))       # a logical array of >= 1 column
        M, K, N = (int(v) for v in rng.integers(1, 41, size=3))
        wbits = int(rng.choice([2, 4, 8]))
        abits = int(rng.choice([4, 8, 16]))
        A = _signed(rng, abits, (M, K))
        W = _signed(rng, wbits, (K, N))
        cases.append(dict(A=A, W=W, rows=rows, cols=cols, dataflow=dataflow, m=m, wbits=wbits))
    return cases


CASES = _make_cases()


def _case_id(i):
    c = CASES[i]
    M, K = c["A"].shape
    return (f"{i}-{c['dataflow']}-m{c['m']}-{c['rows']}x{c['cols']}-"
            f"{M}x{K}x{c['W'].shape[1]}-w{c['wbits']}")


@lru_cache(maxsize=None)
def run_case(i: int) -> RefResult:
    c = CASES[i]
    return simulate_array(c["A"], c["W"], c["rows"], c["cols"], c["dataflow"], c["m"],
                          c["wbits"])


def _shape(i):
    c = CASES[i]
    return c["A"].shape[0], c["A"].shape[1], c["W"].shape[1], c["rows"], c["cols"]


case_index = pytest.mark.parametrize("i", range(len(CASES)), ids=_case_id)


@case_index
def test_output_is_exact_gemm(i):
    c = CASES[i]
    res = run_case(i)
    assert res.output.dtype == np.int64
    np.testing.assert_array_equal(res.output, c["A"].astype(np.int64) @ c["W"].astype(np.int64))


@case_index
def test_cycles_follow_spec_recurrence(i):
    c = CASES[i]
    M, K, N, R, C = _shape(i)
    assert run_case(i).cycles == spec_total(M, K, N, R, C, c["dataflow"], c["m"])


@case_index
def test_cycles_equal_fast_model(i):
    systolic = pytest.importorskip("sim.hw.systolic")
    if not hasattr(systolic, "array_timing"):
        pytest.skip("sim.hw.systolic.array_timing not written yet")
    c = CASES[i]
    M, K, N, R, C = _shape(i)
    fast = systolic.array_timing(M, K, N, R, C, c["dataflow"], c["m"], convention="strata")
    assert run_case(i).cycles == fast.total


@case_index
def test_activity_invariants(i):
    c = CASES[i]
    M, K, N, R, C = _shape(i)
    m, dataflow = c["m"], c["dataflow"]
    p, q = lanes_fusion(m)
    res = run_case(i)
    assert res.macs == M * K * N
    FR = math.ceil((M if dataflow == "os" else K) / R)
    # WS/IS: every output is written once per row fold (accumulated in the buffer); OS once
    assert res.writes == (M * N if dataflow == "os" else M * N * FR)
    assert res.cycles >= math.ceil(M * K * N / (R * C * m))      # ideal: every PE busy
    assert res.macs / (res.cycles * R * C * m) <= 1.0             # utilization
    assert res.busy_pe_cycles <= res.cycles * R * C
    if p == 1:
        assert res.busy_pe_cycles == q * res.macs   # a fused logical MAC keeps q PEs busy
    else:
        assert res.macs / p <= res.busy_pe_cycles <= res.macs


def test_random_cases_cover_every_dataflow_and_mode():
    seen = {(c["dataflow"], c["m"]) for c in CASES}
    assert seen == {(d, m) for d in DATAFLOWS for m in MODES}
    assert len(CASES) >= 200


# ---------------------------------------------------------------------------------------------
# Tiny cases worked out by hand
# ---------------------------------------------------------------------------------------------

def _ones(M, K, N):
    rng = np.random.default_rng(M * 10000 + K * 100 + N)
    return rng.integers(-8, 8, size=(M, K)), rng.integers(-8, 8, size=(K, N))


def _check(M, K, N, R, C, dataflow, m, expected_cycles, wbits=8):
    A, W = _ones(M, K, N)
    res = simulate_array(A, W, R, C, dataflow, m, wbits)
    np.testing.assert_array_equal(res.output, A @ W)
    assert res.cycles == expected_cycles
    assert spec_total(M, K, N, R, C, dataflow, m) == expected_cycles
    return res


def test_ws_1x1x1_on_2x2():
    # Loader writes bank-0 rows 0 and 1 at the end of cycles 0 and 1 (row 1 holds zeros); the
    # stream starts at cycle 2: A[0,0] is at PE(0,0) in cycle 2, its psum at PE(1,0) in cycle 3,
    # written at the bottom in cycle 3 -> 4 cycles.
    res = _check(1, 1, 1, 2, 2, "ws", 1, 4)
    assert (res.macs, res.writes, res.busy_pe_cycles) == (1, 1, 1)


def test_os_2x2x2_on_2x2():
    # PE(i,j) does MAC k in cycle i+j+k; PE(1,1) finishes (k=1) in cycle 3 and puts its result
    # on the column-1 bus in cycle 4 -> 5 cycles. Four outputs, each written once.
    res = _check(2, 2, 2, 2, 2, "os", 1, 5)
    assert (res.macs, res.writes, res.busy_pe_cycles) == (8, 4, 8)


def test_is_1x1x3_on_2x2():
    # A[0,0] is stationary in PE(0,0) (loaded by cycle 1); W[0,0..2] stream in cycles 2,3,4;
    # the last psum leaves the bottom of column 0 one cycle after it enters row 0: cycle 5 -> 6.
    res = _check(1, 1, 3, 2, 2, "is", 1, 6)
    assert res.writes == 3


def test_ws_row_folds_accumulate_in_the_buffer():
    # K=3 on 2 rows: two row folds. Fold 0 loads in cycles 0-1, streams at 2, writes at 3.
    # Fold 1 loads into bank 1 in cycles 2-3, streams at 4 (max(2+1, 2+2)), writes at 5 -> 6.
    res = _check(1, 3, 1, 2, 2, "ws", 1, 6)
    assert res.writes == 2          # the single output, written (accumulated) once per row fold


def test_ws_bank_rewrite_waits_for_the_fold_two_back():
    # M=5 (T=5), K=6 on R=2 (3 row folds), N=1, C=8 logical columns.
    # Fold 0: loads 0-1, streams 2..6. Fold 1: loads 2-3, streams 7..11 (after fold 0's stream).
    # Fold 2 reuses bank 0: fold 0's last element (t=4) enters row 0 at 6 and passes column 7 at
    # 13 (row 1: 14), so bank-0 row 0 is rewritten at the end of 14, row 1 at 15, and fold 2
    # streams from 16. Its last psum leaves row 1 of column 0 at 16+4+1 = 21 -> 22 cycles
    # (without the bank hazard fold 2 would start at 12 and the total would be 18).
    _check(5, 6, 1, 2, 8, "ws", 1, 22)


def test_os_column_bus_spaces_the_folds():
    # M=4 on R=4, K=1 (T=1), N=4 on C=2: two column folds of 4 rows. Fold 0 PE(i,j) puts its
    # result on the bus at i+j+1, so column 0's bus is busy 1..4. Fold 1 may not start before
    # cycle 4 (its row-0 result must come after fold 0's row-3 result) although accumulators are
    # free from cycle 1; PE(3,1) of fold 1 MACs at 4+3+1=8 and drives the bus at 9 -> 10.
    _check(4, 1, 4, 4, 2, "os", 1, 10)


def test_os_lanes_hold_consecutive_columns():
    # 2 lanes: each PE of a 2x2 array owns 2 output columns, so N=4 fits in one fold and the
    # timing is that of 2x2x2 at one lane (5 cycles); each bus transfer carries 2 outputs.
    res = _check(2, 2, 4, 2, 2, "os", 2, 5)
    assert (res.macs, res.writes, res.busy_pe_cycles) == (16, 8, 8)


def test_is_lanes_shorten_the_stream():
    # 2 weights per element: N=3 streams in T=2 elements (cycles 2,3), last write 2+1+1 = 4 -> 5.
    _check(1, 1, 3, 2, 2, "is", 2, 5)


def test_fused_pe_is_one_logical_column():
    # m=1/2 on 2x4: 2 logical columns, as a 2x2 array at one MAC per cycle (4 cycles, see the
    # 1x1x1 case) with both physical PEs of the logical PE busy for the one MAC.
    res = _check(1, 1, 1, 2, 4, "ws", 0.5, 4, wbits=4)
    assert (res.macs, res.busy_pe_cycles) == (1, 2)


def test_fused_negative_weights_are_exact():
    A = np.array([[-128, 127], [5, -3]])
    W = np.array([[-8, 7], [-1, -8]])       # 4-bit extremes
    for m in (0.5, 0.25):
        for dataflow in DATAFLOWS:
            res = simulate_array(A, W, 2, 4, dataflow, m, wbits=4)
            np.testing.assert_array_equal(res.output, A @ W)


# ---------------------------------------------------------------------------------------------
# The datapath's self-checks catch a controller that breaks the rules
# ---------------------------------------------------------------------------------------------

def test_loader_ignoring_bank_use_is_caught():
    class RecklessLoader(_StationaryArray):
        def row_is_free(self, bank, row):
            return True

    A, W = _ones(5, 6, 1)
    with pytest.raises(DatapathHazard, match="another fold"):
        RecklessLoader(A, W, 2, 8, "ws", 1, 8).run()


def test_os_controller_ignoring_the_bus_is_caught():
    class RecklessController(_OutputStationaryArray):
        def bus_is_free(self, fold, start):
            return True

    A, W = _ones(4, 1, 4)
    with pytest.raises(DatapathHazard, match="column bus"):
        RecklessController(A, W, 4, 2, 1, 8).run()


# ---------------------------------------------------------------------------------------------
# Pieces and input checks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wbits", [2, 4, 8, 16])
@pytest.mark.parametrize("q", [1, 2, 4, 8])
def test_weight_slices_recombine(wbits, q):
    w = np.arange(-(1 << (wbits - 1)), 1 << (wbits - 1))
    sb = math.ceil(wbits / q)
    sl = split_weight(w, q, sb)
    assert sl.shape == w.shape + (q,)
    assert np.array_equal((sl << (np.arange(q) * sb)).sum(-1), w)
    if q > 1:
        assert sl[..., :-1].min() >= 0 and sl[..., :-1].max() < (1 << sb)   # unsigned low slices
    assert sl[..., -1].min() >= -(1 << (sb - 1)) and sl[..., -1].max() < (1 << (sb - 1))


def test_reference_is_independent_of_the_fast_model():
    tree = ast.parse(Path(systolic_ref.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= {"__future__", "dataclasses", "numpy"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(macs_per_cycle=1.5), "integer"),
    (dict(macs_per_cycle=0.3), "1/integer"),
    (dict(macs_per_cycle=0), "> 0"),
    (dict(macs_per_cycle=0.25, cols=3), "columns"),
    (dict(dataflow="rs"), "dataflow"),
    (dict(wbits=2), "fit"),
    (dict(rows=0), "rows"),
])
def test_bad_inputs_raise(kwargs, match):
    args = dict(A=np.ones((2, 3), int), W=np.full((3, 2), 3), rows=2, cols=2, dataflow="ws",
                macs_per_cycle=1, wbits=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate_array(**args)


def test_shape_and_dtype_checks():
    with pytest.raises(ValueError, match="K x N"):
        simulate_array(np.ones((2, 3), int), np.ones((2, 2), int), 2, 2, "ws")
    with pytest.raises(ValueError, match="integers"):
        simulate_array(np.ones((2, 2)), np.ones((2, 2), int), 2, 2, "ws")
