"""The one exception type for bad user input.

Every problem with a YAML file, a ``--set`` override or a name on the command line becomes a
:class:`ConfigError` that says *where* (file and dotted key path), *what was expected* and *what
was found*, so that the CLI can print one line instead of a traceback::

    arch/small.yaml: array.rows: expected an integer > 0, got -4
    exp.yaml: arch.array.rowz: expected a known key of 'array', got 'rowz' (did you mean 'rows'?)
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["ConfigError", "InvalidValue", "did_you_mean", "short_repr"]


class ConfigError(Exception):
    """Bad configuration input.

    Attributes:
        file: the file the offending value was written in (``"--set"`` for a command-line
            override, a ``<...>`` label for in-memory dicts), or None when unknown.
        key: dotted key path inside that document (``"runs.0.seq_len"``), or None.
        expected: what a valid value looks like, in words.
        got: a short repr of what was found, or None.
        hint: an extra suggestion such as ``"did you mean 'rows'?"``, or None.
        errors: every error found in the same validation pass (this one first); the message
            shows only the first.
    """

    def __init__(
        self,
        expected: str,
        *,
        file: str | None = None,
        key: str | None = None,
        got: str | None = None,
        hint: str | None = None,
        errors: list["ConfigError"] | None = None,
    ) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        self.got = got
        self.hint = hint
        self.errors: list[ConfigError] = errors if errors else [self]
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}: ")
        if self.key:
            parts.append(f"{self.key}: ")
        parts.append(f"expected {self.expected}")
        if self.got is not None:
            parts.append(f", got {self.got}")
        if self.hint:
            parts.append(f" ({self.hint})")
        return "".join(parts)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ConfigError({self.message!r})"


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> str | None:
    """A ``"did you mean 'x'?"`` hint from the closest candidates, or None if none is close."""
    names = sorted({str(c) for c in candidates})
    close = difflib.get_close_matches(str(word), names, n=n, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


def short_repr(value: object, limit: int = 60) -> str:
    """repr() cut to ``limit`` characters, for the ``got`` part of a message."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


class InvalidValue(ValueError):
    """Raised by schema validators; the loader turns it into a :class:`ConfigError`.

    ``loc`` is the key path relative to the model whose validator raised it, so that a check
    done on a whole model (``num_kv_heads`` must divide ``num_heads``) still points at the key.
    """

    def __init__(
        self,
        expected: str,
        *,
        loc: tuple = (),
        got: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.loc = tuple(loc)
        self.expected = expected
        self.got = got
        self.hint = hint
        text = f"expected {expected}"
        if got is not None:
            text += f", got {got}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)
