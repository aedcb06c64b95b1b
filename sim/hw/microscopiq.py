"""The MicroScopiQ accelerator (ISCA'25): a weight-stationary multi-precision array plus ReCoN.

Everything the plain systolic accelerator models still holds (folds, memory tiles, stalls,
energy). On top, for every weight GEMM whose outlier statistics are known:

* **Storage.** Weights occupy their effective bit width in memory (the paper's Eq. 4): a
  micro-block without outliers costs ``bb`` bits per weight, one with outliers
  ``(perm_bits + bb * B_u + osf_bits) / B_u``. DRAM, L2 and SRAM traffic follow.
* **ReCoN.** A PE row whose row tile holds an outlier micro-block sends its outputs through a
  ReCoN unit instead of accumulating locally (:mod:`sim.hw.recon`: sync-buffer de-skew, network
  depth, one row per cycle per unit, the whole array stalls while rows contend). Which rows of a
  fold are outlier rows is drawn from the profile's fraction of row tiles with outliers at the
  array's row width (C PEs x lanes weights: 64 at bb=4, 128 at bb=2), once per row fold (up
  to ``PATTERNS`` draws seeded by the experiment's ``seed`` and the GEMM's content, see
  :func:`sim.hw.accelerator.op_seed`, so runs are reproducible) and reused by every column
  group, as outliers cluster in input channels.
* **The fold stream.** The GEMM's folds stream back to back through the shared units, priced
  in closed form by :func:`sim.hw.recon_stream.recon_stream_cycles` (equal to the
  cycle-stepped :func:`sim.hw.recon_ref.simulate_recon_folds`): contention among all folds in
  flight, the controller's throttle (``recon.throttle``: ``per_fold`` folds wait behind a
  predecessor's slower tail, ``union`` folds share one throttle and do not), and the last
  fold's extra depth. Because the row-fold draws repeat in every column group, a long stream
  is priced from its first column groups and extended where that is provably exact
  (:func:`sim.hw.recon_stream.exact_prefix_groups`; else it is priced whole).
  ``recon_busy_cycles`` (the busiest unit) is checked <= the op's cycles on every op.
* **Energy and area.** Each row pass moves C values through the network's stages (charged per
  switch); the area adds ``units`` networks of ``C * (log2 C + 1)`` switches and their sync
  buffers.

Attention GEMMs (activations times the KV cache) carry no weight outliers and run as on the
plain array.

The type's own config sections (``recon``, ``mx``) and its technology-table section
(``recon``: switch and sync-buffer figures) are declared here, not in the shared schema.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..config.errors import InvalidValue
from ..config.schema import PosFloat, PosInt, StrictModel, SystolicArchConfig
from ..core import EnergyLedger
from .accelerator import GemmOperands, SystolicAccelerator, WeightOutliers
from .recon import recon_depth
from .recon_stream import exact_prefix_groups, recon_stream_cycles
from .registry import register

# the types this module registers (read by sim.hw.registry without importing the module)
ACCELERATOR_TYPES = ("microscopiq",)
TECH_SECTIONS = ("recon",)          # technology-table sections its types read

PATTERNS = 64


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


class MicroScopiQArchConfig(SystolicArchConfig):
    """``type: microscopiq``: a weight-stationary array plus ReCoN (``recon``, required) and
    the MX storage format (``mx``, defaults filled in)."""

    recon: ReconArchConfig
    mx: MXArchConfig = Field(default_factory=MXArchConfig)

    @model_validator(mode="after")
    def _microscopiq_parts(self) -> "MicroScopiQArchConfig":
        if self.array.dataflow != "ws":
            raise InvalidValue("ws (MicroScopiQ is a weight-stationary design)",
                               loc=("array", "dataflow"), got=self.array.dataflow)
        if self.array.rows % self.recon.units:
            raise InvalidValue(f"a number of ReCoN units that divides array.rows "
                               f"({self.array.rows})", loc=("recon", "units"),
                               got=str(self.recon.units))
        return self


class ReconTech(StrictModel):
    """Technology section ``recon:`` — ReCoN's 2x2 switches (mux + merge adder, registered)
    and the sync buffer."""

    switch_area_um2: PosFloat
    switch_pj: PosFloat  # one value through one switch (pass, swap or merge)
    sync_buffer_area_um2_per_col: PosFloat


@register("microscopiq")
class MicroScopiQAccelerator(SystolicAccelerator):
    """MicroScopiQ from one arch file (``type: microscopiq``, with ``recon`` and ``mx``)."""

    config_class = MicroScopiQArchConfig
    tech_sections = {"recon": ReconTech}
    energy_components = ("pe_array", "recon", "sram", "l2", "dram", "noc", "vector", "static")
    capabilities = frozenset({"outlier_profile"})

    def __init__(self, arch, tech=None):
        super().__init__(arch, tech)        # the schema guarantees a WS array and a recon section
        self.units = arch.recon.units
        self.throttle = arch.recon.throttle
        self.recon_tech: ReconTech = self.tech_parts["recon"]

    def stored_weight_bits(self, wbits: int, outliers: WeightOutliers | None) -> float:
        if outliers is None:
            return wbits
        mx = self.arch.mx
        with_outliers = (mx.perm_bits + wbits * mx.micro_block + mx.osf_bits) / mx.micro_block
        return wbits + outliers.frac_ub * (with_outliers - wbits)

    def fold_extra_cycles(self, gemm: GemmOperands, timing, outliers: WeightOutliers | None,
                          seed):
        if outliers is None:
            return None, {}
        mp = timing.mapping
        R, C, T, FR, FC = mp.rows, mp.cols, mp.T, mp.fold_rows, mp.fold_cols
        p = outliers.rowtile_frac(C * mp.lanes)
        rng = np.random.default_rng(seed)
        # one draw per row fold (the same input channels k), reused by every column group:
        # LLM weight outliers cluster in input channels, and it keeps the fold stream
        # periodic (FR folds), which both the stream model and the tile pipeline exploit
        draws = min(PATTERNS, FR)
        masks = rng.random((draws, R)) < p
        group = masks[np.arange(FR) % draws]
        group[-1, mp.last_rows:] = False
        extra, stalls, bubbles, conflicts = self._stream(T, group, R, C, FC,
                                                         timing.issue_times(), gemm.compress)
        per_unit = group.reshape(FR, self.units, R // self.units).sum(axis=(0, 2))
        depth = int(bubbles[-1])                   # the last fold's outputs leave that late
        counters = {"recon_accesses": int(T * FC * group.sum()),
                    "recon_conflicts": int(conflicts.sum()),
                    "recon_stall_cycles": int(stalls.sum()),
                    "recon_bubble_cycles": int(bubbles.sum()) - depth,
                    "recon_extra_cycles": int(extra.sum()),
                    "recon_busy_cycles": int(T * FC * per_unit.max())}   # the busiest unit
        return extra, counters

    def _stream(self, T, group, R, C, FC, issue, compress=True):
        """Per-fold extra, stall, bubble and conflict counts of FC column groups of the FR
        row folds in ``group`` (:func:`sim.hw.recon_stream.recon_stream_cycles`).

        With ``compress``, a long stream is priced from its first ``G`` column groups when
        :func:`sim.hw.recon_stream.exact_prefix_groups` proves that they determine it
        (scan and plain schedule periodic, no request interval of a pre-periodic group
        reaching the copied windows): groups ``0 .. G-2`` as priced, every later group but
        the last as group ``G-2``, the last as group ``G-1``. Otherwise, or with
        ``compress=False``, the whole stream is priced."""
        FR = len(group)

        def price(groups):
            s = recon_stream_cycles(T, np.tile(group, (groups, 1)), R, C, self.units,
                                    issue[:groups * FR], self.throttle)
            return s.fold_extra, s.fold_stalls, s.fold_bubbles, s.fold_conflicts

        G = exact_prefix_groups(T, group, R, C, FC, issue, self.throttle) if compress else None
        if G is None:
            return price(FC)
        short = price(G)
        rep = slice((G - 2) * FR, (G - 1) * FR)
        return tuple(np.concatenate([x[:(G - 1) * FR], np.tile(x[rep], FC - G), x[(G - 1) * FR:]])
                     for x in short)

    def extra_energy(self, gemm: GemmOperands, ledger: EnergyLedger, counters: dict,
                     cols: int) -> None:
        passes = counters.get("recon_accesses", 0)
        if passes:
            ledger.add("recon", "switch_op", passes * cols * recon_depth(cols),
                       self.recon_tech.switch_pj)

    def area_um2(self) -> dict:
        area = super().area_um2()
        cols = self.arch.array.cols
        t = self.recon_tech
        switches = cols * recon_depth(cols)          # C x (log2 C + 1) 2x2 switches
        per_unit = switches * t.switch_area_um2 + cols * t.sync_buffer_area_um2_per_col
        area["recon"] = self.units * per_unit
        return area
