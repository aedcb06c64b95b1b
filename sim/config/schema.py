"""Pydantic schemas for every YAML kind Strata reads.

The schemas are strict: unknown keys are errors (``extra="forbid"``), values are not coerced
from strings (``rows: "8"`` is an error, not 8), sizes are strictly positive and enumerations
are literals. Checks that involve several keys raise :class:`InvalidValue` with the key path
they are about, so that the loader can report the exact key and the file it came from.

Files are read only through :mod:`sim.config.loader`, which resolves ``extends:``, ``--set``
overrides and the ``arch:``/``model:`` references of an experiment before validation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr,
                      SerializeAsAny, field_validator, model_validator)

from .errors import ConfigError, InvalidValue, did_you_mean, short_repr

__all__ = [
    "ArchConfig",
    "ChipLinkConfig",
    "SystolicArchConfig",
    "register_arch_type",
    "arch_config_class",
    "known_arch_types",
    "FrozenList",
    "FrozenDict",
    "FrozenMapping",
    "ArrayConfig",
    "PEMode",
    "PEConfig",
    "SramConfig",
    "L2Config",
    "DramConfig",
    "MemoryConfig",
    "VectorConfig",
    "Precision",
    "LayerPrecision",
    "ModelConfig",
    "SSMConfig",
    "RunConfig",
    "OutputsConfig",
    "ExperimentConfig",
    "StrictModel",
]

# Bounds on every size read from a config. Integers stay below 2**31 (a signed 32-bit index),
# so that products of a few of them (M*K, bytes per tile, cycles) stay exact in int64; positive
# numbers must be finite and lie in [1e-9, 1e9] (a clock of 1e9 GHz or of 1 Hz, 1e9 GB/s, 1e9 KB
# lie far past any real hardware), so that conversions between cycles, seconds and bytes stay
# finite. Rates that are in range one by one but too slow together for an op are refused where
# the op is priced (sim.hw.memory_plan.check_transfer).
MAX_SIZE = 2**31 - 1
MIN_FLOAT = 1e-9
MAX_FLOAT = 1e9
PosInt = Annotated[int, Field(gt=0, le=MAX_SIZE)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_SIZE)]


def _not_tiny(x: float) -> float:
    if x < MIN_FLOAT:
        raise InvalidValue(f"a number >= {MIN_FLOAT:g} (sizes are bounded so that cycle and "
                           "byte counts stay finite)", got=short_repr(x))
    return x


PosFloat = Annotated[float, Field(gt=0, le=MAX_FLOAT, allow_inf_nan=False),
                     AfterValidator(_not_tiny)]
NonNegFloat = Annotated[float, Field(ge=0, le=MAX_FLOAT, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
Name = Annotated[str, Field(min_length=1)]
# A name that is also used as a file or folder name (experiment outputs): one safe path
# component, so that outputs stay inside the folder they are written to.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")


def _safe_file_name(v: str) -> str:
    if not _SAFE_NAME.match(v) or v in (".", ".."):
        raise InvalidValue("a file-name-safe name (letters, digits, '_', '-', '.', '+'; no '/', "
                           "not starting with '.' or '-', at most 128 characters)",
                           got=short_repr(v))
    return v
PEBits = Literal[2, 4, 8, 16]
PrecisionBits = Annotated[int, Field(ge=1, le=32)]

# Spatial fusion factors a PE array supports when one MAC takes several PEs (BitFusion-style).
FUSION_FACTORS = (2, 4, 8)


_T = TypeVar("_T")


def _as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


# A YAML list held as a tuple, so a validated config cannot be changed through it.
FrozenList = Annotated[tuple[_T, ...], BeforeValidator(_as_tuple)]


class FrozenDict(dict):
    """A dict that refuses changes (mapping fields of frozen configs)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a validated config is immutable: load a new one (overrides=...)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self):
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=repr)))


def _freeze_dict(v: Any) -> Any:
    return FrozenDict(v) if isinstance(v, dict) and not isinstance(v, FrozenDict) else v


# A mapping field held as a FrozenDict (validated as a dict, then frozen).
_K = TypeVar("_K")
_V = TypeVar("_V")
FrozenMapping = Annotated[dict[_K, _V], AfterValidator(_freeze_dict)]


class StrictModel(BaseModel):
    """Base of all config schemas: no unknown keys, no silent type coercion, and frozen: a
    validated config never changes (``--set``, ``extends:`` and ``variants:`` make new ones),
    so nothing a caller holds can change what a cache keyed on it returns."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Hashable(StrictModel):
    """A top-level config with a stable content hash (memoization and result-cache keys)."""

    # File the config was loaded from (set by the loader), for messages raised after loading.
    _origin: str | None = PrivateAttr(default=None)
    # memoized content hash (the config is frozen, so it cannot go stale)
    _content_hash: str | None = PrivateAttr(default=None)
    # key path -> the file (or --set) that wrote it, kept by the loader so that an error found
    # after validation (a buffer too small for a GEMM) can still name where the value came from
    _sources: dict | None = PrivateAttr(default=None)

    @property
    def origin(self) -> str | None:
        return self._origin

    def __eq__(self, other: object) -> bool:
        # Content equality: where a config was loaded from does not make it different.
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(self.hash())

    def canonical_json(self) -> str:
        """The config as JSON with sorted keys and no whitespace: equal configs, equal text."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """sha256 hex digest of :meth:`canonical_json`, computed once per (frozen) object, so
        a hot path may key caches on it cheaply."""
        h = self._content_hash
        if h is None:
            h = hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
            self._content_hash = h
        return h

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False):
        new = super().model_copy(update=update, deep=deep)
        new._content_hash = None   # an update changes the content
        return new


def _is_int(x: float, tol: float = 1e-9) -> bool:
    return abs(x - round(x)) <= tol * max(1.0, abs(x))


# --------------------------------------------------------------------------------------------
# Architecture (arch/*.yaml)
# --------------------------------------------------------------------------------------------


class ArrayConfig(StrictModel):
    """The physical PE array: ``rows`` x ``cols`` PEs and the dataflow they run."""

    rows: PosInt
    cols: PosInt
    dataflow: Literal["ws", "os", "is"] = "ws"


class PEMode(StrictModel):
    """One precision mode of a multi-precision PE.

    ``macs_per_cycle`` m >= 1 must be an integer: the PE has m lanes. m < 1 must be 1/q with q
    in 2, 4, 8: q neighbouring PEs of a row fuse into one logical PE that does one MAC a cycle.
    """

    wbits: PEBits
    abits: PEBits
    macs_per_cycle: PosFloat

    @field_validator("macs_per_cycle")
    @classmethod
    def _check_macs(cls, m: float) -> float:
        if m >= 1:
            if not _is_int(m):
                raise InvalidValue(
                    "an integer >= 1, or 1/2, 1/4 or 1/8 (fused PEs)", got=short_repr(m)
                )
            return float(round(m))
        q = 1.0 / m
        if not _is_int(q, 1e-6) or round(q) not in FUSION_FACTORS:
            raise InvalidValue(
                "an integer >= 1, or 1/2, 1/4 or 1/8 (0.5, 0.25, 0.125: fused PEs)",
                got=short_repr(m),
            )
        return 1.0 / round(q)

    @property
    def lanes(self) -> int:
        """p: MACs one PE does per cycle in this mode (1 when PEs are fused)."""
        return int(round(self.macs_per_cycle)) if self.macs_per_cycle >= 1 else 1

    @property
    def fusion(self) -> int:
        """q: physical PEs of a row that form one logical PE (1 when not fused)."""
        return 1 if self.macs_per_cycle >= 1 else int(round(1.0 / self.macs_per_cycle))

    @property
    def label(self) -> str:
        return f"w{self.wbits}a{self.abits}"


class PEConfig(StrictModel):
    modes: FrozenList[PEMode] = Field(min_length=1)

    @field_validator("modes")
    @classmethod
    def _unique_modes(cls, modes: tuple[PEMode, ...]) -> tuple[PEMode, ...]:
        seen: dict[tuple[int, int], int] = {}
        for i, mode in enumerate(modes):
            pair = (mode.wbits, mode.abits)
            if pair in seen:
                raise InvalidValue(
                    "each (wbits, abits) pair at most once",
                    loc=(i,),
                    got=f"(wbits={mode.wbits}, abits={mode.abits}) again",
                    hint=f"first given as modes.{seen[pair]}",
                )
            seen[pair] = i
        return modes


class SramConfig(StrictModel):
    """On-chip buffers next to the array, each double-buffered (each half usable by one tile)."""

    ifmap_kb: PosFloat
    weight_kb: PosFloat
    ofmap_kb: PosFloat
    bytes_per_cycle: PosFloat


class L2Config(StrictModel):
    size_kb: PosFloat
    bytes_per_cycle: PosFloat
    latency_cycles: NonNegInt


class DramConfig(StrictModel):
    kind: Literal["hbm2", "hbm3", "ddr4", "ddr5", "lpddr5"]
    bandwidth_gbps: PosFloat  # GB/s
    latency_ns: NonNegFloat


class MemoryConfig(StrictModel):
    sram: SramConfig
    l2: L2Config
    dram: DramConfig


class VectorConfig(StrictModel):
    """Element-wise unit beside the array (softmax, norms, activations)."""

    lanes: PosInt


class ChipLinkConfig(StrictModel):
    """The link between chips of one tensor-parallel group (``tp`` > 1 in ``simulate_step``):
    bandwidth one chip sends at in one direction, and the latency of one ring hop."""

    bandwidth_gbps: PosFloat  # GB/s per direction per chip
    latency_ns: NonNegFloat
    pj_per_bit: NonNegFloat = 0.0  # link energy per bit sent (0: not modelled)


class ArchConfig(_Hashable):
    """An accelerator (arch/*.yaml): only what every accelerator type has.

    The keys a type adds (an array, a ReCoN section, a CiM macro...) live in the config
    subclass the type registers (:func:`register_arch_type`, done by
    :func:`sim.hw.registry.register`). Validating an ``ArchConfig`` dispatches on ``type:``
    to that subclass, so the schema is a discriminated union assembled from the registry at
    validation time; a type registered from outside the package (a test module, a plugin)
    loads like a built-in one. A missing ``type`` means ``systolic``.
    """

    name: Name
    description: str = ""
    kind: Literal["accelerator"] = "accelerator"
    type: Name = "systolic"  # accelerator model (sim.hw.registry)
    clock_ghz: PosFloat
    technology: Name  # arch/tech/<technology>.yaml, e.g. "7nm"
    chip_link: ChipLinkConfig | None = None  # needed for tensor parallelism (tp > 1)

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch_on_type(cls, data: Any, handler: Any) -> Any:
        if cls is not ArchConfig or not isinstance(data, Mapping):
            return handler(data)
        kind = data.get("type", "systolic")
        sub = arch_config_class(kind) if isinstance(kind, str) else None
        if sub is None:
            if not isinstance(kind, str):
                raise InvalidValue("an accelerator type name (a string)", loc=("type",),
                                   got=short_repr(kind))
            known = known_arch_types()
            raise InvalidValue("a registered accelerator type (" + ", ".join(known) + ")",
                               loc=("type",), got=short_repr(kind),
                               hint=did_you_mean(kind, known))
        return sub.model_validate(_drop_foreign_nulls(dict(data), sub))

    @classmethod
    def config_class_for(cls, data: Any) -> type:
        """The registered subclass that validates ``data`` (for key checks on raw data)."""
        if cls is ArchConfig and isinstance(data, Mapping):
            kind = data.get("type", "systolic")
            sub = arch_config_class(kind) if isinstance(kind, str) else None
            return sub or cls
        return cls


# Accelerator types -> their config subclass. Filled by sim.hw.registry.register (hw is a
# higher layer: it installs a finder that imports the module of a built-in type on demand,
# so this layer never imports hw and never lists the types).
_ARCH_TYPES: dict[str, type] = {}
_TECH_SECTIONS: dict[str, tuple[str, ...]] = {}   # type -> technology-table sections it reads
# the hooks set_type_finder installs: find_one(name) -> None (imports a built-in type),
# list_builtin() -> names, builtin_tech_sections() -> {section: types}
_TYPE_FINDER: dict[str, Any] = {}


def register_arch_type(name: str, config_cls: type, tech_sections: Any = ()) -> None:
    """Make ``type: name`` validate with ``config_cls`` (a subclass of ArchConfig);
    ``tech_sections`` names the technology-table sections the type reads."""
    if not (isinstance(config_cls, type) and issubclass(config_cls, ArchConfig)):
        raise TypeError(f"accelerator type {name!r}: its config must subclass ArchConfig")
    if "type" not in config_cls.model_fields:
        raise TypeError(f"accelerator type {name!r}: config class lost the 'type' field")
    _ARCH_TYPES[name] = config_cls
    _TECH_SECTIONS[name] = tuple(tech_sections)


def known_tech_sections() -> dict[str, tuple[str, ...]]:
    """Technology-table section name -> the types that read it: the registered ones and the
    built-in ones (declared by their modules, which need not be imported for this)."""
    out: dict[str, set[str]] = {}
    if _TYPE_FINDER:
        for n, kinds in _TYPE_FINDER["builtin_tech_sections"]().items():
            out.setdefault(n, set()).update(kinds)
    for kind, names in _TECH_SECTIONS.items():
        for n in names:
            out.setdefault(n, set()).add(kind)
    return {n: tuple(sorted(k)) for n, k in out.items()}


def set_type_finder(find_one, list_builtin, builtin_tech_sections) -> None:
    """Install the hooks that find built-in types (called by sim.hw.registry)."""
    _TYPE_FINDER.update(find_one=find_one, list_builtin=list_builtin,
                        builtin_tech_sections=builtin_tech_sections)


def arch_config_class(name: str) -> type | None:
    if name not in _ARCH_TYPES and _TYPE_FINDER:
        _TYPE_FINDER["find_one"](name)
    return _ARCH_TYPES.get(name)


def known_arch_types() -> list[str]:
    if _TYPE_FINDER:
        for name in _TYPE_FINDER["list_builtin"]():
            arch_config_class(name)
    return sorted(_ARCH_TYPES)


def _drop_foreign_nulls(data: dict, sub: type) -> dict:
    """``recon: null`` on a type without a recon section means "no such section": drop null
    values of keys that only other registered types have (a typo stays an error)."""
    nulls = [k for k, v in data.items() if v is None and k not in sub.model_fields]
    if nulls:
        known_arch_types()
        foreign = {f for c in _ARCH_TYPES.values() for f in c.model_fields}
        for k in nulls:
            if k in foreign:
                del data[k]
    return data


class SystolicArchConfig(ArchConfig):
    """A PE-array accelerator (``type: systolic`` and the types built on it)."""

    array: ArrayConfig
    pe: PEConfig
    memory: MemoryConfig
    vector: VectorConfig
    # the precision the array is built for: runs fall back to it when a model's precision has
    # no PE mode (with a note); unset: the first pe.modes entry
    native_precision: Precision | None = None

    @model_validator(mode="after")
    def _native_is_a_mode(self) -> "SystolicArchConfig":
        n = self.native_precision
        if n is not None and not any(m.wbits == n.wbits and m.abits == n.abits
                                     for m in self.pe.modes):
            modes = ", ".join(f"(wbits={m.wbits}, abits={m.abits})" for m in self.pe.modes)
            raise InvalidValue(f"one of the pe.modes precisions: {modes}",
                               loc=("native_precision",),
                               got=f"(wbits={n.wbits}, abits={n.abits})")
        return self

    @model_validator(mode="after")
    def _fusion_fits_array(self) -> "SystolicArchConfig":
        for i, m in enumerate(self.pe.modes):
            if m.fusion > self.array.cols:
                raise InvalidValue(
                    f"a mode whose {m.fusion} fused PEs fit in a row of {self.array.cols} "
                    f"(array.cols >= 1/macs_per_cycle)",
                    loc=("pe", "modes", i, "macs_per_cycle"), got=str(m.macs_per_cycle))
        return self

    def mode(self, wbits: int, abits: int) -> PEMode:
        """The PE mode for this (wbits, abits) pair; ConfigError listing the supported ones."""
        for m in self.pe.modes:
            if m.wbits == wbits and m.abits == abits:
                return m
        supported = ", ".join(f"(wbits={m.wbits}, abits={m.abits})" for m in self.pe.modes)
        raise ConfigError(
            f"a precision this PE array supports: {supported}",
            file=self._origin,
            key="pe.modes",
            got=f"(wbits={wbits}, abits={abits})",
        )


# --------------------------------------------------------------------------------------------
# Model (workloads/*.yaml)
# --------------------------------------------------------------------------------------------


class Precision(StrictModel):
    wbits: PrecisionBits
    abits: PrecisionBits


SystolicArchConfig.model_rebuild()   # native_precision names Precision, defined just above


PRECISION_FORMS = "a precision such as 'w4a8', [4, 8] or {wbits: 4, abits: 8} (bits 1..32)"
_PRECISION_TEXT = re.compile(r"^\s*[wW](\d+)\s*[aA](\d+)\s*$")


def precision_fields(v: Any) -> Any:
    """``'w4a8'``, ``(4, 8)``/``[4, 8]``, ``{wbits, abits}`` or a Precision -> a mapping (or the
    Precision) the Precision schema validates; InvalidValue for any other form."""
    if isinstance(v, (Precision, dict)):
        return v
    if isinstance(v, str):
        m = _PRECISION_TEXT.match(v)
        if m:
            return {"wbits": int(m.group(1)), "abits": int(m.group(2))}
    elif isinstance(v, (tuple, list)) and len(v) == 2:
        wbits, abits = v
        return {"wbits": wbits, "abits": abits}
    raise InvalidValue(PRECISION_FORMS, got=short_repr(v))


_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_LAYERS_EXPECTED = "'all', a range 'a-b' or a list of layer indices"


def parse_layer_spec(v: Any, negative: bool = False,
                     expected: str = _LAYERS_EXPECTED) -> Any:
    """Normalize a ``layers:`` value: 'all', a range 'a-b' (kept as text) or a non-empty list of
    layer indices (negative ones, counting from the last block, only when ``negative``)."""
    if isinstance(v, bool):
        raise InvalidValue(expected, got=short_repr(v))
    if isinstance(v, int):
        v = [v]
    if isinstance(v, str):
        if v.strip() == "all":
            return "all"
        m = _RANGE.match(v)
        if not m:
            raise InvalidValue(expected, got=short_repr(v))
        a, b = int(m.group(1)), int(m.group(2))
        if a > b:
            raise InvalidValue("a range 'a-b' with a <= b", got=short_repr(v))
        return f"{a}-{b}"
    if isinstance(v, list):
        if not v:
            raise InvalidValue(expected, got="an empty list")
        for i, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, int) or (x < 0 and not negative):
                what = ("a layer index (an integer; -1 is the last block)" if negative
                        else "a layer index (integer >= 0)")
                raise InvalidValue(what, loc=(i,), got=short_repr(x))
        return v
    raise InvalidValue(expected, got=short_repr(v))


class LayerPrecision(StrictModel):
    """Precision of some layers (and optionally only some ops): later rules win."""

    layers: FrozenList[int] | str = "all"
    ops: FrozenList[Name] | None = Field(default=None, min_length=1)
    wbits: PrecisionBits
    abits: PrecisionBits

    @field_validator("layers", mode="before")
    @classmethod
    def _parse_layers(cls, v: Any) -> Any:
        return parse_layer_spec(v)

    def indices(self, num_layers: int) -> list[int]:
        """The layer indices the rule names (not checked against ``num_layers`` here)."""
        if self.layers == "all":
            return list(range(num_layers))
        if isinstance(self.layers, str):
            a, b = (int(x) for x in self.layers.split("-"))
            return list(range(a, b + 1))
        return list(self.layers)

    def applies(self, layer: int, op: str, num_layers: int) -> bool:
        if self.ops is not None and op not in self.ops:
            return False
        return layer in self.indices(num_layers)


#: Op names of a transformer's graphs, in block order.
TRANSFORMER_OP_NAMES = (
    "embed",
    "norm_attn", "q_proj", "k_proj", "v_proj", "qk", "softmax", "av", "o_proj", "residual_attn",
    "norm_ffn", "gate_proj", "up_proj", "act", "down_proj", "residual_ffn",
    "final_norm", "lm_head",
)
#: Op names of a Mamba (selective state-space) model's graphs, in block order.
MAMBA_OP_NAMES = (
    "embed",
    "norm", "in_proj", "state_load", "conv1d", "x_proj", "dt_proj", "scan", "state_store",
    "out_proj", "residual",
    "final_norm", "lm_head",
)
#: The weight GEMMs of a Mamba block (what N:M schedules and outlier profiles name for it).
SSM_GEMM_OPS = ("in_proj", "x_proj", "dt_proj", "out_proj")
#: Every op name a model's operator graph can carry (sim.workload.graph.OPS is the same list;
#: a test keeps the two equal).
OP_NAMES = TRANSFORMER_OP_NAMES[:-2] + MAMBA_OP_NAMES[1:]

#: The model families a ``workloads/*.yaml`` file may describe (key ``architecture``).
ARCHITECTURES = ("transformer", "mamba")
#: Keys only a transformer has: a Mamba file that sets one is refused rather than ignored.
TRANSFORMER_KEYS = ("num_heads", "num_kv_heads", "head_dim", "intermediate_size", "ffn",
                    "qkv_bias", "position_embedding")
#: Keys a transformer file must give (before the family key existed they were all required).
_TRANSFORMER_REQUIRED = ("num_heads", "num_kv_heads", "intermediate_size", "ffn")


class SSMConfig(StrictModel):
    """The selective state-space mixer of a Mamba block (``ssm:`` of a mamba model), in the
    names of the reference implementation (state-spaces/mamba, ``Mamba`` in mamba_simple.py).

    ``d_inner = expand * hidden_size``; ``dt_rank: auto`` is ``ceil(hidden_size / 16)``, as the
    reference computes it. Biases as in the reference: the depthwise conv1d and dt_proj have
    one, in_proj / x_proj / out_proj have none (``proj_bias: true`` gives in/out_proj one).
    ``state_bits``: storage width of the recurrent state (conv window and SSM state) between
    steps; the reference allocates its inference cache in the model's dtype (fp16/bf16)."""

    d_state: PosInt
    d_conv: PosInt
    expand: PosInt
    dt_rank: PosInt | Literal["auto"] = "auto"
    conv_bias: bool = True
    dt_bias: bool = True
    proj_bias: bool = False
    state_bits: PrecisionBits = 16

    @field_validator("dt_rank", mode="before")
    @classmethod
    def _rank_or_auto(cls, v: Any) -> Any:
        # one message for the union (pydantic would report each branch at its own key)
        if v == "auto" and isinstance(v, str) or type(v) is int and 0 < v <= MAX_SIZE:
            return v
        raise InvalidValue("an integer > 0 or 'auto' (ceil(hidden_size / 16))",
                           got=short_repr(v))

    def d_inner(self, hidden_size: int) -> int:
        return self.expand * hidden_size

    def rank(self, hidden_size: int) -> int:
        """dt_rank, with ``auto`` resolved to ``ceil(hidden_size / 16)``."""
        return -(-hidden_size // 16) if self.dt_rank == "auto" else self.dt_rank

    def gemm_shapes(self, hidden_size: int) -> dict[str, tuple[int, int]]:
        """``[K, N]`` (in, out features) of the block's weight GEMMs, in block order."""
        d, r = self.d_inner(hidden_size), self.rank(hidden_size)
        return {"in_proj": (hidden_size, 2 * d), "x_proj": (d, r + 2 * self.d_state),
                "dt_proj": (r, d), "out_proj": (d, hidden_size)}


class ModelConfig(_Hashable):
    """A model's shapes (workloads/*.yaml): a decoder-only transformer (the default) or, with
    ``architecture: mamba``, a Mamba selective state-space model (its mixer under ``ssm:``).

    The transformer keys (:data:`TRANSFORMER_KEYS`) are required of a transformer, as they were
    before the family key existed, and refused in a mamba file; ``ssm`` the other way round.
    They are held as None where the family has none, so a mamba model never carries heads."""

    name: Name
    description: str = ""
    source: Name  # where the numbers come from, e.g. an HF config.json
    architecture: Literal["transformer", "mamba"] = "transformer"
    hidden_size: PosInt
    num_layers: PosInt
    num_heads: PosInt | None = None           # transformer (required there)
    num_kv_heads: PosInt | None = None        # transformer (required there)
    head_dim: PosInt | None = None  # default hidden_size // num_heads
    intermediate_size: PosInt | None = None   # transformer (required there)
    # gated: gate+up+down (SwiGLU/GeGLU); plain: up+down (transformer, required there)
    ffn: Literal["gated", "plain"] | None = None
    ssm: SSMConfig | None = None              # mamba (required there)
    tie_embeddings: bool = False  # lm_head shares the embedding matrix (counted once)
    outlier_profile: Name | None = None  # workloads/outliers/<name>.yaml (outlier-aware archs)
    # fraction of input channels (PE rows) that hold all of an op's outlier micro-blocks;
    # unset: the profile's measured row-tile fractions (see sim.hw.accelerator.WeightOutliers)
    outlier_channel_share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None
    # learned: max_position x hidden table (transformer; default rope)
    position_embedding: Literal["rope", "learned"] | None = None
    vocab_size: PosInt
    max_position: PosInt
    norm: Literal["rmsnorm", "layernorm"]
    qkv_bias: bool | None = None   # transformer (default False)
    precision: Precision = Field(default_factory=lambda: Precision(wbits=8, abits=8))
    layer_precision: FrozenList[LayerPrecision] = Field(default_factory=tuple)

    @model_validator(mode="before")
    @classmethod
    def _default_head_dim(cls, data: Any) -> Any:
        # head_dim defaults to hidden_size // num_heads; filled in before validation, since a
        # validated (frozen) config is never changed. Bad or missing sizes are left for the
        # field checks; a head count that does not divide is reported below.
        if not isinstance(data, Mapping) or data.get("architecture", "transformer") != \
                "transformer":
            return data
        # a transformer's defaults, filled in here so that they stay None in a mamba model
        data = {**data, **{k: v for k, v in (("position_embedding", "rope"),
                                             ("qkv_bias", False)) if k not in data}}
        if data.get("head_dim") is None:
            h, n = data.get("hidden_size"), data.get("num_heads")
            if (type(h) is int and type(n) is int and n > 0 and h > 0 and h % n == 0):
                data = {**data, "head_dim": h // n}
        return data

    def _check_family(self) -> None:
        """The keys of the other family are errors, not silently ignored (one line each)."""
        if self.architecture == "transformer":
            for k in _TRANSFORMER_REQUIRED:
                if getattr(self, k) is None:
                    raise InvalidValue("a value (this key is required)", loc=(k,))
            if self.ssm is not None:
                raise InvalidValue("no ssm section in a transformer (set architecture: mamba "
                                   "for a state-space model)", loc=("ssm",), got="a section")
            return
        for k in TRANSFORMER_KEYS:
            if getattr(self, k) is not None:
                raise InvalidValue(f"no {k} in a {self.architecture} model (a transformer key; "
                                   f"the state-space mixer is described under ssm)", loc=(k,),
                                   got=short_repr(getattr(self, k)))
        if self.ssm is None:
            raise InvalidValue("a value (architecture: mamba requires an ssm section: "
                               "d_state, d_conv, expand[, dt_rank])", loc=("ssm",))

    @model_validator(mode="after")
    def _check_shapes(self) -> "ModelConfig":
        self._check_family()
        if self.architecture == "transformer" and self.num_heads % self.num_kv_heads:
            raise InvalidValue(
                f"a divisor of num_heads ({self.num_heads})",
                loc=("num_kv_heads",),
                got=str(self.num_kv_heads),
            )
        if self.architecture == "transformer" and self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise InvalidValue(
                    f"a value: hidden_size {self.hidden_size} is not a multiple of "
                    f"num_heads {self.num_heads}, so head_dim must be given",
                    loc=("head_dim",),
                )
        names = self.op_names()
        for i, rule in enumerate(self.layer_precision):
            for j, op in enumerate(rule.ops or ()):
                if op not in names:
                    raise InvalidValue(f"an op name of this model ({', '.join(names)})",
                                       loc=("layer_precision", i, "ops", j), got=repr(op),
                                       hint=did_you_mean(op, names))
            bad = [x for x in rule.indices(self.num_layers) if x >= self.num_layers]
            if bad:
                raise InvalidValue(
                    f"layer indices in 0..{self.num_layers - 1} (num_layers is {self.num_layers})",
                    loc=("layer_precision", i, "layers"),
                    got=short_repr(rule.layers),
                )
        return self

    def canonical_json(self) -> str:
        # a transformer's text (and so its content hash, the key of every cache and result
        # store) is what it was before the family key existed: its family keys are dropped
        data = self.model_dump(mode="json")
        if data.get("architecture") == "transformer" and data.get("ssm") is None:
            del data["architecture"], data["ssm"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def op_names(self) -> tuple[str, ...]:
        """The op names this model's graphs carry (``layer_precision.ops`` picks among them)."""
        if self.architecture == "mamba":
            return MAMBA_OP_NAMES
        return tuple(op for op in TRANSFORMER_OP_NAMES
                     if not (op == "gate_proj" and self.ffn == "plain"))

    def precision_for(self, layer: int, op: str) -> tuple[int, int]:
        """(wbits, abits) of ``op`` in ``layer``: the last matching layer_precision rule, else
        the model-wide precision. Layer -1 holds the ops outside the decoder blocks (embed,
        final_norm, lm_head): a rule reaches them only when its ``ops`` list names them."""
        if layer == -1:
            wbits, abits = self.precision.wbits, self.precision.abits
            for rule in self.layer_precision:
                if rule.ops is not None and op in rule.ops:
                    wbits, abits = rule.wbits, rule.abits
            return wbits, abits
        if not 0 <= layer < self.num_layers:
            raise ConfigError(
                f"a layer index in 0..{self.num_layers - 1} (or -1 outside the blocks)", file=self._origin, key="layer",
                got=repr(layer),
            )
        wbits, abits = self.precision.wbits, self.precision.abits
        for rule in self.layer_precision:
            if rule.applies(layer, op, self.num_layers):
                wbits, abits = rule.wbits, rule.abits
        return wbits, abits


# --------------------------------------------------------------------------------------------
# Experiment (experiments/*.yaml)
# --------------------------------------------------------------------------------------------


class RunConfig(StrictModel):
    """One measurement: a prefill pass, ``steps`` decode steps, or a mixed chunk."""

    name: Name
    phase: Literal["prefill", "decode", "mixed"]
    batch: PosInt = 1
    seq_len: PosInt | None = None  # prefill tokens per sequence (prefill, mixed)
    context: NonNegInt | None = None  # KV context length (decode, mixed)
    steps: PosInt = 1  # decode: consecutive steps, context grows by 1 each
    decode_batch: NonNegInt = 0  # mixed: decode sequences sharing the chunk
    precision: Precision | None = None  # replaces the model's precision ('w4a8', [4, 8], {...})

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_forms(cls, v: Any) -> Any:
        return None if v is None else precision_fields(v)

    @model_validator(mode="after")
    def _phase_needs(self) -> "RunConfig":
        # keys that a phase does not read are errors rather than silently ignored
        unused = []
        if self.phase == "decode" and self.seq_len is not None:
            unused.append(("seq_len", self.seq_len, "a decode step runs one new token per "
                           "sequence; use batch and context"))
        if self.phase != "decode" and self.steps != 1:
            unused.append(("steps", self.steps, "only a decode run chains steps"))
        if self.phase != "mixed" and self.decode_batch != 0:
            unused.append(("decode_batch", self.decode_batch, "only a mixed run has decode "
                           "sequences beside its prefill chunk"))
        for key, value, why in unused:
            raise InvalidValue(f"no {key} for a {self.phase} run ({why})", loc=(key,),
                               got=short_repr(value))
        if self.phase in ("prefill", "mixed") and self.seq_len is None:
            raise InvalidValue(
                f"an integer > 0 (a {self.phase} run needs seq_len, the prefill tokens per "
                "sequence)",
                loc=("seq_len",),
            )
        if self.phase in ("decode", "mixed") and self.context is None:
            raise InvalidValue(
                f"an integer >= 0 (a {self.phase} run needs context, the KV context length)",
                loc=("context",),
            )
        return self


def run_positions(phase: str, seq_len: int | None, context: int | None, steps: int) -> tuple:
    """(key, positions): the largest token position a run reaches and the key that sets it."""
    ctx = context or 0
    if phase == "decode":
        return ("context", ctx + steps)
    return ("seq_len", ctx + (seq_len or 0))


def check_positions(model: "ModelConfig", phase: str, seq_len, context, steps,
                    loc: tuple = ()) -> None:
    """A run may not reach past the model's ``max_position`` (its context window)."""
    key, n = run_positions(phase, seq_len, context, steps)
    if n > model.max_position:
        what = {"decode": "context + steps", "prefill": "context + seq_len",
                "mixed": "context + seq_len"}[phase]
        raise InvalidValue(f"{what} <= the model's max_position ({model.max_position} tokens "
                           f"for {model.name})", loc=loc + (key,), got=str(n))


class OutputsConfig(StrictModel):
    plots: FrozenList[Name] = Field(default_factory=lambda: ("breakdown",))
    trace: bool = False


class VariantConfig(StrictModel):
    """One design point of an experiment: the base config with these keys changed
    (dotted keys, as with ``--set``: ``{arch.recon.units: 2}``)."""

    name: Name
    set: Annotated[dict[Name, Any], AfterValidator(_freeze_dict)] = Field(
        default_factory=FrozenDict)


class ExperimentConfig(_Hashable):
    """A scenario: an arch, a model and the runs to measure (experiments/*.yaml).

    In YAML, ``arch`` and ``model`` are a shipped name, a path or an inline mapping (which may
    use ``extends:``); the loader resolves them, so here they are validated configs.
    """

    # Fields that name another config file: field -> data kind used to resolve names.
    config_refs: ClassVar[dict[str, str]] = {"arch": "arch", "model": "workloads"}

    name: Name
    description: str = ""
    seed: Seed = 0
    arch: SerializeAsAny[ArchConfig]  # validated as the subclass its type registered
    model: ModelConfig
    runs: FrozenList[RunConfig] = Field(min_length=1)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    variants: FrozenList[VariantConfig] = Field(default_factory=tuple)  # design points to compare
    compress: bool = True   # False: simulate repeated tiles and folds in full (a check)
    # The design-space block that `strata sweep` reads (sim.dse.spec); `strata run` runs the
    # base experiment. Left out of dumps and of the content hash: a point is its resolved keys.
    sweep: FrozenMapping[str, Any] | None = Field(default=None, exclude=True)

    @field_validator("arch", mode="before")
    @classmethod
    def _arch_by_name(cls, v: Any) -> Any:
        if isinstance(v, str):  # built directly, not through the loader
            from .loader import load_arch

            try:
                return load_arch(v)
            except ConfigError as exc:
                exc.key = exc.key or "arch"
                raise
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _model_by_name(cls, v: Any) -> Any:
        if isinstance(v, str):
            from .loader import load_model

            try:
                return load_model(v)
            except ConfigError as exc:
                exc.key = exc.key or "model"
                raise
        return v

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, v: str) -> str:
        return _safe_file_name(v)   # results/<name>/ and <name>_<plot>.png are paths

    @model_validator(mode="after")
    def _runs_fit_the_model(self) -> "ExperimentConfig":
        for i, run in enumerate(self.runs):
            check_positions(self.model, run.phase, run.seq_len, run.context, run.steps,
                            loc=("runs", i))
        return self

    @field_validator("outputs")
    @classmethod
    def _unique_plots(cls, outputs: "OutputsConfig") -> "OutputsConfig":
        seen: dict[str, int] = {}
        for i, name in enumerate(outputs.plots):
            if name in seen:
                raise InvalidValue("a plot name listed once", loc=("plots", i), got=repr(name),
                                   hint=f"also outputs.plots.{seen[name]}")
            seen[name] = i
        return outputs

    @field_validator("runs")
    @classmethod
    def _unique_run_names(cls, runs: tuple[RunConfig, ...]) -> tuple[RunConfig, ...]:
        seen: dict[str, int] = {}
        for i, run in enumerate(runs):
            if run.name in seen:
                raise InvalidValue(
                    "a run name used once", loc=(i, "name"), got=repr(run.name),
                    hint=f"also the name of runs.{seen[run.name]}",
                )
            seen[run.name] = i
        return runs

    @field_validator("variants")
    @classmethod
    def _unique_variant_names(cls, variants: tuple[VariantConfig, ...]
                              ) -> tuple[VariantConfig, ...]:
        seen: dict[str, int] = {}
        for i, v in enumerate(variants):
            if v.name in seen:
                raise InvalidValue("a variant name used once", loc=(i, "name"),
                                   got=repr(v.name),
                                   hint=f"also the name of variants.{seen[v.name]}")
            if any(k == "variants" or k.startswith("variants.") for k in v.set):
                raise InvalidValue("keys outside variants", loc=(i, "set"), got="variants")
            seen[v.name] = i
        return variants
