"""Accelerator models registered by name: an arch file's ``type:`` picks one.

A new accelerator is a new module that calls :func:`register` — no edit across the tree.
"""
from __future__ import annotations

from typing import Callable

_ACCELERATORS: dict[str, Callable] = {}


def register(name: str):
    def deco(cls):
        if name in _ACCELERATORS and _ACCELERATORS[name] is not cls:
            raise ValueError(f"accelerator type {name!r} registered twice")
        _ACCELERATORS[name] = cls
        return cls
    return deco


def accelerator_types() -> list[str]:
    _load_builtin()
    return sorted(_ACCELERATORS)


def build_accelerator(arch):
    """The accelerator model for a validated ArchConfig (by its ``type``)."""
    _load_builtin()
    kind = getattr(arch, "type", "systolic")
    try:
        cls = _ACCELERATORS[kind]
    except KeyError:
        raise ValueError(f"unknown accelerator type {kind!r}; registered: {accelerator_types()}")
    return cls(arch)


def _load_builtin() -> None:
    from . import accelerator, microscopiq  # noqa: F401  (register "systolic", "microscopiq")
    from . import baselines  # noqa: F401  (olive, ant, gobo, olaccel, adaptivfloat)
