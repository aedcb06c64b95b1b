"""Per-component statistics: busy cycles and action counts, with utilization = busy / elapsed.

Used by :class:`~sim.core.link.Link` and :class:`~sim.core.buffer.DoubleBuffer` on the simpy
kernel, so, like them, not on the hot path today: accelerator models report busy cycles in
their ``OpResult`` (``dram_busy_cycles``, ``l2_busy_cycles``) instead.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import pandas as pd

from .clock import check_cycles
from .invariants import InvariantError


class ComponentStats:
    """Busy cycles and named action counts of one component.

    ``busy_cycles`` must only be charged for intervals in which the component really works
    and that do not overlap each other; :meth:`utilization` checks the consequence
    (busy <= elapsed) and raises :class:`~sim.core.invariants.InvariantError` when it is violated, because that
    always means a modelling bug upstream.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.busy_cycles = 0
        self.actions: dict[str, float] = {}

    def add_busy(self, cycles: int) -> None:
        self.busy_cycles += check_cycles(cycles, f"{self.name}: busy cycles")

    def count(self, action: str, n: float = 1) -> None:
        if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or n < 0:
            raise ValueError(f"{self.name}: count of {action!r} must be finite and >= 0, got {n!r}")
        self.actions[action] = self.actions.get(action, 0) + n

    def utilization(self, elapsed_cycles: int) -> float:
        """busy / elapsed, in [0, 1]; 0.0 when nothing has elapsed."""
        elapsed = check_cycles(elapsed_cycles, "elapsed cycles")
        if elapsed == 0:
            if self.busy_cycles:
                raise InvariantError(self.name, "utilization", "no busy cycles in 0 elapsed",
                                     busy_cycles=self.busy_cycles)
            return 0.0
        u = self.busy_cycles / elapsed
        if not 0.0 <= u <= 1.0:
            raise InvariantError(self.name, "utilization",
                                 "utilization in [0, 1] (busy intervals overlap?)",
                                 utilization=u, busy_cycles=self.busy_cycles, elapsed=elapsed)
        return u

    def row(self, elapsed_cycles: int) -> dict:
        """One flat record: component, busy_cycles, utilization, then one column per action."""
        rec = {
            "component": self.name,
            "busy_cycles": self.busy_cycles,
            "utilization": self.utilization(elapsed_cycles),
        }
        for action in sorted(self.actions):
            rec[action] = self.actions[action]
        return rec

    def __repr__(self) -> str:
        return f"ComponentStats({self.name!r}, busy_cycles={self.busy_cycles}, actions={self.actions})"


def stats_frame(stats: Iterable[ComponentStats], elapsed_cycles: int) -> pd.DataFrame:
    """DataFrame with one row per component (actions missing for a component are 0)."""
    rows = [s.row(elapsed_cycles) for s in stats]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["component", "busy_cycles", "utilization"])
    return df.fillna(0)
