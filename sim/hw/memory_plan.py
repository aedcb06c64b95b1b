"""Which bytes move where when a GEMM runs on the array: a reuse analysis per fold.

Given the array mapping, the buffer sizes and where each operand lives (DRAM or L2), this module
groups consecutive folds into *memory tiles* (the unit of double buffering) and says, per tile,
how many bytes come from DRAM, how many are filled into the on-chip SRAM buffers, how many the
array reads and writes, and how many leave the SRAM after the tile.

Pure numpy, no timing: :mod:`sim.hw.accelerator` hands the plan to the event-driven tile pipeline
(:mod:`sim.hw.tile_pipeline`).

Roles per dataflow (see :mod:`sim.hw.systolic` for the mapping):

* WS: stationary = W (weight SRAM), streamed = A (ifmap SRAM), outputs = O (ofmap SRAM)
* IS: stationary = A (ifmap SRAM),  streamed = W (weight SRAM), outputs = O
* OS: the column operand W[:, n-slice] is kept for a whole column group like a stationary tile
  (weight SRAM); the row operand A[m-slice, :] streams (ifmap SRAM).

Reuse policy (first order, fixed loop order "column fold outer, row fold inner"):

* every stationary element is used by one column group only, so it is fetched once (OS: the
  column operand is fetched once per group when it fits in the weight SRAM half, else per fold);
* the streamed operand is needed again by every column group; it stays resident in its SRAM half
  when the whole operand fits there, otherwise it is re-fetched per column group, from L2 when it
  fits in L2 (the first fetch comes from its source), else from its source each time;
* WS/IS partial sums (32-bit) of a column group stay in the ofmap SRAM half when they fit;
  otherwise every row fold after the first spills them to L2 and reads them back;
* final outputs (at activation precision) leave once per column group (OS: once per fold).
All traffic between SRAM and DRAM passes through L2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .systolic import ArrayMapping

ACC_BYTES = 4   # partial sums are 32-bit integers

# Size limits of one GEMM. The timing model keeps a dozen int64 values per fold and per memory
# tile, so 2**22 of them is about 400 MB; cycle counts stay below 2**53 so that they are exact
# in float64 (seconds, utilization). Past either limit a run would exhaust memory or lose
# exactness, so it is refused up front with these figures in the message.
MAX_FOLDS = 2**22
MAX_CYCLES = 2**53


@dataclass(frozen=True)
class OperandPlacement:
    """Where the GEMM's operands come from and where its output goes: 'dram' or 'l2'."""

    a_src: str = "dram"
    w_src: str = "dram"
    o_dst: str = "dram"


@dataclass
class MemoryPlan:
    """Byte flows per memory tile (arrays of equal length, int64)."""

    first_fold: np.ndarray   # first fold of each tile
    fetch_dram: np.ndarray   # DRAM -> L2 before the tile can start
    fill: np.ndarray         # L2 -> SRAM before the tile can start (includes spill read-back)
    array_reads: np.ndarray  # SRAM -> array during the tile
    array_writes: np.ndarray  # array -> SRAM during the tile (partial sums / outputs)
    drain: np.ndarray        # SRAM -> L2 after the tile (final outputs + spilled partial sums)
    store_dram: np.ndarray   # L2 -> DRAM after the tile
    buffer_writes: dict      # per SRAM buffer (ifmap/weight/ofmap): bytes written
    buffer_reads: dict       # per SRAM buffer: bytes read
    fold_bytes: dict = None  # per SRAM buffer: the most bytes one fold keeps in it

    @property
    def tiles(self) -> int:
        return len(self.first_fold)

    def total(self, name: str) -> int:
        return int(getattr(self, name).sum())


def _bytes(elements, bits: float) -> np.ndarray:
    """Whole bytes for ``elements`` values of ``bits`` each (bits may be fractional: an
    effective bit width that includes per-block metadata)."""
    if float(bits).is_integer():
        return -(-np.asarray(elements, dtype=np.int64) * int(bits) // 8)
    return np.ceil(np.asarray(elements, dtype=np.float64) * bits / 8).astype(np.int64)


def plan_gemm(mp: ArrayMapping, M: int, K: int, N: int, wbits: float, abits: int,
              sram_kb: dict, l2_kb: float, place: OperandPlacement,
              act_bits: float | None = None) -> MemoryPlan:
    """``wbits`` is the weight's storage width in memory (may include metadata, e.g. EBW).
    ``act_bits`` (default ``abits``) is what one element of the activation operand along K
    occupies when it differs from an output element: an N:M-compressed GEMM (K = kept weights
    per column) reads M/N activations per kept weight, ``act_bits = abits * M / N``."""
    ab = abits if act_bits is None else act_bits
    n, FR, FC = mp.folds, mp.fold_rows, mp.fold_cols
    f = np.arange(n, dtype=np.int64)
    cf, rf = f // FR, f % FR
    rows = np.where(rf == FR - 1, mp.last_rows, mp.rows)                 # Sr extent of the fold
    cap = mp.logical_cols * (mp.lanes if mp.dataflow in ("ws", "os") else 1)
    cols = np.where(cf == FC - 1, mp.Sc - (FC - 1) * cap, cap)           # Sc extent (elements)
    half = {k: v * 1024 / 2 for k, v in sram_kb.items()}
    zeros = np.zeros(n, dtype=np.int64)

    if mp.dataflow == "ws":      # stationary W[k-slice, n-slice], streamed A[:, k-slice]
        stat_buf, stream_buf, stat_src, stream_src = "weight", "ifmap", place.w_src, place.a_src
        stat = _bytes(rows * cols, wbits)
        stream = _bytes(M * rows, ab)
        stream_total = int(_bytes(M * K, ab))
        out_elems = M * cols
    elif mp.dataflow == "is":    # stationary A[m-slice, k-slice], streamed W[k-slice, :]
        stat_buf, stream_buf, stat_src, stream_src = "ifmap", "weight", place.a_src, place.w_src
        stat = _bytes(rows * cols, ab)
        stream = _bytes(N * rows, wbits)
        stream_total = int(_bytes(K * N, wbits))
        out_elems = cols * N
    else:                        # OS: column operand W[:, n-slice], row operand A[m-slice, :]
        stat_buf, stream_buf, stat_src, stream_src = "weight", "ifmap", place.w_src, place.a_src
        col_bytes = _bytes(K * cols, wbits)
        stat = np.where((rf == 0) | (col_bytes > half["weight"]), col_bytes, 0)
        stream = _bytes(rows * K, ab)
        stream_total = int(_bytes(M * K, ab))
        out_elems = rows * cols

    # streamed operand: resident, re-fetched from L2, or re-fetched from its source
    first_group = cf == 0
    resident = stream_total <= half[stream_buf]
    from_l2_later = (not resident) and stream_src == "dram" and stream_total <= l2_kb * 1024
    stream_fill = np.where(first_group | (not resident), stream, 0)
    stream_src_bytes = np.where(first_group | (not from_l2_later), stream_fill, 0)

    if mp.dataflow == "os":
        out = _bytes(out_elems, abits)                   # every OS fold completes its outputs
        psum_reads, psum_writes, spill = zeros, out, zeros
    else:
        group_psum = out_elems * ACC_BYTES
        fits = group_psum <= half["ofmap"]
        out = np.where(rf == FR - 1, _bytes(out_elems, abits), 0)
        psum_reads = np.where(rf > 0, group_psum, 0)     # accumulate onto the previous row fold
        psum_writes = group_psum.astype(np.int64)
        spill = np.where((rf > 0) & ~fits, group_psum, 0)  # written to L2 and read back

    fetch_dram = (np.where(stat_src == "dram", stat, 0)
                  + np.where(stream_src == "dram", stream_src_bytes, 0))
    fill = stat + stream_fill + spill
    drain = out + spill
    store_dram = out if place.o_dst == "dram" else zeros

    # memory tiles: a tile is either several whole column groups (when a group's fills fit in
    # the SRAM halves) or a run of folds of one column group that fits. Keeping tiles aligned
    # with column groups keeps the tile sequence periodic, which the pipeline exploits.
    def fits(fill_per_fold, buf):
        return half[buf] // max(int(fill_per_fold), 1)
    fpt = fits(stream.max(), stream_buf)
    if mp.dataflow != "os":
        fpt = min(fpt, fits(stat.max(), stat_buf))
    if fpt >= FR:
        group_stat = int(np.bincount(cf, weights=stat).max())
        group_stream = int(np.bincount(cf, weights=stream).max())
        groups = max(1, min(fits(group_stat, stat_buf), fits(group_stream, stream_buf)))
        tile_id = cf // groups
    else:
        fpt = max(int(fpt), 1)
        tile_id = cf * (-(-FR // fpt)) + rf // fpt
    starts = np.flatnonzero(np.r_[True, tile_id[1:] != tile_id[:-1]])

    def per_tile(x):
        return np.add.reduceat(np.asarray(x, dtype=np.int64), starts)

    return MemoryPlan(
        first_fold=starts,
        fetch_dram=per_tile(fetch_dram),
        fill=per_tile(fill),
        array_reads=per_tile(stat + stream + psum_reads),
        array_writes=per_tile(psum_writes),
        drain=per_tile(drain),
        store_dram=per_tile(store_dram),
        buffer_writes={stat_buf: int(stat.sum()), stream_buf: int(stream_fill.sum()),
                       "ofmap": int(psum_writes.sum() + spill.sum())},
        buffer_reads={stat_buf: int(stat.sum()), stream_buf: int(stream.sum()),
                      "ofmap": int(psum_reads.sum() + drain.sum())},
        fold_bytes={stat_buf: int(stat.max()), stream_buf: int(stream.max()),
                    "ofmap": int(out.max())},
    )


def _too_large(what: str, got: str):
    from ..config.errors import ConfigError   # the error type of bad input lives in config
    return ConfigError(what, got=got, hint="a smaller batch, seq_len or model size")


def check_chunk_count(M: int, K: int, N: int, chunks: int) -> None:
    """ConfigError when the mapper would cut a GEMM into more than MAX_FOLDS chunks (each is
    at least one memory tile)."""
    if chunks > MAX_FOLDS:
        raise _too_large(f"a GEMM of at most {MAX_FOLDS:,} memory tiles (about 100 bytes of "
                         "simulator state each)", f"{chunks:,} for M={M:,} K={K:,} N={N:,}")


def check_gemm_size(mp: ArrayMapping, M: int, K: int, N: int, macs_per_cycle: float) -> None:
    """ConfigError when a GEMM is too large to simulate: more than MAX_FOLDS folds or more than
    MAX_CYCLES ideal cycles. ``mp`` is the whole GEMM's mapping."""
    shape = f"M={M:,} K={K:,} N={N:,} on {mp.rows}x{mp.cols}"
    if mp.folds > MAX_FOLDS:
        raise _too_large(f"a GEMM of at most {MAX_FOLDS:,} array folds (about 100 bytes of "
                         "simulator state each)", f"{mp.folds:,} for {shape}")
    ideal = M * K * N / (mp.rows * mp.cols * macs_per_cycle)
    if ideal > MAX_CYCLES:
        raise _too_large("a GEMM of at most 2^53 cycles (exact in float64)",
                         f"{ideal:.3g} cycles for {shape}")


def check_buffers_fit(plan: "MemoryPlan", sram_kb: dict) -> None:
    """ConfigError when one fold's data does not fit a half of its double-buffered SRAM: the
    plan needs every fold's stationary and streamed bytes (and a fold's outputs) resident."""
    from ..config.errors import ConfigError   # lower layer
    for buf, need in plan.fold_bytes.items():
        have = sram_kb[buf] * 1024 / 2
        if need > have:
            kb = 2 * need / 1024
            raise ConfigError(f"an SRAM buffer that holds one fold's {buf} data in each half "
                              f"(double-buffered): at least {kb:.4g} KB for this GEMM",
                              key=f"memory.sram.{buf}_kb", got=f"{sram_kb[buf]:g}")


def check_transfer(nbytes: float, bytes_per_cycle: float, key: str, value: float) -> None:
    """ConfigError (naming the rate's key) when moving ``nbytes`` at ``bytes_per_cycle`` takes
    more than MAX_CYCLES cycles: cycle counts past that are no longer exact (or overflow)."""
    if nbytes and nbytes / bytes_per_cycle > MAX_CYCLES:
        from ..config.errors import ConfigError   # the error type of bad input lives in config
        raise ConfigError(f"a rate at which this op's {nbytes:,.0f} bytes take at most 2^53 "
                          "cycles (exact in float64)", key=key, got=f"{value:g}")
