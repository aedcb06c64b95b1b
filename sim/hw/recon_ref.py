"""Cycle-stepped reference of ReCoN timing in a weight-stationary fold.

The slow twin of :func:`sim.hw.recon.recon_fold_cycles`, written without it: every cycle it
looks at every row's request, runs each unit's fixed-priority arbiter, clocks each unit's
pipeline registers, shifts the PE rows' streamed-element registers and every outlier row's
sync-buffer delay chains, checks that each partial sum a PE (or the oAct write port) uses has
really arrived, and records when the outputs are written. The fold's extra cycles are measured
as the difference of the last output write with and without the outlier rows. Use it on small
shapes only.

The machine (see :mod:`sim.hw.recon` for the rules in words)
------------------------------------------------------------
* Cycles are *real* cycles; an *advance* cycle is one in which the array's clock enable is
  high. The array (PE registers, sync buffers, the iAct feed, the oAct write port) moves only in
  advance cycles; the arbiters and ReCoN pipelines move every cycle. A cycle is a stall cycle
  exactly when some unit has more than one waiting row at its start.
* Element ``t`` enters row ``k`` at advance cycle ``t + k + off[k]``: the controller delays each
  row's feed by the sync depth ``C - 1`` plus the ReCoN depth ``D`` for every outlier row above
  it. This is a configured throttle, so the reference also reports the smallest slack between a
  result's arrival and its use: 0 means the throttle is exactly the pipeline, never too early
  (a hazard raises) and not longer than needed.
* An outlier row's PE in column ``c`` writes into a delay chain of ``C - 1 - c`` registers; when
  the chains' outputs all hold one element, the row vector is complete and waits in the row's
  request register from the next cycle on.
* A unit grants one waiting row per cycle, the lowest row first; the granted vector occupies
  pipeline register 1 that cycle and register ``D`` ``D - 1`` cycles later. A PE row may use the
  result from the following cycle, the oAct write port in the same cycle (write-through, as the
  plain array writes a bottom-row psum in the cycle it is computed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config.errors import ConfigError

__all__ = ["ReconRefResult", "RefHazard", "simulate_recon_fold"]


class RefHazard(RuntimeError):
    """A partial sum was used before it arrived, or two vectors collided in a register."""


@dataclass(frozen=True)
class ReconRefResult:
    extra_cycles: int      # last output write with outlier rows minus without
    accesses: int          # grants (row vectors through ReCoN)
    conflicts: int         # row vectors not granted in the first cycle they requested
    stall_cycles: int      # cycles with the array's clock enable low
    depth: int             # ReCoN stages
    last_write: int        # cycle of the last output write (with outlier rows)
    plain_last_write: int  # the same without outlier rows
    min_slack: int | None  # smallest (use cycle - earliest usable cycle) of a ReCoN result
    max_wait: int          # longest wait of a row vector for its grant (cycles)
    wait_by_row: tuple[int, ...]   # total cycles each row's vectors waited for a grant


def _depth(cols: int) -> int:
    d, width = 1, 1
    while width < cols:          # smallest power of two >= cols, one stage per doubling
        width *= 2
        d += 1
    return d


def _check(T, outlier_rows, rows, cols, units) -> tuple[int, list[int], int, int, int]:
    for name, v, lo in (("T", T, 1), ("rows", rows, 1), ("cols", cols, 1), ("units", units, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"an integer >= {lo}", key=f"recon.{name}", got=repr(v))
    if rows % units:
        raise ConfigError(f"a number of units that divides the {rows} rows", key="recon.units",
                          got=repr(units))
    o = list(outlier_rows)
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in o):
        raise ConfigError("a list of integer row indices", key="recon.outlier_rows",
                          got=repr(o))
    o = sorted({int(k) for k in o})
    if o and (o[0] < 0 or o[-1] >= rows):
        raise ConfigError(f"row indices in [0, {rows})", key="recon.outlier_rows", got=repr(o))
    return int(T), o, int(rows), int(cols), int(units)


class _Fold:
    """One fold on the stepped machine."""

    def __init__(self, T: int, outlier: list[int], R: int, C: int, units: int):
        self.T, self.R, self.C, self.U = T, R, C, units
        self.D = _depth(C)
        self.is_out = np.zeros(R, dtype=bool)
        self.is_out[outlier] = True
        # controller throttle: feed delay of each row, and of the oAct port ("row R")
        per_row = (C - 1) + self.D
        above = np.concatenate([[0], np.cumsum(self.is_out)])          # outlier rows above k
        self.off = above * per_row                                     # length R + 1
        self.group = np.arange(R) // (R // units)
        # registers
        self.elem = np.full((R, C), -1, dtype=np.int64)     # element in PE (k, c) this advance
        self.port = np.full(C, -1, dtype=np.int64)          # oAct port position c ("row R")
        self.psum = np.full((R, C), -1, dtype=np.int64)     # psum register below PE (k, c)
        self.sync = np.full((R, C, max(C, 1)), -1, dtype=np.int64)  # delay chain [k, c, age]
        self.req = np.full(R, -1, dtype=np.int64)           # complete vector waiting (element)
        self.req_since = np.zeros(R, dtype=np.int64)
        self.waited = np.zeros(R, dtype=np.int64)
        self.pipe = [[None] * self.D for _ in range(units)]  # (row, element) per stage register
        self.stage_d = np.full((R, T), np.iinfo(np.int64).max, dtype=np.int64)  # stage-D cycle
        # statistics
        self.accesses = self.conflicts = self.stalls = self.max_wait = 0
        self.min_slack: int | None = None
        self.writes = 0
        self.last_write = -1
        self.adv = 0
        self.cols_idx = np.arange(C)
        self.exit_age = C - 1 - self.cols_idx

    def done(self) -> bool:
        return self.writes == self.T * self.C

    # -- one cycle -----------------------------------------------------------------------------
    def step(self, cycle: int) -> None:
        stall = self._arbitrate(cycle)
        if stall:
            self.stalls += 1
        else:
            self._advance(cycle)

    def _arbitrate(self, cycle: int) -> bool:
        stall = False
        for g in range(self.U):
            waiting = np.nonzero((self.req >= 0) & (self.group == g))[0]
            grant = None
            if waiting.size:
                k = int(waiting[0])                       # fixed priority: lowest row
                grant = (k, int(self.req[k]))
                wait = cycle - int(self.req_since[k])
                if wait > 0:
                    self.conflicts += 1
                    self.waited[k] += wait
                self.max_wait = max(self.max_wait, wait)
                self.req[k] = -1
                self.accesses += 1
                stall |= waiting.size > 1
            # the unit's pipeline registers move every cycle: the granted vector is in stage 1
            # now, the one in the last register is in stage D now (and leaves next cycle)
            self.pipe[g] = [grant] + self.pipe[g][:-1]
            in_last = self.pipe[g][-1]
            if in_last is not None:
                self.stage_d[in_last] = cycle
        return stall

    def _advance(self, cycle: int) -> None:
        R, T = self.R, self.T
        a = self.adv
        # streamed elements move one column right; the controller feeds column 0 of each row
        self.elem[:, 1:] = self.elem[:, :-1]
        t0 = a - np.arange(R) - self.off[:R]
        self.elem[:, 0] = np.where((t0 >= 0) & (t0 < T), t0, -1)
        self.port[1:] = self.port[:-1]
        tp = a - (R - 1) - self.off[R]
        self.port[0] = tp if 0 <= tp < T else -1

        # every PE checks that its incoming partial sum is there
        e = self.elem
        for k in range(R):
            here = e[k] >= 0
            if not here.any():
                continue
            if k == 0:
                continue
            if self.is_out[k - 1]:
                self._use_result(k - 1, e[k][here], e[k][0], cycle, write_through=False)
            elif (self.psum[k - 1][here] != e[k][here]).any():
                raise RefHazard(f"row {k} read a partial sum of another element at {cycle}")

        # outputs of this advance: plain rows latch their psum, outlier rows feed sync chains
        new_psum = np.where(self.is_out[:, None], -1, e)
        self.sync[:, :, 1:] = self.sync[:, :, :-1]
        self.sync[:, :, 0] = np.where(self.is_out[:, None], e, -1)
        exits = self.sync[:, self.cols_idx, self.exit_age]                # [R, C]
        for k in np.nonzero(self.is_out & (exits[:, 0] >= 0))[0]:
            if (exits[k] != exits[k, 0]).any():
                raise RefHazard(f"sync buffer of row {k} did not align a row vector")
            if self.req[k] >= 0:
                raise RefHazard(f"row {k} completed a vector while one still waits")
            self.req[k] = exits[k, 0]
            self.req_since[k] = cycle + 1
            self.sync[k, self.cols_idx, self.exit_age] = -1

        # output writes: the bottom row's psums, or the oAct port reading ReCoN results
        if self.is_out[R - 1]:
            here = self.port >= 0
            if here.any():
                self._use_result(R - 1, self.port[here], self.port[0], cycle,
                                 write_through=True)
                self._write(int(here.sum()), cycle)
        else:
            here = e[R - 1] >= 0
            if here.any():
                self._write(int(here.sum()), cycle)
        self.psum = new_psum
        self.adv += 1

    def _use_result(self, row: int, elems: np.ndarray, first, cycle: int,
                    write_through: bool) -> None:
        ready = self.stage_d[row, elems] + (0 if write_through else 1)
        if (ready > cycle).any():
            raise RefHazard(f"row {row}'s ReCoN result used before it arrived (cycle {cycle})")
        if first >= 0:                           # column 0 starts using this vector now
            slack = cycle - int(self.stage_d[row, first]) - (0 if write_through else 1)
            self.min_slack = slack if self.min_slack is None else min(self.min_slack, slack)

    def _write(self, count: int, cycle: int) -> None:
        self.writes += count
        self.last_write = cycle


def _run(T, outlier, R, C, units) -> _Fold:
    fold = _Fold(T, outlier, R, C, units)
    limit = 4 * (T + R + C) * (len(outlier) + 1) * (fold.D + C + 2) + 100
    cycle = 0
    while not fold.done():
        if cycle > limit:
            raise RuntimeError("reference did not finish (deadlock?)")
        fold.step(cycle)
        cycle += 1
    never = np.iinfo(np.int64).max
    if (fold.req >= 0).any() or (fold.stage_d[fold.is_out] == never).any():
        raise RefHazard("a row vector never went through ReCoN")
    return fold


def simulate_recon_fold(T: int, outlier_rows, rows: int, cols: int,
                        units: int = 1) -> ReconRefResult:
    """Step one WS fold of ``T`` elements on ``rows x cols`` with ReCoN; see the module doc."""
    T, outlier, R, C, units = _check(T, outlier_rows, rows, cols, units)
    fold = _run(T, outlier, R, C, units)
    plain = _run(T, [], R, C, units)
    return ReconRefResult(
        extra_cycles=fold.last_write - plain.last_write,
        accesses=fold.accesses,
        conflicts=fold.conflicts,
        stall_cycles=fold.stalls,
        depth=fold.D,
        last_write=fold.last_write,
        plain_last_write=plain.last_write,
        min_slack=fold.min_slack,
        max_wait=fold.max_wait,
        wait_by_row=tuple(int(w) for w in fold.waited),
    )
