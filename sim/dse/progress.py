"""Progress of a running sweep: counts, rate and ETA, shown as one live line on a terminal.

The rate counts only the points this call computed. Points that the store already holds, and
points that a constraint drops, take no time, so counting them would make the rate too high
and the ETA too short on a resumed sweep. The ETA assumes that every point not yet reached
needs computing: after ``k`` points computed in ``t`` seconds, with ``n - d`` points still to
reach, it is ``(n - d) * t / k``. A resumed sweep reaches its stored points in no time, so
its ETA can only come out too long.

On a terminal the line is rewritten in place, at most ``refresh_s`` apart. Elsewhere (a log
file, a batch job) it prints one line every ``every`` finished points, or nothing when
``every`` is 0. The clock can be injected, so tests can check the arithmetic.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, TextIO

__all__ = ["SweepProgress", "format_duration"]


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``, or ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class SweepProgress:
    def __init__(self, total: int, *, name: str = "sweep", stream: TextIO | None = None,
                 tty: bool | None = None, every: int = 0, refresh_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every
        self.refresh_s = refresh_s
        self.clock = clock
        self.t0 = clock()
        self.ok = self.failed = self.dropped = self.stored = 0
        self._shown_at: float | None = None
        self._width = 0
        if self.tty:                    # at once, before the first point takes its time
            self._shown_at = self.t0
            self._rewrite(self.line())

    # ------------------------------------------------------------------ counts ----
    @property
    def ran(self) -> int:
        return self.ok + self.failed

    @property
    def done(self) -> int:
        return self.ran + self.dropped + self.stored

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def rate(self) -> float | None:
        """Points computed per second since the start, None before the first one."""
        t = self.elapsed()
        return self.ran / t if self.ran and t > 0 else None

    def eta(self) -> float | None:
        """Seconds until every point is reached (see the module docstring), None before the
        first computed point; 0 when nothing is left."""
        left = max(0, self.total - self.done)
        if left == 0:
            return 0.0
        r = self.rate()
        return left / r if r else None

    def line(self) -> str:
        r = self.rate()
        parts = [f"{self.name}: {self.done}/{self.total}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f} %)"
        extra = [f"{self.failed} failed"]
        if self.dropped:
            extra.append(f"{self.dropped} dropped")
        if self.stored:
            extra.append(f"{self.stored} stored")
        parts.append(", ".join(extra))
        parts.append(f"{r:.2f} pt/s" if r is not None else "? pt/s")
        parts.append(f"elapsed {format_duration(self.elapsed())}")
        parts.append(f"ETA {format_duration(self.eta())}")
        return "; ".join(parts)

    # ---------------------------------------------------------------- updates ----
    def point_done(self, status: str) -> None:
        """One point finished: ``ok`` or ``failed`` (computed here), ``dropped`` (by a
        constraint), ``stored`` (already in the store)."""
        if status == "ok":
            self.ok += 1
        elif status == "failed":
            self.failed += 1
        elif status == "dropped":
            self.dropped += 1
        elif status == "stored":
            self.stored += 1
        else:
            raise ValueError(f"unknown point status {status!r}")
        self._show(computed=status in ("ok", "failed"))

    def _show(self, computed: bool) -> None:
        if self.tty:
            now = self.clock()
            if self._shown_at is None or now - self._shown_at >= self.refresh_s \
                    or self.done == self.total:
                self._shown_at = now
                self._rewrite(self.line())
        elif self.every and computed and self.ran % self.every == 0:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def _rewrite(self, text: str) -> None:
        cols = shutil.get_terminal_size((100, 24)).columns
        text = text[: max(10, cols - 1)]
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def close(self) -> None:
        """Show the final state and end the live line."""
        if self.tty:
            self._rewrite(self.line())
            self.stream.write("\n")
            self.stream.flush()
        elif self.every and self.ran % self.every:
            self.stream.write(self.line() + "\n")      # the last, partial stretch
            self.stream.flush()
