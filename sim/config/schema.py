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
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .errors import ConfigError, InvalidValue, did_you_mean, short_repr

__all__ = [
    "ArchConfig",
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


class StrictModel(BaseModel):
    """Base of all config schemas: no unknown keys, no silent type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Hashable(StrictModel):
    """A top-level config with a stable content hash (memoization and result-cache keys)."""

    # File the config was loaded from (set by the loader), for messages raised after loading.
    _origin: str | None = PrivateAttr(default=None)
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

    __hash__ = None  # mutable; use .hash() for a content key

    def canonical_json(self) -> str:
        """The config as JSON with sorted keys and no whitespace: equal configs, equal text."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """sha256 hex digest of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


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
    modes: list[PEMode] = Field(min_length=1)

    @field_validator("modes")
    @classmethod
    def _unique_modes(cls, modes: list[PEMode]) -> list[PEMode]:
        seen: dict[tuple[int, int], int] = {}
        for i, mode in enumerate(modes):
            pair = (mode.wbits, mode.abits)
            if pair in seen:
                raise InvalidValue(
                    "each (wbits, abits) pair at most once",
                    loc=(i,),
                    got=f"(wbits={pair[0]}, abits={pair[1]}) again",
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


class ReconArchConfig(StrictModel):
    """MicroScopiQ's ReCoN: ``units`` networks, each serving an equal group of PE rows.

    ``throttle`` is how the controller delays each row's feed behind the outlier rows above it
    (see sim.hw.recon_stream): ``per_fold`` uses each fold's own outlier rows, so a fold with
    fewer of them high up waits for the previous fold's slower tail (throttle bubbles);
    ``union`` uses, for every fold of a GEMM, every row any of its folds routes to ReCoN, so
    folds follow each other without bubbles at the price of a longer fixed latency (and a
    psum delay line per row, whose area is not counted)."""

    units: Literal[1, 2, 4, 8] = 1
    throttle: Literal["per_fold", "union"] = "per_fold"


class MXArchConfig(StrictModel):
    """How a MicroScopiQ weight tensor is stored (micro-block metadata for DRAM traffic)."""

    micro_block: PosInt = 8
    macro_block: PosInt = 128
    perm_bits: PosInt = 24       # permutation list per micro-block with outliers
    osf_bits: PosInt = 8         # outlier scale per micro-block with outliers


# Accelerator types built by sim.hw.baselines: they need a ``baseline`` section, and those
# with a separate outlier datapath need its ``outlier_path`` part.
BASELINE_TYPES = ("olive", "ant", "gobo", "olaccel", "adaptivfloat")
OUTLIER_PATH_TYPES = ("gobo", "olaccel")
# Area keys the accelerator itself reports; a baseline unit may not reuse them.
_RESERVED_AREA_KEYS = ("pe_array", "sram", "l2", "vector", "control", "recon", "outlier_pes")


class BaselinePEConfig(StrictModel):
    """How a baseline's PE differs from the technology table's integer PE of the same width."""

    area_um2: PosFloat | None = None  # pinned area of one PE (a published figure)
    area_scale: PosFloat = 1.0  # else: tech PE area at the modes' width x this
    energy_scale: Annotated[float, Field(ge=1)] = 1.0  # MAC energy vs the tech integer MAC

    @model_validator(mode="after")
    def _one_area_rule(self) -> "BaselinePEConfig":
        if self.area_um2 is not None and self.area_scale != 1.0:
            raise InvalidValue("either area_um2 (a pinned PE area) or area_scale, not both",
                               loc=("area_scale",), got=short_repr(self.area_scale))
        return self


class BaselineUnitConfig(StrictModel):
    """``count`` identical units beside the PE array (area, leakage); a decoder also costs
    ``pj_per_value`` for every operand of width ``bits`` it decodes on its way into the array."""

    name: Name  # area key, e.g. decoder_4b
    count: PosInt
    area_um2: PosFloat  # one unit, at the arch's technology node
    bits: PEBits | None = None  # a decoder: the operand width it decodes
    decodes: list[Literal["weights", "activations"]] = Field(default_factory=list)
    pj_per_value: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _decoder_needs_bits(self) -> "BaselineUnitConfig":
        if self.decodes and self.bits is None:
            raise InvalidValue("the operand width (2, 4, 8 or 16) a decoding unit decodes",
                               loc=("bits",), got="nothing")
        return self


class OutlierPathConfig(StrictModel):
    """A separate datapath for outlier weights (GOBO, OLAccel): ``pes`` outlier PEs shared by
    the array; outliers are stored sparsely (value + position) beside the dense inliers."""

    pes: PosInt
    macs_per_cycle: PosFloat = 1.0  # per outlier PE
    value_bits: PosInt  # bits of one outlier weight, in memory and in the outlier PE
    index_bits: NonNegInt  # position bits stored with each outlier
    area_um2: PosFloat | None = None  # one outlier PE; default: tech PE at value_bits x abits
    mac_pj: PosFloat | None = None  # one outlier MAC; default: tech MAC at (value_bits, abits)
    # pinned weight footprint (bits per weight) by weight precision, for weight GEMMs with an
    # outlier profile; default: wbits + frac_weights * (value_bits + index_bits)
    stored_bits: dict[PEBits, PosFloat] | None = None


class BaselineArchConfig(StrictModel):
    """Parameters of a baseline accelerator (types olive, ant, gobo, olaccel, adaptivfloat)."""

    pe: BaselinePEConfig = Field(default_factory=BaselinePEConfig)
    units: list[BaselineUnitConfig] = Field(default_factory=list)
    control_area_um2: PosFloat | None = None  # default: the tech table's controller
    outlier_path: OutlierPathConfig | None = None  # types gobo and olaccel only

    @field_validator("units")
    @classmethod
    def _unit_names(cls, units: list[BaselineUnitConfig]) -> list[BaselineUnitConfig]:
        seen: dict[str, int] = {}
        for i, u in enumerate(units):
            if u.name in _RESERVED_AREA_KEYS:
                raise InvalidValue("a unit name other than " + ", ".join(_RESERVED_AREA_KEYS),
                                   loc=(i, "name"), got=repr(u.name))
            if u.name in seen:
                raise InvalidValue("a unit name used once", loc=(i, "name"), got=repr(u.name),
                                   hint=f"also the name of units.{seen[u.name]}")
            seen[u.name] = i
        return units


class ArchConfig(_Hashable):
    """An accelerator (arch/*.yaml)."""

    name: Name
    description: str = ""
    kind: Literal["accelerator"] = "accelerator"
    type: Literal["systolic", "microscopiq", "olive", "ant", "gobo", "olaccel",
                  "adaptivfloat"] = "systolic"  # accelerator model (sim.hw.registry)
    clock_ghz: PosFloat
    technology: Name  # arch/tech/<technology>.yaml, e.g. "7nm"
    array: ArrayConfig
    pe: PEConfig
    memory: MemoryConfig
    vector: VectorConfig
    recon: ReconArchConfig | None = None  # type microscopiq only
    mx: MXArchConfig | None = None  # type microscopiq only (defaults filled in)
    baseline: BaselineArchConfig | None = None  # the baseline types only (BASELINE_TYPES)

    @model_validator(mode="after")
    def _microscopiq_parts(self) -> "ArchConfig":
        if self.type == "microscopiq":
            if self.array.dataflow != "ws":
                raise InvalidValue("ws (MicroScopiQ is a weight-stationary design)",
                                   loc=("array", "dataflow"), got=self.array.dataflow)
            if self.recon is None:
                raise InvalidValue("a recon section (units: 1, 2, 4 or 8) for type microscopiq",
                                   loc=("recon",), got="nothing")
            if self.array.rows % self.recon.units:
                raise InvalidValue(f"a number of ReCoN units that divides array.rows "
                                   f"({self.array.rows})", loc=("recon", "units"),
                                   got=str(self.recon.units))
            if self.mx is None:
                self.mx = MXArchConfig()
        else:
            for part in ("recon", "mx"):
                if getattr(self, part) is not None:
                    raise InvalidValue("no such section for this type (only type microscopiq "
                                       "has it)", loc=(part,), got=f"type {self.type}")
        return self

    @model_validator(mode="after")
    def _baseline_parts(self) -> "ArchConfig":
        if self.type not in BASELINE_TYPES:
            if self.baseline is not None:
                raise InvalidValue("no such section for this type (only types "
                                   + ", ".join(BASELINE_TYPES) + " have it)",
                                   loc=("baseline",), got=f"type {self.type}")
            return self
        if self.baseline is None:
            raise InvalidValue(f"a baseline section (PE, units, outlier path) for type "
                               f"{self.type}", loc=("baseline",), got="nothing")
        path = self.baseline.outlier_path
        if self.type in OUTLIER_PATH_TYPES and path is None:
            raise InvalidValue(f"an outlier_path section (pes, value_bits, index_bits, ...) for "
                               f"type {self.type}", loc=("baseline", "outlier_path"),
                               got="nothing")
        if self.type not in OUTLIER_PATH_TYPES and path is not None:
            raise InvalidValue("no outlier_path for this type (only types "
                               + ", ".join(OUTLIER_PATH_TYPES) + " have one)",
                               loc=("baseline", "outlier_path"), got=f"type {self.type}")
        return self

    @model_validator(mode="after")
    def _fusion_fits_array(self) -> "ArchConfig":
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

    layers: list[int] | str = "all"
    ops: list[Name] | None = Field(default=None, min_length=1)
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


#: Every op name a model's operator graph can carry, in block order (sim.workload.graph.OPS
#: is the same list; a test keeps the two equal).
OP_NAMES = (
    "embed",
    "norm_attn", "q_proj", "k_proj", "v_proj", "qk", "softmax", "av", "o_proj", "residual_attn",
    "norm_ffn", "gate_proj", "up_proj", "act", "down_proj", "residual_ffn",
    "final_norm", "lm_head",
)


class ModelConfig(_Hashable):
    """A transformer model's shapes (workloads/*.yaml)."""

    name: Name
    description: str = ""
    source: Name  # where the numbers come from, e.g. an HF config.json
    hidden_size: PosInt
    num_layers: PosInt
    num_heads: PosInt
    num_kv_heads: PosInt
    head_dim: PosInt | None = None  # default hidden_size // num_heads
    intermediate_size: PosInt
    ffn: Literal["gated", "plain"]  # gated: gate+up+down (SwiGLU/GeGLU); plain: up+down
    tie_embeddings: bool = False  # lm_head shares the embedding matrix (counted once)
    outlier_profile: Name | None = None  # workloads/outliers/<name>.yaml (outlier-aware archs)
    # fraction of input channels (PE rows) that hold all of an op's outlier micro-blocks;
    # unset: the profile's measured row-tile fractions (see sim.hw.accelerator.WeightOutliers)
    outlier_channel_share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None
    position_embedding: Literal["rope", "learned"] = "rope"  # learned: max_position x hidden table
    vocab_size: PosInt
    max_position: PosInt
    norm: Literal["rmsnorm", "layernorm"]
    qkv_bias: bool = False
    precision: Precision = Field(default_factory=lambda: Precision(wbits=8, abits=8))
    layer_precision: list[LayerPrecision] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_shapes(self) -> "ModelConfig":
        if self.num_heads % self.num_kv_heads:
            raise InvalidValue(
                f"a divisor of num_heads ({self.num_heads})",
                loc=("num_kv_heads",),
                got=str(self.num_kv_heads),
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise InvalidValue(
                    f"a value: hidden_size {self.hidden_size} is not a multiple of "
                    f"num_heads {self.num_heads}, so head_dim must be given",
                    loc=("head_dim",),
                )
            self.head_dim = self.hidden_size // self.num_heads
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

    def op_names(self) -> tuple[str, ...]:
        """The op names this model's graphs carry (``layer_precision.ops`` picks among them)."""
        return tuple(op for op in OP_NAMES if not (op == "gate_proj" and self.ffn == "plain"))

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
    plots: list[Name] = Field(default_factory=lambda: ["breakdown"])
    trace: bool = False


class VariantConfig(StrictModel):
    """One design point of an experiment: the base config with these keys changed
    (dotted keys, as with ``--set``: ``{arch.recon.units: 2}``)."""

    name: Name
    set: dict[Name, Any] = Field(default_factory=dict)


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
    arch: ArchConfig
    model: ModelConfig
    runs: list[RunConfig] = Field(min_length=1)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    variants: list[VariantConfig] = Field(default_factory=list)  # design points to compare

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
    def _unique_run_names(cls, runs: list[RunConfig]) -> list[RunConfig]:
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
    def _unique_variant_names(cls, variants: list[VariantConfig]) -> list[VariantConfig]:
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
