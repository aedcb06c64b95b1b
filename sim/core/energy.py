"""Energy ledger: energy = sum over (component, action) of count x energy per action, in pJ.

Entries with the same (component, action, pj_each) are aggregated into one row, so adding
the same action a million times costs one dict update each and the ledger stays small.
The same action charged at two different energies (say a MAC at two precisions both
called "mac") stays as two rows. Rows keep first-insertion order, so frames are stable.
"""

from __future__ import annotations

import math
import numbers

import pandas as pd

_COLUMNS = ["component", "action", "count", "pj_each", "energy_pj"]


def _check_nonneg(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


class EnergyLedger:
    """Action counts times per-action energies, per component."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, float], float] = {}

    def add(self, component: str, action: str, count: float, pj_each: float) -> None:
        """Charge ``count`` actions of ``pj_each`` pJ to ``component``."""
        _check_nonneg(count, f"energy ledger {component}/{action}: count")
        _check_nonneg(pj_each, f"energy ledger {component}/{action}: pj_each")
        key = (str(component), str(action), float(pj_each))
        self._rows[key] = self._rows.get(key, 0) + count

    def merge(self, other: "EnergyLedger", scale: float = 1) -> "EnergyLedger":
        """Add ``other``'s entries ``scale`` times (a memoized result reused k times); returns self."""
        _check_nonneg(scale, "energy ledger merge scale")
        for (comp, action, pj), count in list(other._rows.items()):
            key = (comp, action, pj)
            self._rows[key] = self._rows.get(key, 0) + count * scale
        return self

    def copy(self) -> "EnergyLedger":
        new = EnergyLedger()
        new._rows = dict(self._rows)
        return new

    def __len__(self) -> int:
        return len(self._rows)

    def total_pj(self) -> float:
        return math.fsum(count * pj for (_, _, pj), count in self._rows.items())

    def by_component(self) -> dict[str, float]:
        """pJ per component, keys sorted by name."""
        parts: dict[str, list[float]] = {}
        for (comp, _, pj), count in self._rows.items():
            parts.setdefault(comp, []).append(count * pj)
        return {comp: math.fsum(parts[comp]) for comp in sorted(parts)}

    def by_action(self) -> dict[tuple[str, str], float]:
        """pJ per (component, action), keys sorted."""
        parts: dict[tuple[str, str], list[float]] = {}
        for (comp, action, pj), count in self._rows.items():
            parts.setdefault((comp, action), []).append(count * pj)
        return {k: math.fsum(parts[k]) for k in sorted(parts)}

    def frame(self) -> pd.DataFrame:
        """DataFrame(component, action, count, pj_each, energy_pj), one row per ledger entry."""
        rows = [(c, a, n, pj, n * pj) for (c, a, pj), n in self._rows.items()]
        df = pd.DataFrame(rows, columns=_COLUMNS)
        return df.astype({"component": object, "action": object, "count": float,
                          "pj_each": float, "energy_pj": float})

    def __repr__(self) -> str:
        return f"EnergyLedger({len(self)} entries, {self.total_pj():.6g} pJ)"
