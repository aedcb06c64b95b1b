"""Per-layer N:M sparsity for accelerator types that run N:M-pruned weights (shared part).

Any accelerator type whose hardware runs N:M-sparse weight GEMMs (``sparse_systolic``,
``flexcim``...) reads the same arch section, ``sparsity:``, resolves it to one pattern per
decoder block of a model and hands the patterns to its GEMMs through
:meth:`sim.hw.interface.Accelerator.op_annotations`. This module is that shared part; what a
pattern costs is each type's business.

The arch section (:class:`NMSparsityConfig`, strict: unknown keys are errors), at most one of
``schedule`` / ``target`` / ``pattern``::

    sparsity:
      schedule: schedules/llama-2-7b-0.6.yaml   # an NMSchedule YAML (strata flow ... -o);
                                                # relative paths: from the arch file's folder
      # target: 0.6          # FLOW run here (sim.flow(model, sparsity=0.6, seed=run seed))
      # candidates: ["1:4", "2:4", "2:8", "4:8", "1:2", "dense"]   # FLOW's patterns (target only)
      # edges_dense: true    # FLOW keeps the first and last blocks dense (target only)
      # pattern: "2:4"       # every decoder block pruned 2:4
      fallback: mask         # mask | density: how a pattern the hardware lacks is run

With none of the three (or no section) every layer is dense. A requested pattern the hardware
does not support runs as :func:`sim.config.nm_schedule.fallback_pattern` of it (``mask``: the
sparsest supported pattern that admits the pruned mask as it is, else dense; ``density``:
the sparsest supported pattern at least as dense, the layer re-pruned). The lm_head (layer -1)
and attention GEMMs (activations x KV cache) are never sparse.

API::

    NMSparsityConfig                      # the pydantic section; add it to a type's config:
                                          #   sparsity: NMSparsityConfig = Field(default_factory=NMSparsityConfig)
    resolve_layers(section, model, supported, seed=0, arch=None) -> LayerPatterns
    memo_key(section, model, seed=0, arch=None) -> tuple   # to memoize resolve_layers per model
    schedule_path(section, arch) -> str                     # where a relative schedule is read
    nm_annotations(layers, name="nm") -> OpAnnotations | None
        # lookup(layer, op) -> (("nm", Pattern(n, m)),) for a sparse block, () otherwise, so a
        # type's gemm(..., nm: Pattern | None = None) receives the block's pattern
    check_supported(patterns, key, file) -> tuple[Pattern, ...]   # a type's supported list
    # schema validators for a type's own pattern fields: sim.config.nm_schedule.pattern_text
    # (one pattern) and pattern_list (distinct patterns)

:class:`LayerPatterns` records, per decoder block, the pattern asked for and the pattern run,
and where the request came from (for reports). FLOW solves are memoized on everything that
changes them (model content, target, candidates, edges_dense, seed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

from pydantic import Field, field_validator, model_validator

from ..config.errors import ConfigError, InvalidValue, short_repr
from ..config.nm_schedule import (DENSE, Pattern, fallback_pattern, load_nm_schedule,
                                  parse_pattern, pattern_list, pattern_text)
from ..config.schema import StrictModel
from .interface import OpAnnotations

__all__ = ["NMSparsityConfig", "LayerPatterns", "resolve_layers", "nm_annotations",
           "check_supported", "memo_key", "schedule_path"]

Sparsity = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


class NMSparsityConfig(StrictModel):
    """Arch section ``sparsity:`` (see the module docstring)."""

    schedule: Annotated[str, Field(min_length=1)] | None = None
    target: Sparsity | None = None
    pattern: str | None = None
    candidates: list[str] | None = None      # FLOW's candidate patterns (with target)
    edges_dense: bool = True                 # FLOW: first and last blocks dense (with target)
    fallback: Literal["mask", "density"] = "mask"   # nm_schedule.FALLBACK_RULES

    @field_validator("pattern", mode="before")
    @classmethod
    def _pattern(cls, v: Any) -> Any:
        return None if v is None else pattern_text(v)

    @field_validator("candidates", mode="before")
    @classmethod
    def _candidates(cls, v: Any) -> Any:
        out = pattern_list(v)
        if out == []:
            raise InvalidValue("at least one candidate pattern", got="[]")
        return out

    @model_validator(mode="after")
    def _one_source(self) -> "NMSparsityConfig":
        given = [k for k in ("schedule", "target", "pattern") if getattr(self, k) is not None]
        if len(given) > 1:
            raise InvalidValue("at most one of schedule, target, pattern",
                               loc=(given[1],), got=f"both {given[0]} and {given[1]}")
        if self.target is None and self.candidates is not None:
            raise InvalidValue("candidates only with target (they are FLOW's)",
                               loc=("candidates",), got=short_repr(self.candidates))
        return self

    @property
    def source(self) -> str:
        """Which of schedule / target / pattern is set ("none" for all-dense)."""
        for k in ("schedule", "target", "pattern"):
            if getattr(self, k) is not None:
                return k
        return "none"


@dataclass(frozen=True)
class LayerPatterns:
    """One model's per-decoder-block patterns: ``requested`` (from the schedule, FLOW or the
    fixed pattern) and ``run`` (what the hardware executes after fallback); ``origin`` says
    where the request came from."""

    requested: tuple[Pattern, ...]
    run: tuple[Pattern, ...]
    origin: str
    fallback: str = "mask"

    def __post_init__(self) -> None:
        if len(self.requested) != len(self.run):
            raise ValueError("requested and run patterns differ in length")

    @property
    def num_layers(self) -> int:
        return len(self.run)

    @property
    def sparse(self) -> bool:
        return any(not p.dense for p in self.run)

    def mean_sparsity(self, which: str = "run") -> float:
        pats = getattr(self, which)
        return sum(p.sparsity for p in pats) / len(pats) if pats else 0.0

    def fell_back(self) -> tuple[int, ...]:
        """Layers run with another pattern than requested."""
        return tuple(i for i, (a, b) in enumerate(zip(self.requested, self.run)) if a != b)

    def counts(self, which: str = "run") -> dict[str, int]:
        out: dict[str, int] = {}
        for p in getattr(self, which):
            out[str(p)] = out.get(str(p), 0) + 1
        return out


def check_supported(patterns: Iterable, *, key: str, file: str | None = None
                    ) -> tuple[Pattern, ...]:
    """A type's list of hardware patterns, parsed, distinct, dense always included (a layer
    with no admissible sparse pattern runs dense); ConfigError naming ``file``/``key``."""
    out: list[Pattern] = []
    for i, p in enumerate(patterns):
        pat = parse_pattern(p, key=f"{key}.{i}", file=file)
        if pat in out:
            raise ConfigError("distinct patterns", file=file, key=f"{key}.{i}",
                              got=short_repr(p))
        out.append(pat)
    if DENSE not in out:
        out.append(DENSE)
    return tuple(out)


def schedule_path(section: NMSparsityConfig, arch: Any) -> str:
    """The schedule path: absolute as given; relative from the folder of the file that wrote
    ``sparsity.schedule`` when that file exists on disk, else from the working directory."""
    path = os.path.expanduser(section.schedule)
    if os.path.isabs(path):
        return path
    sources = getattr(arch, "_sources", None) or {}
    writer = sources.get(("sparsity", "schedule")) or getattr(arch, "_origin", None)
    if writer and os.path.isfile(writer):
        candidate = Path(writer).resolve().parent / path
        if candidate.exists():
            return str(candidate)
    return path


def memo_key(section: NMSparsityConfig | None, model: Any, seed: int = 0, arch: Any = None
             ) -> tuple:
    """A key for memoizing :func:`resolve_layers` on one accelerator: the model, the seed and,
    for a schedule file, its size and modification time (an edited file is read again)."""
    stamp = None
    if section is not None and section.schedule is not None:
        try:
            st = os.stat(schedule_path(section, arch))
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None        # resolve_layers reports the missing file
    elif section is not None and section.target is not None:
        stamp = _statistics_stamp(model)
    return (model, int(seed), stamp)


def _statistics_stamp(model) -> tuple | None:
    """(path, size, mtime) of the file FLOW's per-block statistics come from: the model's
    outlier profile, or the recipe of its synthetic profile (an edited file gives new
    statistics, so it must give a new key). None when it cannot be found (FLOW reports it)."""
    from ..config.outliers import _PROFILES, _RECIPES, DEFAULT_RECIPE
    try:
        path = (_PROFILES.resolve(model.outlier_profile) if model.outlier_profile is not None
                else _RECIPES.resolve(DEFAULT_RECIPE))
        st = os.stat(path)
    except (ConfigError, OSError):
        return None
    return (str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _flow_patterns(model, target: float, candidates: tuple | None, edges_dense: bool,
                   seed: int, statistics: tuple | None = None
                   ) -> tuple[tuple[Pattern, ...], str]:
    """FLOW's patterns, memoized on everything that changes them; ``statistics`` is the stamp
    of the file the per-block statistics come from (only part of the key)."""
    from ..io.flow_inputs import flow
    sched = flow(model, target, candidates=list(candidates) if candidates else None,
                 edges_dense=edges_dense, seed=seed)
    pats = tuple(parse_pattern(p) for p in sched.patterns())
    return pats, (f"FLOW target {target:g} (achieved {sched.achieved_sparsity:.4g}; "
                  f"{sched.source})")


def resolve_layers(section: NMSparsityConfig | None, model: Any, supported: Iterable,
                   seed: int = 0, arch: Any = None) -> LayerPatterns:
    """Per-decoder-block patterns of ``model`` (a ModelConfig) on hardware that runs the
    ``supported`` patterns. ``arch`` (the arch config) locates a relative schedule path and
    names the file in errors; ``seed`` is the run's seed (FLOW's synthetic profile)."""
    sup = tuple(parse_pattern(p) for p in supported)
    L = model.num_layers
    sec = section if section is not None else NMSparsityConfig()
    if sec.schedule is not None:
        path = schedule_path(sec, arch)
        sched = load_nm_schedule(path, model)     # layer count checked against the model
        req = tuple(parse_pattern(p) for p in sched.patterns())
        origin = f"schedule {sec.schedule}"
    elif sec.target is not None:
        req, origin = _flow_patterns(model, float(sec.target),
                                     tuple(sec.candidates) if sec.candidates else None,
                                     bool(sec.edges_dense), int(seed),
                                     _statistics_stamp(model))
    elif sec.pattern is not None:
        req = (parse_pattern(sec.pattern),) * L
        origin = f"pattern {sec.pattern}"
    else:
        req, origin = (DENSE,) * L, "none (dense)"
    if len(req) != L:     # guard: every source above gives one per block
        raise ConfigError(f"one pattern per layer of model {model.name!r} ({L})",
                          file=getattr(arch, "_origin", None), key="sparsity", got=str(len(req)))
    memo: dict[Pattern, Pattern] = {}
    for p in req:
        if p not in memo:
            memo[p] = p if p in sup or p.dense else fallback_pattern(p, sup, sec.fallback)
    return LayerPatterns(requested=req, run=tuple(memo[p] for p in req), origin=origin,
                         fallback=sec.fallback)


def nm_annotations(layers: LayerPatterns, name: str = "nm") -> OpAnnotations | None:
    """OpAnnotations giving each weight GEMM of a sparse block ``name=Pattern(n, m)``; dense
    blocks and the lm_head get nothing (the type's dense path). None when every block runs
    dense, so a dense configuration keys and prices exactly like no annotation at all."""
    if not layers.sparse:
        return None
    run = layers.run
    key = (name, tuple(str(p) for p in run))

    def lookup(layer: int, op: str) -> tuple:
        if layer < 0 or run[layer].dense:
            return ()
        return ((name, run[layer]),)
    return OpAnnotations(key=key, lookup=lookup)

