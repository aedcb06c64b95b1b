"""Discrete-event engine: a thin wrapper around :class:`simpy.Environment` in integer cycles.

Processes are ordinary simpy generator functions. The wrapper adds two things simpy does
not give: every delay is checked to be a whole, non-negative number of cycles (so simulated
time never drifts into floats), and an optional :class:`~sim.core.trace.TraceRecorder`
that components built on this engine (links, buffers) write their timelines into.

Not on the hot path: no accelerator model runs on this engine today (the GEMM tile pipeline,
:mod:`sim.hw.tile_pipeline`, is a hand-written event simulation). The engine, with
:class:`~sim.core.link.Link` and :class:`~sim.core.buffer.DoubleBuffer`, is kept for the
serving-system layer, its first real user, and is covered by tests/test_core.py.
"""

from __future__ import annotations

from typing import Any, Generator

import simpy

from .clock import check_cycles
from .trace import TraceRecorder


class Engine:
    """Event loop of one clock domain; time unit = one cycle."""

    def __init__(self, trace: TraceRecorder | None = None) -> None:
        self.env = simpy.Environment(initial_time=0)
        self.trace = trace

    @property
    def now(self) -> int:
        """Current simulated cycle."""
        return int(self.env.now)

    @property
    def tracing(self) -> bool:
        return self.trace is not None

    def process(self, gen: Generator) -> simpy.Process:
        """Start a generator as a simpy process (returns the process, itself an event)."""
        return self.env.process(gen)

    def timeout(self, cycles: int, value: Any = None) -> simpy.Timeout:
        """An event that fires ``cycles`` cycles from now; refuses floats and negatives."""
        return self.env.timeout(check_cycles(cycles, "timeout"), value)

    def event(self) -> simpy.Event:
        """A bare event a process can wait on and another can ``succeed()``."""
        return self.env.event()

    def all_of(self, events) -> simpy.events.Condition:
        return self.env.all_of(list(events))

    def any_of(self, events) -> simpy.events.Condition:
        return self.env.any_of(list(events))

    def run(self, until: int | simpy.Event | None = None) -> Any:
        """Run until no events remain, until cycle ``until``, or until event ``until`` fires."""
        if until is not None and not isinstance(until, simpy.Event):
            until = check_cycles(until, "run(until=...)")
        return self.env.run(until=until)
