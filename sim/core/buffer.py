"""Multi-slot (by default double) buffer between a producer and a consumer.

Protocol (each call is used by one side):

    producer:  yield buf.acquire()          # wait for an empty slot, it is now ours
               ... fill it (e.g. yield from dram.transfer(n)) ...
               buf.commit(n, item)          # slot is full; refuses n > slot capacity
    consumer:  item = yield buf.take()      # wait for the oldest full slot
               ... consume it (yield eng.timeout(c)) ...
               buf.release()                # slot is empty again

With ``slots=2`` a fill of tile i+1 overlaps the consumption of tile i (ping-pong); with
``slots=1`` fill and consume serialize. ``acquire``/``release`` alone also work as a plain
counting semaphore when no hand-over is needed.

``capacity_bytes`` is the size of the whole buffer (the number an arch file gives, e.g.
``weight_kb * 1024``); each slot holds ``capacity_bytes / slots`` — the "each half usable"
rule of a double-buffered SRAM. ``None`` means unlimited (no check).

Occupancy = slots currently acquired (being filled, full, or being consumed). The buffer
keeps the time-weighted mean and the maximum, and when the engine traces, a counter track.

Not on the hot path: the accelerator models account the two SRAM slots of a GEMM inside the
hand-written tile pipeline (:mod:`sim.hw.tile_pipeline`), not with this class. It runs on the simpy
:class:`~sim.core.engine.Engine` and is kept for the serving-system layer.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import simpy

from .engine import Engine
from .stats import ComponentStats


class DoubleBuffer:
    def __init__(self, eng: Engine, name: str, slots: int = 2, capacity_bytes: float | None = None) -> None:
        if isinstance(slots, bool) or not isinstance(slots, numbers.Integral) or slots < 1:
            raise ValueError(f"buffer {name!r}: slots must be an integer >= 1, got {slots!r}")
        if capacity_bytes is not None and (
            isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, numbers.Real)
            or not math.isfinite(capacity_bytes) or capacity_bytes <= 0
        ):
            raise ValueError(f"buffer {name!r}: capacity_bytes must be > 0 or None, got {capacity_bytes!r}")
        self.eng = eng
        self.name = name
        self.slots = int(slots)
        self.capacity_bytes = None if capacity_bytes is None else float(capacity_bytes)
        self._free = simpy.Container(eng.env, capacity=self.slots, init=self.slots)
        self._full = simpy.Store(eng.env)
        self.stats = ComponentStats(name)
        self.fills = 0
        self.bytes_filled: float = 0
        self.max_fill_bytes: float = 0
        self.producer_wait_cycles = 0  # time spent in acquire() waiting for an empty slot
        self.consumer_wait_cycles = 0  # time spent in take() waiting for a full slot
        self.occupied = 0
        self.max_occupied = 0
        self._occ_area = 0  # integral of occupancy over cycles
        self._occ_since = 0

    @property
    def slot_bytes(self) -> float | None:
        """Capacity of one slot in bytes (None if unlimited)."""
        return None if self.capacity_bytes is None else self.capacity_bytes / self.slots

    # -- occupancy bookkeeping ----------------------------------------------------------------

    def _set_occupied(self, delta: int) -> None:
        now = self.eng.now
        self._occ_area += self.occupied * (now - self._occ_since)
        self._occ_since = now
        self.occupied += delta
        self.max_occupied = max(self.max_occupied, self.occupied)
        if self.eng.trace is not None:
            self.eng.trace.counter(f"{self.name} occupied slots", now, self.occupied)

    def mean_occupancy(self, elapsed_cycles: int | None = None) -> float:
        """Time-weighted mean number of occupied slots over [0, elapsed) (default: up to now)."""
        end = self.eng.now if elapsed_cycles is None else int(elapsed_cycles)
        if end <= 0:
            return 0.0
        area = self._occ_area + self.occupied * max(0, end - self._occ_since)
        return area / end

    # -- producer side ------------------------------------------------------------------------

    def acquire(self) -> simpy.Event:
        """Event that fires when an empty slot has been granted to the caller."""
        asked = self.eng.now
        ev = self._free.get(1)

        def granted(_ev: simpy.Event) -> None:
            self.producer_wait_cycles += self.eng.now - asked
            self._set_occupied(+1)

        ev.callbacks.append(granted)
        return ev

    def commit(self, nbytes: float, item: Any = None) -> None:
        """Mark an acquired slot full with ``nbytes`` of data (``item`` is handed to take())."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Real) or not math.isfinite(nbytes) or nbytes < 0:
            raise ValueError(f"buffer {self.name!r}: fill size must be a finite number >= 0, got {nbytes!r}")
        cap = self.slot_bytes
        if cap is not None and nbytes > cap:
            raise ValueError(
                f"buffer {self.name!r}: fill of {nbytes:g} bytes exceeds the slot capacity of {cap:g} bytes "
                f"({self.capacity_bytes:g} bytes / {self.slots} slots)"
            )
        self.fills += 1
        self.bytes_filled += nbytes
        self.max_fill_bytes = max(self.max_fill_bytes, nbytes)
        self.stats.count("fills")
        self.stats.count("bytes_filled", nbytes)
        self._full.put(item)

    # -- consumer side ------------------------------------------------------------------------

    def take(self) -> simpy.Event:
        """Event whose value is the oldest committed item, once one is available."""
        asked = self.eng.now
        ev = self._full.get()

        def got(_ev: simpy.Event) -> None:
            self.consumer_wait_cycles += self.eng.now - asked

        ev.callbacks.append(got)
        return ev

    def release(self) -> None:
        """Return one slot to the empty pool."""
        if self.occupied <= 0:
            raise ValueError(f"buffer {self.name!r}: release() without a matching acquire()")
        self._set_occupied(-1)
        self._free.put(1)

    def __repr__(self) -> str:
        return f"DoubleBuffer({self.name!r}, slots={self.slots}, capacity_bytes={self.capacity_bytes})"
