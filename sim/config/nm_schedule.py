"""Per-layer N:M schedules: which N:M pattern each decoder block's linear ops run with.

Written by FLOW (:func:`sim.flow`, ``strata flow MODEL --sparsity 0.6 -o schedule.yaml``) and
read by the hardware models through :func:`load_nm_schedule`. One pattern per decoder block,
applied to all its linear ops (q/k/v/o/gate/up/down), as FLOW's released solver does; the
lm_head is not in the schedule (it stays dense).

Schema (:class:`NMSchedule`, strict: no unknown keys)::

    model: "llama-2-7b"          # workloads/<model>.yaml the schedule is for
    num_layers: 32               # must equal the model's num_layers when checked against it
    target_sparsity: 0.6         # in [0, 1)
    achieved_sparsity: 0.59375   # mean over blocks of 1 - N/M; must match the layers
    gap: 0.00625                 # |achieved - target|
    candidates: ["1:4", "2:4", "2:8", "4:8", "1:2", "dense"]
    edges_dense: true            # first and last blocks forced dense
    source: "synthetic outlier profile ..."   # where the per-block statistics came from
    seed: 0                      # seed of a synthetic profile (null for real weights)
    solver: {alpha: 1.0, beta: 4.0, scale: 8}
    layers:
      - {layer: 0, pattern: "dense", outlier_ratio: 1.0, locality: 0.2}
      ...

Patterns are strings ``"N:M"`` (1 <= N <= M <= 16) or ``"dense"``, and must be among the
candidates. Quote them in YAML: an unquoted ``2:4`` is read by YAML 1.1 as the base-60
integer 124. Errors are one-line :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, NamedTuple

from pydantic import Field, PrivateAttr, field_validator, model_validator

from .errors import ConfigError, InvalidValue, short_repr
from .loader import load_validated
from .schema import StrictModel

__all__ = ["MAX_M", "Pattern", "DENSE", "parse_pattern", "admits", "fallback_pattern",
           "FALLBACK_RULES", "pattern_sparsity", "pattern_text", "pattern_list", "LayerNM",
           "NMSchedule", "load_nm_schedule", "schedule_to_yaml", "check_for_model",
           "SPARSITY_TOLERANCE"]

MAX_M = 16

_PATTERN_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


class Pattern(NamedTuple):
    """An N:M pattern; ``Pattern(m, m)`` (any m) is dense. ``str()`` gives ``"N:M"`` or
    ``"dense"``."""

    n: int
    m: int

    @property
    def dense(self) -> bool:
        return self.n == self.m

    @property
    def sparsity(self) -> float:
        """Fraction of weights pruned: 1 - N/M."""
        return 1.0 - self.n / self.m

    @property
    def density(self) -> float:
        return self.n / self.m

    def __str__(self) -> str:
        return "dense" if self.dense else f"{self.n}:{self.m}"

    @property
    def name(self) -> str:
        """``str(self)``: ``"N:M"`` or ``"dense"``."""
        return str(self)


DENSE = Pattern(1, 1)


def parse_pattern(value, *, key: str | None = None, file: str | None = None) -> Pattern:
    """``"2:4"``, ``(2, 4)``, a :class:`Pattern` or ``"dense"`` -> :class:`Pattern`.

    Bad input raises :class:`ConfigError` naming ``file``/``key``: not ``N:M``, ``N > M``,
    ``N < 1`` or ``M > 16``. ``"dense"`` becomes ``Pattern(1, 1)``."""
    if isinstance(value, Pattern):
        n, m = value
    elif isinstance(value, str) and value.strip().lower() == "dense":
        return DENSE
    elif isinstance(value, str) and (hit := _PATTERN_RE.match(value)):
        n, m = int(hit.group(1)), int(hit.group(2))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        n, m = int(value[0]), int(value[1])
    else:
        raise ConfigError("an N:M pattern such as '2:4' or 'dense'", file=file, key=key,
                          got=short_repr(value))
    if n < 1:
        raise ConfigError("N >= 1 in an N:M pattern", file=file, key=key, got=short_repr(value))
    if n > m:
        raise ConfigError("N <= M in an N:M pattern", file=file, key=key, got=short_repr(value))
    if m > MAX_M:
        raise ConfigError(f"M <= {MAX_M} in an N:M pattern", file=file, key=key,
                          got=short_repr(value))
    return DENSE if n == m else Pattern(n, m)



def admits(hw: Pattern, mask: Pattern) -> bool:
    """Whether every ``mask``-valid weight mask (N kept per aligned block of M, any
    positions) is also ``hw``-valid: the hardware pattern can run the pruned layer as it is.

    The worst case of a mask in one aligned block of the hardware's M_h positions puts as
    many kept weights there as the mask's blocks overlapping it allow (each contributes at
    most min(N, overlap)); the blocks' offsets repeat with period lcm(M_h, M), so checking
    one period covers every block. Dense hardware admits everything; e.g. 2:4 admits 2:8
    and 1:4 but not 4:8 (four kept weights may fall in one half)."""
    hw, mask = parse_pattern(hw), parse_pattern(mask)
    if hw.dense:
        return True
    if mask.dense:
        return False
    period = math.lcm(hw.m, mask.m)
    for start in range(0, period, hw.m):
        end, worst, pos = start + hw.m, 0, start
        while pos < end:
            block_end = (pos // mask.m + 1) * mask.m
            worst += min(mask.n, min(end, block_end) - pos)
            pos = block_end
        if worst > hw.n:
            return False
    return True


FALLBACK_RULES = ("mask", "density")


def fallback_pattern(requested, supported, rule: str = "mask") -> Pattern:
    """The pattern hardware that runs only ``supported`` uses for a layer pruned ``requested``.

    ``rule="mask"`` (keeps the pruned model exact): the sparsest supported pattern that
    :func:`admits` the requested mask, else dense. ``rule="density"`` (iso-sparsity, the
    layer re-pruned to the hardware's pattern): the sparsest supported pattern at least as
    dense as the requested one, else dense. Ties go to the smaller M (less metadata)."""
    if rule not in FALLBACK_RULES:
        raise ConfigError(f"one of {', '.join(FALLBACK_RULES)}", key="fallback",
                          got=short_repr(rule))
    req = parse_pattern(requested)
    pats = [parse_pattern(p) for p in supported]
    if rule == "mask":
        ok = [p for p in pats if admits(p, req)]
    else:
        ok = [p for p in pats if p.density >= req.density - 1e-12]
    if not ok:
        return DENSE
    return min(ok, key=lambda p: (p.density, p.m))


# How far the stored achieved_sparsity / gap may be from what the layers give (values are
# written with repr(), so a file round-trips exactly; the slack is for hand edits).
SPARSITY_TOLERANCE = 1e-6

Frac = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Sparsity = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
Text = Annotated[str, Field(min_length=1)]


def _pattern_text(v: Any) -> Any:
    """Canonical pattern text, or InvalidValue (unknown pattern, N > M, M > 16)."""
    if isinstance(v, int) and not isinstance(v, bool):
        raise InvalidValue("an N:M pattern string such as '2:4' or 'dense' (quote it: "
                           "YAML reads an unquoted 2:4 as the number 124)", got=short_repr(v))
    try:
        return str(parse_pattern(v))
    except ConfigError as exc:
        raise InvalidValue(exc.expected, got=exc.got) from None


def pattern_text(v: Any) -> str:
    """Canonical text of one pattern value for a schema validator (InvalidValue otherwise)."""
    return _pattern_text(v)


def pattern_list(v: Any) -> Any:
    """A schema validator's list of distinct patterns as canonical text (InvalidValue naming
    the bad item's index); a non-list is left for the field type to refuse."""
    if not isinstance(v, list):
        return v
    out = []
    for i, item in enumerate(v):
        try:
            text = _pattern_text(item)
        except InvalidValue as exc:
            raise InvalidValue(exc.expected, loc=(i,), got=exc.got) from None
        if text in out:
            raise InvalidValue("distinct patterns", loc=(i,), got=short_repr(item))
        out.append(text)
    return out


def pattern_sparsity(text: str) -> float:
    return parse_pattern(text).sparsity


class Solver(StrictModel):
    alpha: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    beta: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 4.0
    scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 8.0


class LayerNM(StrictModel):
    """One decoder block: its pattern and the normalised statistics that chose it."""

    layer: Annotated[int, Field(ge=0)]
    pattern: str
    outlier_ratio: Frac | None = None  # normalised outlier density O_i in [0, 1]
    locality: Frac | None = None  # normalised outlier locality D_i in [0, 1]

    @field_validator("pattern", mode="before")
    @classmethod
    def _pattern(cls, v: Any) -> Any:
        return _pattern_text(v)


class NMSchedule(StrictModel):
    """A per-layer N:M schedule (see the module docstring)."""

    model: Text
    num_layers: Annotated[int, Field(gt=0)]
    target_sparsity: Sparsity
    achieved_sparsity: Sparsity
    gap: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    candidates: list[str] = Field(min_length=1)
    edges_dense: bool = False
    source: Text
    seed: Annotated[int, Field(ge=0)] | None = None
    solver: Solver = Field(default_factory=Solver)
    layers: list[LayerNM]

    _origin: str | None = PrivateAttr(default=None)

    @property
    def origin(self) -> str | None:
        """The file the schedule was read from (None for one built in memory)."""
        return self._origin

    @field_validator("candidates", mode="before")
    @classmethod
    def _candidates(cls, v: Any) -> Any:
        return pattern_list(v)

    @model_validator(mode="after")
    def _consistent(self) -> "NMSchedule":
        if len(self.layers) != self.num_layers:
            raise InvalidValue(f"one entry per layer ({self.num_layers}, num_layers)",
                               loc=("layers",), got=f"{len(self.layers)} entries")
        for i, entry in enumerate(self.layers):
            if entry.layer != i:
                raise InvalidValue(f"layer {i} (entries in layer order)",
                                   loc=("layers", i, "layer"), got=str(entry.layer))
            if entry.pattern not in self.candidates:
                raise InvalidValue("a pattern among the candidates (" + ", ".join(self.candidates)
                                   + ")", loc=("layers", i, "pattern"),
                                   got=short_repr(entry.pattern))
        mean = self.mean_sparsity()
        if abs(mean - self.achieved_sparsity) > SPARSITY_TOLERANCE:
            raise InvalidValue(f"the mean sparsity of the layers' patterns ({mean:.6g})",
                               loc=("achieved_sparsity",), got=repr(self.achieved_sparsity))
        gap = abs(mean - self.target_sparsity)
        if abs(gap - self.gap) > SPARSITY_TOLERANCE:
            raise InvalidValue(f"|achieved_sparsity - target_sparsity| ({gap:.6g})",
                               loc=("gap",), got=repr(self.gap))
        return self

    # -- use ------------------------------------------------------------------------------------

    def patterns(self) -> list[str]:
        """Pattern text of each layer, in layer order."""
        return [e.pattern for e in self.layers]

    def nm(self, layer: int) -> tuple[int, int]:
        """``(N, M)`` of a layer; dense is ``(1, 1)``."""
        if not 0 <= layer < self.num_layers:
            raise ConfigError(f"a layer index in 0..{self.num_layers - 1}", key="layer",
                              got=short_repr(layer))
        p = parse_pattern(self.layers[layer].pattern)
        return p.n, p.m

    def mean_sparsity(self) -> float:
        return sum(pattern_sparsity(e.pattern) for e in self.layers) / len(self.layers) \
            if self.layers else 0.0

    def counts(self) -> dict[str, int]:
        """Pattern -> number of layers, in candidate order (patterns used at least once)."""
        used = self.patterns()
        return {p: used.count(p) for p in self.candidates if p in used}


def load_nm_schedule(path_or_dict: Any, model: Any = None) -> NMSchedule:
    """A schedule from a YAML path, a mapping or an NMSchedule; with ``model`` (a ModelConfig
    or shipped model name) also checked against it (:func:`check_for_model`)."""
    sched = load_validated(path_or_dict, NMSchedule)
    if model is not None:
        check_for_model(sched, model)
    return sched


def check_for_model(sched: NMSchedule, model: Any) -> None:
    """ConfigError unless the schedule has one entry per decoder block of ``model``."""
    from .loader import load_model

    m = model if hasattr(model, "num_layers") else load_model(model)
    if sched.num_layers != m.num_layers:
        raise ConfigError(f"a schedule for the {m.num_layers} layers of model {m.name!r}",
                          file=sched.origin, key="num_layers",
                          got=str(sched.num_layers))


def _num(x: float) -> str:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"cannot write a non-finite number {x!r}")
    return repr(x)


def schedule_to_yaml(sched: NMSchedule, header: str = "") -> str:
    """Deterministic YAML text of a schedule (no dates, no paths): same schedule, same bytes."""
    s = json.dumps
    lines = [f"# {h}".rstrip() for h in header.splitlines()] if header else []
    lines += [
        f"model: {s(sched.model)}",
        f"num_layers: {sched.num_layers}",
        f"target_sparsity: {_num(sched.target_sparsity)}",
        f"achieved_sparsity: {_num(sched.achieved_sparsity)}",
        f"gap: {_num(sched.gap)}",
        "candidates: [" + ", ".join(s(c) for c in sched.candidates) + "]",
        f"edges_dense: {'true' if sched.edges_dense else 'false'}",
        f"source: {s(sched.source)}",
        f"seed: {'null' if sched.seed is None else sched.seed}",
        f"solver: {{alpha: {_num(sched.solver.alpha)}, beta: {_num(sched.solver.beta)}, "
        f"scale: {_num(sched.solver.scale)}}}",
        "layers:",
    ]
    for e in sched.layers:
        parts = [f"layer: {e.layer}", f"pattern: {s(e.pattern)}"]
        if e.outlier_ratio is not None:
            parts.append(f"outlier_ratio: {_num(e.outlier_ratio)}")
        if e.locality is not None:
            parts.append(f"locality: {_num(e.locality)}")
        lines.append("  - {" + ", ".join(parts) + "}")
    return "\n".join(lines) + "\n"
