"""Named invariant violations: checks that stay on whatever the interpreter flags.

``assert`` statements vanish under ``python -O``; the checks the README promises (cycles =
compute + stall, stall >= 0, utilization <= 1, energies >= 0, no unit busy longer than its
op) must not. They call :func:`require`, which raises :class:`InvariantError` naming the
component, the operator and the values involved.
"""
from __future__ import annotations

from typing import Any

__all__ = ["InvariantError", "require"]


class InvariantError(AssertionError):
    """A model broke one of its own invariants (a bug in the model, never a user error).

    An AssertionError subclass, so code that caught the old asserts still does; unlike an
    ``assert`` statement it is raised under ``python -O`` too."""

    def __init__(self, component: str, operator: str, what: str, **values: Any):
        self.component = component
        self.operator = operator
        self.what = what
        self.values = values
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        super().__init__(f"{component} / {operator}: invariant broken: {what}"
                         + (f" ({shown})" if shown else ""))


def require(ok: Any, component: str, operator: str, what: str, **values: Any) -> None:
    """Raise :class:`InvariantError` unless ``ok``."""
    if not ok:
        raise InvariantError(component, operator, what, **values)
