"""Technology tables: per-action energies, areas and leakage of one process node.

A table lives in ``arch/tech/<node>.yaml`` (``7nm``, ``28nm``, ``45nm`` ship with Strata) and is
read through :func:`load_tech`, which uses the common loader (so ``extends:`` works and every
error is a :class:`ConfigError` naming the file and key). An arch file picks its table with
``technology: 7nm``.

Units: energy in pJ, area in um^2, leakage power in uW, sizes in KB (1 KB = 1024 bytes).

The first-order models behind the accessors (coefficients come from the YAML):

* MAC energy per multiply-accumulate at (wbits, abits) on a PE doing ``m`` MACs a cycle::

      mac_pj = per_bitproduct_pj * wbits * abits + accumulate_pj + operand_pj / m

  An array multiplier of w x a bits is a grid of w*a partial-product cells (AND gate + full
  adder), so its switched capacitance, and thus its energy, grows with the product of the
  widths: Horowitz's 45 nm figures give 0.2 pJ / 64 = 3.1 fJ per bit-product for an 8b x 8b
  multiply and 3.1 pJ / 1024 = 3.0 fJ for 32b x 32b, the same constant. The accumulator add
  and the partial-sum register are paid once per MAC whatever the operand widths
  (``accumulate_pj``). The activation/weight registers and forwarding wires are paid once per
  PE per cycle and are shared by the m lanes of a multi-lane PE (top-down precision scaling,
  several weights sharing one activation), hence ``operand_pj / m``; when q = 1/m PEs fuse
  into one MAC, each of the q PEs pays its own, which the same expression gives.

* PE area and leakage as a function of the datapath width, ``width`` = max over the PE's
  modes of ``wbits * abits * macs_per_cycle`` (bit-products per cycle)::

      pe_area_um2 = fixed_area_um2 + area_per_bitproduct_um2 * width
      pe_leakage_uw = pe_area_um2 * logic_leakage_uw_per_um2

* SRAM energy per byte grows with the macro size as a power law around a reference size
  (longer word/bit lines and a deeper decoder for a bigger array)::

      read_pj_per_byte(size) = read_pj_per_byte_at_ref * (size / ref_kb) ** size_exponent

  and SRAM area is bit-cell area over array efficiency (the periphery share).
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Annotated, Any, Iterable

import hashlib
import json

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from .errors import ConfigError, InvalidValue, did_you_mean, short_repr
from .loader import TableFolder, data_dir, load_validated
from .schema import (FrozenList, FrozenMapping, NonNegFloat, PosFloat, StrictModel,
                     known_tech_sections)

__all__ = ["TechTable", "MacEnergy", "PeArea", "SramModel", "NocModel", "VectorUnit",
           "load_tech", "available_nodes", "tech_dir", "pe_width"]

# Energies, areas, leakage and sizes are the bounded, finite numbers of every config
# (sim.config.schema: PosFloat in [1e-9, 1e9], NonNegFloat in [0, 1e9], no inf or nan), so a
# table cannot make an energy or an area infinite or absurd.
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Exponent = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Text = Annotated[str, Field(min_length=1)]


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def pe_width(modes: Iterable[Any]) -> float:
    """Bit-products per cycle of a PE datapath: max over modes of wbits * abits * macs_per_cycle.

    ``modes`` holds objects with ``wbits``, ``abits`` and ``macs_per_cycle`` attributes
    (``sim.config.PEMode``) or ``(wbits, abits, macs_per_cycle)`` tuples.
    """
    widths = []
    for mode in modes:
        if isinstance(mode, tuple):
            w, a, m = mode
        else:
            w, a, m = mode.wbits, mode.abits, mode.macs_per_cycle
        widths.append(_positive(w, "wbits") * _positive(a, "abits") * _positive(m, "macs_per_cycle"))
    if not widths:
        raise ValueError("pe_width needs at least one PE mode")
    return max(widths)


# --------------------------------------------------------------------------------------------
# Sections of a table
# --------------------------------------------------------------------------------------------

_FROZEN = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Section(StrictModel):
    model_config = _FROZEN


class MacEnergy(_Section):
    per_bitproduct_pj: PosFloat  # multiplier energy per partial-product bit (w*a of them per MAC)
    accumulate_pj: PosFloat  # accumulator add + partial-sum register, once per MAC
    operand_pj: NonNegFloat  # operand registers/forwarding, once per PE per cycle (shared by lanes)


class PeArea(_Section):
    fixed_area_um2: PosFloat  # registers, accumulator, control of one PE
    area_per_bitproduct_um2: PosFloat  # multiplier area per bit-product per cycle


class SramModel(_Section):
    ref_kb: PosFloat  # size at which the per-byte energies below hold
    read_pj_per_byte_at_ref: PosFloat
    write_pj_per_byte_at_ref: PosFloat
    size_exponent: Exponent  # energy/byte ~ (size/ref)^exponent
    cell_um2: PosFloat  # 6T bit-cell area
    array_efficiency: Fraction  # cell area / macro area
    leakage_uw_per_um2: NonNegFloat

    def _size(self, size_kb: float) -> float:
        return _positive(size_kb, "SRAM size_kb")

    def read_pj_per_byte(self, size_kb: float) -> float:
        return self.read_pj_per_byte_at_ref * (self._size(size_kb) / self.ref_kb) ** self.size_exponent

    def write_pj_per_byte(self, size_kb: float) -> float:
        return self.write_pj_per_byte_at_ref * (self._size(size_kb) / self.ref_kb) ** self.size_exponent

    def area_um2(self, size_kb: float) -> float:
        bits = self._size(size_kb) * 1024 * 8
        return bits * self.cell_um2 / self.array_efficiency

    def leakage_uw(self, size_kb: float) -> float:
        return self.area_um2(size_kb) * self.leakage_uw_per_um2


class NocModel(_Section):
    wire_pj_per_bit_mm: PosFloat  # on-chip wire energy at this node's supply
    distance_mm: PosFloat  # typical global-buffer -> array-edge distance

    @property
    def pj_per_byte(self) -> float:
        return 8.0 * self.wire_pj_per_bit_mm * self.distance_mm


class VectorUnit(_Section):
    pj_per_op: PosFloat  # one 16-bit element-wise op (multiply-add class)
    lane_area_um2: PosFloat


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


class TechTable(StrictModel):
    """One technology node: energies (pJ), areas (um^2), leakage (uW).

    The sections below are common to every accelerator. A table may carry further sections,
    one per accelerator type that needs its own figures (``recon:`` for MicroScopiQ): each is
    a mapping whose name some registered type declares (checked on load, with a did-you-mean
    hint), and whose content is validated by :meth:`section` when an accelerator of that type
    is built, so only the types that use a section require it.

    Frozen: tables are cached and shared by every arch that names the node; :meth:`hash` is
    the table's content hash (part of every accelerator cache key).
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    node: Text  # "7nm"
    sources: FrozenList[Text] = Field(min_length=1)
    scaling: Text  # how the numbers were derived from the sources
    feature_nm: PosFloat
    vdd: PosFloat  # nominal supply the energies assume (V)
    mac: MacEnergy
    pe: PeArea
    logic_leakage_uw_per_um2: NonNegFloat
    controller_area_um2: PosFloat
    sram: SramModel  # array-side buffers (ifmap/weight/ofmap)
    l2: SramModel  # global buffer
    dram: FrozenMapping[Text, PosFloat] = Field(min_length=1)  # DRAM kind -> pJ per bit moved
    noc: NocModel
    vector: VectorUnit

    # File the table was loaded from (set by the loader), for messages raised after loading.
    _origin: str | None = PrivateAttr(default=None)
    _content_hash: str | None = PrivateAttr(default=None)
    _sections: dict = PrivateAttr(default_factory=dict)

    @property
    def origin(self) -> str | None:
        return self._origin

    @model_validator(mode="after")
    def _type_sections_are_known(self) -> "TechTable":
        extra = self.__pydantic_extra__ or {}
        if not extra:
            return self
        known = known_tech_sections()
        for name, value in extra.items():
            if name not in known:
                names = sorted(set(type(self).model_fields) | set(known))
                raise InvalidValue(
                    "a known key of the top level (" + ", ".join(names) + "; type sections: "
                    + (", ".join(sorted(known)) or "none registered") + ")",
                    loc=(name,), got=short_repr(name), hint=did_you_mean(name, names))
            if not isinstance(value, dict):
                raise InvalidValue(f"a mapping (the {name} section of accelerator type(s) "
                                   + ", ".join(known[name]) + ")", loc=(name,),
                                   got=short_repr(value))
        return self

    def hash(self) -> str:
        """sha256 of the table's content (sorted JSON), computed once per (frozen) table."""
        if self._content_hash is None:
            text = json.dumps(self.model_dump(mode="json"), sort_keys=True,
                              separators=(",", ":"))
            self._content_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self._content_hash

    def section(self, name: str, schema: type) -> Any:
        """The type-specific section ``name`` validated with ``schema`` (a pydantic model);
        a missing or bad section is a one-line ConfigError naming this table's file and the
        key. Validated once per table."""
        got = self._sections.get(name)
        if got is not None and type(got) is schema:
            return got
        raw = (self.__pydantic_extra__ or {}).get(name)
        if raw is None:
            raise ConfigError(f"a {name} section ({', '.join(schema.model_fields)}): an "
                              f"accelerator of this type needs it", file=self._origin,
                              key=name, got="nothing")
        try:
            got = load_validated(dict(raw), schema)
        except ConfigError as exc:
            raise ConfigError(exc.expected, file=self._origin,
                              key=name + (f".{exc.key}" if exc.key else ""), got=exc.got,
                              hint=exc.hint) from None
        self._sections[name] = got
        return got

    # -- PE array ------------------------------------------------------------------------------

    def mac_pj(self, wbits: int, abits: int, macs_per_cycle: float = 1.0) -> float:
        """Energy of one MAC at (wbits, abits) on a PE doing ``macs_per_cycle`` MACs a cycle."""
        w = _positive(wbits, "wbits")
        a = _positive(abits, "abits")
        m = _positive(macs_per_cycle, "macs_per_cycle")
        return self.mac.per_bitproduct_pj * w * a + self.mac.accumulate_pj + self.mac.operand_pj / m

    def pe_area_um2(self, width: float) -> float:
        """Area of one PE whose datapath does ``width`` bit-products a cycle (see pe_width)."""
        return self.pe.fixed_area_um2 + self.pe.area_per_bitproduct_um2 * _positive(width, "PE width")

    def pe_leakage_uw(self, width: float) -> float:
        return self.pe_area_um2(width) * self.logic_leakage_uw_per_um2

    # -- on-chip memories ----------------------------------------------------------------------

    def sram_read_pj_per_byte(self, size_kb: float) -> float:
        return self.sram.read_pj_per_byte(size_kb)

    def sram_write_pj_per_byte(self, size_kb: float) -> float:
        return self.sram.write_pj_per_byte(size_kb)

    def sram_area_um2(self, size_kb: float) -> float:
        return self.sram.area_um2(size_kb)

    def sram_leakage_uw(self, size_kb: float) -> float:
        return self.sram.leakage_uw(size_kb)

    def l2_read_pj_per_byte(self, size_kb: float) -> float:
        return self.l2.read_pj_per_byte(size_kb)

    def l2_write_pj_per_byte(self, size_kb: float) -> float:
        return self.l2.write_pj_per_byte(size_kb)

    def l2_area_um2(self, size_kb: float) -> float:
        return self.l2.area_um2(size_kb)

    def l2_leakage_uw(self, size_kb: float) -> float:
        return self.l2.leakage_uw(size_kb)

    # -- off-chip, NoC, vector unit, control -----------------------------------------------------

    def dram_pj_per_bit(self, kind: str) -> float:
        """Energy per bit moved to or from DRAM of ``kind`` (hbm2, hbm3, ddr4, ddr5, lpddr5)."""
        try:
            return self.dram[kind]
        except (KeyError, TypeError):
            known = sorted(self.dram)
            raise ConfigError(
                "a DRAM kind listed in this technology table (" + ", ".join(known) + ")",
                file=self._origin, key="dram", got=short_repr(kind),
                hint=did_you_mean(str(kind), known),
            ) from None

    @property
    def noc_pj_per_byte(self) -> float:
        """Energy to carry one byte from the global buffer to the array edge."""
        return self.noc.pj_per_byte

    @property
    def vector_pj_per_op(self) -> float:
        return self.vector.pj_per_op

    @property
    def vector_lane_area_um2(self) -> float:
        return self.vector.lane_area_um2

    @property
    def vector_lane_leakage_uw(self) -> float:
        return self.vector.lane_area_um2 * self.logic_leakage_uw_per_um2



# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def tech_dir() -> Path:
    """``<repo>/arch/tech``: where shipped technology tables live."""
    return data_dir("arch") / "tech"


_TABLES = TableFolder(tech_dir, TechTable, "a technology node with a table in arch/tech",
                      key="technology")


def available_nodes() -> list[str]:
    """Names of the shipped tables (file stems in ``arch/tech``), sorted."""
    return _TABLES.names()


def load_tech(node_or_path: str | os.PathLike | TechTable, overrides: Any = None) -> TechTable:
    """The technology table for a node name (``"7nm"`` -> ``arch/tech/7nm.yaml``) or a path.

    ``overrides`` takes the same forms as the config loader's (``["mac.accumulate_pj=0.01"]``).
    Bad names, files or values raise :class:`ConfigError` naming the file and key.
    """
    return _TABLES.load(node_or_path, overrides)
