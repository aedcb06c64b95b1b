"""The one place where cycles and seconds are converted into each other.

The hardware layer counts time in integer cycles of a single clock; the system layer
counts seconds. Everything that crosses that boundary goes through a :class:`Clock`,
so a frequency is never multiplied in by hand somewhere else.

This module also holds the integer-cycle checks the rest of ``sim.core`` relies on.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

# Relative tolerance used when a float that should be a whole number of cycles comes out
# as 99.99999999999999 because of binary rounding (e.g. 1e-7 s at 1 GHz).
_SNAP_REL_TOL = 1e-9


def check_cycles(value, what: str = "cycles") -> int:
    """Return ``value`` as a Python int if it is a non-negative integer number of cycles.

    Accepts ``int`` and numpy integer scalars. Floats are refused even when integral:
    a float reaching the engine means some cycle arithmetic went through floating point
    without an explicit rounding decision (use :func:`ceil_cycles` for that).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{what} must be an integer number of cycles, got {value!r} "
            f"({type(value).__name__}); round explicitly, e.g. with sim.core.ceil_cycles"
        )
    value = int(value)
    if value < 0:
        raise ValueError(f"{what} must be >= 0 cycles, got {value}")
    return value


def ceil_cycles(x: float) -> int:
    """Smallest integer >= ``x``, forgiving float noise just above a whole number.

    ``ceil_cycles(3.0000000000000004) == 3`` (noise), ``ceil_cycles(3.2) == 4``.
    """
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"expected a real number of cycles, got {x!r}")
    xf = float(x)
    if not math.isfinite(xf):
        raise ValueError(f"number of cycles must be finite, got {x!r}")
    nearest = round(xf)
    if abs(xf - nearest) <= _SNAP_REL_TOL * max(1.0, abs(xf)):
        return int(nearest)
    return int(math.ceil(xf))


def hold_cycles_array(nbytes, bytes_per_cycle: float):
    """Vectorized twin of ``Link.hold_cycles``: per transfer, 0 for no bytes, else at least one
    cycle and ``ceil_cycles(nbytes / bytes_per_cycle)`` (same float-noise rule)."""
    import numpy as np
    n = np.asarray(nbytes, dtype=np.float64)
    x = n / float(bytes_per_cycle)
    nearest = np.rint(x)
    snapped = np.abs(x - nearest) <= _SNAP_REL_TOL * np.maximum(1.0, np.abs(x))
    cycles = np.where(snapped, nearest, np.ceil(x))
    return np.where(n > 0, np.maximum(cycles, 1), 0).astype(np.int64)


@dataclass(frozen=True)
class Clock:
    """A clock of ``ghz`` GHz: converts cycles <-> seconds (and microseconds for traces)."""

    ghz: float

    def __post_init__(self) -> None:
        g = self.ghz
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not math.isfinite(g) or g <= 0:
            raise ValueError(f"clock frequency must be a finite number of GHz > 0, got {g!r}")

    @property
    def hz(self) -> float:
        return float(self.ghz) * 1e9

    @property
    def period_s(self) -> float:
        """Length of one cycle in seconds."""
        return 1.0 / self.hz

    def seconds(self, cycles) -> float:
        """Duration of ``cycles`` cycles in seconds (float; cycles may be fractional here)."""
        return float(cycles) / self.hz

    def microseconds(self, cycles) -> float:
        """Duration of ``cycles`` cycles in microseconds (the unit of Chrome-trace ``ts``)."""
        return float(cycles) / (float(self.ghz) * 1e3)

    def cycles(self, seconds: float) -> int:
        """Number of whole cycles needed to cover ``seconds`` (rounded up)."""
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
            raise ValueError(f"seconds must be a real number, got {seconds!r}")
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        return ceil_cycles(float(seconds) * self.hz)
