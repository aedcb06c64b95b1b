"""The MicroScopiQ paper's baseline accelerators, built from the same parts as everything else.

Each baseline is the plain systolic accelerator (same array timing, memory tiles, SRAM/L2/DRAM,
energy ledger) with its own PE modes (the arch file's ``pe.modes``) and the differences its
arch file's ``baseline`` section describes. All of those differences go through the three
hooks of :class:`~sim.hw.accelerator.SystolicAccelerator` and its area/leakage reports, and all
of them live in :class:`BaselineAccelerator`; the registered classes only name a design and
document it:

* **PE.** ``baseline.pe.area_um2`` pins one PE's area to a published figure (else the
  technology table's PE at the modes' datapath width, times ``area_scale``). A PE whose MAC
  costs more than the table's integer MAC of the same operand widths (a floating-point
  datapath) has ``energy_scale`` > 1: the difference is charged as
  ``pe_array / mac_datapath_extra`` on top of the plain MAC entry.
* **Units** beside the array (decoders, fusion logic): area and leakage each; a decoder
  (``decodes`` + ``bits``) costs ``pj_per_value`` for every operand of its width that enters the
  array. Values entering the array per sub-GEMM, from the fold mapping: weights K*N (WS), K*N
  per row fold (OS), K*N per column fold (IS); activations M*K per column fold (WS, OS), M*K (IS).
* **Outlier path** (GOBO, OLAccel): outlier weights (``frac_weights`` of the weight matrix) are
  stored sparsely, ``value_bits`` + ``index_bits`` each, beside the dense ``wbits`` inlier
  matrix (whose slot at an outlier holds a zero and still streams through its PE), so a weight
  costs ``wbits + frac_weights * (value_bits + index_bits)`` bits in memory unless the arch pins
  ``stored_bits``. The outlier MACs are computed by ``pes`` outlier PEs of ``macs_per_cycle``
  each, **pooled** over the whole array and perfectly balanced (an optimistic assumption: the
  cheapest the outlier path can be). They work while the fold streams its T elements, so a
  fold whose outlier MACs (``frac_weights`` of its MACs) need more than T cycles of the pool
  stretches by the difference::

      extra_f = max(0, ceil(frac_weights * macs_f / (pes * macs_per_cycle)) - T)

  and the whole array waits (the systolic wavefront cannot run ahead of the merge of the
  outlier partial sums). Outlier MACs cost ``mac_pj`` each (default: the technology table's
  integer MAC at ``(value_bits, abits)``), charged to ``pe_array / outlier_mac``.

Weight GEMMs receive their ``WeightOutliers`` from the model's outlier profile only for the
designs with an outlier path (``uses_outlier_profile``); attention GEMMs (activations times the
KV cache) carry none and run as on the plain array. The designs that encode outliers in place
or not at all (OliVe, ANT, AdaptivFloat) ignore outlier statistics: same cycles, same bytes.

Every number in a shipped ``arch/<design>-64x64.yaml`` states its source or says
"assumption" beside it.
"""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..config.errors import InvalidValue, short_repr
from ..config.schema import (FrozenList, FrozenMapping, Name, NonNegFloat, NonNegInt, PEBits,
                             PosFloat, PosInt, StrictModel, SystolicArchConfig)
from ..core import EnergyLedger
from .accelerator import GemmOperands, SystolicAccelerator, WeightOutliers
from .registry import register

# the types this module registers (read by sim.hw.registry without importing the module)
ACCELERATOR_TYPES = ("olive", "ant", "gobo", "olaccel", "adaptivfloat")


# --------------------------------------------------------------------------------------------
# The ``baseline`` section of the arch file
# --------------------------------------------------------------------------------------------

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
    decodes: FrozenList[Literal["weights", "activations"]] = Field(default_factory=tuple)
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
    stored_bits: FrozenMapping[PEBits, PosFloat] | None = None


class BaselineSection(StrictModel):
    """The ``baseline`` section of the in-place types (olive, ant, adaptivfloat)."""

    pe: BaselinePEConfig = Field(default_factory=BaselinePEConfig)
    units: FrozenList[BaselineUnitConfig] = Field(default_factory=tuple)
    control_area_um2: PosFloat | None = None  # default: the tech table's controller

    @field_validator("units")
    @classmethod
    def _unit_names(cls, units: tuple[BaselineUnitConfig, ...]) -> tuple[BaselineUnitConfig, ...]:
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


class OutlierPathSection(BaselineSection):
    """The ``baseline`` section of the types with an outlier datapath (gobo, olaccel)."""

    outlier_path: OutlierPathConfig  # type: ignore[assignment]


class BaselineArchConfig(SystolicArchConfig):
    """A baseline accelerator: the systolic array plus its ``baseline`` section."""

    baseline: BaselineSection


class OutlierPathArchConfig(SystolicArchConfig):
    """A baseline with a separate outlier datapath (``baseline.outlier_path`` required)."""

    baseline: OutlierPathSection



class BaselineAccelerator(SystolicAccelerator):
    """A systolic accelerator with a ``baseline`` section (see the module docstring)."""

    config_class = BaselineArchConfig

    def __init__(self, arch, tech=None):
        super().__init__(arch, tech)
        self.spec = arch.baseline
        self.outlier_path = getattr(self.spec, "outlier_path", None)   # gobo, olaccel
        self._decoders = [u for u in self.spec.units if u.decodes]

    # ------------------------------------------------------------------ storage ----
    def stored_weight_bits(self, wbits: int, outliers: WeightOutliers | None) -> float:
        path = self.outlier_path
        if path is None or outliers is None:
            return wbits               # in-place formats: the weight's own bits
        if path.stored_bits and wbits in path.stored_bits:
            return path.stored_bits[wbits]
        return wbits + outliers.frac_weights * (path.value_bits + path.index_bits)

    # ------------------------------------------------------------------- timing ----
    def fold_extra_cycles(self, gemm: GemmOperands, timing, outliers: WeightOutliers | None,
                          seed):
        mp = timing.mapping
        counters = self._decode_counts(gemm, timing)
        extra = None
        path = self.outlier_path
        if path is not None and outliers is not None and outliers.frac_weights > 0:
            f = np.arange(mp.folds)
            rows = np.where(f % mp.fold_rows == mp.fold_rows - 1, mp.last_rows, mp.rows)
            cap = mp.logical_cols * (mp.lanes if mp.dataflow in ("ws", "os") else 1)
            elems = np.where(f // mp.fold_rows == mp.fold_cols - 1,
                             mp.Sc - (mp.fold_cols - 1) * cap, cap)
            # a fold's share of the sub-GEMM's MACs is its share of the (Sr x Sc) tile area
            outlier_macs = outliers.frac_weights * timing.macs * (rows * elems) / (mp.Sr * mp.Sc)
            service = np.ceil(outlier_macs / (path.pes * path.macs_per_cycle) - 1e-9)
            extra = np.maximum(service.astype(np.int64) - mp.T, 0)
            counters["outlier_macs"] = int(round(outliers.frac_weights * timing.macs))
            counters["outlier_stall_cycles"] = int(extra.sum())
        if extra is None and counters:
            extra = np.zeros(mp.folds, dtype=np.int64)
        return extra, counters

    def _decode_counts(self, gemm: GemmOperands, timing) -> dict:
        """Operands each decoder decodes on their way into the array (this sub-GEMM)."""
        if not self._decoders:
            return {}
        mp = timing.mapping
        wbits, abits = gemm.wbits, gemm.abits
        if mp.dataflow == "ws":        # Sr = K, Sc = N, T = M
            weights, acts = mp.Sr * mp.Sc, mp.T * mp.Sr * mp.fold_cols
        elif mp.dataflow == "os":      # Sr = M, Sc = N, T = K
            weights, acts = mp.T * mp.Sc * mp.fold_rows, mp.Sr * mp.T * mp.fold_cols
        else:                          # is: Sr = K, Sc = M, N = macs / (K * M)
            weights = timing.macs // mp.Sc * mp.fold_cols
            acts = mp.Sr * mp.Sc
        counts = {}
        for unit in self._decoders:
            n = 0
            if "weights" in unit.decodes and unit.bits == wbits:
                n += weights
            if "activations" in unit.decodes and unit.bits == abits:
                n += acts
            counts[f"{unit.name}_decodes"] = int(n)
        return counts

    # ------------------------------------------------------------------- energy ----
    def extra_energy(self, gemm: GemmOperands, ledger: EnergyLedger, counters: dict,
                     cols: int) -> None:
        wbits, abits = gemm.wbits, gemm.abits
        scale = self.spec.pe.energy_scale
        if scale > 1:
            ledger.add("pe_array", "mac_datapath_extra", gemm.M * gemm.K * gemm.N,
                       self.tech.mac_pj(wbits, abits, gemm.macs_per_cycle) * (scale - 1))
        for unit in self._decoders:
            ledger.add("pe_array", f"{unit.name}_decode",
                       counters.get(f"{unit.name}_decodes", 0), unit.pj_per_value)
        if self.outlier_path is not None:
            ledger.add("pe_array", "outlier_mac", counters.get("outlier_macs", 0),
                       self.outlier_mac_pj(abits))

    def outlier_mac_pj(self, abits: int) -> float:
        path = self.outlier_path
        if path.mac_pj is not None:
            return path.mac_pj
        return self.tech.mac_pj(path.value_bits, abits, path.macs_per_cycle)

    # --------------------------------------------------------------------- area ----
    @property
    def pe_area(self) -> float:
        """Area of one array PE (um^2)."""
        pe = self.spec.pe
        if pe.area_um2 is not None:
            return pe.area_um2
        return self.tech.pe_area_um2(self.pe_width) * pe.area_scale

    @property
    def outlier_pe_area(self) -> float:
        """Area of one outlier PE (um^2): pinned, or the tech PE at value_bits x widest abits."""
        path = self.outlier_path
        if path.area_um2 is not None:
            return path.area_um2
        abits = max(m.abits for m in self.arch.pe.modes)
        return self.tech.pe_area_um2(path.value_bits * abits * path.macs_per_cycle)

    def area_um2(self) -> dict:
        area = super().area_um2()
        area["pe_array"] = self.arch.array.rows * self.arch.array.cols * self.pe_area
        if self.spec.control_area_um2 is not None:
            area["control"] = self.spec.control_area_um2
        for unit in self.spec.units:
            area[unit.name] = unit.count * unit.area_um2
        if self.outlier_path is not None:
            area["outlier_pes"] = self.outlier_path.pes * self.outlier_pe_area
        return area

    def leakage_uw(self) -> dict:
        """Logic leaks in proportion to its area (the tech table's density), for the design's
        own PEs and every extra unit; memories as on the plain array."""
        leak = super().leakage_uw()
        area = self.area_um2()
        density = self.tech.logic_leakage_uw_per_um2
        leak["pe_array"] = area["pe_array"] * density
        for name in [u.name for u in self.spec.units] + (
                ["outlier_pes"] if self.outlier_path is not None else []):
            leak[name] = area[name] * density
        return leak


class OutlierPathAccelerator(BaselineAccelerator):
    """A baseline whose outlier weights take a separate datapath (needs outlier statistics)."""

    config_class = OutlierPathArchConfig
    capabilities = frozenset({"outlier_profile"})


@register("olive")
class OliVeAccelerator(BaselineAccelerator):
    """OliVe (Guo et al., ISCA'23): outlier-victim pairs encoded in place.

    An outlier and its neighbour (the victim, pruned to zero) share one aligned pair of 4-bit
    (or 8-bit) slots, so the weight tensor stays dense at ``wbits`` bits (EBW = weight bits) and
    outliers cost no cycles. Decoders at the array edge turn each OVP-encoded operand (weights
    and activations; OliVe quantizes both) into an exponent-integer pair for the 4-bit PEs,
    which fuse BitFusion-style (4 PEs per 8-bit MAC). Areas are MicroScopiQ's Table 5 at 7 nm
    (base PE, multi-precision logic per 4 PEs, 4-bit and 8-bit decoders, control); decoder
    energy per value is an assumption scaled from the base PE's energy per area. See
    ``arch/olive-64x64.yaml``.
    """


@register("ant")
class ANTAccelerator(BaselineAccelerator):
    """ANT (Guo et al., MICRO'22): adaptive numerical types (int / flint / PoT per tensor).

    4-bit PEs fuse BitFusion-style for 8-bit operands (w4a4 1, w4a8 0.5, w8a8 0.25 MAC/PE/cycle:
    the ANT simulator's throughput ``(pmax / prec)^2`` with pmax 8, pmin 4). The type is per
    tensor, so weights stay at ``wbits`` bits (EBW = weight bits) and outliers are simply
    clipped by the type (no outlier handling). A small decoder at the array edge maps each
    typed operand to the PE's integer-exponent form. PE, fusion and decoder areas are taken
    equal to OliVe's Table 5 figures (OliVe is ANT plus the outlier-victim decoding, so this
    slightly overstates ANT). See ``arch/ant-64x64.yaml``.
    """


@register("adaptivfloat")
class AdaptivFloatAccelerator(BaselineAccelerator):
    """AdaptivFloat (Tambe et al., DAC'20): 8-bit floating-point PEs with a per-tensor exponent
    bias, no precision scaling (every mode 1 MAC/PE/cycle), weights stored at ``wbits`` bits.
    The float datapath (significand multiply, exponent add, alignment shift into a wider
    integer accumulator) makes the PE larger and costlier than an INT8 PE: ``area_scale`` and
    ``energy_scale`` on the technology table's INT8 PE, documented in
    ``arch/adaptivfloat-64x64.yaml``.
    """


@register("gobo")
class GOBOAccelerator(OutlierPathAccelerator):
    """GOBO (Zadeh et al., MICRO'20): inlier weights as low-bit indices into a per-layer
    table of FP32 centroids, outliers kept in FP32 in a sparse list.

    Group PEs accumulate each activation into the bin its weight index selects (one weight a
    cycle, an FP32 add: ``energy_scale`` on the integer MAC); the few centroid multiplies per
    output are neglected. 64 FP32 outlier PEs (Table 5) compute the outlier weights; a fold
    stalls when its outlier MACs exceed what they absorb while the fold streams. Memory:
    ``wbits`` per index plus ``value_bits + index_bits`` per outlier (or the pinned
    ``stored_bits``; the centroid table, 2^wbits FP32 values per layer, is neglected). Areas
    are Table 5 at 7 nm. See ``arch/gobo-64x64.yaml`` for the EBW reading.
    """


@register("olaccel")
class OLAccelAccelerator(OutlierPathAccelerator):
    """OLAccel (Park et al., ISCA'18): dense 4-bit inlier MACs plus 16-bit outlier MACs.

    Inlier PEs are 4-bit and fuse for 8-bit operands like ANT's (the ANT simulator gives
    OLAccel the same 8/4 precision pair). Outlier weights (16-bit) are stored sparsely with a
    position index and computed by the outlier MACs that OLAccel attaches to every group of
    SIMD lanes (one per 16 PEs here); a fold stalls when they cannot keep up. Activation
    outliers are not modelled (the outlier profiles describe weights only). See
    ``arch/olaccel-64x64.yaml``.
    """


__all__ = ["BaselineArchConfig", "OutlierPathArchConfig", "BaselineSection",
           "OutlierPathSection", "BaselinePEConfig", "BaselineUnitConfig", "OutlierPathConfig",
           "BaselineAccelerator", "OutlierPathAccelerator", "OliVeAccelerator",
           "ANTAccelerator", "AdaptivFloatAccelerator", "GOBOAccelerator", "OLAccelAccelerator"]
