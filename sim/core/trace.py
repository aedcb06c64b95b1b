"""Timeline recorder that writes Chrome-trace JSON (opens in Perfetto and chrome://tracing).

Spans and counters are recorded in cycles; the conversion to the microseconds the Chrome
format wants happens only in :meth:`TraceRecorder.write` / :meth:`TraceRecorder.to_dict`,
through the :class:`~sim.core.clock.Clock` passed there.

Layout of the output: each ``process`` (default: the recorder's name) becomes a Chrome
``pid`` and each ``track`` inside it a ``tid``; both get human-readable names through
``"M"`` (metadata) events. Ids are handed out in order of first use, which is deterministic
for a deterministic simulation. Events are written sorted by (time, recording order) with
sorted JSON keys, so the same run produces the same bytes.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

from .clock import Clock, check_cycles

# Picosecond resolution in microsecond timestamps: enough for any clock below ~1 THz, and
# it keeps float noise (0.30000000000000004) out of the file.
_TS_DECIMALS = 6


class TraceRecorder:
    """Collects spans ("X" events), counters ("C") and instants ("i") in cycles."""

    def __init__(self, name: str = "strata") -> None:
        self.name = name
        self._events: list[tuple[int, int, dict[str, Any]]] = []  # (cycle, seq, partial event)
        self._pids: dict[str, int] = {}
        self._tids: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._events)

    # -- recording ---------------------------------------------------------------------------

    def _ids(self, process: str | None, track: str) -> tuple[int, int]:
        proc = self.name if process is None else str(process)
        pid = self._pids.setdefault(proc, len(self._pids) + 1)
        tid = self._tids.setdefault((proc, str(track)), len(self._tids) + 1)
        return pid, tid

    def _push(self, cycle: int, ev: dict[str, Any]) -> None:
        self._events.append((cycle, len(self._events), ev))

    def span(
        self,
        name: str,
        cat: str,
        start_cycle: int,
        dur_cycles: int,
        track: str,
        args: dict | None = None,
        process: str | None = None,
    ) -> None:
        """A complete event: ``name`` occupied ``track`` for ``dur_cycles`` from ``start_cycle``."""
        start = check_cycles(start_cycle, "trace span start")
        dur = check_cycles(dur_cycles, "trace span duration")
        pid, tid = self._ids(process, track)
        ev: dict[str, Any] = {"ph": "X", "name": str(name), "cat": str(cat), "pid": pid, "tid": tid,
                              "_start": start, "_dur": dur}
        if args:
            ev["args"] = dict(args)
        self._push(start, ev)

    def counter(
        self,
        name: str,
        cycle: int,
        values: float | dict[str, float],
        process: str | None = None,
    ) -> None:
        """A counter sample (e.g. buffer occupancy); ``values`` is a number or {series: number}."""
        at = check_cycles(cycle, "trace counter cycle")
        series = values if isinstance(values, dict) else {"value": values}
        for k, v in series.items():
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"counter {name!r} series {k!r}: expected a finite number, got {v!r}")
        proc = self.name if process is None else str(process)
        pid = self._pids.setdefault(proc, len(self._pids) + 1)
        self._push(at, {"ph": "C", "name": str(name), "pid": pid, "tid": 0, "_start": at,
                        "args": {str(k): series[k] for k in series}})

    def instant(self, name: str, cat: str, cycle: int, track: str, process: str | None = None) -> None:
        """A zero-length marker on ``track``."""
        at = check_cycles(cycle, "trace instant cycle")
        pid, tid = self._ids(process, track)
        self._push(at, {"ph": "i", "s": "t", "name": str(name), "cat": str(cat), "pid": pid,
                        "tid": tid, "_start": at})

    # -- output ------------------------------------------------------------------------------

    def to_dict(self, clock: Clock) -> dict[str, Any]:
        """The Chrome-trace document as a Python dict (what :meth:`write` serializes)."""

        def us(cycles: int) -> float:
            return round(clock.microseconds(cycles), _TS_DECIMALS)

        out: list[dict[str, Any]] = []
        for proc, pid in self._pids.items():
            out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": proc}})
            out.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                        "args": {"sort_index": pid}})
        for (proc, track), tid in self._tids.items():
            pid = self._pids[proc]
            out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": track}})
            out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                        "args": {"sort_index": tid}})
        def order(entry):               # by cycle, then in recording order
            cycle, seq, _ = entry
            return cycle, seq
        for _, _, ev in sorted(self._events, key=order):
            rec = {k: v for k, v in ev.items() if not k.startswith("_")}
            rec["ts"] = us(ev["_start"])
            if "_dur" in ev:
                rec["dur"] = us(ev["_dur"])
            out.append(rec)
        return {
            "traceEvents": out,
            "displayTimeUnit": "ns",
            "otherData": {"clock_ghz": float(clock.ghz), "time_unit_in_file": "us", "recorder": self.name},
        }

    def write(self, path: str | Path, clock: Clock) -> Path:
        """Write the Chrome-trace JSON to ``path`` (parents created) and return the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(clock), sort_keys=True, separators=(",", ":"))
        p.write_text(text + "\n", encoding="utf-8")
        return p
