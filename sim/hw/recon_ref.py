"""Cycle-stepped reference of ReCoN timing in weight-stationary folds (one fold or a stream).

The slow twin of :func:`sim.hw.recon.recon_fold_cycles` (one fold) and of
:func:`sim.hw.recon_stream.recon_stream_cycles` (folds back to back), written without them:
every cycle it looks at every row's request, runs each unit's fixed-priority arbiter, clocks
each unit's pipeline registers, shifts every PE row's streamed-element shift register (column
``c`` sees column 0's stream ``c`` advances later, so the sync chains of ``C - 1 - c`` registers
deliver a row vector in the advance in which the last column computes it, and a check made
where an element meets column 0 holds for every column: see :class:`_Stream`), checks that each
partial sum a PE (or the oAct write port) uses has really arrived, that no element overtakes
another and that every PE computes with the weights of its element's fold, and records when
the outputs are written. Extra cycles are measured as the difference of the last
output write with and without the outlier rows. Use it on small shapes only (R, C <= 16,
T <= 40, a dozen folds: a few ms to a few tens of ms per call).

The machine (see :mod:`sim.hw.recon` for the single-fold rules in words)
-----------------------------------------------------------------------
* Cycles are *real* cycles; an *advance* cycle is one in which the array's clock enable is
  high. The array (PE registers and weight banks, sync buffers, the iAct feed and its fold
  controller, the oAct write port) moves only in advance cycles; the arbiters and ReCoN
  pipelines move every cycle. A cycle is a stall cycle exactly when some unit has more than one
  waiting row at its start. Advance cycles are numbered ``a = 0, 1, ...``.
* Folds ``f = 0 .. F-1`` of ``T`` elements each; fold ``f`` has its own outlier rows ``O_f``
  and its own throttle ``off_f[k] = delta * |O_f ∩ [0, k)|`` for rows ``k = 0 .. R`` (``R`` =
  the oAct port), ``delta = (C - 1) + D``: the sync depth ``C - 1`` plus the ReCoN depth ``D``
  for every outlier row of the fold above the row.
* Element ``t`` of fold ``f`` enters column 0 of row ``k`` at advance ``S_f + t + k +
  off_f[k]`` (the port: it is at port position ``c`` at advance ``S_f + t + R - 1 + off_f[R] +
  c``, the cycle the bottom row computes it when that row is plain). It moves one column right
  per advance.
* **Fold issue (the controller).** ``S_0 = issue[0]`` and ``S_f`` is the first advance with

  - ``S_f >= S_{f-1} + T + max_{k=0..R} (off_{f-1}[k] - off_f[k])``: no overtaking, in every
    row (and at the port) fold ``f``'s first element enters after fold ``f-1``'s last, with
    fold ``f``'s own throttle. The controller knows both folds' offsets and computes this; a
    fold with fewer outlier rows above some row than its predecessor has to wait for the
    predecessor's slower tail there (a *throttle bubble*);
  - ``S_f >= issue[f]``: the plain array's schedule (by default
    :func:`sim.hw.systolic._stationary_issue`, shifted so that fold 0 starts at 0: a stream
    interval of ``T``, or the weight loader's ``R`` rows per fold when ``T < R``, and its
    bank-reuse hazard). ``issue_clock="advance"`` (default): the loader and the controller are
    part of the array and are frozen by stalls too, so ``issue`` counts advance cycles;
    ``issue_clock="real"``: the loader keeps running during stalls and ``issue`` counts real
    cycles (fold ``f`` starts at the first advance that is both stream-legal and in a real
    cycle ``>= issue[f]``), so a stall can hide in a loader-bound gap.

  Weight preload is hidden: a PE switches to fold ``f+1``'s bank when fold ``f+1``'s first
  element reaches it, which by the rule above is after fold ``f``'s last element has passed; the
  reference checks that no PE ever sees an element of a fold whose bank it has already left.
* Consequences that the reference checks rather than assumes: within a fold, rows between two
  outlier rows keep the plain one-cycle skew (their psum registers hold the right element), and
  nothing overtakes. Per element, a PE row accumulates locally or sends its vector through
  ReCoN according to that element's fold.
* An outlier row's PE in column ``c`` writes into a delay chain of ``C - 1 - c`` registers; when
  the chains' outputs hold one element, the row vector is complete and waits in the row's
  request register from the next cycle on (a request register that is still full raises).
* A unit grants one waiting row per cycle, the lowest row first, whatever fold the vector
  belongs to (arbiters and pipelines are shared by all folds in flight); the granted vector
  occupies pipeline register 1 that cycle and register ``D`` ``D - 1`` cycles later. A PE row
  may use the result from the following cycle, the oAct write port in the same cycle
  (write-through, as the plain array writes a bottom-row psum in the cycle it is computed).
  The consumer takes it at its throttled schedule: the reference reports the smallest slack
  between arrival and use (0: the throttle is exactly the pipeline, never too early, since a
  hazard raises).
* Results: the last output write (real cycle), and the same run without outlier rows (same
  ``issue``), so ``extra = last_write - plain_last_write``; accesses (grants), conflicts (row
  vectors not granted in the cycle they first requested), stall cycles; per fold the start
  advance ``S_f``, its real cycle and the fold's share of the extra cycles (growth of the real
  start-to-start interval over the plain one; the last fold: of its start-to-last-write span).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from sim.config.errors import ConfigError

__all__ = ["Grant", "ReconRefResult", "ReconStreamRefResult", "RefHazard",
           "simulate_recon_fold", "simulate_recon_folds"]

_NEVER = 1 << 60


class Grant(NamedTuple):
    """One ReCoN grant: in ``cycle`` unit ``unit`` took row ``row``'s vector ``t`` of ``fold``."""

    cycle: int
    unit: int
    row: int
    fold: int
    t: int


class _InFlight(NamedTuple):
    """A row vector in a unit's pipeline: its row and its element id (fold * T + t)."""

    row: int
    element: int


class RefHazard(RuntimeError):
    """A partial sum was used before it arrived, two vectors collided in a register, an element
    overtook another or met the wrong weights."""


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


@dataclass(frozen=True)
class ReconStreamRefResult:
    extra_cycles: int      # last_write - plain_last_write
    accesses: int
    conflicts: int
    stall_cycles: int
    depth: int
    last_write: int
    plain_last_write: int
    min_slack: int | None
    max_wait: int
    wait_by_row: tuple[int, ...]
    fold_start: tuple[int, ...]        # S_f, advance cycle of fold f's first element in row 0
    fold_start_cycle: tuple[int, ...]  # the real cycle of that advance
    plain_fold_start: tuple[int, ...]  # S_f without outlier rows (= real cycle there)
    fold_extra: tuple[int, ...]        # per-fold share of extra_cycles (sums to it)
    fold_stalls: tuple[int, ...]       # stall cycles while fold f was the newest fold issued
    fold_conflicts: tuple[int, ...]    # conflicts of vectors completed while fold f was newest
    bubble_cycles: int                 # sum of S_f - S_{f-1} beyond the plain interval
    grants: tuple[Grant, ...] | None  # with log=True: every grant, in order


def _depth(cols: int) -> int:
    d, width = 1, 1
    while width < cols:          # smallest power of two >= cols, one stage per doubling
        width *= 2
        d += 1
    return d


def _check_scalars(T, rows, cols, units) -> None:
    for name, v, lo in (("T", T, 1), ("rows", rows, 1), ("cols", cols, 1), ("units", units, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"an integer >= {lo}", key=f"recon.{name}", got=repr(v))
    if rows % units:
        raise ConfigError(f"a number of units that divides the {rows} rows", key="recon.units",
                          got=repr(units))


def _check_rows(outlier_rows, rows) -> list[int]:
    o = list(outlier_rows)
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in o):
        raise ConfigError("a list of integer row indices", key="recon.outlier_rows",
                          got=repr(o))
    o = sorted({int(k) for k in o})
    if o and (o[0] < 0 or o[-1] >= rows):
        raise ConfigError(f"row indices in [0, {rows})", key="recon.outlier_rows", got=repr(o))
    return o


def _check(T, outlier_rows, rows, cols, units) -> tuple[int, list[int], int, int, int]:
    _check_scalars(T, rows, cols, units)
    return int(T), _check_rows(outlier_rows, rows), int(rows), int(cols), int(units)


def _plain_issue(T: int, R: int, C: int, n: int) -> np.ndarray:
    from sim.hw.systolic import _stationary_issue        # the plain array's fold schedule
    s = np.asarray(_stationary_issue(T, R, C, n).stream, dtype=np.int64)
    return s - s[0]


class _Stream:
    """Folds streaming through the stepped machine.

    Row ``k``'s streamed-element registers form a shift register (``regs[k][c]`` = the element
    PE ``(k, c)`` computes in this advance); row ``R`` is the oAct port's positions. Every PE of
    a row sees column 0's stream ``c`` advances later and the PE row below reads the psum
    register of the same column, so a check made when an element meets column 0 holds at every
    column (a ReCoN result is used by column ``c`` ``c`` advances after column 0, never
    earlier); the sync chain of column ``c`` (``C - 1 - c`` registers) delivers its part of the
    vector in the advance in which column ``C - 1`` computes it.
    """

    def __init__(self, T: int, folds: list[list[int]], R: int, C: int, units: int,
                 issue, issue_clock: str, log: bool, throttle: str = "per_fold"):
        F = len(folds)
        self.T, self.R, self.C, self.U, self.F = T, R, C, units, F
        self.gs = R // units
        self.D = D = _depth(C)
        delta = (C - 1) + D
        self.isout = [[False] * R for _ in range(F)]
        for f, o in enumerate(folds):
            for k in o:
                self.isout[f][k] = True
        # union: one throttle for every fold, from the rows any fold routes to ReCoN; a row of
        # the union that is plain in a fold passes its psums down through a delay line
        self.union = [throttle == "union" and any(o[k] for o in self.isout) for k in range(R)]
        self.delay: list[dict[int, int]] = [{} for _ in range(R)]   # element -> advance made
        self.max_delay_line = 0
        self.off = []
        for f in range(F):
            row, n = [], 0
            for k in range(R + 1):                       # k = R: the oAct port
                row.append(n * delta)
                if k < R and (self.isout[f][k] or self.union[k]):
                    n += 1
            self.off.append(row)
        # entry of element 0 into row k relative to S_f; the port keeps the bottom row's timing
        self.pos0 = [[min(k, R - 1) + self.off[f][k] for k in range(R + 1)] for f in range(F)]
        # no overtaking in any row: the least start-to-start distance of consecutive folds
        self.gap = [T + max(a - b for a, b in zip(self.off[f], self.off[f + 1]))
                    for f in range(F - 1)]
        self.issue = [int(v) for v in issue]
        self.real_issue = issue_clock == "real"
        self.S: list[int] = []
        self.S_cycle: list[int] = []
        # registers
        self.regs = [deque([-1] * C, maxlen=C) for _ in range(R + 1)]
        self.psum0 = [-1] * R                       # psum register below PE (k, 0)
        self.feeding = [0] * (R + 1)                # the fold that feeds row k now / next
        self.bank = [-1] * R                        # the fold whose weights row k's PEs use
        self.req = [-1] * R                         # complete vector waiting (element id)
        self.req_since = [0] * R
        self.req_adv = [0] * R                      # the advance that completed the vector
        self.nwait = 0
        self.waited = [0] * R
        self.pipe = [[None] * D for _ in range(units)]   # _InFlight or None per stage register
        self.inflight = 0
        self.stage_d = [[_NEVER] * (F * T) for _ in range(R)]   # cycle in stage D
        self.port_count = 0
        # statistics
        self.accesses = self.conflicts = self.stalls = self.max_wait = 0
        self.min_slack: int | None = None
        self.writes = 0
        self.last_write = -1
        self.adv = 0
        self.stall_at: dict[int, int] = {}
        self.conflict_at: dict[int, int] = {}
        self.log: list | None = [] if log else None

    def done(self) -> bool:
        return self.writes == self.F * self.T * self.C

    # -- one cycle -----------------------------------------------------------------------------
    def step(self, cycle: int) -> None:
        if self._arbitrate(cycle):
            self.stalls += 1
            self.stall_at[self.adv] = self.stall_at.get(self.adv, 0) + 1
        else:
            self._advance(cycle)

    def _arbitrate(self, cycle: int) -> bool:
        if not self.nwait and not self.inflight:
            return False
        stall = False
        req, gs, T = self.req, self.gs, self.T
        for g in range(self.U):
            grant = None
            first, n = -1, 0
            for k in range(g * gs, (g + 1) * gs):
                if req[k] >= 0:
                    n += 1
                    if first < 0:
                        first = k                       # fixed priority: lowest row
            if n:
                k = first
                el = req[k]
                grant = _InFlight(row=k, element=el)
                wait = cycle - self.req_since[k]
                if wait > 0:
                    self.conflicts += 1
                    x = self.req_adv[k] + 1         # counted like stall_at: the next advance
                    self.conflict_at[x] = self.conflict_at.get(x, 0) + 1
                    self.waited[k] += wait
                if wait > self.max_wait:
                    self.max_wait = wait
                req[k] = -1
                self.nwait -= 1
                self.accesses += 1
                self.inflight += 1
                stall |= n > 1
                if self.log is not None:
                    self.log.append(Grant(cycle=cycle, unit=g, row=k, fold=el // T, t=el % T))
            # the unit's pipeline registers move every cycle: the granted vector is in stage 1
            # now, the one in the last register is in stage D now (and leaves next cycle)
            pipe = self.pipe[g]
            pipe.insert(0, grant)
            if pipe.pop() is not None:
                self.inflight -= 1
            last = pipe[-1]
            if last is not None:
                self.stage_d[last.row][last.element] = cycle
        return stall

    def _issue(self, cycle: int) -> None:
        a = self.adv
        f = len(self.S)
        while f < self.F:
            if f and a < self.S[f - 1] + self.gap[f - 1]:
                return
            if (cycle if self.real_issue else a) < self.issue[f]:
                return
            self.S.append(a)
            self.S_cycle.append(cycle)
            f += 1

    def _feed(self, k: int, a: int) -> int:
        """The element the controller feeds into column 0 of row ``k`` (-1: none)."""
        S, T, f = self.S, self.T, self.feeding[k]
        while f < len(S):
            t = a - S[f] - self.pos0[f][k]
            if t < T:
                break
            f += 1
        self.feeding[k] = f
        if f + 1 < len(S) and a - S[f + 1] - self.pos0[f + 1][k] >= 0:
            raise RefHazard(f"fold {f + 1} overtakes fold {f} in row {k} (advance {a})")
        if f == len(S) or t < 0:
            return -1
        return f * T + t

    def _advance(self, cycle: int) -> None:
        R, T, C = self.R, self.T, self.C
        a = self.adv
        self._issue(cycle)
        new_psum0 = [-1] * R
        for k in range(R + 1):
            x = self._feed(k, a)
            regs = self.regs[k]
            dropped = regs[-1]
            regs.appendleft(x)
            f = x // T                              # -1 when empty
            if x >= 0:
                if k < R:
                    # weights: a PE computes with its element's fold, never with a left bank
                    if f < self.bank[k]:
                        raise RefHazard(f"row {k} got fold {f} after switching to "
                                        f"{self.bank[k]} (advance {a})")
                    self.bank[k] = f
                if k:
                    self._consume(k, x, f, cycle)
                if k < R and not self.isout[f][k]:
                    if self.union[k]:
                        self.delay[k][x] = a
                        self.max_delay_line = max(self.max_delay_line, len(self.delay[k]))
                    else:
                        new_psum0[k] = x
            if k < R:
                # a row vector is complete when the last column computes it
                y = regs[C - 1]
                if y >= 0 and self.isout[y // T][k]:
                    if self.req[k] >= 0:
                        raise RefHazard(f"row {k} completed a vector while one still waits")
                    self.req[k] = y
                    self.req_since[k] = cycle + 1
                    self.req_adv[k] = a
                    self.nwait += 1
            else:                                   # the oAct port's write positions
                self.port_count += (x >= 0) - (dropped >= 0)
        if self.port_count:
            self.writes += self.port_count
            self.last_write = cycle
        self.psum0 = new_psum0
        self.adv += 1

    def _consume(self, k: int, x: int, f: int, cycle: int) -> None:
        """Row ``k`` (``R``: the port) meets element ``x`` of fold ``f`` in column 0."""
        p = k - 1
        if self.isout[f][p]:
            ready = self.stage_d[p][x] + (1 if k < self.R else 0)    # port: write-through
            if ready > cycle:
                raise RefHazard(f"row {p}'s ReCoN result used before it arrived ({cycle})")
            slack = cycle - ready
            if self.min_slack is None or slack < self.min_slack:
                self.min_slack = slack
        elif self.union[p]:
            made = self.delay[p].pop(x, None)
            # a PE row reads the line from the next advance on, the port write-through
            if made is None or made > self.adv - (1 if k < self.R else 0):
                raise RefHazard(f"row {k} read row {p}'s delay line before element {x} "
                                f"entered it ({cycle})")
        else:
            src = self.psum0[p] if k < self.R else self.regs[p][0]   # port: write-through
            if src != x:
                raise RefHazard(f"row {k} read a partial sum of another element at {cycle}")


def _run(T, folds, R, C, units, issue, issue_clock="advance", log=False,
         throttle="per_fold") -> _Stream:
    s = _Stream(T, folds, R, C, units, issue, issue_clock, log, throttle)
    m = max((len(o) for o in folds), default=0)
    limit = (int(max(issue)) + len(folds) * (T + R + 1) * (m + 1) * (s.D + C + 2)
             * (R + 1) + 1000)
    cycle = 0
    while not s.done():
        if cycle > limit:
            raise RuntimeError("reference did not finish (deadlock?)")
        s.step(cycle)
        cycle += 1
    if any(r >= 0 for r in s.req) or any(
            s.stage_d[k][f * T + t] == _NEVER
            for f in range(len(folds)) for k in folds[f] for t in range(T)):
        raise RefHazard("a row vector never went through ReCoN")
    return s


@lru_cache(maxsize=1024)
def _plain(T, F, R, C, units, issue, issue_clock) -> tuple[int, tuple[int, ...]]:
    """Last write and fold starts of the same stream without outlier rows (stepped too)."""
    s = _run(T, [[] for _ in range(F)], R, C, units, issue, issue_clock)
    if s.stalls or s.S != s.S_cycle:
        raise RefHazard("the plain stream stalled")
    return s.last_write, tuple(s.S)


def simulate_recon_fold(T: int, outlier_rows, rows: int, cols: int,
                        units: int = 1) -> ReconRefResult:
    """Step one WS fold of ``T`` elements on ``rows x cols`` with ReCoN; see the module doc
    (a stream of one fold that starts at cycle 0)."""
    T, outlier, R, C, units = _check(T, outlier_rows, rows, cols, units)
    run = simulate_recon_folds(T, [list(outlier)], R, C, units, issue=[0])
    return ReconRefResult(**{f.name: getattr(run, f.name) for f in fields(ReconRefResult)})


def simulate_recon_folds(T: int, fold_outlier_rows, rows: int, cols: int, units: int = 1, *,
                         issue=None, issue_clock: str = "advance",
                         log: bool = False, throttle: str = "per_fold") -> ReconStreamRefResult:
    """Step a stream of WS folds (``fold_outlier_rows[f]`` = fold ``f``'s outlier rows) of ``T``
    elements each on ``rows x cols`` with ``units`` shared ReCoN units; see the module doc.

    ``issue``: earliest start of each fold (default: the plain array's schedule,
    :func:`sim.hw.systolic._stationary_issue` shifted to start at 0); ``issue_clock``:
    ``"advance"`` (default) or ``"real"``, the clock ``issue`` counts. ``log=True`` records every
    grant as ``(cycle, unit, row, fold, element)``. ``throttle``: ``"per_fold"`` (each fold
    its own offsets, as above) or ``"union"`` (every fold the offsets of the rows any fold
    routes to ReCoN; a union row that is plain in a fold hands its psums down through a delay
    line, which the reference checks is never read before the element entered it).
    """
    _check_scalars(T, rows, cols, units)
    T, R, C, units = int(T), int(rows), int(cols), int(units)
    folds = [_check_rows(o, R) for o in fold_outlier_rows]
    if not folds:
        raise ConfigError("at least one fold", key="recon.fold_outlier_rows", got="[]")
    F = len(folds)
    if issue is None:
        issue = _plain_issue(T, R, C, F)
    else:
        issue = list(issue)
        if (len(issue) != F or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                   or v < 0 for v in issue)):
            raise ConfigError(f"{F} integers >= 0", key="recon.issue", got=repr(issue))
        issue = np.asarray(issue, dtype=np.int64)
    if issue_clock not in ("advance", "real"):
        raise ConfigError("'advance' or 'real'", key="recon.issue_clock", got=repr(issue_clock))
    if throttle not in ("per_fold", "union"):
        raise ConfigError("'per_fold' or 'union'", key="recon.throttle", got=repr(throttle))
    run = _run(T, folds, R, C, units, issue, issue_clock, log, throttle)
    plain_last, plain_S = _plain(T, F, R, C, units, tuple(int(v) for v in issue), issue_clock)
    start_cycle = run.S_cycle
    pstart = plain_S                      # no stalls without outlier rows: advance = cycle
    share = np.diff(np.r_[start_cycle, run.last_write]) - np.diff(np.r_[pstart, plain_last])
    edges = np.r_[run.S, _NEVER]

    def per_fold(at):
        return tuple(sum(v for x, v in at.items() if edges[f] < x <= edges[f + 1])
                     for f in range(F))
    bubbles = int((np.diff(run.S) - np.diff(plain_S)).sum())
    return ReconStreamRefResult(
        extra_cycles=run.last_write - plain_last,
        accesses=run.accesses,
        conflicts=run.conflicts,
        stall_cycles=run.stalls,
        depth=run.D,
        last_write=run.last_write,
        plain_last_write=plain_last,
        min_slack=run.min_slack,
        max_wait=run.max_wait,
        wait_by_row=tuple(int(w) for w in run.waited),
        fold_start=tuple(int(v) for v in run.S),
        fold_start_cycle=tuple(int(v) for v in start_cycle),
        plain_fold_start=tuple(int(v) for v in pstart),
        fold_extra=tuple(int(v) for v in share),
        fold_stalls=per_fold(run.stall_at),
        fold_conflicts=per_fold(run.conflict_at),
        bubble_cycles=bubbles,
        grants=tuple(run.log) if run.log is not None else None,
    )
