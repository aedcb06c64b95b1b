"""Layer 2: time in integer cycles, energy, statistics and traces for the hardware layer.

Two groups of modules live here, and only one of them is on the hot path:

* **Used by every simulation** -- :mod:`~sim.core.clock` (``Clock``: the one cycles <-> seconds
  conversion; ``check_cycles``, ``ceil_cycles`` and ``hold_cycles_array``, the integer-cycle
  rules), :mod:`~sim.core.energy` (``EnergyLedger``: action counts x energy per action) and
  :mod:`~sim.core.trace` (``TraceRecorder``: Chrome-trace timelines).
* **The simpy discrete-event kernel** -- :mod:`~sim.core.engine` (``Engine``),
  :mod:`~sim.core.link` (``Link``), :mod:`~sim.core.buffer` (``DoubleBuffer``) and
  :mod:`~sim.core.stats` (``ComponentStats``). No accelerator model runs on it today: the
  tile pipeline of a GEMM (:mod:`sim.hw.tile_pipeline`) is a hand-written event simulation
  (a heap of port requests, numpy for the tile table) that follows the same port rules as
  ``Link`` (serialization, then pipelined latency; ``hold_cycles_array`` is
  ``Link.hold_cycles`` vectorized). It replaced simpy processes because simpy's per-event
  overhead made the LLaMA-3-8B 2048-token MicroScopiQ prefill take 6.5 s against a 5 s target
  (commit dba8ccc). The kernel is kept, tested
  (tests/test_core.py), for the serving-system layer, which will be its first real user
  (requests, queues and shared backends are what simpy is good at).
"""

from .buffer import DoubleBuffer
from .clock import Clock, ceil_cycles, check_cycles
from .energy import EnergyLedger
from .engine import Engine
from .link import Link
from .stats import ComponentStats, stats_frame
from .trace import TraceRecorder

__all__ = [
    "Clock",
    "ComponentStats",
    "DoubleBuffer",
    "EnergyLedger",
    "Engine",
    "Link",
    "TraceRecorder",
    "ceil_cycles",
    "check_cycles",
    "stats_frame",
]
