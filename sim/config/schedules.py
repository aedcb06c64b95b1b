"""Iso-accuracy precision schedules: which layers of a model run at 2, 4 or 8 bits on each design.

MicroScopiQ (ISCA'25, Sec. 7.5 and Fig. 12(a)) compares its accelerator with its baselines at
*iso-accuracy*: each design quantizes the weight layers of a model to 2, 4 or 8 bits, with 4-bit
activations, so that the model stays within +-2 % of the accuracy of MicroScopiQ W4A4 on the same
model. A schedule file records, for one model, what each design runs, and why::

    # workloads/schedules/llama-3-8b.yaml
    model: llama-3-8b                    # workloads/llama-3-8b.yaml
    rule: every design within +-2 % of MicroScopiQ W4A4 accuracy ...
    tolerance: 0.02
    reference: {metric: WikiText-2 perplexity, value: 8.12, fp16: 6.13, source: "Table 2 ..."}
    evidence:                            # published numbers the choices below lean on
      - {method: MicroScopiQ, setting: W2A8, model: llama-3-8b, metric: ..., value: 9.08,
         source: ...}
    notes: how the schedules were reasoned where the paper's figure is not recoverable
    designs:
      microscopiq-v1:
        arch: microscopiq-64x64
        precision: {wbits: 4, abits: 4}  # the default: every op no rule names
        layer_precision: []
        source: where the choice comes from
      microscopiq-v2:
        arch: microscopiq-64x64
        precision: {wbits: 2, abits: 4}
        layer_precision:                 # later rules win, as in a model's layer_precision
          - {layers: [0, 1, -1], wbits: 4, abits: 4, why: ...}
          - {ops: [lm_head], wbits: 4, abits: 4, why: ...}
        source: ...

Design keys are fixed (:data:`DESIGNS`): ``microscopiq-v1`` (the reference, required),
``microscopiq-v2``, ``int8``, ``ant``, ``olive``, ``gobo``, ``olaccel``, ``adaptivfloat``; each
names an arch of the matching accelerator type (:data:`DESIGN_TYPES`).

A rule's ``layers`` is ``all``, a range ``"a-b"`` or a list of indices; negative indices count
from the last block (``-1`` is the last), so that a rule such as "first two and last block"
stays meaningful when an experiment shrinks the model (``num_layers: 2`` in a test). ``ops``
takes the linear ops of a block (``q_proj`` ... ``down_proj``), ``lm_head`` (reached only when a
rule names it) and the attention GEMMs ``qk``/``av``; a rule without ``ops`` covers every op of
its blocks, attention included. Attention reads the KV cache at activation precision, so it runs
at ``(abits, abits)`` on the array.

Loading (:func:`load_schedule`) checks, besides the schema, that every design's precisions are
modes its arch supports (the default and each rule at ``(wbits, abits)`` for the linear ops and
``(abits, abits)`` for attention), that the layer indices exist in the model, that the ops exist
in it (no ``gate_proj`` in a plain-FFN model), and that ``microscopiq-v1`` is W4A4 everywhere, as
the paper defines it. Every problem is a :class:`ConfigError` naming the file and the key.

:func:`schedule_variants` turns a schedule into an experiment's ``variants:`` entries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from .errors import ConfigError, InvalidValue, did_you_mean, short_repr
from .loader import TableFolder, data_dir, load_arch, load_model
from .schema import SSM_GEMM_OPS, ArchConfig, ModelConfig, StrictModel, parse_layer_spec

__all__ = [
    "DESIGNS",
    "DESIGN_LABELS",
    "DESIGN_TYPES",
    "BLOCK_GEMM_OPS",
    "ATTENTION_OPS",
    "ScheduleRule",
    "DesignPrecision",
    "DesignSchedule",
    "Reference",
    "Evidence",
    "IsoSchedule",
    "load_schedule",
    "available_schedules",
    "schedules_dir",
    "schedule_variants",
    "design_model",
]

#: Design keys, in the order variants are produced.
DESIGNS = ("microscopiq-v1", "microscopiq-v2", "int8", "ant", "olive", "gobo", "olaccel",
           "adaptivfloat")
#: Variant name of each design in an experiment.
DESIGN_LABELS = {
    "microscopiq-v1": "MicroScopiQ v1", "microscopiq-v2": "MicroScopiQ v2", "int8": "INT8",
    "ant": "ANT", "olive": "OliVe", "gobo": "GOBO", "olaccel": "OLAccel",
    "adaptivfloat": "AdaptivFloat",
}
#: Accelerator type (arch ``type:``) each design must name.
DESIGN_TYPES = {
    "microscopiq-v1": "microscopiq", "microscopiq-v2": "microscopiq", "int8": "systolic",
    "ant": "ant", "olive": "olive", "gobo": "gobo", "olaccel": "olaccel",
    "adaptivfloat": "adaptivfloat",
}
REFERENCE_DESIGN = "microscopiq-v1"

# Op names a rule may list (the graph builder's names, sim.workload.graph).
BLOCK_GEMM_OPS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_OPS = ("qk", "av")
OUTSIDE_OPS = ("lm_head",)

Bits = Literal[2, 4, 8, 16]
Text = Annotated[str, Field(min_length=1)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]

_LAYERS_EXPECTED = ("'all', a range 'a-b' or a list of layer indices (negative ones count from "
                    "the last block)")


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


class ScheduleRule(StrictModel):
    """Some layers (and optionally only some ops) of one design at (wbits, abits)."""

    layers: list[int] | str = "all"
    ops: list[Text] | None = Field(default=None, min_length=1)
    wbits: Bits
    abits: Bits
    why: str = ""  # the reason for this rule, in words (not passed to the model)

    @field_validator("layers", mode="before")
    @classmethod
    def _parse_layers(cls, v: Any) -> Any:
        return parse_layer_spec(v, negative=True, expected=_LAYERS_EXPECTED)

    # -- which ops the rule reaches (for the mode checks) --------------------------------------

    def reaches_gemms(self) -> bool:
        return self.ops is None or any(op not in ATTENTION_OPS for op in self.ops)

    def reaches_attention(self) -> bool:
        return self.ops is None or any(op in ATTENTION_OPS for op in self.ops)

    def resolved_layers(self, num_layers: int) -> list[int] | str:
        """``layers`` for a model of ``num_layers`` blocks: 'all' and ranges as they are, a list
        with negative indices turned into absolute ones (sorted, without repeats). Raises
        ValueError naming the first index that does not exist."""
        if self.layers == "all":
            return "all"
        if isinstance(self.layers, str):
            _first, last = self.layers.split("-")          # a range "first-last"
            if int(last) >= num_layers:
                raise ValueError(self.layers)
            return self.layers
        out = set()
        for x in self.layers:
            if not -num_layers <= x < num_layers:
                raise ValueError(x)
            out.add(x % num_layers)
        return sorted(out)


class DesignPrecision(StrictModel):
    wbits: Bits
    abits: Bits


class DesignSchedule(StrictModel):
    """What one design runs: its arch, the default precision and the per-layer rules."""

    arch: Text  # shipped arch name or path
    precision: DesignPrecision  # every op no rule reaches (lm_head unless a rule names it)
    layer_precision: list[ScheduleRule] = Field(default_factory=list)
    source: Text  # where the choice comes from (paper + table, or "assumption: ...")


class Reference(StrictModel):
    """MicroScopiQ W4A4 accuracy on the model: the point every design must stay near."""

    design: Literal["microscopiq-v1"] = REFERENCE_DESIGN
    setting: Text = "W4A4"
    metric: Text  # e.g. "WikiText-2 perplexity (lower is better)"
    value: PosFloat | None  # null where no number is published for this model
    fp16: PosFloat | None = None  # the unquantized model, same metric
    source: Text

    def window(self, tolerance: float) -> tuple[float, float] | None:
        """(low, high) of the +-tolerance band around ``value``; None without a value."""
        if self.value is None:
            return None
        return self.value * (1 - tolerance), self.value * (1 + tolerance)


class Evidence(StrictModel):
    """One published number a choice leans on."""

    method: Text  # "MicroScopiQ", "OliVe", ...
    setting: Text  # "W2A8", "W4A4", ...
    model: Text  # the model it was measured on (may be a similar one)
    metric: Text
    value: PosFloat
    source: Text


class IsoSchedule(StrictModel):
    """Iso-accuracy precision schedules of every design for one model."""

    model: Text  # workloads/<model>.yaml
    description: str = ""
    rule: Text
    tolerance: Annotated[float, Field(gt=0, lt=1)] = 0.02
    reference: Reference
    evidence: list[Evidence] = Field(default_factory=list)
    notes: str = ""
    designs: dict[str, DesignSchedule]

    _origin: str | None = PrivateAttr(default=None)

    @property
    def origin(self) -> str | None:
        return self._origin

    @field_validator("designs")
    @classmethod
    def _known_designs(cls, designs: dict[str, DesignSchedule]) -> dict[str, DesignSchedule]:
        for key in designs:
            if key not in DESIGNS:
                raise InvalidValue("a design name (" + ", ".join(DESIGNS) + ")", loc=(key,),
                                   got=short_repr(key), hint=did_you_mean(key, DESIGNS))
        if REFERENCE_DESIGN not in designs:
            raise InvalidValue(f"a {REFERENCE_DESIGN} entry (the W4A4 reference design)",
                               got="none")
        return designs

    @model_validator(mode="after")
    def _fits_model_and_archs(self) -> "IsoSchedule":
        try:
            model = load_model(self.model)
        except ConfigError as exc:
            raise _nested(exc, ("model",), "a model that loads") from None
        for key in self.ordered():
            _check_design(key, self.designs[key], model)
        return self

    def ordered(self) -> list[str]:
        """The design keys present, in :data:`DESIGNS` order."""
        return [d for d in DESIGNS if d in self.designs]

    def window(self) -> tuple[float, float] | None:
        return self.reference.window(self.tolerance)


# --------------------------------------------------------------------------------------------
# Cross-checks against the model and the arch
# --------------------------------------------------------------------------------------------


def _nested(exc: ConfigError, loc: tuple, what: str) -> InvalidValue:
    """An error met while loading a file the schedule names, as an error at ``loc``: a name
    that resolves to nothing keeps its own words; a problem inside that file is quoted."""
    if exc.file is None:
        return InvalidValue(exc.expected, loc=loc, got=exc.got, hint=exc.hint)
    return InvalidValue(what, loc=loc, got=f"a problem in it: {exc.message}")


def _model_ops(model: ModelConfig) -> tuple[str, ...]:
    if model.architecture == "mamba":         # no attention; its GEMMs are the SSM projections
        return SSM_GEMM_OPS + OUTSIDE_OPS
    gemms = tuple(op for op in BLOCK_GEMM_OPS if model.ffn == "gated" or op != "gate_proj")
    return gemms + ATTENTION_OPS + OUTSIDE_OPS


def _mode_words(arch: ArchConfig) -> str:
    return ", ".join(f"(wbits={m.wbits}, abits={m.abits})" for m in arch.pe.modes)


def _supports(arch: ArchConfig, wbits: int, abits: int) -> bool:
    return any(m.wbits == wbits and m.abits == abits for m in arch.pe.modes)


def _check_design(key: str, design: DesignSchedule, model: ModelConfig) -> None:
    loc = ("designs", key)
    try:
        arch = load_arch(design.arch)
    except ConfigError as exc:
        raise _nested(exc, loc + ("arch",), "an arch that loads") from None
    want = DESIGN_TYPES[key]
    if arch.type != want:
        raise InvalidValue(f"an arch of type {want} for design {key}", loc=loc + ("arch",),
                           got=f"{design.arch} (type {arch.type})")

    def need(wbits: int, abits: int, where: tuple, what: str) -> None:
        if not _supports(arch, wbits, abits):
            raise InvalidValue(
                f"a precision arch {arch.name} supports for {what}: {_mode_words(arch)}",
                loc=loc + where, got=f"(wbits={wbits}, abits={abits})")

    p = design.precision
    need(p.wbits, p.abits, ("precision",), "the linear layers")
    need(p.abits, p.abits, ("precision", "abits"), "attention, which runs at (abits, abits)")

    ops = _model_ops(model)
    n = model.num_layers
    for i, rule in enumerate(design.layer_precision):
        where = ("layer_precision", i)
        for j, op in enumerate(rule.ops or ()):
            if op not in ops:
                raise InvalidValue(f"an op of model {model.name} (" + ", ".join(ops) + ")",
                                   loc=loc + where + ("ops", j), got=short_repr(op),
                                   hint=did_you_mean(op, ops))
        try:
            rule.resolved_layers(n)
        except ValueError as bad:
            raise InvalidValue(
                f"layer indices of model {model.name}: 0..{n - 1}, or -{n}..-1 from the end "
                f"(num_layers is {n})", loc=loc + where + ("layers",),
                got=short_repr(bad.args[0])) from None
        if rule.reaches_gemms():
            need(rule.wbits, rule.abits, where, "the linear layers")
        if rule.reaches_attention():
            need(rule.abits, rule.abits, where + ("abits",),
                 "attention, which runs at (abits, abits)")

    if key == REFERENCE_DESIGN:
        built = _build(model, design, n)
        for layer in range(n):
            for op in ops:
                if op in OUTSIDE_OPS:
                    continue
                wbits, abits = built.precision_for(layer, op)
                if op in ATTENTION_OPS:
                    wbits = abits
                if (wbits, abits) != (4, 4):
                    raise InvalidValue(
                        "every layer at bb = 4 with 4-bit activations (MicroScopiQ v1 is the "
                        "W4A4 reference)", loc=loc,
                        got=f"{op} of layer {layer} at (wbits={wbits}, abits={abits})")


def _rule_dicts(design: DesignSchedule, num_layers: int) -> list[dict]:
    out = []
    for rule in design.layer_precision:
        d: dict[str, Any] = {"layers": rule.resolved_layers(num_layers)}
        if rule.ops is not None:
            d["ops"] = list(rule.ops)
        d["wbits"], d["abits"] = rule.wbits, rule.abits
        out.append(d)
    return out


def _build(model: ModelConfig, design: DesignSchedule, num_layers: int) -> ModelConfig:
    data = model.model_dump()
    data["num_layers"] = num_layers
    data["precision"] = design.precision.model_dump()
    data["layer_precision"] = _rule_dicts(design, num_layers)
    return ModelConfig.model_validate(data)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def schedules_dir() -> Path:
    """``<repo>/workloads/schedules``: where shipped schedules live."""
    return data_dir("workloads") / "schedules"


_SCHEDULES = TableFolder(schedules_dir, IsoSchedule,
                         "an iso-accuracy schedule in workloads/schedules", key="schedule",
                         allow_mapping=True)


def available_schedules() -> list[str]:
    """Names of the shipped schedules (file stems in ``workloads/schedules``), sorted."""
    return _SCHEDULES.names()


def load_schedule(name_or_path: str | os.PathLike | IsoSchedule | dict,
                  overrides: Any = None) -> IsoSchedule:
    """A schedule by model name (``"llama-3-8b"`` -> ``workloads/schedules/llama-3-8b.yaml``),
    path, mapping or IsoSchedule. Bad files raise :class:`ConfigError` naming file and key."""
    return _SCHEDULES.load(name_or_path, overrides)


def _pick(schedule: IsoSchedule, designs: Iterable[str] | None) -> list[str]:
    if designs is None:
        return schedule.ordered()
    picked = []
    for d in designs:
        if d not in schedule.designs:
            raise ConfigError("a design of this schedule (" + ", ".join(schedule.ordered())
                              + ")", file=schedule.origin, key="designs", got=short_repr(d),
                              hint=did_you_mean(str(d), schedule.ordered()))
        picked.append(d)
    return picked


def _layers_for(schedule: IsoSchedule, num_layers: int | None) -> int:
    if num_layers is None:
        return load_model(schedule.model).num_layers
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
        raise ConfigError("an integer > 0", key="num_layers", got=short_repr(num_layers))
    return num_layers


def _resolved(schedule: IsoSchedule, key: str, num_layers: int) -> list[dict]:
    try:
        return _rule_dicts(schedule.designs[key], num_layers)
    except ValueError:
        rules = schedule.designs[key].layer_precision
        i = next(i for i, r in enumerate(rules) if _fails(r, num_layers))
        raise ConfigError(f"layer indices that exist in a model of {num_layers} blocks",
                          file=schedule.origin, key=f"designs.{key}.layer_precision.{i}.layers",
                          got=short_repr(rules[i].layers)) from None


def _fails(rule: ScheduleRule, num_layers: int) -> bool:
    try:
        rule.resolved_layers(num_layers)
    except ValueError:
        return True
    return False


def schedule_variants(schedule: str | os.PathLike | IsoSchedule | dict,
                      num_layers: int | None = None,
                      designs: Iterable[str] | None = None) -> list[dict]:
    """Experiment ``variants:`` entries, one per design (in :data:`DESIGNS` order)::

        {"name": "MicroScopiQ v2",
         "set": {"arch": "microscopiq-64x64",
                 "model.precision": {"wbits": 2, "abits": 4},
                 "model.layer_precision": [{"layers": [0, 1, 31], "wbits": 4, "abits": 4}, ...]}}

    Negative layer indices are resolved for a model of ``num_layers`` blocks (default: the
    schedule's model); pass the experiment's ``num_layers`` when it shrinks the model.
    ``designs`` picks some designs (default: all the schedule has)."""
    sched = load_schedule(schedule)
    n = _layers_for(sched, num_layers)
    out = []
    for key in _pick(sched, designs):
        design = sched.designs[key]
        out.append({
            "name": DESIGN_LABELS[key],
            "set": {
                "arch": design.arch,
                "model.precision": design.precision.model_dump(),
                "model.layer_precision": _resolved(sched, key, n),
            },
        })
    return out


def design_model(schedule: str | os.PathLike | IsoSchedule | dict, design: str,
                 num_layers: int | None = None) -> ModelConfig:
    """The schedule's model with ``design``'s precision and layer rules applied (and
    ``num_layers`` blocks if given): ``precision_for(layer, op)`` then says what each op runs."""
    sched = load_schedule(schedule)
    (key,) = _pick(sched, [design])
    n = _layers_for(sched, num_layers)
    model = load_model(sched.model)
    rules = _resolved(sched, key, n)
    data = model.model_dump()
    data.update(num_layers=n, precision=sched.designs[key].precision.model_dump(),
                layer_precision=rules)
    return load_model(data)
