"""ReCoN cost of a stream of weight-stationary folds, in closed form (no cycle stepping).

:func:`sim.hw.recon.recon_fold_cycles` is the one-fold case. When folds stream back to back
through the same array, three things couple them (the machine is defined, and stepped cycle by
cycle, in :mod:`sim.hw.recon_ref`, :func:`~sim.hw.recon_ref.simulate_recon_folds`; the tests show
that this function equals it exactly):

* **Throttle bubbles.** Fold ``f`` feeds row ``k`` with its own throttle ``off_f[k] = delta *
  |O_f ∩ [0, k)|`` (``delta = C - 1 + D``), and its elements may not overtake fold ``f-1``'s in
  any row or at the port, so the controller starts it at

      ``S_f = max(issue_f, S_{f-1} + T + max_{k=0..R} (off_{f-1}[k] - off_f[k]))``

  (``issue`` = the plain array's schedule, counted in advance cycles: the loader is frozen by
  stalls like the rest of the array). A fold with fewer outlier rows above some row than its
  predecessor waits for the predecessor's slower tail there. The recurrence is a max-plus scan:
  ``S = P + cummax(issue - P)`` with ``P`` the prefix sums of the gaps.
* **Contention across folds.** Row ``k`` of fold ``f`` (an outlier row) completes the vector of
  element ``t`` in advance ``S_f + k + off_f[k] + C - 1 + t``. Every completion of one advance
  forms a batch; unit ``g`` with ``N_g`` requests in the batch needs ``N_g`` cycles, and the
  array is frozen for ``max_g (N_g - 1)`` cycles, whichever folds the requests come from. One
  sweep over the request intervals of all folds (sorted ends, per-unit counts) gives every
  batch's cost.
* **Depth.** Only the last fold's outputs leave its port throttle ``off[R]`` later
  (``m_last * delta`` per fold, ``delta`` times the union's rows with ``union``); earlier folds' depth
  is either hidden behind the next fold or shows up as its bubble.

Total: ``extra = (S_last - plain S_last) + off_last[R] + all stall cycles``. Per fold the
extra is split as the growth of the real start-to-start interval over the plain one (bubble +
stalls of the batches completed while the fold was the newest one issued; it may be negative
when a late fold catches up with a loader-bound schedule), the last fold taking its depth and
the stalls after its start; the shares sum to the total.

Cost: ``O(E log E)`` numpy for ``E`` = (folds x outlier rows) request intervals, plus
``O(E * units)`` for the per-unit counts; no per-cycle or per-fold Python loop.

Not modelled here (see :mod:`sim.hw.recon_ref`): ``issue_clock="real"`` (a loader that keeps
running during stalls, letting them hide in loader-bound gaps when ``T < R``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config.errors import ConfigError
from sim.hw.recon import recon_depth, validate_shape

__all__ = ["ReconStream", "recon_stream_cycles", "fold_mask", "THROTTLES",
           "throttle_offsets", "exact_prefix_groups"]

THROTTLES = ("per_fold", "union")


@dataclass(frozen=True)
class ReconStream:
    """What ReCoN costs a stream of folds (int64 arrays have one entry per fold)."""

    fold_extra: np.ndarray     # cycles each fold adds to the plain schedule (sums to extra)
    fold_stalls: np.ndarray    # stall cycles of the batches completed while fold f was newest
    fold_bubbles: np.ndarray   # throttle bubble before fold f+1 (last fold: its depth)
    fold_conflicts: np.ndarray  # conflicts of the batches completed while fold f was newest
    start: np.ndarray          # S_f, advance of fold f's first element in row 0 (issue's origin)
    start_cycle: np.ndarray    # the real cycle of S_f (same origin)
    extra_cycles: int          # last output write minus the plain one
    stall_cycles: int          # cycles the array was frozen
    bubble_cycles: int         # sum of S_f - S_{f-1} beyond the plain interval
    depth_cycles: int          # the last fold's port throttle (per_fold: m_last * delta)
    accesses: int              # row vectors through ReCoN (T x outlier rows, all folds)
    conflicts: int             # row vectors not granted in their first request cycle
    unit_busy: np.ndarray      # cycles each unit is busy (T x its outlier rows, all folds)
    depth: int                 # ReCoN stages
    row_latency: int           # delta = C - 1 + depth


def fold_mask(fold_outlier_rows, rows: int) -> np.ndarray:
    """bool[F, rows] from a bool/0-1 matrix or a sequence of per-fold row-index lists."""
    if isinstance(fold_outlier_rows, np.ndarray) and fold_outlier_rows.ndim == 2:
        m = fold_outlier_rows
        if m.shape[1] != rows or not (m.dtype == bool or np.isin(m, (0, 1)).all()):
            raise ConfigError(f"a bool matrix [folds, {rows}]", key="recon.outlier_rows",
                              got=f"{m.dtype} {m.shape}")
        return m.astype(bool)
    folds = list(fold_outlier_rows)
    m = np.zeros((len(folds), rows), dtype=bool)
    for f, o in enumerate(folds):
        o = np.asarray(list(o) if not isinstance(o, np.ndarray) else o)
        if o.size == 0:
            continue
        if o.ndim != 1 or not np.issubdtype(o.dtype, np.integer) or o.min() < 0 \
                or o.max() >= rows:
            raise ConfigError(f"row indices in [0, {rows})", key="recon.outlier_rows",
                              got=repr(o.tolist()))
        m[f, o] = True
    return m


def _max_plus_scan(issue: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """``S_0 = issue_0``, ``S_f = max(issue_f, S_{f-1} + gap_{f-1})``."""
    P = np.concatenate([[0], np.cumsum(gap)])
    return P + np.maximum.accumulate(issue - P)


def throttle_offsets(mask: np.ndarray, delta: int, throttle: str) -> np.ndarray:
    """``off[f, k]`` (int64 ``[F, rows + 1]``): the throttle of row ``k`` of fold ``f``, row
    ``rows`` being the oAct port; ``delta`` per outlier row above (``per_fold``: the fold's own,
    ``union``: every row any fold of the stream routes to ReCoN)."""
    if throttle not in THROTTLES:
        raise ConfigError(f"one of {', '.join(THROTTLES)}", key="recon.throttle",
                          got=repr(throttle))
    off = np.zeros((mask.shape[0], mask.shape[1] + 1), dtype=np.int64)
    if throttle == "per_fold":
        np.cumsum(mask, axis=1, out=off[:, 1:])
    else:
        off[:, 1:] = np.cumsum(mask.any(axis=0))
    off *= delta
    return off


def _start_gaps(T: int, off: np.ndarray) -> np.ndarray:
    """Least start-to-start interval of each fold and its successor: ``T`` plus the
    predecessor's slower tail, ``max_k (off_f[k] - off_{f+1}[k])`` (>= 0: row 0 has none)."""
    return T + (off[:-1] - off[1:]).max(axis=1)


def exact_prefix_groups(T: int, group_mask, rows: int, cols: int, groups: int, issue,
                        throttle: str = "per_fold") -> int | None:
    """How many leading column groups determine a stream of ``groups`` repeats of the row
    folds ``group_mask`` exactly, or None when no prefix shorter than the stream does.

    The stream is ``np.tile(group_mask, (groups, 1))`` with the plain starts ``issue``; its
    pricing :func:`recon_stream_cycles` (the ``fold_*`` arrays) is split into per-group
    *windows*: group ``h`` owns the advances from its first fold's start ``S`` to the next
    group's (the last group: onward). What a window costs is fixed by (1) the starts ``S``
    and the plain starts ``PS`` of its folds and of the next group's first fold, relative to
    its own start, and (2) the request intervals that cover its advances. With ``G``
    returned, a stream of any length equals: groups ``0 .. G-2`` as the ``G``-group prefix
    prices them, every later group but the last as its group ``G-2``, the last as its group
    ``G-1``. That holds because:

    * the throttle offsets repeat with the row folds (for ``union`` the union of one group is
      the union of the stream), hence so do the gaps of the max-plus scan;
    * ``S`` and ``PS`` are computed here for the whole stream (``O(folds)``, no intervals):
      from fold ``f0`` on, ``S[f + FR] - S[f] = D`` and ``PS[f + FR] - PS[f]`` are
      constants (a scan's lag need not settle: it can drain for many groups before it
      clamps, so this is checked over the whole stream, not guessed from a few groups);
      group ``g0 = ceil(f0 / FR)`` and every later one is a copy of the previous one
      shifted by ``D``;
    * a request interval of fold ``i`` of a group, row ``k``, ends ``e = (S_i - S_0) + k +
      off_i[k] + C - 1 + T`` advances after its group's start. In the periodic part windows
      are ``D`` long, so intervals reach ``L = ceil(max e / D) - 1`` windows ahead, and
      those of earlier groups no further (``S`` grows with ``f``, ``e`` repeats with the row
      fold). A window ``w >= g0 + L + 1`` therefore sees only intervals of the periodic
      groups ``w - L .. w``: all such windows are copies, and the last one differs only by
      having no successor. ``G = g0 + L + 3`` puts the representative window ``G - 2`` and
      the last ``G - 1`` in that range.
    """
    mask = fold_mask(group_mask, rows)
    FR = mask.shape[0]
    T, _, C, _ = validate_shape(T, rows, cols, 1)
    F = FR * groups
    issue = np.asarray(issue, dtype=np.int64)
    if issue.shape != (F,):
        raise ConfigError(f"{F} issue times", key="recon.issue", got=repr(issue.shape))
    if FR == 0 or groups < 4:                   # G >= 3, and a shorter stream gains nothing
        return None
    off = throttle_offsets(mask, (C - 1) + recon_depth(C), throttle)
    # gaps of one group, the last fold's to the next group's first: the stream's, repeated
    period_gaps = _start_gaps(T, off[np.r_[np.arange(FR), 0]])
    S = _max_plus_scan(issue, np.resize(period_gaps, F - 1))
    PS = _max_plus_scan(issue, np.full(F - 1, T, dtype=np.int64))
    f0 = max(_periodic_from(S, FR), _periodic_from(PS, FR))
    g0 = -(-f0 // FR)
    if g0 + 1 >= groups:
        return None
    D = int(S[(g0 + 1) * FR] - S[g0 * FR])
    i_idx, k_idx = np.nonzero(mask)
    if i_idx.size:
        ends = (S[g0 * FR + i_idx] - S[g0 * FR]) + k_idx + off[i_idx, k_idx] + (C - 1) + T
        reach = -(-int(ends.max()) // D) - 1
    else:
        reach = 0
    G = g0 + reach + 3
    return G if G < groups else None


def _periodic_from(x: np.ndarray, period: int) -> int:
    """Smallest ``f0`` with ``x[f + period] - x[f]`` one constant for every ``f >= f0``."""
    d = x[period:] - x[:-period]
    if d.size == 0:
        return 0
    differ = np.flatnonzero(d != d[-1])
    return int(differ[-1]) + 1 if differ.size else 0


def recon_stream_cycles(T: int, fold_outlier_rows, rows: int, cols: int, units: int = 1,
                        issue=None, throttle: str = "per_fold") -> ReconStream:
    """ReCoN cost of folds ``f = 0..F-1`` streamed back to back (see the module docstring).

    ``fold_outlier_rows``: bool ``[F, rows]`` or per-fold row-index lists. ``issue``: the
    plain array's stream start of each fold (any origin; default
    :func:`sim.hw.systolic._stationary_issue`, e.g. ``ArrayTiming.issue_times()``).
    """
    T, R, C, U = validate_shape(T, rows, cols, units)
    mask = fold_mask(fold_outlier_rows, R)
    F = mask.shape[0]
    if F == 0:
        raise ConfigError("at least one fold", key="recon.fold_outlier_rows", got="[]")
    if issue is None:
        from sim.hw.systolic import _stationary_issue
        issue = _stationary_issue(T, R, C, F).stream
    issue = np.asarray(issue, dtype=np.int64)
    if issue.shape != (F,):
        raise ConfigError(f"{F} issue times", key="recon.issue", got=repr(issue.shape))
    depth = recon_depth(C)
    delta = (C - 1) + depth

    # throttle of every fold (row R = the oAct port) and the controller's start times
    off = throttle_offsets(mask, delta, throttle)
    S = _max_plus_scan(issue, _start_gaps(T, off))
    PS = _max_plus_scan(issue, np.full(F - 1, T, dtype=np.int64))        # plain starts

    # request intervals [first completion, + T) of every (fold, outlier row), in advances
    f_idx, k_idx = np.nonzero(mask)
    first = S[f_idx] + k_idx + off[f_idx, k_idx] + (C - 1)
    unit = k_idx // (R // U)
    if first.size:
        pts = np.sort(np.concatenate([first, first + T]))
        pts = pts[np.r_[True, pts[1:] != pts[:-1]]]          # the distinct segment ends
        maxex = np.zeros(pts.size, dtype=np.int64)
        sumex = np.zeros(pts.size, dtype=np.int64)
        for g in np.flatnonzero(np.bincount(unit, minlength=U)):
            sg = np.sort(first[unit == g])
            cnt = (np.searchsorted(sg, pts, side="right")
                   - np.searchsorted(sg + T, pts, side="right"))
            ex = np.maximum(cnt - 1, 0)
            np.maximum(maxex, ex, out=maxex)
            sumex += ex
        seg = np.diff(pts)                               # the last point opens an empty tail
        # running totals at every segment start, and the per-advance rate inside a segment
        cum = np.concatenate([[0], np.cumsum(maxex[:-1] * seg)])     # stall cycles
        cumc = np.concatenate([[0], np.cumsum(sumex[:-1] * seg)])    # conflicts

        def before(x, total, rate):
            """``total`` accumulated by the batches completed before advance ``x``."""
            j = np.searchsorted(pts, x, side="right") - 1
            jc = np.clip(j, 0, pts.size - 1)
            return np.where(j < 0, 0, total[jc] + rate[jc] * (x - pts[jc]))
    else:
        cum = cumc = np.zeros(1, dtype=np.int64)
        maxex = sumex = np.zeros(1, dtype=np.int64)

        def before(x, total, rate):
            return np.zeros_like(x)

    total_stalls, conflicts = int(cum[-1]), int(cumc[-1])
    stalled = before(S, cum, maxex)                      # stall cycles before each fold starts
    conflicted = before(S, cumc, sumex)
    start_cycle = S + stalled
    span = T + R + C - 3                                 # start to last write, plain fold
    tail = int(off[-1, R])               # the last fold's port throttle: m_last * delta per fold
    end = start_cycle[-1] + span + tail + (total_stalls - stalled[-1])
    plain_end = PS[-1] + span
    fold_extra = np.diff(np.r_[start_cycle, end]) - np.diff(np.r_[PS, plain_end])
    fold_stalls = np.diff(np.r_[stalled, total_stalls])
    fold_bubbles = np.r_[np.diff(S) - np.diff(PS), tail]
    busy = T * np.bincount(unit, minlength=U).astype(np.int64)
    return ReconStream(
        fold_extra=fold_extra.astype(np.int64), fold_stalls=fold_stalls.astype(np.int64),
        fold_bubbles=fold_bubbles.astype(np.int64),
        fold_conflicts=np.diff(np.r_[conflicted, conflicts]).astype(np.int64),
        start=S, start_cycle=start_cycle,
        extra_cycles=int(end - plain_end), stall_cycles=total_stalls,
        bubble_cycles=int(S[-1] - PS[-1]), depth_cycles=tail,
        accesses=int(T * mask.sum()), conflicts=conflicts, unit_busy=busy,
        depth=depth, row_latency=delta)
