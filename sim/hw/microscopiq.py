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
  to ``PATTERNS`` seeded draws; the seed is the GEMM's own key, so runs are reproducible) and
  reused by every column group, as outliers cluster in input channels; each draw's cost is the
  exact ReCoN fold cost of that row set. Folds stream back to back, so a fold pays its
  contention stalls, while the extra depth of outlier rows is paid once, by the last fold (it
  is a skew that the following folds' elements trail behind).
* **ReCoN capacity.** A unit takes one row vector per cycle, so a fold whose busiest unit
  serves ``n`` outlier rows needs ``n * T`` cycles of that unit, however its requests are
  spread in time: when that exceeds the fold's issue interval, the fold is stretched to it
  (the stall is the larger of the contention stall and this capacity shortfall). Without it,
  back-to-back folds would overlap their ReCoN work and a unit would serve more than one row
  per cycle. ``recon_busy_cycles`` (busiest unit, summed over folds) is checked <= the op's
  cycles on every op.
* **Energy and area.** Each row pass moves C values through the network's stages (charged per
  switch); the area adds ``units`` networks of ``C * (log2 C + 1)`` switches and their sync
  buffers.

Attention GEMMs (activations times the KV cache) carry no weight outliers and run as on the
plain array.
"""
from __future__ import annotations

import numpy as np

from ..core import EnergyLedger
from .accelerator import GemmOperands, SystolicAccelerator, WeightOutliers
from .recon import recon_depth, recon_fold_cycles
from .registry import register

PATTERNS = 64


@register("microscopiq")
class MicroScopiQAccelerator(SystolicAccelerator):
    """MicroScopiQ from one arch file (``type: microscopiq``, with ``recon`` and ``mx``)."""

    uses_outlier_profile = True

    def __init__(self, arch, tech=None):
        super().__init__(arch, tech)        # the schema guarantees a WS array and a recon section
        self.units = arch.recon.units

    def stored_weight_bits(self, wbits: int, outliers: WeightOutliers | None) -> float:
        if outliers is None:
            return wbits
        mx = self.arch.mx
        with_outliers = (mx.perm_bits + wbits * mx.micro_block + mx.osf_bits) / mx.micro_block
        return wbits + outliers.frac_ub * (with_outliers - wbits)

    def fold_extra_cycles(self, gemm: GemmOperands, timing, outliers: WeightOutliers | None,
                          seed: int):
        if outliers is None:
            return None, {}
        mp = timing.mapping
        R, C, T = mp.rows, mp.cols, mp.T
        p = outliers.rowtile_frac(C * mp.lanes)
        rng = np.random.default_rng(seed)
        # one draw per row fold (the same input channels k), reused by every column group:
        # LLM weight outliers cluster in input channels, and it keeps the tile sequence
        # periodic, which the tile pipeline exploits
        draws = min(PATTERNS, mp.fold_rows)
        masks = rng.random((draws, R)) < p

        def cost(mask, used_rows):
            return recon_fold_cycles(T, np.flatnonzero(mask[:used_rows]), R, C, self.units)

        full = [cost(m, R) for m in masks]
        last = full if mp.last_rows == R else [cost(m, mp.last_rows) for m in masks]
        f = np.arange(mp.folds)
        pattern = (f % mp.fold_rows) % draws
        is_last_row_fold = (f % mp.fold_rows) == mp.fold_rows - 1

        def per_fold(values_full, values_last):
            per_full = np.asarray(values_full, dtype=np.int64)
            per_last = np.asarray(values_last, dtype=np.int64)
            return np.where(is_last_row_fold, per_last[pattern], per_full[pattern])

        def field(name):
            return per_fold([getattr(c, name) for c in full], [getattr(c, name) for c in last])

        # capacity: a unit takes one row vector per cycle, so the busiest unit needs
        # T * (its outlier rows) cycles per fold, however the fold's requests are spread; a
        # fold cannot hand its rows to the units faster than that, whatever its neighbours do
        group = R // self.units

        def busiest(used_rows):
            return [T * int(np.bincount(np.flatnonzero(m[:used_rows]) // group,
                                        minlength=self.units).max()) for m in masks]
        work = per_fold(busiest(R), busiest(mp.last_rows))
        issue = timing.issue_times()
        interval = np.diff(np.r_[issue, timing.total])
        contention = field("stall_cycles")
        # folds stream back to back through the same rows: each fold pays its contention
        # stalls or its units' work beyond its own interval, whichever is longer; the extra
        # depth of outlier rows (sync de-skew + network) is a skew the next fold's elements
        # follow behind, so only the last fold's results leave that much later
        stall = np.maximum(contention, work - interval)
        extra = stall.copy()
        extra[-1] += int(field("extra_cycles")[-1] - contention[-1])

        counters = {"recon_accesses": int(field("accesses").sum()),
                    "recon_conflicts": int(field("conflicts").sum()),
                    "recon_stall_cycles": int(stall.sum()),
                    "recon_capacity_cycles": int((stall - contention).sum()),
                    "recon_busy_cycles": int(work.sum()),     # of the busiest unit, per fold
                    "recon_extra_cycles": int(extra.sum())}
        return extra, counters

    def extra_energy(self, gemm: GemmOperands, ledger: EnergyLedger, counters: dict,
                     cols: int) -> None:
        passes = counters.get("recon_accesses", 0)
        if passes:
            ledger.add("recon", "switch_op", passes * cols * recon_depth(cols),
                       self.tech.recon.switch_pj)

    def area_um2(self) -> dict:
        area = super().area_um2()
        cols = self.arch.array.cols
        t = self.tech.recon
        switches = cols * recon_depth(cols)          # C x (log2 C + 1) 2x2 switches
        per_unit = switches * t.switch_area_um2 + cols * t.sync_buffer_area_um2_per_col
        area["recon"] = self.units * per_unit
        return area
