"""Discrete-event kernel in integer cycles: engine, links, buffers, energy, stats, traces."""

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
