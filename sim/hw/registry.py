"""Accelerator types registered by name: an arch file's ``type:`` picks one.

A new accelerator type is a class deriving from :class:`sim.hw.interface.Accelerator`
registered with :func:`register` — from any module, inside the package or not (a test, a
plugin): registering also registers its config subclass with the arch schema, so
``load_arch``, ``load_experiment`` and ``sim.run`` accept ``type: <name>`` at once.

Built-in types are found without a shared list: a module of this package that defines types
says so with a one-line module-level literal ``ACCELERATOR_TYPES = ("name", ...)`` (and, if
its types read technology-table sections of their own, ``TECH_SECTIONS = ("section", ...)``).
The first lookup of an unknown name reads those lines from the package's source files as text
(without importing them) and imports only the module that declares the name, so a plain
systolic run does not load MicroScopiQ's machinery (loading a table with a ``recon:`` section
does not either). Adding a built-in type is a new module with those lines; nothing else
changes.
"""
from __future__ import annotations

import ast
import re
from importlib import import_module
from pathlib import Path

from ..config.schema import register_arch_type, set_type_finder

__all__ = ["register", "unregister", "accelerator_types", "accelerator_class",
           "build_accelerator"]

_ACCELERATORS: dict[str, type] = {}
_BUILTIN: dict[str, str] | None = None      # type name -> module of this package
_BUILTIN_SECTIONS: dict[str, tuple[str, ...]] = {}   # tech section -> built-in types


def register(name: str):
    """Class decorator: make ``cls`` the accelerator of ``type: name``."""
    def deco(cls):
        from .interface import Accelerator
        if not (isinstance(cls, type) and issubclass(cls, Accelerator)):
            raise TypeError(f"accelerator type {name!r}: {cls!r} must derive from "
                            "sim.hw.interface.Accelerator")
        if name in _ACCELERATORS and _ACCELERATORS[name] is not cls:
            raise ValueError(f"accelerator type {name!r} registered twice")
        _ACCELERATORS[name] = cls
        cls.type_name = name
        register_arch_type(name, cls.config_class, tuple(cls.tech_sections))
        return cls
    return deco


def unregister(name: str) -> None:
    """Forget a type registered from outside the package (tests)."""
    from ..config import schema
    _ACCELERATORS.pop(name, None)
    schema._ARCH_TYPES.pop(name, None)
    schema._TECH_SECTIONS.pop(name, None)


_DECLARATION = re.compile(r"^(ACCELERATOR_TYPES|TECH_SECTIONS)\s*=\s*(\(.*\))", re.M)


def _builtin_index() -> dict[str, str]:
    """Type name -> module, from the one-line ``ACCELERATOR_TYPES = (...)`` literals of this
    package's files (and the ``TECH_SECTIONS = (...)`` beside them), read as text."""
    global _BUILTIN
    if _BUILTIN is None:
        index, sections = {}, {}
        for path in sorted(Path(__file__).parent.glob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "ACCELERATOR_TYPES" not in text:
                continue
            found = {m.group(1): tuple(ast.literal_eval(m.group(2)))
                     for m in _DECLARATION.finditer(text)}
            for kind in found.get("ACCELERATOR_TYPES", ()):
                index[kind] = path.stem
            for name in found.get("TECH_SECTIONS", ()):
                sections[name] = tuple(sorted(set(sections.get(name, ()))
                                              | set(found.get("ACCELERATOR_TYPES", ()))))
        _BUILTIN_SECTIONS.update(sections)
        _BUILTIN = index
    return _BUILTIN


def _load_builtin(kind: str) -> None:
    if kind not in _ACCELERATORS:
        module = _builtin_index().get(kind)
        if module is not None:
            import_module(f"{__package__}.{module}")


def _builtin_names() -> list[str]:
    return list(_builtin_index())


def _builtin_tech_sections() -> dict[str, tuple[str, ...]]:
    _builtin_index()
    return dict(_BUILTIN_SECTIONS)


set_type_finder(_load_builtin, _builtin_names, _builtin_tech_sections)


def accelerator_types() -> list[str]:
    for kind in _builtin_index():
        _load_builtin(kind)
    return sorted(_ACCELERATORS)


def accelerator_class(kind: str) -> type:
    _load_builtin(kind)
    try:
        return _ACCELERATORS[kind]
    except KeyError:
        raise ValueError(f"unknown accelerator type {kind!r}; registered: "
                         f"{accelerator_types()}") from None


def build_accelerator(arch, tech=None):
    """The accelerator model for a validated ArchConfig (by its ``type``)."""
    return accelerator_class(getattr(arch, "type", "systolic"))(arch, tech)
