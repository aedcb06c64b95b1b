"""FlexCiM digital compute-in-memory (DCiM) macro: parameters, N:M mapping and the fast model.

Facts from ``research/flexcim.md`` (sections 3 and 4: the released RTL ``hw/flexcim.v``, the
patent text, and derivations marked there as [D]); the choices this module makes where those
are silent are parameters of :class:`DCiMMacro` with a comment naming where the default comes
from. This is the macro only; the many-macro chip around it is :mod:`sim.hw.flexcim`.

The macro
---------
P sub-macros, each of R rows (reduction, K direction) x C columns (output channels) of weight
cells. A cell holds an INT8 weight plus one metadata bit (RTL DATA_WIDTH = 9) and natively does
1:2 selection: it is fed one *pair* of activations and its metadata bit picks one of the two.
Each row has a distribution unit: stage 1 is one P_in:1 mux per sub-macro (``pairs_per_mux``
inputs, RTL NUM_INPUT_DATA = 4) that picks one pair of its own group, stage 2 is one P:1 mux per
sub-macro that picks one stage-1 output. Each sub-macro column sums its R products in a
registered adder tree of ceil(log2 R) stages (RTL: 5 for 32 rows) into a per-column psum
buffer (RTL: 3 entries); the merging unit waits until *all* P sub-macros are ready (barrier),
registers their P psums, sums them per column in a ceil(log2 P)-stage tree and registers the
result. Weights are written one column per cycle (all rows of all sub-macros in parallel).

Mapping of N:M onto sub-macros (aggregation / disaggregation)
------------------------------------------------------------
An N:M block is M consecutive K positions of which each output channel keeps N. Its M
activations reach the row as ceil(M/2) pairs (odd M: the last pair is padded with a zero
activation that no weight selects); following the patent, every stage-1 mux of the group gets
a copy of the block's pair set, so a pattern maps only if ceil(M/2) <= ``pairs_per_mux`` (the
RTL's 4 pairs allow M <= 8; M up to 16 needs ``pairs_per_mux: 8``). The N kept weights of one
channel's block sit in the same column, in N distinct (row, sub-macro) slots:

* N <= P (aggregation of N sub-macros): a row hosts g = P // N independent groups
  (disaggregation), group j owns sub-macros j*N .. j*N+N-1 and one block; P - g*N sub-macros
  of a row stay idle when N does not divide P.
* N > P: one block spans s = ceil(N/P) rows (slot k at row k // P, sub-macro k % P); the
  R - (R // s) * s leftover rows stay idle.

So one macro pass covers K_tile = blocks_per_pass * M positions of K (R*P*M/N when the
divisions are exact: 256 for 1:2, 2:4 and 4:8, 512 for 1:4 and 2:8, 128 dense on 4 x 32 rows),
and a pass computes min(C, channels left) output channels. Dense is the pattern 2:2 (a pair
per two sub-macros), which gives K_tile = R*P, the same as any N:N.

Stage 2 of the distribution is the identity in this mapping (sub-macro p takes stage-1 output
p), which the copies make sufficient; stage 1 of sub-macro p selects the pair holding its
weight, and the in-cell bit the element of the pair.

The shared pair select (RTL constraint) and what the model assumes
------------------------------------------------------------------
In the RTL the stage-1 select is per (row, sub-macro) and so shared by all C columns of that
sub-macro row; only the in-cell bit is per weight. For one block and one pass, every column
therefore sees the same *multiset of pairs* in its N slots: a channel's mask is free only in
which element of each shared pair it keeps. Per-output-channel N:M masks as FLOW/Wanda produce
them generally violate this. Exactly: a pass's block is placeable iff
sum over pairs q of max over the pass's columns of (kept weights of the column in pair q) <= N
(the slots get pair labels, each column fills the slots of its pairs). ``select_scope``:

* ``"row"`` (the released RTL): :func:`place_tile` places masks that satisfy the condition and
  rejects the others with a one-line error; the pair select costs ceil(log2 ceil(M/2)) bits per
  (row, sub-macro) per pass.
* ``"cell"`` (default; idealised, what per-channel masks need and what the paper's figures
  presumably assume): each cell has its own pair select, ceil(log2 ceil(M/2)) more metadata
  bits per kept weight. Cycles are the same in both scopes; metadata bits and traffic differ.

Other assumptions (the RTL or the notes are silent or unusable, research/flexcim.md 3.6)
-------------------------------------------------------------------------------------
* signed INT8 weights and activations (the released cell multiplies unsigned); bit-serial
  input is two's complement, the MSB partial product weighted -2^(abits-1);
* all sub-macros run in lockstep; idle cells and idle sub-macros hold zero weights;
* cross-pass (K) partial sums are added outside the macro (the RTL has no accumulator):
  ``GemmMapping.psum_adds``; the chip around the macro (L2/DRAM reload) is not modelled here,
  only the bits a pass needs (``write_port_bits``, ``compressed_weight_bits``);
* energy: cells without a kept weight are clock-gated; every loaded column's trees run.

Timing (both models, one macro, lockstep sub-macros)
----------------------------------------------------
A pass (tile) runs T input vectors (tokens) through weights of ``cols`` columns. Cycle 0 is the
first weight-column write. A vector enters distribution at cycle e, the cells multiply at
e + ds (ds = ``distribution_stages``, 0 = combinational as released), one vector per cycle
bit-parallel; bit-serial feeds one activation bit a cycle (c = abits cycles a vector) and
adds one shift-accumulate register after the column tree. Then psum buffer, merge input
register (the barrier: it fires when every sub-macro's buffer holds the vector), merge tree,
output register. A run's cycles = last register write + 1:

    tail = ds + D + Dm + 4 (+ c when bit-serial),  D = ceil(log2 R), Dm = ceil(log2 P)

(11 for the RTL defaults, as research/flexcim.md 3.4). Loads: tile i's write takes cols_i
cycles starting at ls_i; its stage-1 selects (a few bits, double-buffered) are written with the
first column, so distribution may start the cycle after that, and ds cycles before the last
column is written: e_i >= ls_i + max(1, cols_i - ds).

* single-buffered weights (``reload_overlap: false``): the next write starts the cycle after
  the last multiply of the tile: ls_{i+1} = e_i + ds + T_i*c, e_{i+1} = ls_{i+1} + max(1, cols - ds);
* double-buffered (a shadow weight per cell, ``reload_overlap: true``): the shadow is free once
  tile i swapped in: ls_{i+1} = max(ls_i + cols_i, e_i + ds),
  e_{i+1} = max(e_i + T_i*c, ls_{i+1} + max(1, cols_{i+1} - ds)).

total = e_last + (T_last - 1)*c + tail. The barrier never stalls in lockstep (idle sub-macros
push zero psums); the psum buffer holds at most one vector per column in this schedule (the
reference checks both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from ..config.errors import ConfigError, InvalidValue
from ..config.nm_schedule import MAX_M as _NM_MAX_M, Pattern, parse_pattern as _parse_nm
from ..config.schema import FrozenList, PosFloat, StrictModel

__all__ = ["DCiMMacro", "DCiMTech", "Pattern", "Mapping", "parse_pattern", "map_pattern",
           "map_gemm", "tile_cycles", "sequence_cycles", "enter_cycles",
           "uniform_sequence_cycles", "place_tile", "TilePlacement",
           "DEFAULT_PATTERNS", "GemmMapping", "macro_area_um2", "pass_energy_pj"]

# The chip around the macros, accelerator type ``flexcim``, is sim/hw/flexcim.py (which declares
# the ``dcim`` technology section this module's schema reads).

DEFAULT_PATTERNS = ("1:4", "2:4", "2:8", "4:8", "1:2", "dense")
MAX_M = _NM_MAX_M        # the largest M any pattern may have (sim.config.nm_schedule)


# --------------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------------

def parse_pattern(spec, *, key: str = "pattern", file: str | None = None) -> Pattern:
    """``"2:4"``, ``"dense"``, ``(2, 4)`` or a Pattern -> the macro's Pattern: parsed by
    :func:`sim.config.nm_schedule.parse_pattern` (one pattern type and one set of one-line
    errors for the whole simulator), with dense (any N:N) as 2:2, the form the mapping
    arithmetic uses (see module doc); ``str()`` and ``.name`` still say ``"dense"``."""
    pat = _parse_nm(spec, key=key, file=file)
    return Pattern(2, 2) if pat.dense else pat


# --------------------------------------------------------------------------------------------
# The macro
# --------------------------------------------------------------------------------------------

class DCiMMacro(StrictModel):
    """One FlexCiM macro (defaults: the released RTL ``hw/flexcim.v``)."""

    sub_macros: int = Field(4, ge=1, le=64)      # P, RTL NUM_SUB_MACROS
    rows: int = Field(32, ge=1, le=1024)         # R per sub-macro, RTL NUM_ROWS
    cols: int = Field(32, ge=1, le=1024)         # C per sub-macro, RTL NUM_COLS
    wbits: int = Field(8, ge=1, le=16)           # RTL DATA_WIDTH 9 = 8-bit weight + 1 metadata bit
    abits: int = Field(8, ge=1, le=16)           # RTL 8-bit activations
    input_mode: Literal["parallel", "serial"] = "parallel"   # RTL is bit-parallel; serial = 1 bit/cycle
    pairs_per_mux: int = Field(4, ge=1, le=8)    # RTL NUM_INPUT_DATA: pairs into each stage-1 mux
    distribution_stages: int = Field(0, ge=0, le=2)  # RTL: combinational ("can be pipelined")
    psum_buffer_entries: int = Field(3, ge=1, le=64)  # RTL: 3-entry circular buffer per column
    reload_overlap: bool = False                 # RTL: single weight register per cell
    select_scope: Literal["cell", "row"] = "cell"  # RTL is "row"; see module doc
    patterns: FrozenList[str] = Field(default=DEFAULT_PATTERNS, min_length=1)  # the list

    @model_validator(mode="after")
    def _patterns_map(self) -> "DCiMMacro":
        for i, spec in enumerate(self.patterns):
            try:
                pat = parse_pattern(spec)
                _check_mappable(self, pat)
            except ConfigError as exc:
                raise InvalidValue(exc.expected, loc=("patterns", i), got=exc.got) from None
        return self

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def cells(self) -> int:
        return self.sub_macros * self.rows * self.cols

    @property
    def cycles_per_vector(self) -> int:
        return 1 if self.input_mode == "parallel" else self.abits

    @property
    def column_tree_depth(self) -> int:
        return math.ceil(math.log2(self.rows)) if self.rows > 1 else 0

    @property
    def merge_tree_depth(self) -> int:
        return math.ceil(math.log2(self.sub_macros)) if self.sub_macros > 1 else 0

    @property
    def tail_cycles(self) -> int:
        """Cycles from a vector entering distribution (its last bit, serial) to the end."""
        serial = self.cycles_per_vector if self.input_mode == "serial" else 0
        return self.distribution_stages + self.column_tree_depth + self.merge_tree_depth + 4 + serial

    def supported(self) -> tuple[Pattern, ...]:
        return tuple(parse_pattern(s) for s in self.patterns)

    def pattern(self, spec, *, key: str = "pattern") -> Pattern:
        """A pattern this macro's config lists, else a one-line ConfigError."""
        pat = parse_pattern(spec, key=key)
        _check_mappable(self, pat)
        if pat not in self.supported():
            raise ConfigError("a pattern the macro's config lists (" + ", ".join(self.patterns)
                              + ")", key=key, got=repr(spec))
        return pat


def _check_mappable(macro: DCiMMacro, pat: Pattern) -> None:
    pairs = math.ceil(pat.m / 2)
    if pairs > macro.pairs_per_mux:
        raise ConfigError(f"a pattern whose M/2 pairs fit the {macro.pairs_per_mux} inputs of a "
                          f"stage-1 mux (M <= {2 * macro.pairs_per_mux}; raise pairs_per_mux)",
                          key="pattern", got=repr(pat.name))
    s = math.ceil(pat.n / macro.sub_macros)
    if s > macro.rows:
        raise ConfigError(f"a pattern with N <= rows x sub-macros = "
                          f"{macro.rows * macro.sub_macros}", key="pattern", got=repr(pat.name))


# --------------------------------------------------------------------------------------------
# Mapping
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mapping:
    """How one pattern occupies a macro pass."""

    pattern: Pattern
    groups_per_row: int          # g (N <= P), else 0
    rows_per_block: int          # s (N > P), else 1
    blocks_per_pass: int
    k_tile: int                  # K positions one pass covers
    slots_used: int              # cells of one column that hold a kept weight (blocks * N)
    select_bits: int             # ceil(log2 ceil(M/2)): pair select per (row, sub-macro) or cell

    @property
    def cell_utilization(self) -> float:
        """Share of one column's R*P cells that hold kept weights in a full pass."""
        return self.slots_used / self._cells_per_col

    _cells_per_col: int = 1


def map_pattern(macro: DCiMMacro, spec) -> Mapping:
    pat = macro.pattern(spec)
    P, R = macro.sub_macros, macro.rows
    if pat.n <= P:
        g, s = P // pat.n, 1
        blocks = R * g
    else:
        g, s = 0, math.ceil(pat.n / P)
        blocks = R // s
    pairs = math.ceil(pat.m / 2)
    return Mapping(pat, g, s, blocks, blocks * pat.m, blocks * pat.n,
                   math.ceil(math.log2(pairs)) if pairs > 1 else 0, _cells_per_col=R * P)


def slot_of(mp: Mapping, macro: DCiMMacro, block: int, k: int) -> tuple[int, int]:
    """(row, sub-macro) of slot k (0..N-1) of block ``block`` of a pass."""
    n = mp.pattern.n
    if mp.groups_per_row:
        row, grp = divmod(block, mp.groups_per_row)
        return row, grp * n + k
    return block * mp.rows_per_block + k // macro.sub_macros, k % macro.sub_macros


@dataclass(frozen=True)
class GemmMapping:
    """An (T x K) @ (K x Nout) N:M GEMM on one macro: passes, cycles, MACs, metadata, traffic."""

    mapping: Mapping
    tokens: int
    k: int
    n_out: int
    k_passes: int
    n_passes: int
    tile_cols: tuple[int, ...]          # columns of each pass, in execution order
    kept_macs: int                      # T * kept weights
    cell_slots: int                     # T * cells available over all passes
    metadata_bits: int                  # in-cell bits of kept weights + pair selects
    write_port_bits: int                # bits through the reload port (whole columns, 9b cells)
    compressed_weight_bits: int         # kept weights + metadata: what L2/DRAM must deliver
    cycles: int                         # fast model, one macro, passes in tile_cols order
    psum_adds: int                      # cross-pass accumulation adds (k_passes - 1 per output)

    @property
    def passes(self) -> int:
        return self.k_passes * self.n_passes

    @property
    def utilization(self) -> float:
        return self.kept_macs / self.cell_slots


def map_gemm(macro: DCiMMacro, tokens: int, k: int, n_out: int, spec) -> GemmMapping:
    """Map a GEMM with an N:M weight (every channel keeps exactly N per block of M; a short last
    block keeps min(N, its length)) onto one macro; passes run output-tile major (all K passes of columns 0..C-1
    first)."""
    for name, v in (("tokens", tokens), ("k", k), ("n_out", n_out)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError("an integer >= 1", key=name, got=repr(v))
    mp = map_pattern(macro, spec)
    pat = mp.pattern
    C = macro.cols
    k_passes = math.ceil(k / mp.k_tile)
    n_passes = math.ceil(n_out / C)
    tile_cols = tuple(min(C, n_out - j * C) for j in range(n_passes) for _ in range(k_passes))
    full, rem = divmod(k, pat.m)
    kept = (full * pat.n + min(pat.n, rem)) * n_out     # a short last block keeps min(N, rest)
    slots = sum(tile_cols) * macro.rows * macro.sub_macros
    if macro.select_scope == "cell":
        sel = kept * mp.select_bits
    else:
        used_rows_sm = _row_submacros_used(macro, mp, k)
        sel = used_rows_sm * mp.select_bits * n_passes
    meta = kept + sel
    write = sum(tile_cols) * macro.rows * macro.sub_macros * (macro.wbits + 1) + (sel if macro.select_scope == "row" else 0)
    compressed = kept * macro.wbits + meta
    cycles = sequence_cycles(macro, [(tokens, c) for c in tile_cols])
    return GemmMapping(mp, tokens, k, n_out, k_passes, n_passes, tile_cols, kept * tokens,
                       slots * tokens, meta, write, compressed, cycles,
                       (k_passes - 1) * n_out * tokens)


def _row_submacros_used(macro: DCiMMacro, mp: Mapping, k: int) -> int:
    """(row, sub-macro) pairs holding a slot over the K passes of one column tile."""
    blocks_total = math.ceil(k / mp.pattern.m)
    used = set()
    for b in range(blocks_total):
        pas, blk = divmod(b, mp.blocks_per_pass)
        for kk in range(mp.pattern.n):
            used.add((pas,) + slot_of(mp, macro, blk, kk))
    return len(used)


# --------------------------------------------------------------------------------------------
# Fast model
# --------------------------------------------------------------------------------------------

def _check_tiles(macro: DCiMMacro, tiles) -> list[tuple[int, int]]:
    out = []
    for i, t in enumerate(tiles):
        try:
            vecs, cols = t
        except (TypeError, ValueError):
            raise ConfigError("a (vectors, columns) pair", key=f"tiles.{i}", got=repr(t)) from None
        for what, v, hi in (("vectors", vecs, None), ("columns", cols, macro.cols)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 or (hi and v > hi):
                raise ConfigError(f"{what}: an integer in [1, {hi or 'inf'}]", key=f"tiles.{i}",
                                  got=repr(v))
        out.append((int(vecs), int(cols)))
    if not out:
        raise ConfigError("at least one tile", key="tiles", got="[]")
    return out


def enter_cycles(macro: DCiMMacro, tiles) -> list[int]:
    """Cycle at which each tile's first vector enters distribution (module doc recurrences)."""
    tiles = _check_tiles(macro, tiles)
    c, ds = macro.cycles_per_vector, macro.distribution_stages
    ls = 0
    e = max(1, tiles[0][1] - ds)
    out = [e]
    for (t_prev, cols_prev), (_, cols) in zip(tiles, tiles[1:]):
        if macro.reload_overlap:
            ls = max(ls + cols_prev, e + ds)
        else:
            ls = e + ds + t_prev * c
        e = max(e + t_prev * c, ls + max(1, cols - ds))
        out.append(e)
    return out


def sequence_cycles(macro: DCiMMacro, tiles: Sequence[tuple[int, int]]) -> int:
    """Closed-form cycles of (vectors, columns) tiles through one macro, in order."""
    tiles = _check_tiles(macro, tiles)
    return enter_cycles(macro, tiles)[-1] + (tiles[-1][0] - 1) * macro.cycles_per_vector + macro.tail_cycles


def uniform_sequence_cycles(macro: DCiMMacro, vectors: int, cols: int, n_tiles: int) -> int:
    """``sequence_cycles`` of ``n_tiles`` identical tiles in O(1) (whole layers): the recurrence
    depends only on d = e - ls, so once d repeats every later tile adds the same cycles."""
    _check_tiles(macro, [(vectors, cols)])
    if isinstance(n_tiles, bool) or not isinstance(n_tiles, int) or n_tiles < 1:
        raise ConfigError("an integer >= 1", key="n_tiles", got=repr(n_tiles))
    c, ds = macro.cycles_per_vector, macro.distribution_stages
    ls, e = 0, max(1, cols - ds)
    i = 1
    while i < n_tiles:
        if macro.reload_overlap:
            ls2 = max(ls + cols, e + ds)
        else:
            ls2 = e + ds + vectors * c
        e2 = max(e + vectors * c, ls2 + max(1, cols - ds))
        if e2 - ls2 == e - ls:                         # fixed point: constant period from here
            e2 += (n_tiles - 1 - i) * (e2 - e)
            ls, e, i = ls2, e2, n_tiles
            break
        ls, e, i = ls2, e2, i + 1
    return e + (vectors - 1) * c + macro.tail_cycles


def tile_cycles(macro: DCiMMacro, vectors: int, cols: int | None = None) -> int:
    """Cycles of one tile from the first column write to its last output."""
    return sequence_cycles(macro, [(vectors, macro.cols if cols is None else cols)])


# --------------------------------------------------------------------------------------------
# Placement of a masked weight tile (functional mode)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TilePlacement:
    """Register contents of one pass: weights/meta per cell, stage-1 selects, row feeds."""

    weight: np.ndarray      # int64 [R, P, C]
    meta: np.ndarray        # int64 [R, P, C] in-cell bit
    select: np.ndarray      # int64 [R, P] (row scope) or [R, P, C] (cell scope): stage-1 select
    feed: np.ndarray        # int64 [R, P, pairs_per_mux, 2]: K index of each pair element, -1 = 0
    source: np.ndarray      # int64 [R, P, C]: K index (within the tile) of the weight, -1 = none


def place_tile(macro: DCiMMacro, spec, w_tile: np.ndarray) -> TilePlacement:
    """Place a masked weight tile (K_tile' x cols, K_tile' <= k_tile, zeros = pruned) onto the
    cells of one pass. Each block of M rows of ``w_tile`` may keep at most N non-zeros per
    column (else ConfigError); with ``select_scope: row`` the pass must also satisfy the
    shared-select condition of the module doc (else ConfigError naming the row)."""
    mp = map_pattern(macro, spec)
    pat = mp.pattern
    w = np.asarray(w_tile)
    if w.ndim != 2 or w.shape[0] > mp.k_tile or w.shape[1] > macro.cols or w.size == 0:
        raise ConfigError(f"a weight tile of at most {mp.k_tile} x {macro.cols}", key="w_tile",
                          got=repr(w.shape))
    R, P, C, I = macro.rows, macro.sub_macros, macro.cols, macro.pairs_per_mux
    weight = np.zeros((R, P, C), np.int64)
    meta = np.zeros((R, P, C), np.int64)
    source = np.full((R, P, C), -1, np.int64)
    cell_sel = np.zeros((R, P, C), np.int64)
    row_sel = np.zeros((R, P), np.int64)
    feed = np.full((R, P, I, 2), -1, np.int64)
    cols = w.shape[1]
    n_blocks = math.ceil(w.shape[0] / pat.m)
    for b in range(n_blocks):
        lo = b * pat.m
        blk = w[lo:lo + pat.m]
        slots = [slot_of(mp, macro, b, kk) for kk in range(pat.n)]
        for (r, p) in slots:
            for q in range(math.ceil(pat.m / 2)):
                for e in range(2):
                    pos = 2 * q + e
                    if pos < blk.shape[0]:
                        feed[r, p, q, e] = lo + pos
        nz = [np.flatnonzero(blk[:, c]) for c in range(cols)]
        for c, idx in enumerate(nz):
            if len(idx) > pat.n:
                raise ConfigError(f"at most {pat.n} non-zeros per column in each block of "
                                  f"{pat.m}", key=f"w_tile[{lo}:{lo + pat.m}, {c}]",
                                  got=f"{len(idx)} non-zeros")
        if macro.select_scope == "row":
            need = np.zeros(math.ceil(pat.m / 2), np.int64)
            for idx in nz:
                need = np.maximum(need, np.bincount(idx // 2, minlength=len(need)))
            if need.sum() > pat.n:
                raise ConfigError(f"a mask the shared per-(row, sub-macro) pair select can hold "
                                  f"(sum over pairs of the max kept per column <= {pat.n})",
                                  key=f"w_tile block {b} (rows {lo}..{lo + pat.m - 1})",
                                  got=f"{int(need.sum())} slots needed")
            labels = [q for q in range(len(need)) for _ in range(need[q])]
            labels += [0] * (pat.n - len(labels))
            for kk, (r, p) in enumerate(slots):
                row_sel[r, p] = labels[kk]
            for c, idx in enumerate(nz):
                free = list(range(pat.n))
                for pos in idx:
                    kk = next(j for j in free if labels[j] == pos // 2)
                    free.remove(kk)
                    r, p = slots[kk]
                    weight[r, p, c], meta[r, p, c], source[r, p, c] = blk[pos, c], pos % 2, lo + pos
        else:
            for c, idx in enumerate(nz):
                for kk, pos in enumerate(idx):
                    r, p = slots[kk]
                    weight[r, p, c], meta[r, p, c], source[r, p, c] = blk[pos, c], pos % 2, lo + pos
                    cell_sel[r, p, c] = pos // 2
    select = row_sel if macro.select_scope == "row" else cell_sel
    return TilePlacement(weight, meta, select, feed, source)


# --------------------------------------------------------------------------------------------
# Technology section ``dcim:``
# --------------------------------------------------------------------------------------------

class DCiMTech(StrictModel):
    """Technology-table section ``dcim:`` (per-action energies in pJ, areas in um^2)."""

    cell_mac_pj: PosFloat                 # one INT8 x INT8 multiply in a cell (bit-parallel)
    cell_serial_pj_per_bit: PosFloat      # one 8b weight x 1b activation partial product
    adder_pj_per_bit: PosFloat            # one adder bit + its pipeline register (trees, merge)
    mux_pj_per_bit: PosFloat              # one 4:1 mux bit (distribution, both stages)
    weight_write_pj_per_bit: PosFloat     # writing a weight bit into a cell register
    metadata_write_pj_per_bit: PosFloat   # writing a metadata bit (in-cell or select register)
    cell_area_um2: PosFloat               # 9-bit register + 8x8 multiplier + 2:1 in-cell mux
    adder_area_um2_per_bit: PosFloat
    mux_area_um2_per_bit: PosFloat        # 4:1 mux bit
    register_area_um2_per_bit: PosFloat   # psum buffers, merge input registers, select registers
    sources: FrozenList[str] = Field(min_length=1)
    scaling: str = Field(min_length=1)


def macro_area_um2(macro: DCiMMacro, tech: DCiMTech) -> dict[str, float]:
    """Area breakdown of one macro from the structural counts of research/flexcim.md 3.7."""
    P, R, C = macro.sub_macros, macro.rows, macro.cols
    prod = macro.wbits + macro.abits
    tree_bits = sum((R >> (lvl + 1) or 1) * (prod + lvl + 1) for lvl in range(macro.column_tree_depth))
    col_out = prod + macro.column_tree_depth
    merge_bits = sum((P >> (lvl + 1) or 1) * (col_out + lvl + 1) for lvl in range(macro.merge_tree_depth))
    pair_bits = 2 * macro.abits
    return {
        "cells": macro.cells * tech.cell_area_um2,
        "column_trees": P * C * tree_bits * tech.adder_area_um2_per_bit,
        "distribution": R * P * (macro.pairs_per_mux + P) / 4 * pair_bits * tech.mux_area_um2_per_bit,
        # select_scope "cell": every cell has its own pairs_per_mux:1 pair select (the per-cell
        # M:1 selection FlexCiM's shared distribution avoids); a 1:1 select is a wire
        "cell_select": (macro.cells * (macro.pairs_per_mux - 1) / 3 * pair_bits
                        * tech.mux_area_um2_per_bit if macro.select_scope == "cell" else 0.0),
        "psum_buffers": P * C * macro.psum_buffer_entries * col_out * tech.register_area_um2_per_bit,
        "merge": C * (merge_bits * tech.adder_area_um2_per_bit
                      + P * col_out * tech.register_area_um2_per_bit),
    }


def pass_energy_pj(macro: DCiMMacro, tech: DCiMTech, mp: Mapping, vectors: int,
                   cols: int) -> dict[str, float]:
    """Energy of one pass: ``vectors`` inputs through ``cols`` loaded columns (idle cells are
    clock-gated; every loaded column's trees and the merge run per vector)."""
    P, R = macro.sub_macros, macro.rows
    kept_cells = mp.slots_used * cols
    if macro.input_mode == "parallel":
        cell = kept_cells * vectors * tech.cell_mac_pj
    else:
        cell = kept_cells * vectors * macro.abits * tech.cell_serial_pj_per_bit
    prod = macro.wbits + macro.abits
    tree_bits = sum((R >> (lvl + 1) or 1) * (prod + lvl + 1) for lvl in range(macro.column_tree_depth))
    col_out = prod + macro.column_tree_depth
    merge_bits = sum((P >> (lvl + 1) or 1) * (col_out + lvl + 1) for lvl in range(macro.merge_tree_depth))
    steps = vectors * macro.cycles_per_vector
    rows_used = min(R, mp.blocks_per_pass * mp.rows_per_block // max(mp.groups_per_row, 1)
                    if mp.groups_per_row else mp.blocks_per_pass * mp.rows_per_block)
    return {
        "cells": cell,
        "column_trees": P * cols * steps * tree_bits * tech.adder_pj_per_bit,
        "distribution": (rows_used * P * 2 * vectors * 2 * macro.abits
                         + (kept_cells * vectors * 2 * macro.abits * (macro.pairs_per_mux - 1) / 3
                            if macro.select_scope == "cell" else 0)) * tech.mux_pj_per_bit,
        "merge": cols * vectors * merge_bits * tech.adder_pj_per_bit,
        "weight_write": cols * R * P * macro.wbits * tech.weight_write_pj_per_bit,
        "metadata_write": (cols * R * P + (R * P * mp.select_bits if macro.select_scope == "row"
                                           else kept_cells * mp.select_bits))
                          * tech.metadata_write_pj_per_bit,
    }
