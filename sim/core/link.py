"""Bandwidth- and latency-limited port shared first-come-first-served by processes.

Model of one transfer of ``n`` bytes over a link of ``B`` bytes/cycle and latency ``L``:

* the requester queues (FIFO) for the link, a ``simpy.Resource`` of capacity 1;
* it then *holds* the link for ``ceil(n / B)`` cycles (serialization, the bandwidth part);
* it releases the link and waits ``L`` more cycles (flight time) *without* holding it, so the
  next transfer starts serializing while this one is still in flight (pipelined latency).

Energy is deliberately not the link's business: the link counts bytes (per ``what`` label,
so reads and writes can be charged differently) and the caller, who knows the technology
table, charges ``EnergyLedger.add(component, action, link.bytes_by_what[what], pj_per_byte)``
once after the run. That keeps the per-transfer path free of ledger updates and lets
memoized results be re-used through ``EnergyLedger.merge``.

Not on the hot path: accelerator models do not create ``Link`` processes. The GEMM tile
pipeline (:mod:`sim.hw.tile_pipeline`) applies the same port rules in its own event loop, with
:func:`sim.core.clock.hold_cycles_array` as the vectorized :meth:`Link.hold_cycles`; the
serving-system layer will be this class's first real user.
"""

from __future__ import annotations

import math
import numbers
from typing import Generator

import simpy

from .clock import ceil_cycles, check_cycles
from .engine import Engine
from .stats import ComponentStats


class Link:
    """A FIFO-shared port: ``yield from link.transfer(nbytes, what)`` inside a process."""

    def __init__(self, eng: Engine, name: str, bytes_per_cycle: float, latency_cycles: int = 0) -> None:
        if (isinstance(bytes_per_cycle, bool) or not isinstance(bytes_per_cycle, numbers.Real)
                or not math.isfinite(bytes_per_cycle) or bytes_per_cycle <= 0):
            raise ValueError(f"link {name!r}: bytes_per_cycle must be a finite number > 0, got {bytes_per_cycle!r}")
        self.eng = eng
        self.name = name
        self.bytes_per_cycle = float(bytes_per_cycle)
        self.latency_cycles = check_cycles(latency_cycles, f"link {name!r}: latency_cycles")
        self._port = simpy.Resource(eng.env, capacity=1)
        self.stats = ComponentStats(name)
        self.bytes_moved: float = 0
        self.bytes_by_what: dict[str, float] = {}
        self.transfers = 0
        self.wait_cycles = 0  # total cycles requesters spent queued for the port

    @property
    def busy_cycles(self) -> int:
        return self.stats.busy_cycles

    def hold_cycles(self, nbytes: float) -> int:
        """Cycles a transfer of ``nbytes`` occupies the port (0 for an empty transfer)."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Real) or not math.isfinite(nbytes) or nbytes < 0:
            raise ValueError(f"link {self.name!r}: nbytes must be a finite number >= 0, got {nbytes!r}")
        if nbytes == 0:
            return 0
        return max(1, ceil_cycles(nbytes / self.bytes_per_cycle))

    def utilization(self, elapsed_cycles: int | None = None) -> float:
        return self.stats.utilization(self.eng.now if elapsed_cycles is None else elapsed_cycles)

    def transfer(self, nbytes: float, what: str = "data") -> Generator:
        """Move ``nbytes`` across the link; returns (as the generator value) the arrival cycle."""
        hold = self.hold_cycles(nbytes)
        if hold == 0:
            return self.eng.now
        eng = self.eng
        asked = eng.now
        with self._port.request() as req:
            yield req
            start = eng.now
            yield eng.env.timeout(hold)
        self.wait_cycles += start - asked
        self.stats.add_busy(hold)
        self.stats.count("transfers")
        self.stats.count("bytes", nbytes)
        self.transfers += 1
        self.bytes_moved += nbytes
        self.bytes_by_what[what] = self.bytes_by_what.get(what, 0) + nbytes
        if eng.trace is not None:
            eng.trace.span(what, "link", start, hold, track=self.name, args={"bytes": nbytes})
        if self.latency_cycles:
            yield eng.env.timeout(self.latency_cycles)
        return eng.now

    def __repr__(self) -> str:
        return (f"Link({self.name!r}, bytes_per_cycle={self.bytes_per_cycle}, "
                f"latency_cycles={self.latency_cycles})")
