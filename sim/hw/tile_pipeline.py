"""The memory-tile pipeline of one GEMM as an event-driven simulation, with exact compression
of repeats.

Per memory tile ``j`` (see :mod:`sim.hw.memory_plan`) the pipeline needs six integers::

    fetch_dram  bytes DRAM -> L2 before the tile can start
    fill        bytes L2 -> SRAM before the tile can start
    dur         cycles the array spends on the tile (its fold span, or longer when the SRAM
                port cannot feed it)
    span        the tile's share of the ideal-memory fold schedule (dur - span = SRAM stall)
    drain       bytes SRAM -> L2 after the tile
    store       bytes L2 -> DRAM after the drain

Hardware: two SRAM slots (double buffering), a DMA engine, the array, and two ports (DRAM
and L2) shared by fetches and drains — the contention is why this runs as events.

* The DMA engine takes a free SRAM slot for tile ``j`` (tiles in order; both slots are free
  at cycle 0, later the slot of tile ``j`` is the one tile ``j - 2`` frees) and issues the
  tile's read from DRAM into L2, then, when the read has landed, its fill of SRAM. Reads are
  pipelined: the next one does not wait for the previous one's latency. The tile is *ready*
  when its fill has landed.
* The array takes the tiles in order: it waits for tile ``j`` to be ready, computes ``dur``
  cycles, frees the slot, and hands the tile to the drain: its drain SRAM -> L2, then, when
  that has landed, its store L2 -> DRAM. The tile is *drained* when its store has landed.
* A port (the rules of :class:`sim.core.Link`, applied in this loop: no simpy process runs
  here) moves one transfer at a time: a transfer of ``b > 0``
  bytes holds it ``max(1, ceil(b / bytes_per_cycle))`` cycles, then flies ``latency`` more
  cycles without holding it. A transfer of 0 bytes is no transfer: the stage completes at
  once without touching the port.

Arbitration (each port; an age-ordered DMA arbiter): a port serves the pending request that
arrived first; requests that arrive in the same cycle are served oldest tile first. A port
freed at cycle ``t`` (its last transfer's hold ends) starts the next transfer at ``t``, and
it sees every request raised at ``t`` — cycle ``t`` is settled (landings, array, slots)
before the ports choose. Because a tile's outbound transfers (drain, store) only begin after
its inbound ones (read, fill) have landed, and tiles are computed in order, "oldest tile
first" is the same as "write-backs before reads" on a tie. ``tests/tile_pipeline_ref.py``
steps the same rules cycle by cycle; the tests check both agree exactly.

Repeats: a big GEMM is thousands of identical tiles (one column group after another). The
pipeline is deterministic and shift-invariant, so once its complete state at a block boundary
(port queues in arbitration order, transfers in flight, port holds, the array, which fetched
tiles are ready) repeats an earlier boundary's up to a time shift, the copies in between repeat
too, and whole periods of them are skipped (:class:`_Skipper`); until then, and when it never
repeats, every tile is simulated. Nothing is inferred from per-tile times alone: those can
shift by a constant over a few copies while a queue is still growing or the state alternates.
:func:`run_tiles` with ``compress=False`` (and :func:`simulate_tiles`) simulate every tile;
``tests/test_compression_fuzz.py`` checks both agree in every field on random streams.
"""
from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import NamedTuple

import numpy as np

from ..core import TraceRecorder
from ..core.clock import check_cycles, hold_cycles_array

FIELDS = ("fetch_dram", "fill", "dur", "span", "drain", "store")
# the column of each field in a tile matrix X (n x len(FIELDS))
FETCH_DRAM, FILL, DUR, SPAN, DRAIN, STORE = map(FIELDS.index, FIELDS)
# the columns of PipelineResult.times
TIMES = ("ready", "start", "end", "drained")
MIN_COPIES = 8           # compress only runs at least this long
SHORT_PERIODS = 64      # periods tried exhaustively; longer ones come from recurrence gaps

_IN, _OUT = 0, 1         # direction of a port request: toward the array, or back from it
# A port's waiting requests are (arrival, tile, direction) and its transfers in flight are
# (landing, tile, direction): plain tuples (they order a heap, and are made per transfer), whose
# first entry, the cycle, is _AT
_AT = 0


class _Stage(NamedTuple):
    """One direction of a port: the column of X holding its bytes, and its trace label."""

    column: int
    label: str


# per port, its stage for the inbound (_IN) and the outbound (_OUT) direction
_PORT_STAGES = {"dram": (_Stage(FETCH_DRAM, "read"), _Stage(STORE, "write")),
                "l2": (_Stage(FILL, "fill"), _Stage(DRAIN, "drain"))}
_NEVER = math.inf


@dataclass(frozen=True)
class PortSpec:
    dram_bytes_per_cycle: float
    dram_latency: int
    l2_bytes_per_cycle: float
    l2_latency: int

    def __post_init__(self) -> None:
        for name in ("dram_bytes_per_cycle", "l2_bytes_per_cycle"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("dram_latency", "l2_latency"):
            check_cycles(getattr(self, name), name)


@dataclass
class PipelineResult:
    total: int            # cycle the last byte has been stored
    stall_memory: int     # cycles the array waited for fills
    stall_sram: int       # cycles the SRAM port stretched tiles
    array_end: int        # cycle the array finished its last tile
    dram_busy: int = 0    # cycles the DRAM port was transferring
    l2_busy: int = 0      # cycles the L2 port was transferring
    times: np.ndarray | None = None   # per tile, the cycles TIMES (when recorded)


def _check_tiles(X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != len(FIELDS):
        raise ValueError(f"tiles must be an n x {len(FIELDS)} array {FIELDS}, got shape {X.shape}")
    if len(X) and not np.issubdtype(X.dtype, np.integer):
        raise ValueError(f"tiles must hold integers (bytes and cycles), got {X.dtype}")
    if len(X) and X.min() < 0:
        raise ValueError("tiles must hold non-negative bytes and cycles")
    return X.astype(np.int64, copy=False)


class _Port:
    """One port's state in :func:`simulate_tiles`: the requests waiting for it (a heap of
    ``(arrival, tile, direction)``, whose smallest entry is the one the arbiter serves), its
    transfers in flight (``(landing, tile, direction)``, in landing order) and the cycle its
    current hold ends."""

    __slots__ = ("name", "latency", "labels", "holds", "nbytes", "queue", "fly", "free")

    def __init__(self, name: str, latency: int, X: np.ndarray, holds) -> None:
        stages = _PORT_STAGES[name]
        self.labels = tuple(stage.label for stage in stages)           # [direction]
        self.name, self.latency = name, latency
        self.holds = tuple(h.tolist() for h in holds)                  # [direction][tile]
        self.nbytes = tuple(X[:, stage.column].tolist() for stage in stages)
        self.queue: list[tuple[int, int, int]] = []
        self.fly: deque[tuple[int, int, int]] = deque()
        self.free = 0

    def grant(self, t: int, trace: TraceRecorder | None) -> None:
        """Start the request the arbiter picks (the port is free at ``t``)."""
        _, j, way = heappop(self.queue)
        hold = self.holds[way][j]
        self.free = t + hold
        self.fly.append((self.free + self.latency, j, way))
        if trace is not None:
            trace.span(self.labels[way], "link", t, hold, track=self.name,
                       args={"bytes": self.nbytes[way][j]})


def simulate_tiles(X: np.ndarray, ports: PortSpec, trace: TraceRecorder | None = None,
                   record: bool = False) -> PipelineResult:
    """Run every tile of ``X`` (n x 6, columns FIELDS) through the pipeline of the module
    docstring. ``trace`` gets the compute spans (track ``pe_array``), the transfers (tracks
    ``dram`` and ``l2``) and the SRAM slot occupancy; ``record`` keeps the per-tile times.

    Event-driven: the loop jumps from one cycle with something to do to the next. In a cycle
    it first lands the transfers whose flight ends there (at most one per port: a port's
    landings are strictly increasing), finishes the array's tile and settles what follows at
    once (slots, zero-byte stages, readiness, the next tile's start), then lets each free port
    pick its next request. Nothing a port starts can land in the same cycle (a hold is at
    least one cycle), so this order is exact.
    """
    result, _ = _simulate(_check_tiles(X), ports, trace, record, None)
    return result


def _simulate(X: np.ndarray, ports: PortSpec, trace: TraceRecorder | None, record: bool,
              repeat: tuple[int, int, int] | None) -> tuple[PipelineResult, int]:
    """:func:`simulate_tiles` on checked tiles; with ``repeat = (a, P, k)`` (tiles
    ``a .. a + k*P - 1`` are ``k`` copies of one block) it skips copies once the pipeline's
    state repeats (see :class:`_Skipper`). Returns the result and the tiles skipped."""
    n = len(X)
    holds = _port_holds(X, ports)
    dram = _Port("dram", ports.dram_latency, X, holds["dram"])
    l2 = _Port("l2", ports.l2_latency, X, holds["l2"])
    read, store_hold = dram.holds[_IN], dram.holds[_OUT]
    fill_hold, drain_hold = l2.holds[_IN], l2.holds[_OUT]
    dur = X[:, DUR].tolist()
    times = {f: [-1] * n for f in TIMES}         # per tile, -1 until it happens
    ready, start, end, drained = (times[f] for f in ("ready", "start", "end", "drained"))
    array_done = _NEVER             # cycle the array finishes its current tile
    current = 0                     # the tile the array computes or waits for
    prev_end = stall = 0
    occupied = 0                    # SRAM slots taken

    def fetch(j, t):                # the DMA engine took a slot for tile j
        nonlocal occupied
        occupied += 1
        if trace is not None:
            trace.counter("sram occupied slots", t, occupied)
        if read[j]:
            heappush(dram.queue, (t, j, _IN))
        else:
            fill(j, t)

    def fill(j, t):
        if fill_hold[j]:
            heappush(l2.queue, (t, j, _IN))
        else:
            arrive(j, t)

    def arrive(j, t):
        ready[j] = t
        if j == current and array_done == _NEVER:
            begin(j, t)

    def begin(j, t):
        nonlocal array_done, stall
        start[j] = t
        stall += t - prev_end
        array_done = t + dur[j]
        if trace is not None:
            trace.span(f"tile {j}", "compute", t, dur[j], track="pe_array")

    def finish(t):                  # the array finished tile `current` at t
        nonlocal array_done, current, prev_end, occupied
        j = current
        end[j] = prev_end = t
        array_done = _NEVER
        current = j + 1
        occupied -= 1
        if trace is not None:
            trace.counter("sram occupied slots", t, occupied)
        if j + 2 < n:
            fetch(j + 2, t)
        if drain_hold[j]:
            heappush(l2.queue, (t, j, _OUT))
        else:
            store(j, t)
        if current < n and ready[current] >= 0:
            begin(current, t)

    def store(j, t):
        if store_hold[j]:
            heappush(dram.queue, (t, j, _OUT))
        else:
            drained[j] = t

    # skipping repeats: at block boundaries (the array has just finished the tile before one)
    # the state is recorded relative to the cycle and the boundary tile; see _Skipper
    skip = _Skipper(repeat) if repeat is not None and trace is None and not record else None
    boundary = skip.boundary if skip is not None else -1

    def checkpoint(t):
        """At a block boundary: record the state, or, if it was seen before, jump."""
        nonlocal array_done, current, prev_end, stall, boundary
        b = current
        jump = skip.visit(t, b, stall, ready[b] >= 0, ready[b + 1] >= 0,
                          array_done - t if array_done != _NEVER else -1, dram, l2)
        boundary = skip.boundary
        if jump is None:
            return t
        dt, dj, dstall = jump
        for port in (dram, l2):     # a uniform shift keeps the heap a heap
            port.queue[:] = [(at + dt, j + dj, way) for at, j, way in port.queue]
            flying = [(at + dt, j + dj, way) for at, j, way in port.fly]
            port.fly.clear()
            port.fly.extend(flying)
            port.free += dt
        for j in (b, b + 1):
            if ready[j] >= 0:
                ready[j + dj] = ready[j] + dt
        current = b + dj
        if array_done != _NEVER:
            array_done += dt
        prev_end += dt
        stall += dstall
        return t + dt

    t = 0
    for j in range(min(n, 2)):
        fetch(j, 0)
    dram_fly, l2_fly = dram.fly, l2.fly
    while True:
        while dram_fly and dram_fly[0][_AT] == t:
            _, j, way = dram_fly.popleft()
            if way == _IN:
                fill(j, t)
            else:
                drained[j] = t
        while l2_fly and l2_fly[0][_AT] == t:
            _, j, way = l2_fly.popleft()
            if way == _IN:
                arrive(j, t)
            else:
                store(j, t)
        while array_done == t:
            finish(t)
            if current == boundary:
                t = checkpoint(t)
        if dram.queue and dram.free <= t:
            dram.grant(t, trace)
        if l2.queue and l2.free <= t:
            l2.grant(t, trace)
        following = min(array_done, dram_fly[0][_AT] if dram_fly else _NEVER,
                        l2_fly[0][_AT] if l2_fly else _NEVER,
                        dram.free if dram.queue else _NEVER, l2.free if l2.queue else _NEVER)
        if following == _NEVER:
            break
        t = following
    dram_busy, l2_busy = _busy(holds)
    result = PipelineResult(total=t, stall_memory=stall,
                            stall_sram=int(np.sum(X[:, DUR] - X[:, SPAN])),
                            array_end=prev_end, dram_busy=dram_busy, l2_busy=l2_busy,
                            times=np.array([times[f] for f in TIMES], dtype=np.int64).T
                            if record else None)
    return result, skip.skipped if skip is not None else 0


class _Skipper:
    """Exact skipping of repeated blocks: copies ``c = 0 .. k-1`` of a block of ``P`` tiles
    start at tiles ``b_c = a + c*P``.

    The pipeline is deterministic, and its rules do not change when every time moves by a
    constant and every tile index by a multiple of ``P`` inside the repeat (equal rows of X).
    So its future is fixed by its *state*: at boundary ``b`` (the array has just finished tile
    ``b - 1`` and, in the same cycle ``t``, nothing else has happened since the landings), that
    is the array's remaining time on tile ``b`` (or idle), which of tiles ``b`` and ``b + 1``
    (the only ones fetched and not computed) are ready, and per port the cycles its hold has
    left, the transfers in flight (landing cycle and tile, relative to ``t`` and ``b``) and the
    waiting requests in the order the arbiter will serve them (with whether each arrived in
    cycle ``t``: an earlier one beats any later request, one of cycle ``t`` is compared by tile
    with requests of the same cycle). Prefix sums such as the stall count do not steer the
    future. When the state at ``b_c`` equals the state at an earlier ``b_c0`` (same key, all
    tiles it names inside the repeat), the run from ``b_c0`` to ``b_c`` repeats with period
    ``c - c0`` copies for as long as every tile it touches lies inside the repeat: a segment
    between two boundaries touches tiles up to the second boundary's ``b + 1`` (a finish
    fetches two tiles ahead). Whole periods are skipped up to the last boundary with that
    property; every skipped period adds its cycles and stalls. Nothing is extrapolated from
    times that merely look regular."""

    __slots__ = ("a", "P", "last", "boundary", "seen", "skipped")

    def __init__(self, repeat: tuple[int, int, int]) -> None:
        a, P, k = repeat
        self.a, self.P = a, P
        # the last copy whose boundary segment stays inside the repeat: b_c + 1 < a + k*P
        self.last = k - 1 if P >= 2 else k - 2
        c = 0 if a >= 1 else 1                  # a boundary needs a tile before it
        self.boundary = a + c * P if c < self.last else -1
        self.seen: dict[tuple, tuple[int, int, int]] = {}
        self.skipped = 0

    def visit(self, t, b, stall, ready0, ready1, busy, dram, l2):
        """Record the state at boundary ``b`` (cycle ``t``); return ``(cycles, tiles, stall)``
        to add when a whole number of periods can be skipped, else None."""
        P = self.P
        c = (b - self.a) // P
        low = b
        parts = [busy, ready0, ready1]
        for port in (dram, l2):
            queue = sorted(port.queue)
            fly = port.fly
            for _, j, _ in queue:
                low = min(low, j)
            for _, j, _ in fly:
                low = min(low, j)
            parts.append(max(port.free - t, 0))
            parts.append(tuple((j - b, way, at == t) for at, j, way in queue))
            parts.append(tuple((at - t, j - b, way) for at, j, way in fly))
        key = tuple(parts)
        self.boundary = self.a + (c + 1) * P if c + 1 < self.last else -1
        if low < self.a:                        # names a tile before the repeat: no base
            return None
        before = self.seen.get(key)
        if before is None:
            self.seen[key] = (c, t, stall)
            return None
        c0, t0, stall0 = before
        q = c - c0
        periods = (self.last - c) // q
        self.boundary = -1                      # one jump; the rest runs as simulated
        if periods == 0:
            return None
        self.skipped = periods * q * P
        return periods * (t - t0), periods * q * P, periods * (stall - stall0)


def _row_ids(X: np.ndarray) -> np.ndarray:
    """Per row of ``X``, the index of its value among the distinct rows in lexicographic order
    (``np.unique(X, axis=0, return_inverse=True)``, through one lexsort)."""
    order = np.lexsort(X.T[::-1])
    rows = X[order]
    new = np.empty(len(X), dtype=bool)
    new[0] = True
    np.any(rows[1:] != rows[:-1], axis=1, out=new[1:])
    ids = np.empty(len(X), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


def _candidate_periods(ids: np.ndarray) -> list[int]:
    """Short periods, plus the gaps at which each tile kind recurs (a column group of a big
    GEMM is hundreds of tiles long; its rare first/last tiles recur exactly one period apart).
    A gap counts when it occurs at least ``MIN_COPIES - 1`` times between successive tiles of
    one kind that occurs ``MIN_COPIES`` to ``n / 2`` times."""
    n = len(ids)
    limit = n // MIN_COPIES
    cands = set(range(1, min(SHORT_PERIODS, limit) + 1))
    counts = np.bincount(ids)
    order = np.argsort(ids, kind="stable")          # positions grouped by kind, ascending
    kind = ids[order]
    gaps = np.diff(order)
    keep = (kind[1:] == kind[:-1]) & (counts[kind[1:]] >= MIN_COPIES) & \
        (counts[kind[1:]] <= n // 2) & (gaps <= limit)
    pairs, freq = np.unique(kind[1:][keep] * (limit + 1) + gaps[keep], return_counts=True)
    cands.update((pairs[freq >= MIN_COPIES - 1] % (limit + 1)).tolist())
    return sorted(cands)


def find_repeat(X: np.ndarray) -> tuple[int, int, int] | None:
    """(start, period, copies) of the longest run of a repeating block of tiles, or None."""
    n = len(X)
    if n < MIN_COPIES:
        return None
    ids = _row_ids(X)
    best, covered = None, 0
    for P in _candidate_periods(ids):
        same = ids[P:] == ids[:-P]
        # a run of L tiles covers (L + P) // P * P <= L + P <= count + P tiles, and needs
        # L >= (MIN_COPIES - 1) * P: skip periods that cannot qualify or beat the best
        count = int(np.count_nonzero(same))
        if count < (MIN_COPIES - 1) * P or count + P <= covered:
            continue
        # longest run of True in `same`: tiles a..a+L-1 equal their successors P later
        padded = np.zeros(len(same) + 2, dtype=bool)
        padded[1:-1] = same
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        starts, ends = edges[::2], edges[1::2]
        i = int(np.argmax(ends - starts))
        a, run = int(starts[i]), int(ends[i] - starts[i])
        copies = (run + P) // P
        if copies >= MIN_COPIES and copies * P > covered:
            best, covered = (a, P, copies), copies * P
    return best


def _port_holds(X: np.ndarray, ports: PortSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per port, the cycles each tile's inbound and outbound transfer holds it (0: none)."""
    bytes_per_cycle = {"dram": ports.dram_bytes_per_cycle, "l2": ports.l2_bytes_per_cycle}
    return {name: tuple(hold_cycles_array(X[:, stage.column], bytes_per_cycle[name])
                        for stage in stages)
            for name, stages in _PORT_STAGES.items()}


def port_busy(X: np.ndarray, ports: PortSpec) -> tuple[int, int]:
    """Cycles the DRAM and L2 ports hold for all transfers of ``X`` (order-independent)."""
    return _busy(_port_holds(X, ports))


def _busy(holds) -> tuple[int, int]:
    """(DRAM, L2) cycles held, from :func:`_port_holds`."""
    return tuple(int(sum(h.sum() for h in holds[name])) for name in ("dram", "l2"))


def run_tiles(X: np.ndarray, ports: PortSpec, trace: TraceRecorder | None = None,
              compress: bool = True) -> PipelineResult:
    """The pipeline over all tiles, equal to :func:`simulate_tiles` in every field; with
    ``compress`` (and no ``trace``, which records every span) copies of the longest repeated
    block are skipped once the pipeline's complete state repeats (:class:`_Skipper`)."""
    X = _check_tiles(X)
    rep = find_repeat(X) if compress and trace is None else None
    result, _ = _simulate(X, ports, trace, False, rep)
    return result
