"""Per-operator precision: the model default plus ``layer_precision`` overrides.

The rules live in :meth:`ModelConfig.precision_for` (the last matching rule wins); this module
memoizes them per graph build. The ops outside the blocks (``embed``, ``final_norm``, ``lm_head``; layer -1
in the graph) have no layer index a rule could name, so a rule reaches them only when its
``ops`` list names them explicitly, whatever its ``layers``::

    layer_precision:
      - {layers: all, wbits: 4, abits: 8}                  # every block op; lm_head stays default
      - {layers: all, ops: [lm_head], wbits: 8, abits: 16}  # the logits GEMM

Attention ops (``qk``, ``av``) read the KV cache, which is stored at activation precision, so the
graph builder records ``wbits = abits`` for them.
"""

from __future__ import annotations

from typing import Callable

from sim.config.schema import ModelConfig

PrecisionLookup = Callable[[int, str], "tuple[int, int]"]


def lookup_fn(model: ModelConfig) -> PrecisionLookup:
    """A memoized ``(layer, op) -> (wbits, abits)`` for one graph build (blocks repeat ops)."""
    cache: dict[tuple[int, str], tuple[int, int]] = {}

    def lookup(layer: int, op: str) -> tuple[int, int]:
        key = (layer, op)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = model.precision_for(layer, op)
        return hit
    return lookup


# ------------------------------------------------------------- choosing a run's precision ----
# A caller (``simulate_model``/``simulate_step``'s ``precision=``, an experiment run's
# ``precision:`` key) may replace the model-wide precision; ``layer_precision`` rules still
# apply on top. When the model's own precision is one the arch cannot run, the run falls back
# to the arch's native precision and says so in one line: a ``PrecisionFallback`` warning
# (``warnings.warn``), also kept in ``StepResult.notes``. A precision the caller asked for, or
# one a ``layer_precision`` rule names, is never replaced: the error names that argument or
# rule (``layer_precision.1`` in the model file), not the arch's ``pe.modes``.

import warnings

from sim.config.errors import ConfigError, InvalidValue, short_repr
from sim.config.schema import PRECISION_FORMS, Precision, precision_fields


class PrecisionFallback(UserWarning):
    """The model's precision is not supported by the arch; its native precision was used."""


def parse_precision(value, *, file: str = "<simulate_model>", key: str = "precision"):
    """``None`` or a ``(wbits, abits)`` pair from ``'w4a8'``, ``(4, 8)``, ``{wbits, abits}`` or a
    :class:`Precision`; one-line ConfigError naming ``key`` otherwise."""
    if value is None:
        return None
    try:
        fields = precision_fields(value)
        if isinstance(fields, dict):
            if set(fields) != {"wbits", "abits"}:
                raise InvalidValue(PRECISION_FORMS, got=short_repr(value))
            fields = Precision.model_validate(fields)
    except InvalidValue as exc:
        raise ConfigError(exc.expected, file=file, key=key, got=exc.got) from None
    except ValueError:      # pydantic: bits not integers in 1..32
        raise ConfigError(PRECISION_FORMS, file=file, key=key, got=short_repr(value)) from None
    return (fields.wbits, fields.abits)


def native_precision(accel) -> tuple[int, int]:
    """The precision an accelerator runs natively: the first of its ``native_precisions()``
    (a systolic arch's ``native_precision`` key, else its first ``pe.modes`` entry)."""
    return tuple(accel.native_precisions()[0])


def supports(accel, wbits: int, abits: int) -> bool:
    """Whether the accelerator computes (wbits, abits) natively."""
    return (wbits, abits) in accel.native_precisions()


def _pair_text(w: int, a: int) -> str:
    return f"(wbits={w}, abits={a})"     # the wording of ArchConfig.mode's error


def _modes_text(accel) -> str:
    return ", ".join(_pair_text(w, a) for w, a in accel.native_precisions())


def _needed_pairs(model):
    """(layer, op, (wbits, abits) the PE array must run, index of the deciding rule or None)
    for every GEMM and attention op of the model; attention reads the KV cache at abits."""
    from sim.workload.graph import ATTENTION_OPS, GEMM_OPS, block_ops
    block = [op for op in block_ops(model) if op in GEMM_OPS or op in ATTENTION_OPS]
    n = model.num_layers
    for layer in list(range(n)) + [-1]:
        for op in (block if layer >= 0 else ["lm_head"]):
            rule = None
            for i, r in enumerate(model.layer_precision):
                hit = (r.ops is not None and op in r.ops) if layer < 0 else r.applies(layer, op, n)
                if hit:
                    rule = i
            w, a = model.precision_for(layer, op)
            yield layer, op, ((a, a) if op in ATTENTION_OPS else (w, a)), rule


def _with_precision(model, wbits: int, abits: int):
    from sim.config.loader import load_model     # a fresh, validated config (its own hash)
    return load_model(model, overrides=[("precision.wbits", wbits), ("precision.abits", abits)])


def resolve_precision(accel, model, precision=None, *, file: str = "<simulate_model>",
                      key: str = "precision", warn: bool = True, stacklevel: int = 3):
    """(the model config to run, notes): ``precision`` (any form :func:`parse_precision` takes)
    replaces the model-wide precision; the result is checked against the arch's PE modes.

    * a ``layer_precision`` rule the arch cannot run -> ConfigError at that rule of the model;
    * a caller's ``precision`` the arch cannot run -> ConfigError naming ``key`` in ``file``;
    * the model's own precision the arch cannot run -> the arch's native precision, with a
      one-line note (returned, and warned as :class:`PrecisionFallback` when ``warn``)."""
    asked = parse_precision(precision, file=file, key=key)
    run_model = model
    if asked is not None and asked != (model.precision.wbits, model.precision.abits):
        run_model = _with_precision(model, *asked)
    notes: tuple[str, ...] = ()
    for attempt in ("as given", "native"):
        bad = next(((layer, op, pair, rule) for layer, op, pair, rule in _needed_pairs(run_model)
                    if not supports(accel, *pair)), None)
        if bad is None:
            return run_model, notes
        layer, op, (w, a), rule = bad
        where = f"{op} in layer {layer}" if layer >= 0 else op
        expected = f"a precision arch {accel.arch.name!r} supports: {_modes_text(accel)}"
        why = f"{_pair_text(w, a)} for {where}" + (" (attention reads the KV cache at abits)"
                                          if op in ("qk", "av") else "")
        if rule is not None:
            raise ConfigError(expected, file=model.origin, key=f"layer_precision.{rule}", got=why)
        if asked is not None:
            raise ConfigError(expected, file=file, key=key, got=why)
        if attempt == "native":
            raise ConfigError(f"a PE mode for every op at the arch's native precision "
                              f"{_pair_text(*notes_pair)}", file=accel.arch.origin,
                              key="pe.modes", got=why)
        notes_pair = native_precision(accel)
        mp = (model.precision.wbits, model.precision.abits)
        note = (f"model {model.name!r}: precision {_pair_text(*mp)} is not supported by arch "
                f"{accel.arch.name!r}; running at its native precision {_pair_text(*notes_pair)}")
        notes = (note,)
        if warn:
            warnings.warn(note, PrecisionFallback, stacklevel=stacklevel)
        run_model = _with_precision(model, *notes_pair)
    raise AssertionError("unreachable")
