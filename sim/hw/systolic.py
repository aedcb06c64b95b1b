"""Fast timing model of a multi-precision systolic PE array (closed forms over folds).

This module and :mod:`sim.hw.systolic_ref` (the register-level, cycle-stepped reference) implement
the same machine; tests prove they agree exactly in cycles. The fast path never steps cycles: a
fold is a fixed-shape pass of the array, folds follow a max-plus recurrence with constant
coefficients, and that recurrence becomes periodic after a few folds, so issue times are
extrapolated in closed form.

The machine (convention ``"strata"``)
-------------------------------------
GEMM ``O[M,N] = A[M,K] @ W[K,N]`` on a physical array of ``R x C`` PEs. The PE mode for
``(wbits, abits)`` gives ``m`` MACs per PE per cycle:

* ``m >= 1``: ``p = m`` lanes per PE (two 2-bit weights sharing one activation, MicroScopiQ-style);
* ``m < 1``: ``q = 1/m`` adjacent PEs of a row fuse into one logical PE (BitFusion-style), so the
  array has ``C // q`` logical columns.

Mapping (``Sr`` rows hold, ``Sc`` columns hold, ``T`` streamed elements per fold):

* WS: Sr = K, Sc = N (p consecutive n per PE), T = M
* OS: Sr = M, Sc = N (p consecutive n per PE), T = K
* IS: Sr = K, Sc = M, T = ceil(N / p) (a PE takes p weights per cycle)

Folds run column-fold outer, row-fold inner. WS/IS keep the stationary operand in two banks per
PE: a loader writes one PE row per cycle (all R rows, a tile takes R cycles) into the idle bank
while the other bank computes, so weight preload is hidden behind streaming whenever
``T >= R``; a bank may only be rewritten once the fold that used it two folds ago has streamed
past the row's last column. Partial sums flow down through all R rows and leave at the bottom.
OS accumulates in place; a finished PE puts its result on its column's output bus the next cycle.

Convention ``"scalesim"`` reproduces SCALE-Sim v3's compute-cycle count: folds do not overlap,
each pays the full fill and drain (and, for WS/IS, an unhidden R-cycle preload).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

DATAFLOWS = ("ws", "os", "is")
CONVENTIONS = ("strata", "scalesim")


@dataclass(frozen=True)
class ArrayMapping:
    """How one GEMM maps onto the array: logical shape, fold counts and the last fold's extent."""

    dataflow: str
    rows: int            # R, physical rows
    cols: int            # C, physical columns
    lanes: int           # p
    fuse: int            # q
    logical_cols: int    # CL = C // q
    Sr: int
    Sc: int
    T: int
    fold_rows: int       # FR
    fold_cols: int       # FC
    last_rows: int       # rows used by the last row fold
    last_cols: int       # PE columns used by the last column fold
    full_cols: int       # PE columns used by a full column fold

    @property
    def folds(self) -> int:
        return self.fold_rows * self.fold_cols


def lanes_and_fusion(macs_per_cycle: float) -> tuple[int, int]:
    """Split a PE's MACs/cycle into (lanes p, fusion q); exactly one of them is 1."""
    m = float(macs_per_cycle)
    if m <= 0:
        raise ValueError(f"macs_per_cycle must be > 0, got {macs_per_cycle}")
    if m >= 1:
        p = round(m)
        if abs(p - m) > 1e-9:
            raise ValueError(f"macs_per_cycle >= 1 must be an integer, got {macs_per_cycle}")
        return p, 1
    q = round(1 / m)
    if abs(q * m - 1) > 1e-9:
        raise ValueError(f"macs_per_cycle < 1 must be 1/integer, got {macs_per_cycle}")
    return 1, q


def map_gemm(M: int, K: int, N: int, rows: int, cols: int, dataflow: str,
             macs_per_cycle: float = 1) -> ArrayMapping:
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {dataflow!r}")
    for name, v in (("M", M), ("K", K), ("N", N), ("rows", rows), ("cols", cols)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    p, q = lanes_and_fusion(macs_per_cycle)
    CL = cols // q
    if CL < 1:
        raise ValueError(f"a {q}-way fused PE needs at least {q} columns, the array has {cols}")
    if dataflow == "ws":
        Sr, Sc, T, per_col = K, N, M, p
    elif dataflow == "os":
        Sr, Sc, T, per_col = M, N, K, p
    else:
        Sr, Sc, T, per_col = K, M, -(-N // p), 1
    cap = CL * per_col
    FR, FC = -(-Sr // rows), -(-Sc // cap)
    last_rows = Sr - (FR - 1) * rows
    last_cols = -(-(Sc - (FC - 1) * cap) // per_col)
    return ArrayMapping(dataflow, rows, cols, p, q, CL, Sr, Sc, T, FR, FC,
                        last_rows, last_cols, CL)


# ---------------------------------------------------------------------------------------------
# Fold issue times.  The recurrences are shift-invariant max-plus maps, so once the state
# (relative to itself) repeats with period P, every later fold is the fold P earlier plus a
# constant.  We step folds only until that happens (a handful), then extrapolate.
# ---------------------------------------------------------------------------------------------

def _periodic_extend(prefix: list[int], start: int, period: int, n: int) -> np.ndarray:
    """Extend prefix (len >= start+period... ) periodically: x[f] = x[f-P] + d for f >= start."""
    arr = np.empty(n, dtype=np.int64)
    k = min(n, len(prefix))
    arr[:k] = prefix[:k]
    if n > k:
        d = prefix[start] - prefix[start - period]
        idx = np.arange(k, n)
        base = start - period + (idx - start) % period   # the fold in the first period it mirrors
        arr[k:] = np.asarray(prefix, dtype=np.int64)[base] + ((idx - base) // period) * d
    return arr


class StationaryIssue(NamedTuple):
    """Fold start cycles of a WS/IS array (int64, one entry per fold; shared by a cache)."""

    load: np.ndarray    # l_f: the loader starts writing fold f's tile into its bank
    stream: np.ndarray  # s_f: fold f starts streaming


@lru_cache(maxsize=4096)
def _stationary_issue(T: int, R: int, CL: int, n: int) -> StationaryIssue:
    """Loader start l_f and stream start s_f for n folds of a WS/IS array."""
    hazard = T + CL - 1
    l, s = [0], [R]
    f = 1
    while f < n:
        lf = l[-1] + R
        if f >= 2:
            lf = max(lf, s[f - 2] + hazard)
        sf = max(s[-1] + T, lf + R)
        l.append(lf)
        s.append(sf)
        # state x_f = (l_f, s_f, s_{f-1}); periodic once x_f - x_{f-P} is a constant vector
        for P in (1, 2):
            if f >= P + 1:
                d = s[f] - s[f - P]
                if l[f] - l[f - P] == d and s[f - 1] - s[f - 1 - P] == d:
                    return StationaryIssue(_periodic_extend(l, f, P, n),
                                           _periodic_extend(s, f, P, n))
        f += 1
    return StationaryIssue(np.asarray(l, dtype=np.int64), np.asarray(s, dtype=np.int64))


@dataclass(frozen=True)
class ArrayTiming:
    """Cycle count of one GEMM on the array, plus what the memory model needs."""

    mapping: ArrayMapping
    convention: str
    total: int                 # cycles from the first loader/stream cycle to the last output write
    macs: int                  # useful MACs (M*K*N)
    peak_macs_per_cycle: float  # R * C * m

    @property
    def utilization(self) -> float:
        return self.macs / (self.total * self.peak_macs_per_cycle)

    def issue_times(self) -> np.ndarray:
        """Cycle at which each fold starts streaming (int64 array, one per fold)."""
        mp = self.mapping
        n = mp.folds
        if self.convention == "scalesim":
            return np.arange(n, dtype=np.int64) * _scalesim_fold_cycles(mp)
        if mp.dataflow == "os":
            f = np.arange(n, dtype=np.int64)
            full = max(mp.T, mp.rows)
            short = max(mp.T, mp.last_rows)
            return f * full + (f // mp.fold_rows) * (short - full)
        return _stationary_issue(mp.T, mp.rows, mp.logical_cols, n).stream.copy()


def _scalesim_fold_cycles(mp: ArrayMapping) -> int:
    R, C, T = mp.rows, mp.logical_cols, mp.T
    return T + R + C - 2 if mp.dataflow == "os" else 2 * R + C + T - 2


def _total_cycles(mp: ArrayMapping, convention: str) -> int:
    n, R, T, FR = mp.folds, mp.rows, mp.T, mp.fold_rows
    if convention == "scalesim":
        return n * _scalesim_fold_cycles(mp) - 1
    # the last fold of the last full-width column group and the very last fold are the only
    # candidates for the final output write (issue times increase, widths differ by group)
    last = n - 1
    prev_group_last = n - FR - 1 if mp.fold_cols > 1 else None
    if mp.dataflow == "os":
        full, short = max(T, R), max(T, mp.last_rows)

        def s(f):
            return f * full + (f // FR) * (short - full)
        # within a column group the last row fold dominates (see module docstring)
        end = s(last) + T + mp.last_rows + mp.last_cols - 1
        if prev_group_last is not None:
            end = max(end, s(prev_group_last) + T + mp.last_rows + mp.full_cols - 1)
        return int(end)
    s = _stationary_issue(T, R, mp.logical_cols, n).stream
    end = int(s[last]) + T + R + mp.last_cols - 2
    if prev_group_last is not None:
        end = max(end, int(s[prev_group_last]) + T + R + mp.full_cols - 2)
    return end


@lru_cache(maxsize=65536)
def array_timing(M: int, K: int, N: int, rows: int, cols: int, dataflow: str = "ws",
                 macs_per_cycle: float = 1, convention: str = "strata") -> ArrayTiming:
    """Cycles of one GEMM on an R x C array with unlimited operand bandwidth."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    mp = map_gemm(M, K, N, rows, cols, dataflow, macs_per_cycle)
    total = _total_cycles(mp, convention)
    return ArrayTiming(mp, convention, total, M * K * N, rows * cols * float(macs_per_cycle))


def ideal_cycles(M: int, K: int, N: int, rows: int, cols: int, macs_per_cycle: float = 1) -> int:
    """Lower bound: every PE busy every cycle."""
    return math.ceil(M * K * N / (rows * cols * macs_per_cycle))
