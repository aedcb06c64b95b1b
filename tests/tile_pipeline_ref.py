"""Cycle-stepped reference of the memory-tile pipeline (:mod:`sim.hw.tile_pipeline`).

Written for obviousness, not speed: one loop iteration per cycle, explicit state for every
port (queue, current hold, transfers in flight), the two SRAM slots, the DMA engine and the
array. It shares no code with the event-driven simulation; only the rules are the same:

* a stage of ``b`` bytes over a port of ``B`` bytes/cycle and latency ``L`` holds the port
  ``max(1, ceil(b / B))`` cycles, then lands ``L`` cycles later; 0 bytes = no transfer;
* tile stages: read (DRAM) -> fill (L2) -> ready; compute; drain (L2) -> store (DRAM) -> drained;
* two SRAM slots, taken in tile order by the DMA engine, freed when the array finishes a tile;
* each cycle is first settled (landings, array, slots, zero-byte stages) until nothing changes;
  then each free port starts the pending request that arrived first, ties: lowest tile first.
"""
from __future__ import annotations

import numpy as np

from sim.core.clock import ceil_cycles
from sim.hw.tile_pipeline import PipelineResult, PortSpec

# the two stages a tile passes on its way in and on its way out: (port, column of X)
INBOUND = (("dram", 0), ("l2", 1))
OUTBOUND = (("l2", 4), ("dram", 5))


class Port:
    def __init__(self, bytes_per_cycle: float, latency: int) -> None:
        self.bytes_per_cycle = bytes_per_cycle
        self.latency = latency
        self.pending = []         # [arrival cycle, tile, route, stage]
        self.holding_until = 0    # the port is busy in cycles < holding_until
        self.flying = []          # [landing cycle, tile, route, stage]
        self.busy_cycles = 0

    def hold(self, nbytes: int) -> int:
        return max(1, ceil_cycles(nbytes / self.bytes_per_cycle))


def reference_tiles(X: np.ndarray, ports: PortSpec, max_cycles: int = 10**6) -> PipelineResult:
    """Step the pipeline cycle by cycle over the tiles of ``X`` (n x 6, columns FIELDS)."""
    X = np.asarray(X, dtype=np.int64)
    n = len(X)
    port = {"dram": Port(ports.dram_bytes_per_cycle, ports.dram_latency),
            "l2": Port(ports.l2_bytes_per_cycle, ports.l2_latency)}
    ready = [None] * n
    start = [None] * n
    end = [None] * n
    drained = [None] * n
    free_slots = 2
    next_fetch = 0                 # next tile the DMA engine takes a slot for
    current = 0                    # tile the array computes or waits for
    computing_until = None         # cycle the array's current tile ends, None when idle
    stall_memory = 0

    def enter(j, route, stage, t):
        """Tile j reaches `stage` of `route` at cycle t: queue for the port, or skip it."""
        if stage == len(route):
            if route is INBOUND:
                ready[j] = t
            else:
                drained[j] = t
            return
        name, col = route[stage]
        if X[j, col] == 0:
            enter(j, route, stage + 1, t)
        else:
            port[name].pending.append([t, j, route, stage])

    t = 0
    while True:
        # settle cycle t
        changed = True
        while changed:
            changed = False
            for p in port.values():
                for f in [f for f in p.flying if f[0] == t]:
                    p.flying.remove(f)
                    enter(f[1], f[2], f[3] + 1, t)
                    changed = True
            if computing_until == t:
                end[current] = t
                free_slots += 1
                enter(current, OUTBOUND, 0, t)
                current += 1
                computing_until = None
                changed = True
            while free_slots > 0 and next_fetch < n:
                free_slots -= 1
                enter(next_fetch, INBOUND, 0, t)
                next_fetch += 1
                changed = True
            if computing_until is None and current < n and ready[current] is not None:
                start[current] = t
                computing_until = t + int(X[current, 2])
                changed = True
        if current == n and all(d is not None for d in drained):
            break
        if computing_until is None and current < n:
            stall_memory += 1
        # arbitrate, then account the cycle
        for p in port.values():
            if p.holding_until <= t and p.pending:
                req = min(p.pending, key=lambda r: (r[0], r[1]))
                p.pending.remove(req)
                arrival, j, route, stage = req
                hold = p.hold(int(X[j, route[stage][1]]))
                p.holding_until = t + hold
                p.flying.append([t + hold + p.latency, j, route, stage])
            if t < p.holding_until:
                p.busy_cycles += 1
        t += 1
        if t > max_cycles:
            raise RuntimeError("reference pipeline did not finish")
    return PipelineResult(total=t, stall_memory=stall_memory,
                          stall_sram=int(sum(X[:, 2] - X[:, 3])),
                          array_end=end[-1] if n else 0,
                          dram_busy=port["dram"].busy_cycles, l2_busy=port["l2"].busy_cycles,
                          times=np.array([ready, start, end, drained], dtype=np.int64).T)
