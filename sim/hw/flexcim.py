"""FlexCiM: a chip of many FlexCiM DCiM macros (:mod:`sim.hw.dcim`) around buffers, L2 and DRAM.

Accelerator type ``flexcim`` (arch files ``arch/flexcim.yaml`` and the DCiM baselines
``arch/dcim-dense.yaml``, ``arch/dcim-2of4.yaml``). Which N:M pattern each decoder block's
weight GEMMs run comes from the arch's ``sparsity:`` section (:mod:`sim.hw.nm_sparsity`: a
schedule file, a FLOW target or one pattern; a pattern the macro's ``patterns`` list lacks runs
as its fallback). Attention GEMMs (activations x KV cache) and the lm_head run dense.

The chip (the paper is silent on it; research/flexcim.md 5.2: every choice is a parameter)
------------------------------------------------------------------------------------------
* ``macros`` identical macros, in lockstep. An input buffer (``memory.sram.ifmap_kb``) holds
  the activations of a *token chunk* (double-buffered: half in use), an
  output buffer (``ofmap_kb``) its 32-bit partial sums, a weight staging buffer
  (``weight_kb``) the compressed weights on their way from L2/DRAM into the macros.
* Mapping of one GEMM ``O[M,N] = A[M,K] @ W[K,N]`` with pattern p: the macro's mapping gives
  K_tile (K positions a pass covers) and C columns, so the layer is ``k_passes x n_passes``
  tiles (one weight load each). Column tiles are spread over the macros; when there are fewer
  column tiles than macros, each column tile's K passes are split over ``g = min(k_passes,
  macros // n_passes)`` macros too (their partial sums are added at the output buffer). Every
  macro runs the same number of tiles per chunk (the critical macro's; the others idle at the
  end), all at the same K pass, so one input-buffer read is broadcast to all of them.
* Tokens stream through each loaded tile in chunks of T_c = what the input buffer's half
  holds and the output buffer's half holds (``T_c * columns in flight * 4 B``). Activations
  that stay in L2 are re-read from it once per column round, so the input buffer holds one
  K slice of the chunk (``T_c * K_tile * abits/8``); activations in DRAM are read once, so it
  holds all of K (``T_c * K * abits/8``). Weights are reloaded for every chunk: streamed again from DRAM, or from L2 when the
  layer's compressed weights fit in it (``weights_in_l2``). This is the prefill trade-off; a
  decode GEMV (T = 1) is one chunk and reload-bound.
* Weight delivery. The compressed weights (kept weights + metadata,
  ``GemmMapping.compressed_weight_bits``), the chunk's activations and its outputs share the
  L2/DRAM port (the slower of the two on the path), spread evenly over the chunk's tile
  waves (a fluid model of the shared port): wave i of all macros' tiles is delivered in D
  cycles into the staging buffer, which holds ``staging_tiles`` waves; a macro may start
  writing a tile into its cells once the tile is staged. The macro side is the recurrence of
  :mod:`sim.hw.dcim` (one column written per cycle, double-buffered cells when
  ``macro.reload_overlap``), with the start of each write also bounded by the delivery.
* The input buffer feeds each macro a vector per ``c`` cycles (c = 1 bit-parallel, abits
  bit-serial); a port narrower than K_tile*abits/8 bytes a cycle slows the vectors
  (``stall_sram``).
* Cross-tile partial sums: each macro's output column adds its psum into the output buffer
  (read-modify-write, one add per column per vector, at the macro's output rate: no cycles),
  charged as energy (``accumulate``).

``compute_cycles`` is the critical macro's recurrence with ideal memory (no delivery bound, a
full-rate input port); ``stall_sram`` the extra cycles of the input port; ``stall_memory`` the
extra cycles of weight delivery (and the DRAM latency). The recurrence is evaluated per run of
identical tiles and jumps over a run once the state relative to the last write start repeats
(the recurrence is max-plus and shift invariant, so from then on every tile adds the same
cycles): exact, and O(1) per run (:func:`chip_cycles`, checked against a plain loop and, for
one macro with unlimited bandwidth, against :func:`sim.hw.dcim.sequence_cycles` and the
cycle-stepped reference).

Energy: the macro's per-pass energies (:func:`sim.hw.dcim.pass_energy_pj`), buffer reads and
writes, L2, DRAM, accumulation adds and leakage of the buffers, L2 and vector unit (the tech
table gives no DCiM leakage; macros leak nothing in this model).
"""
from __future__ import annotations

import math
from collections import deque
from functools import lru_cache
from typing import Sequence

from pydantic import Field, model_validator

from ..config.errors import ConfigError, InvalidValue
from ..config.nm_schedule import DENSE, Pattern, parse_pattern
from ..config.schema import ArchConfig, MemoryConfig, VectorConfig
from ..core import EnergyLedger
from .accelerator import SystolicAccelerator
from .dcim import DCiMMacro, DCiMTech, map_gemm, macro_area_um2, pass_energy_pj
from .interface import OpResult
from .memory_plan import OperandPlacement
from .nm_sparsity import NMSparsityConfig, check_supported, memo_key, nm_annotations, resolve_layers
from .registry import register

# the types this module registers (read by sim.hw.registry without importing the module)
ACCELERATOR_TYPES = ("flexcim",)
TECH_SECTIONS = ("dcim",)

__all__ = ["FlexCiMArchConfig", "FlexCiMAccelerator", "chip_cycles", "chip_cycles_loop",
           "ACC_BYTES"]

ACC_BYTES = 4          # partial sums in the output buffer: 32-bit


class FlexCiMArchConfig(ArchConfig):
    """``type: flexcim``: macros, buffers (``memory.sram``), L2, DRAM, vector unit, sparsity."""

    macro: DCiMMacro = Field(default_factory=DCiMMacro)
    macros: int = Field(ge=1, le=65536)
    staging_tiles: int = Field(2, ge=1, le=64)   # waves of compressed weights the staging buffer holds
    weights_in_l2: bool = True                  # a layer whose weights fit in L2 is re-read from there
    memory: MemoryConfig
    vector: VectorConfig
    sparsity: NMSparsityConfig = Field(default_factory=NMSparsityConfig)

    @model_validator(mode="after")
    def _patterns(self) -> "FlexCiMArchConfig":
        try:
            check_supported(self.macro.patterns, key="macro.patterns", file=None)
        except ConfigError as exc:
            raise InvalidValue(exc.expected, loc=("macro", "patterns"), got=exc.got) from None
        return self


# --------------------------------------------------------------------------------------------
# The chip recurrence
# --------------------------------------------------------------------------------------------

def _step(state, vec_c, cols, prev, D, overlap, ds, S):
    """One tile: ``state`` = (ls, e, deliv, frees) of the previous tile (None for the first),
    ``prev`` = (vectors, cols) of the previous tile. Returns the new state."""
    if state is None:
        deliv = D
        ls = deliv
        e = ls + max(1, cols - ds)
        return ls, e, deliv, deque([ls + cols])
    ls0, e0, deliv0, frees = state
    t_prev, c_prev = prev
    free = frees[0] if len(frees) >= S else 0          # staging slot of the wave S back
    deliv = max(deliv0, free) + D
    if overlap:
        ls = max(ls0 + c_prev, e0 + ds, deliv)
    else:
        ls = max(e0 + ds + t_prev * vec_c, deliv)
    e = max(e0 + t_prev * vec_c, ls + max(1, cols - ds))
    frees = deque(frees)
    frees.append(ls + cols)
    while len(frees) > S:
        frees.popleft()
    return ls, e, deliv, frees


def _relative(state):
    ls, e, deliv, frees = state
    return (e - ls, deliv - ls) + tuple(f - ls for f in frees)


def _shift(state, d):
    ls, e, deliv, frees = state
    return ls + d, e + d, deliv + d, deque(f + d for f in frees)


def _jump(state, period: int, tiles: int):
    """The state ``tiles`` identical tiles later, each adding ``period`` cycles (a function
    of its own so that tests can count the jumps)."""
    return _shift(state, period * tiles)


def chip_cycles(macro: DCiMMacro, runs: Sequence[tuple[int, int, int, int]], *,
                vector_cycles: int | None = None, staging: int = 2, start: int = 0) -> int:
    """Cycles of a macro's tile sequence given as runs ``(vectors, cols, D, count)``: ``count``
    identical tiles of ``vectors`` input vectors on ``cols`` columns whose weights take ``D``
    cycles to deliver (0: unlimited bandwidth). ``vector_cycles``: cycles per vector (default
    the macro's); ``staging``: waves the staging buffer holds; ``start``: cycle the first
    delivery may begin (e.g. the DRAM latency). Exact (see the module docstring)."""
    c = macro.cycles_per_vector if vector_cycles is None else vector_cycles
    ds, overlap = macro.distribution_stages, macro.reload_overlap
    state, prev = None, None
    for vectors, cols, D, count in runs:
        if count <= 0:
            continue
        i = 0
        if state is None:
            state = _step(None, c, cols, None, D + start, overlap, ds, staging)
            prev, i = (vectors, cols), 1
        last_rel, last_ls = None, None
        while i < count:
            state = _step(state, c, cols, prev, D, overlap, ds, staging)
            prev, i = (vectors, cols), i + 1
            rel = _relative(state)
            if rel == last_rel and prev == (vectors, cols):
                state = _jump(state, state[0] - last_ls, count - i)
                i = count
                break
            last_rel, last_ls = rel, state[0]
    if state is None:
        raise ValueError("chip_cycles needs at least one tile")
    ls, e, _, _ = state
    return e + (prev[0] - 1) * c + macro.tail_cycles


def chip_cycles_loop(macro: DCiMMacro, tiles: Sequence[tuple[int, int, int]], *,
                     vector_cycles: int | None = None, staging: int = 2, start: int = 0) -> int:
    """:func:`chip_cycles` tile by tile, no jumps (the check of the jumps)."""
    c = macro.cycles_per_vector if vector_cycles is None else vector_cycles
    ds, overlap = macro.distribution_stages, macro.reload_overlap
    state, prev = None, None
    for vectors, cols, D in tiles:
        state = _step(state, c, cols, prev, D + (start if state is None else 0), overlap, ds,
                      staging)
        prev = (vectors, cols)
    ls, e, _, _ = state
    return e + (prev[0] - 1) * c + macro.tail_cycles


# --------------------------------------------------------------------------------------------
# The accelerator
# --------------------------------------------------------------------------------------------

@register("flexcim")
class FlexCiMAccelerator(SystolicAccelerator):
    """Many FlexCiM macros with buffers, L2 and DRAM (``type: flexcim``). Vector and memory
    ops run as on the systolic type (same vector unit, L2 and DRAM models)."""

    config_class = FlexCiMArchConfig
    tech_sections = {"dcim": DCiMTech}
    energy_components = ("cells", "column_trees", "distribution", "merge", "weight_write",
                         "metadata_write", "accumulate", "sram", "l2", "dram", "vector", "static")
    capabilities = frozenset({"nm_sparsity"})

    def __init__(self, arch, tech=None):
        super().__init__(arch, tech)
        self.dtech = self.tech_parts["dcim"]
        self.supported = check_supported(arch.macro.patterns, key="macro.patterns",
                                         file=arch.origin)
        self._flex = lru_cache(maxsize=8192)(self._gemm_flex)
        self._layers = lru_cache(maxsize=64)(self._layer_patterns)

    # ------------------------------------------------------------------ static properties ----
    def native_precisions(self):
        return ((self.arch.macro.wbits, self.arch.macro.abits),)

    def peak_macs_per_cycle(self, wbits: int, abits: int) -> float:
        m = self.arch.macro
        return self.arch.macros * m.cells / m.cycles_per_vector

    def causal_query_block(self) -> int:
        """Q.K^T runs with K as the macros' weights, keys along the columns: a block is C."""
        return self.arch.macro.cols

    def describe(self) -> str:
        a, m = self.arch, self.arch.macro
        return (f"{a.macros} FlexCiM macros of {m.sub_macros}x{m.rows}x{m.cols} "
                f"({', '.join(m.patterns)}), {a.clock_ghz:g} GHz")

    def leakage_uw(self) -> dict:
        t, a = self.tech, self.arch
        return {"sram": sum(t.sram_leakage_uw(kb) for kb in self.sram_kb.values()),
                "l2": t.l2_leakage_uw(a.memory.l2.size_kb),
                "vector": a.vector.lanes * t.vector_lane_leakage_uw}

    def macro_area(self) -> dict:
        return macro_area_um2(self.arch.macro, self.dtech)

    def area_um2(self) -> dict:
        t, a = self.tech, self.arch
        out = {f"macro_{k}": a.macros * v for k, v in self.macro_area().items()}
        out.update({"sram": sum(t.sram_area_um2(kb) for kb in self.sram_kb.values()),
                    "l2": t.l2_area_um2(a.memory.l2.size_kb),
                    "vector": a.vector.lanes * t.vector_lane_area_um2,
                    "control": t.controller_area_um2})
        return out

    # ------------------------------------------------------------------ sparsity ----
    def _layer_patterns(self, key, model, seed):
        return resolve_layers(self.arch.sparsity, model, self.supported, seed=seed,
                              arch=self.arch)

    def layer_patterns(self, model, seed: int = 0):
        """Requested and run pattern per decoder block (:class:`~sim.hw.nm_sparsity.LayerPatterns`)."""
        return self._layers(memo_key(self.arch.sparsity, model, seed, self.arch), model, seed)

    def op_annotations(self, model, seed: int = 0):
        return nm_annotations(self.layer_patterns(model, seed), name="nm")

    # ------------------------------------------------------------------ GEMM ----
    def gemm(self, M: int, K: int, N: int, *, wbits: int = 8, abits: int = 8,
             place: OperandPlacement = OperandPlacement(), nm=None, seed: int = 0,
             compress: bool = True, trace=None, **_ignored) -> OpResult:
        """One GEMM with the weight pruned ``nm`` (None / dense: dense). Memoized on every
        argument that changes it (the DCiM has no random draws; ``seed`` does not matter)."""
        m = self.arch.macro
        if wbits > m.wbits or abits > m.abits:
            raise ConfigError(f"operands of at most w{m.wbits}a{m.abits} (the macro's cells)",
                              file=self.arch.origin, key="macro", got=f"w{wbits}a{abits}")
        pat = DENSE if nm is None else parse_pattern(nm, key="nm")
        if pat not in self.supported:
            raise ConfigError("a pattern the macro supports (" +
                              ", ".join(str(s) for s in self.supported) + ")",
                              file=self.arch.origin, key="nm", got=str(pat))
        return self._flex(int(M), int(K), int(N), pat, place, bool(compress))

    def _chunking(self, M, K, N, gm, groups_cols, acts_in_l2):
        """Tokens per chunk: what half of the input buffer and half the output buffer hold.
        Activations resident in L2 are re-read from it per column round, so the input buffer
        stages only the current K slice; from DRAM, a chunk's whole K stays on chip."""
        m = self.arch.macro
        k_held = min(K, gm.mapping.k_tile) if acts_in_l2 else K
        in_tok = int(self.sram_kb["ifmap"] * 512 // max(1, math.ceil(k_held * m.abits / 8)))
        cols_in_flight = min(N, groups_cols * m.cols)
        out_tok = int(self.sram_kb["ofmap"] * 512 // (cols_in_flight * ACC_BYTES))
        t = min(M, in_tok, out_tok)
        if t < 1:
            raise ConfigError(f"input/output buffers that hold one token of this GEMM "
                              f"(K={K}: {math.ceil(K * m.abits / 8)} B in half of ifmap_kb; "
                              f"{cols_in_flight * ACC_BYTES} B of psums in half of ofmap_kb)",
                              file=self.arch.origin, key="memory.sram",
                              got=f"ifmap_kb={self.sram_kb['ifmap']:g}, "
                                  f"ofmap_kb={self.sram_kb['ofmap']:g}")
        return t

    def _gemm_flex(self, M, K, N, pat: Pattern, place: OperandPlacement,
                   compress: bool = True) -> OpResult:
        a, m, t = self.arch, self.arch.macro, self.tech
        gm = map_gemm(m, 1, K, N, str(pat))          # per-vector mapping (passes, bits)
        mp = gm.mapping
        kp, np_ = gm.k_passes, gm.n_passes
        macros = a.macros
        # column tiles over macros; K passes split when there are fewer column tiles
        g = min(kp, macros // np_) if np_ < macros else 1
        col_groups = macros // g                      # macros taking different column tiles
        cols_per_macro = math.ceil(np_ / col_groups)  # column tiles of the critical macro
        kp_per_macro = math.ceil(kp / g)
        tiles_per_chunk = cols_per_macro * kp_per_macro
        active = min(macros, np_ * g)
        cols = min(m.cols, N)
        acts_in_l2 = place.a_src == "l2"
        T = self._chunking(M, K, N, gm, min(col_groups, np_), acts_in_l2)
        full, last = divmod(M, T)
        chunks = [(T, full)] + ([(last, 1)] if last else [])
        n_chunks = full + (1 if last else 0)

        # bytes on the L2/DRAM port
        w_bytes = math.ceil(gm.compressed_weight_bits / 8)
        fits_l2 = a.weights_in_l2 and w_bytes <= a.memory.l2.size_kb * 1024 / 2
        dram_bpc, l2_bpc = self.dram_bytes_per_cycle, a.memory.l2.bytes_per_cycle
        from_dram = place.w_src == "dram"
        a_bytes = math.ceil(M * K * m.abits / 8)
        o_bytes = math.ceil(M * N * m.abits / 8)      # outputs requantized to the act width
        w_dram = w_bytes * (1 if fits_l2 else n_chunks) if from_dram else 0
        w_l2_reads = w_bytes * n_chunks
        a_dram = a_bytes if place.a_src == "dram" else 0
        # activation bytes L2 sends to the input buffer: once per column round when they stay
        # in L2, else once (the chunk's whole K is held in the input buffer)
        a_l2 = a_bytes * cols_per_macro if acts_in_l2 else a_bytes
        o_dram = o_bytes if place.o_dst == "dram" else 0

        # cycles per vector: the macro's, or slower if the input port cannot feed K_tile
        vec_bytes = math.ceil(min(K, mp.k_tile) * m.abits / 8)
        c = m.cycles_per_vector
        c_port = max(c, math.ceil(vec_bytes / a.memory.sram.bytes_per_cycle))

        def port_cycles(chunk_t, first: bool) -> int:
            """Cycles one wave of a chunk's weights (plus its share of acts/outputs) takes."""
            wb = w_bytes if (from_dram and (first or not fits_l2)) else 0
            dram = wb + (a_dram + o_dram) * chunk_t / M
            l2 = w_bytes + (a_l2 + o_bytes) * chunk_t / M
            cyc = max(dram / dram_bpc, l2 / l2_bpc)
            return math.ceil(cyc / tiles_per_chunk)

        def runs(memory: bool):
            """(vectors, cols, D, count) runs of the critical macro; the first chunk may
            stream from DRAM while later ones re-read L2."""
            out = []
            for i, (chunk_t, count) in enumerate(chunks):
                if not memory:
                    out.append((chunk_t, cols, 0, tiles_per_chunk * count))
                    continue
                if i == 0:
                    out.append((chunk_t, cols, port_cycles(chunk_t, True), tiles_per_chunk))
                    count -= 1
                if count:
                    out.append((chunk_t, cols, port_cycles(chunk_t, False),
                                tiles_per_chunk * count))
            return out

        staging = a.staging_tiles

        def cycles(rs, **kw):
            if compress:             # jump over repeated tiles (exact)
                return chip_cycles(m, rs, staging=staging, **kw)
            return chip_cycles_loop(m, [(v, cl, d) for v, cl, d, n in rs for _ in range(n)],
                                    staging=staging, **kw)
        compute = cycles(runs(False))
        with_port = cycles(runs(False), vector_cycles=c_port)
        latency = self.dram_latency if (w_dram or a_dram) else a.memory.l2.latency_cycles
        total = cycles(runs(True), vector_cycles=c_port, start=latency)
        stall_sram = with_port - compute
        stall_memory = total - with_port
        if stall_memory < 0:       # cannot happen (max-plus monotone); keep the invariant loud
            raise AssertionError("flexcim: delivery made the macros faster")

        # energy ------------------------------------------------------------------------
        led = EnergyLedger()
        d = self.dtech
        tiles_total = kp * np_
        last_cols = N - (np_ - 1) * m.cols
        for chunk_t, count in chunks:
            for ncols, ntiles in ((m.cols, kp * (np_ - 1)), (last_cols, kp)):
                if ntiles == 0:
                    continue
                e = pass_energy_pj(m, d, mp, chunk_t, ncols)
                for comp, pj in e.items():
                    led.add(comp, "pass", count * ntiles, pj)
        # psum accumulation at the output buffer (read-modify-write, one add per column)
        adds = (kp - 1) * N * M
        acc_bits = 8 * ACC_BYTES
        led.add("accumulate", "add", adds, acc_bits * d.adder_pj_per_bit)
        # buffers: activations written once per chunk, read once per column round (broadcast)
        skb = self.sram_kb
        led.add("sram", "ifmap_write_byte", a_l2, t.sram_write_pj_per_byte(skb["ifmap"]))
        led.add("sram", "ifmap_read_byte", a_bytes * cols_per_macro,
                t.sram_read_pj_per_byte(skb["ifmap"]))
        led.add("sram", "weight_write_byte", w_l2_reads, t.sram_write_pj_per_byte(skb["weight"]))
        led.add("sram", "weight_read_byte", w_l2_reads, t.sram_read_pj_per_byte(skb["weight"]))
        psum_rw = kp * N * M * ACC_BYTES
        led.add("sram", "ofmap_write_byte", psum_rw, t.sram_write_pj_per_byte(skb["ofmap"]))
        led.add("sram", "ofmap_read_byte", psum_rw - N * M * ACC_BYTES + o_bytes,
                t.sram_read_pj_per_byte(skb["ofmap"]))
        l2kb = a.memory.l2.size_kb
        led.add("l2", "read_byte", w_l2_reads + a_l2 + (o_dram if o_dram else 0),
                t.l2_read_pj_per_byte(l2kb))
        led.add("l2", "write_byte", w_dram + a_dram + o_bytes, t.l2_write_pj_per_byte(l2kb))
        dram_pj = t.dram_pj_per_bit(a.memory.dram.kind)
        led.add("dram", "read_bit", 8 * (w_dram + a_dram), dram_pj)
        led.add("dram", "write_bit", 8 * o_dram, dram_pj)
        self._add_static(led, total)

        dram_busy = math.ceil((w_dram + a_dram + o_dram) / dram_bpc)
        l2_busy = math.ceil((w_l2_reads + a_l2 + o_bytes + w_dram + a_dram + o_dram) / l2_bpc)
        kept = gm.kept_macs * M                     # gm was mapped for one vector
        counters = {"tiles": tiles_total * n_chunks, "chunks": n_chunks,
                    "chunk_tokens": T, "active_macros": active,
                    "weight_bytes": w_bytes, "metadata_bits": gm.metadata_bits,
                    "psum_adds": adds}
        return self._result(f"gemm {M}x{K}x{N} {pat}",
                            cycles=total, compute_cycles=compute,
                            stall_cycles=total - compute, stall_memory=stall_memory,
                            stall_sram=stall_sram, macs=kept,
                            peak_macs_per_cycle=self.peak_macs_per_cycle(8, 8),
                            dram_read_bytes=w_dram + a_dram, dram_write_bytes=o_dram,
                            dram_busy_cycles=min(dram_busy, total),
                            l2_busy_cycles=min(l2_busy, total), tiles=tiles_total * n_chunks,
                            folds=tiles_total, chunks=n_chunks, energy=led, counters=counters)
