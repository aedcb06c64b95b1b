"""A VEGETA-style digital sparse systolic array (``type: sparse_systolic``).

The dense INT8 weight-stationary array of :mod:`sim.hw.accelerator`, extended so that a
weight GEMM pruned N:M runs on it compressed (the mechanism of VEGETA, Jeong et al., HPCA
2023: flexible N:M structured sparsity on a dense matrix engine; its evaluation runs 4:4,
2:4 and 1:4, which is this type's default pattern set):

* **Compressed weights.** Only the N kept weights of each aligned block of M along K are
  stored, each with a ``ceil(log2 M)``-bit index of its position in the block. The
  stationary operand is a ``K' x N`` matrix, ``K' = ceil(K / M) * N``, so the array folds
  over K' instead of K: a 2:4 layer takes half the row folds, 1:4 a quarter. Weight DRAM / L2 /
  SRAM bytes are ``K' * N * (wbits + index bits) / 8``.
* **Activation operand.** A PE holding a kept weight needs the activation at that weight's
  position, which only its index names, so each row of the array receives all M activations
  of its block per streamed row and a ``M_max:1`` mux per PE picks the one it needs. The
  activation operand therefore grows to M/N values per kept weight (``act_bits = abits * M /
  N`` per K' element): the same activation bytes as the dense GEMM in total, but delivered in
  N/M of the folds, so the ifmap SRAM port (``memory.sram.bytes_per_cycle``) is M/N times
  busier per fold and its limit can stall the array (the tile pipeline's SRAM-port stall).
* **Energy and area** (technology section ``sparse_pe:``): per executed MAC, one activation
  through the ``log2 M_max`` levels of the mux tree and ``M - 1`` extra activations moved
  into the PE (the table's ``mac.operand_pj`` each, the figure the dense MAC already charges
  for its one operand); per PE, the mux tree, the index bits beside the stationary weight and
  the ``(M_max - 1) * abits`` extra activation registers of the wider row bus. These are
  charged to the component ``sparse_pe`` (dynamic) and the static item
  ``leakage_sparse_pe``, so a dense run differs from the plain array by exactly them.

Which pattern each decoder block runs comes from the arch's ``sparsity:`` section
(:mod:`sim.hw.nm_sparsity`: a schedule file, a FLOW target or one pattern, with fallback to
the patterns this array supports); every weight GEMM of a sparse block receives
``nm=Pattern(n, m)`` through :meth:`op_annotations`. Attention GEMMs and the lm_head run dense.

Not modelled: VEGETA's CPU integration (tile registers, ISA), its unstructured-sparsity mode,
and a block of N kept weights split across two row folds (when N does not divide the array
rows, the straddling block's activations would be sent to both folds; the model counts them
once).
"""
from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..config.errors import ConfigError, InvalidValue
from ..config.nm_schedule import DENSE, Pattern, parse_pattern, pattern_list
from ..config.schema import NonNegFloat, PosFloat, StrictModel, SystolicArchConfig
from ..core import EnergyLedger
from .accelerator import ArrayView, GemmOperands, SystolicAccelerator
from .nm_sparsity import (NMSparsityConfig, check_supported, memo_key, nm_annotations,
                          resolve_layers)
from .registry import register

# the types this module registers (read by sim.hw.registry without importing the module)
ACCELERATOR_TYPES = ("sparse_systolic",)
TECH_SECTIONS = ("sparse_pe",)          # technology-table sections its types read

__all__ = ["SparseArrayConfig", "SparseSystolicArchConfig", "SparsePETech",
           "SparseSystolicAccelerator", "compressed_k", "index_bits"]

DEFAULT_PATTERNS = ("1:4", "2:4", "dense")


def compressed_k(K: int, p: Pattern) -> int:
    """Kept weights per output column: ``ceil(K / M) * N`` (K for dense)."""
    return K if p.dense else -(-K // p.m) * p.n


def index_bits(p: Pattern) -> int:
    """Bits naming a kept weight's position in its block of M (0 for dense)."""
    return 0 if p.dense else math.ceil(math.log2(p.m))


class SparseArrayConfig(StrictModel):
    """Arch section ``sparse_array:``: the N:M patterns the PEs run (dense is always one)."""

    patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_PATTERNS), min_length=1)

    @field_validator("patterns", mode="before")
    @classmethod
    def _patterns(cls, v: Any) -> Any:
        return pattern_list(v)

    def supported(self) -> tuple[Pattern, ...]:
        return check_supported(self.patterns, key="sparse_array.patterns")

    @property
    def max_m(self) -> int:
        """Inputs of each PE's mux: the largest M among the patterns (1: dense only)."""
        return max(p.m for p in self.supported())


class SparseSystolicArchConfig(SystolicArchConfig):
    """``type: sparse_systolic``: a systolic array plus ``sparse_array`` and ``sparsity``."""

    sparse_array: SparseArrayConfig = Field(default_factory=SparseArrayConfig)
    sparsity: NMSparsityConfig = Field(default_factory=NMSparsityConfig)

    @model_validator(mode="after")
    def _ws_only(self) -> "SparseSystolicArchConfig":
        if self.array.dataflow != "ws":
            raise InvalidValue("ws (the compressed weights are the stationary operand)",
                               loc=("array", "dataflow"), got=self.array.dataflow)
        return self


class SparsePETech(StrictModel):
    """Technology section ``sparse_pe:``: the logic a sparse PE adds to a dense one."""

    mux_pj_per_bit_level: PosFloat       # one bit through one 2:1 level of the mux tree
    mux2_area_um2_per_bit: PosFloat      # one 2:1 mux bit
    register_area_um2_per_bit: PosFloat  # one flip-flop (index bits, extra activation registers)
    leakage_uw_per_um2: NonNegFloat | None = None   # default: the table's logic leakage density
    sources: list[str] = Field(default_factory=list)
    scaling: str = ""


@register("sparse_systolic")
class SparseSystolicAccelerator(SystolicAccelerator):
    """A VEGETA-style sparse systolic array from one arch file (``type: sparse_systolic``)."""

    config_class = SparseSystolicArchConfig
    tech_sections = {"sparse_pe": SparsePETech}
    energy_components = ("pe_array", "sparse_pe", "sram", "l2", "dram", "noc", "vector",
                         "static")
    capabilities = frozenset({"nm_sparsity"})

    def __init__(self, arch, tech=None):
        super().__init__(arch, tech)
        self.sp: SparsePETech = self.tech_parts["sparse_pe"]
        self.supported = check_supported(arch.sparse_array.patterns,
                                         key="sparse_array.patterns", file=arch.origin)
        self.max_m = max(p.m for p in self.supported)
        self._layers: dict = {}

    # ------------------------------------------------------------------ patterns ----
    def layer_patterns(self, model, seed: int = 0):
        """The model's per-block patterns (:class:`sim.hw.nm_sparsity.LayerPatterns`),
        memoized on the model, the seed and (for a schedule file) its size and mtime."""
        sec = self.arch.sparsity
        key = memo_key(sec, model, seed, self.arch)
        hit = self._layers.get(key)
        if hit is None:
            hit = resolve_layers(sec, model, self.supported, seed=seed, arch=self.arch)
            self._layers[key] = hit
        return hit

    def op_annotations(self, model, seed: int = 0):
        return nm_annotations(self.layer_patterns(model, seed), name="nm")

    def _pattern(self, nm) -> Pattern | None:
        if nm is None:
            return None
        p = parse_pattern(nm, key="nm")
        if p.dense:
            return None
        if p not in self.supported:
            raise ConfigError("a pattern this array supports (" +
                              ", ".join(str(s) for s in self.supported) + ")",
                              file=self.arch.origin, key="nm", got=str(p))
        return p

    # ------------------------------------------------------------------ GEMM ----
    def gemm(self, M: int, K: int, N: int, *, nm=None, **kwargs: Any):
        """One GEMM; ``nm`` (a supported :class:`Pattern` or ``"N:M"``) runs it compressed
        (see the module docstring); None or dense: as the plain array (plus the mux path)."""
        return super().gemm(M, K, N, view=self._pattern(nm), **kwargs)

    def array_view(self, M, K, N, wbits, abits, outliers, view) -> ArrayView:
        if view is None:
            return super().array_view(M, K, N, wbits, abits, outliers, None)
        kp = compressed_k(K, view)
        return ArrayView(K=kp, weight_bits=self.stored_weight_bits(wbits, outliers)
                         + index_bits(view), act_bits=abits * view.m / view.n,
                         macs=M * kp * N)

    def extra_energy(self, gemm: GemmOperands, ledger: EnergyLedger, counters: dict,
                     cols: int) -> None:
        """Per executed MAC: the activation through the mux tree (every pattern, dense too:
        the path is there) and, for N:M, the M - 1 extra activations moved into the PE."""
        p = gemm.view if gemm.view is not None else DENSE
        K = gemm.array_K if gemm.array_K is not None else gemm.K
        macs = gemm.M * K * gemm.N
        levels = math.ceil(math.log2(self.max_m)) if self.max_m > 1 else 0
        if levels:
            ledger.add("sparse_pe", "mux_bit_level", macs * gemm.abits * levels,
                       self.sp.mux_pj_per_bit_level)
        if not p.dense:
            ledger.add("sparse_pe", "extra_activation_operand", macs * (p.m - 1),
                       self.tech.mac.operand_pj)

    # ------------------------------------------------------------------ area ----
    def sparse_pe_area_um2(self) -> float:
        """Logic one PE adds: an ``M_max:1`` mux as wide as the activation bits it takes per
        cycle, the index bits of its stationary weight, ``M_max - 1`` extra activation
        registers of the wider row bus."""
        if self.max_m <= 1:
            return 0.0
        # activation bits one PE takes per cycle: a fused mode (macs_per_cycle < 1) splits a
        # wide activation across its PEs, a multi-lane mode shares one
        abits = max(m.abits * min(1.0, m.macs_per_cycle) for m in self.arch.pe.modes)
        idx = math.ceil(math.log2(self.max_m))
        sp = self.sp
        return ((self.max_m - 1) * abits * sp.mux2_area_um2_per_bit
                + (idx + (self.max_m - 1) * abits) * sp.register_area_um2_per_bit)

    def area_um2(self) -> dict:
        area = super().area_um2()
        area["sparse_pe"] = self.arch.array.rows * self.arch.array.cols * self.sparse_pe_area_um2()
        return area

    def leakage_uw(self) -> dict:
        leak = super().leakage_uw()
        density = (self.sp.leakage_uw_per_um2 if self.sp.leakage_uw_per_um2 is not None
                   else self.tech.logic_leakage_uw_per_um2)
        leak["sparse_pe"] = (self.arch.array.rows * self.arch.array.cols
                             * self.sparse_pe_area_um2() * density)
        return leak

    def describe(self) -> str:
        pats = "/".join(str(p) for p in self.supported)
        return f"{super().describe()}, sparse N:M {pats}"
