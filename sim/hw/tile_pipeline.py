"""The memory-tile pipeline of one GEMM as simpy processes, with exact compression of repeats.

Per memory tile ``j`` (see :mod:`sim.hw.memory_plan`) the pipeline needs six integers::

    fetch_dram  bytes DRAM -> L2 before the tile can start
    fill        bytes L2 -> SRAM before the tile can start
    dur         cycles the array spends on the tile (its fold span, or longer when the SRAM
                port cannot feed it)
    span        the tile's share of the ideal-memory fold schedule (dur - span = SRAM stall)
    drain       bytes SRAM -> L2 after the tile
    store       bytes L2 -> DRAM after the drain

Processes: a fetcher takes a free SRAM slot (two: double buffering) and issues the tile's
read from DRAM into L2 and its fill of SRAM (reads are pipelined: the next one does not wait
for the previous one's latency); the array waits for the tile, computes ``dur`` cycles and frees the slot; each
finished tile spawns a drainer. DRAM and L2 ports are FIFO-shared between fetches and drains —
the contention is why this runs as events.

Repeats: a big GEMM is thousands of identical tiles (one column group after another). The
pipeline is deterministic and shift-invariant, so once a block of ``P`` tiles runs in steady
state, another copy of the block only adds a constant ``delta`` to every later time. We find
the longest run of a repeating block, simulate a shortened sequence with a few copies, check
that the per-tile times of the last copies really moved by one constant (else simulate the
whole sequence), and add the removed copies' time and stalls back. Tests check the compressed
result equals the full simulation exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import DoubleBuffer, Engine, Link, TraceRecorder
from ..core.clock import hold_cycles_array

FIELDS = ("fetch_dram", "fill", "dur", "span", "drain", "store")
KEEP_COPIES = 6          # copies of the repeating block kept in the shortened simulation
MIN_COPIES = 8           # compress only runs at least this long
SHORT_PERIODS = 64      # periods tried exhaustively; longer ones come from recurrence gaps


@dataclass(frozen=True)
class PortSpec:
    dram_bytes_per_cycle: float
    dram_latency: int
    l2_bytes_per_cycle: float
    l2_latency: int


@dataclass
class PipelineResult:
    total: int            # cycle the last byte has been stored
    stall_memory: int     # cycles the array waited for fills
    stall_sram: int       # cycles the SRAM port stretched tiles
    array_end: int        # cycle the array finished its last tile
    dram_busy: int = 0    # cycles the DRAM port was transferring
    l2_busy: int = 0      # cycles the L2 port was transferring
    times: np.ndarray | None = None   # per tile: ready, start, end, drained (simulated tiles)


def simulate_tiles(X: np.ndarray, ports: PortSpec, trace: TraceRecorder | None = None,
                   record: bool = False) -> PipelineResult:
    """Run every tile of ``X`` (n x 6, columns FIELDS) through the simpy pipeline."""
    eng = Engine(trace)
    dram = Link(eng, "dram", ports.dram_bytes_per_cycle, ports.dram_latency)
    l2 = Link(eng, "l2", ports.l2_bytes_per_cycle, ports.l2_latency)
    sram = DoubleBuffer(eng, "sram", slots=2)
    fetch_dram, fill, dur, span, drain, store = (X[:, i].tolist() for i in range(6))
    n = len(dur)
    ready = [eng.event() for _ in range(n)]
    times = np.zeros((n, 4), dtype=np.int64) if record else None
    acc = {"memory": 0, "end": 0}

    def fetch(j):
        if fetch_dram[j]:
            yield from dram.transfer(fetch_dram[j], "read")
        if fill[j]:
            yield from l2.transfer(fill[j], "fill")
        if record:
            times[j, 0] = eng.now
        ready[j].succeed()

    def fetcher():
        # a DMA engine: the next tile's read is issued as soon as a slot is free; reads do
        # not wait for the previous read's latency (the ports serve requests in order)
        for j in range(n):
            yield sram.acquire()
            eng.process(fetch(j))

    def drainer(j):
        yield from l2.transfer(drain[j], "drain")
        if store[j]:
            yield from dram.transfer(store[j], "write")
        if record:
            times[j, 3] = eng.now

    def array():
        for j in range(n):
            asked = eng.now
            yield ready[j]
            acc["memory"] += eng.now - asked
            if record:
                times[j, 1] = eng.now
            if trace is not None:
                trace.span(f"tile {j}", "compute", eng.now, dur[j], track="pe_array")
            yield eng.timeout(dur[j])
            if record:
                times[j, 2] = eng.now
            sram.release()
            if drain[j]:
                eng.process(drainer(j))
            elif record:
                times[j, 3] = eng.now
        acc["end"] = eng.now

    eng.process(fetcher())
    eng.process(array())
    eng.run()
    return PipelineResult(total=eng.now, stall_memory=acc["memory"],
                          stall_sram=int(np.sum(X[:, 2] - X[:, 3])), array_end=acc["end"],
                          times=times)


def _candidate_periods(ids: np.ndarray) -> list[int]:
    """Short periods, plus the gaps at which each tile kind recurs (a column group of a big
    GEMM is hundreds of tiles long; its rare first/last tiles recur exactly one period apart)."""
    n = len(ids)
    limit = n // MIN_COPIES
    cands = set(range(1, min(SHORT_PERIODS, limit) + 1))
    counts = np.bincount(ids)
    for kind in np.flatnonzero((counts >= MIN_COPIES) & (counts <= n // 2)):
        gaps = np.diff(np.flatnonzero(ids == kind))
        values, freq = np.unique(gaps, return_counts=True)
        cands.update(int(v) for v in values[freq >= MIN_COPIES - 1] if v <= limit)
    return sorted(cands)


def find_repeat(X: np.ndarray) -> tuple[int, int, int] | None:
    """(start, period, copies) of the longest run of a repeating block of tiles, or None."""
    n = len(X)
    if n < MIN_COPIES:
        return None
    _, ids = np.unique(X, axis=0, return_inverse=True)
    ids = ids.ravel()
    best = None
    for P in _candidate_periods(ids):
        same = ids[P:] == ids[:-P]
        if not same.any():
            continue
        # longest run of True in `same`: tiles a..a+L-1 equal their successors P later
        edges = np.flatnonzero(np.diff(np.r_[0, same.astype(np.int8), 0]))
        starts, ends = edges[::2], edges[1::2]
        i = int(np.argmax(ends - starts))
        a, run = int(starts[i]), int(ends[i] - starts[i])
        copies = (run + P) // P
        if copies >= MIN_COPIES and (best is None or copies * P > best[1] * best[2]):
            best = (a, P, copies)
    return best


def port_busy(X: np.ndarray, ports: PortSpec) -> tuple[int, int]:
    """Cycles the DRAM and L2 ports hold for all transfers of ``X`` (order-independent)."""
    dram = hold_cycles_array(X[:, 0], ports.dram_bytes_per_cycle).sum() + \
        hold_cycles_array(X[:, 5], ports.dram_bytes_per_cycle).sum()
    l2 = hold_cycles_array(X[:, 1], ports.l2_bytes_per_cycle).sum() + \
        hold_cycles_array(X[:, 4], ports.l2_bytes_per_cycle).sum()
    return int(dram), int(l2)


def run_tiles(X: np.ndarray, ports: PortSpec, trace: TraceRecorder | None = None) -> PipelineResult:
    """The pipeline over all tiles, simulating repeated blocks only a few times when exact."""
    res = _run_tiles(X, ports, trace)
    res.dram_busy, res.l2_busy = port_busy(X, ports)
    res.times = None
    return res


def _run_tiles(X: np.ndarray, ports: PortSpec, trace: TraceRecorder | None) -> PipelineResult:
    rep = None if trace is not None else find_repeat(X)
    if rep is None:
        return simulate_tiles(X, ports, trace)
    a, P, k = rep
    keep = KEEP_COPIES
    short = np.concatenate([X[:a + keep * P], X[a + k * P:]])
    res = simulate_tiles(short, ports, record=True)
    t = res.times
    # three kept copies before the last one (whose drains meet the suffix) must be shifted
    # copies of each other, tile by tile
    c = [t[a + i * P: a + (i + 1) * P] for i in range(keep - 4, keep - 1)]
    d1, d2 = c[1] - c[0], c[2] - c[1]
    delta = int(d2[0, 2])
    if not (np.all(d1 == delta) and np.all(d2 == delta)):
        return simulate_tiles(X, ports, trace)
    stall_mem_per_copy = _copy_stall(t, a + (keep - 2) * P, P)
    if stall_mem_per_copy != _copy_stall(t, a + (keep - 3) * P, P):
        return simulate_tiles(X, ports, trace)
    extra = k - keep
    block = X[a:a + P]
    return PipelineResult(total=res.total + extra * delta,
                          stall_memory=res.stall_memory + extra * stall_mem_per_copy,
                          stall_sram=res.stall_sram + extra * int(np.sum(block[:, 2] - block[:, 3])),
                          array_end=res.array_end + extra * delta)


def _copy_stall(t: np.ndarray, first: int, P: int) -> int:
    """Cycles the array waited for data over tiles first..first+P-1 (start minus previous end)."""
    prev_end = t[first - 1: first + P - 1, 2]
    return int(np.sum(t[first:first + P, 1] - prev_end))
