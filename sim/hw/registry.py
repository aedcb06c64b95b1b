"""Accelerator models registered by name: an arch file's ``type:`` picks one.

A new accelerator is a new module that calls :func:`register` — no edit across the tree.
"""
from __future__ import annotations

from importlib import import_module
from typing import Callable

from ..config.schema import BASELINE_TYPES

_ACCELERATORS: dict[str, Callable] = {}


def register(name: str):
    def deco(cls):
        if name in _ACCELERATORS and _ACCELERATORS[name] is not cls:
            raise ValueError(f"accelerator type {name!r} registered twice")
        _ACCELERATORS[name] = cls
        return cls
    return deco


# the built-in types and the module (in this package) that registers each: only the module a
# run needs is imported, so a plain systolic run does not load MicroScopiQ's machinery
_BUILTIN = {"systolic": "accelerator", "microscopiq": "microscopiq",
            **{t: "baselines" for t in BASELINE_TYPES}}


def accelerator_types() -> list[str]:
    for kind in _BUILTIN:
        _load_builtin(kind)
    return sorted(_ACCELERATORS)


def build_accelerator(arch):
    """The accelerator model for a validated ArchConfig (by its ``type``)."""
    kind = getattr(arch, "type", "systolic")
    _load_builtin(kind)
    try:
        cls = _ACCELERATORS[kind]
    except KeyError:
        raise ValueError(f"unknown accelerator type {kind!r}; registered: {accelerator_types()}")
    return cls(arch)


def _load_builtin(kind: str) -> None:
    if kind in _BUILTIN and kind not in _ACCELERATORS:
        import_module(f"{__package__}.{_BUILTIN[kind]}")
