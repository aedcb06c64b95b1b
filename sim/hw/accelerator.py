"""A systolic-array accelerator: PE array + double-buffered SRAM + L2 + DRAM, with energy and area.

One GEMM runs as a pipeline of *memory tiles* (groups of array folds, see
:mod:`sim.hw.memory_plan`). The array's own timing per fold comes from the closed-form model in
:mod:`sim.hw.systolic`; what competes for shared resources (the DRAM port, the L2 port, the
two SRAM slots) runs in the event-driven tile simulation of :mod:`sim.hw.tile_pipeline`
(hand-written, jumping from event to event, with exact compression of repeats; not simpy):

* a DMA engine takes a free SRAM slot, reads the tile's bytes from DRAM into L2, then fills SRAM;
* the array computes tile j once its data is in SRAM, for the tile's share of the fold issue
  schedule (or longer if the SRAM port cannot feed the array), then frees the slot;
* finished outputs drain SRAM -> L2 (-> DRAM) in the background, competing with fetches.

``stall = total - compute`` where ``compute`` is the array's cycle count with ideal memory, so a
stall is never negative by construction (checked). Results are memoized by their full key,
seed included, and frozen (:class:`~sim.hw.interface.OpResult`).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..config.schema import SystolicArchConfig
from ..core import EnergyLedger, TraceRecorder
from ..core.clock import hold_cycles_array
from ..core.invariants import require
from .interface import Accelerator, OpResult
from .memory_plan import (OperandPlacement, check_buffers_fit, check_chunk_count,
                          check_gemm_size, check_transfer, plan_gemm)
from .registry import register
from .tile_pipeline import FIELDS, PortSpec, run_tiles
from .systolic import DATAFLOWS, array_timing, map_gemm

# the types this module registers (read by sim.hw.registry without importing the module)
ACCELERATOR_TYPES = ("systolic",)

__all__ = ["SystolicAccelerator", "OpResult", "GemmOperands", "ArrayView", "WeightOutliers",
           "op_seed"]


def op_seed(seed: int, op_key: tuple) -> int | list[int]:
    """The seed of one operator's random draws: the experiment's ``seed`` and a stable key
    of the operator's content (crc32 of its repr: shape, precision, dataflow, array,
    outlier statistics, chunk). The key holds no layer index on purpose: identical blocks
    draw identically and so hit the memo (MicroScopiQ would otherwise run ~32x slower on a
    32-block model); distinct contents draw independently. Seed 0 gives the content key
    alone (the shipped results); any other seed gives ``[content key, seed]`` to numpy's
    SeedSequence, so every seed is a different, reproducible stream."""
    content = zlib.crc32(repr(op_key).encode())
    return content if seed == 0 else [content, int(seed)]


@dataclass(frozen=True)
class GemmOperands:
    """The GEMM a hook is asked about (the whole GEMM, even when the mapper cut it in chunks)."""

    M: int
    K: int
    N: int
    wbits: int
    abits: int
    macs_per_cycle: float
    compress: bool = True      # False: hooks price repeats in full (the exactness check)
    view: object = None        # the type's weight view (array_view), e.g. an N:M pattern
    array_K: int | None = None  # the K the array folds over (K unless a view compresses it)


@dataclass(frozen=True)
class ArrayView:
    """How the array sees one GEMM (:meth:`SystolicAccelerator.array_view`)."""

    K: int                     # the K the array folds over
    weight_bits: float         # stored bits per (kept) weight, metadata included
    act_bits: float            # bits of activation operand per element along K
    macs: int                  # MACs executed


@dataclass(frozen=True)
class WeightOutliers:
    """What an outlier-aware accelerator needs to know about one weight matrix (hashable, so
    it can be part of a memo key): the fraction of micro-blocks holding outliers, per PE-row
    width the fraction of row tiles that hold at least one outlier micro-block, and the
    fraction of weights that are outliers.

    ``channel_share`` (with ``micro``, the micro-block size) replaces the measured row-tile
    fractions by a clustering assumption: all outlier micro-blocks sit in that fraction of the
    input channels (PE rows), spread independently along them. A row tile of ``width``
    weights is ``width / micro`` micro-blocks, so it holds an outlier micro-block with
    probability ``s * (1 - (1 - q) ** (width / micro))``, ``q = frac_ub / s`` and
    ``s = max(channel_share, frac_ub)`` (an op cannot pack its outlier micro-blocks into fewer
    channels than that). ``channel_share = 1`` is "no clustering"."""

    frac_ub: float
    rowtile: tuple[tuple[int, float], ...]
    frac_weights: float = 0.0     # outliers as a fraction of all weights
    channel_share: float | None = None
    micro: int = 8

    def rowtile_frac(self, width: int) -> float:
        """Fraction of ``width``-wide row tiles holding an outlier micro-block: from the
        clustering assumption when ``channel_share`` is set; else measured when the profile
        stores that width, otherwise derived from the nearest stored width w0 as
        ``1 - (1 - p_w0) ** (width / w0)`` (segments of a row taken as independent)."""
        if self.channel_share is not None:
            if self.frac_ub <= 0:
                return 0.0
            share = max(self.channel_share, self.frac_ub)
            return share * (1.0 - (1.0 - self.frac_ub / share) ** (width / self.micro))
        for stored_width, frac in self.rowtile:
            if stored_width == width:
                return frac

        def distance(pair):          # nearest in ratio; the narrower one on a tie
            stored_width, _ = pair
            return abs(math.log(stored_width / width)), stored_width
        w0, p0 = min(self.rowtile, key=distance)
        return 1.0 - (1.0 - p0) ** (width / w0)


@register("systolic")
class SystolicAccelerator(Accelerator):
    """A systolic-array accelerator built from one arch file (``type: systolic``)."""

    config_class = SystolicArchConfig
    energy_components = ("pe_array", "sram", "l2", "dram", "noc", "vector", "static")

    def __init__(self, arch, tech=None):
        super().__init__(arch, tech)
        mem = arch.memory
        self.sram_kb = {"ifmap": mem.sram.ifmap_kb, "weight": mem.sram.weight_kb,
                        "ofmap": mem.sram.ofmap_kb}
        self.dram_bytes_per_cycle = mem.dram.bandwidth_gbps / arch.clock_ghz   # GB/s / Gcycle/s
        self.dram_latency = self.clock.cycles(mem.dram.latency_ns * 1e-9)
        self.ports = PortSpec(dram_bytes_per_cycle=self.dram_bytes_per_cycle,
                              dram_latency=self.dram_latency,
                              l2_bytes_per_cycle=mem.l2.bytes_per_cycle,
                              l2_latency=mem.l2.latency_cycles)
        self._gemm = lru_cache(maxsize=8192)(self._gemm_uncached)
        self.vector = lru_cache(maxsize=8192)(self.vector)
        self.memory_op = lru_cache(maxsize=1024)(self.memory_op)

    # ------------------------------------------------------------------ static properties ----
    def native_precisions(self) -> tuple[tuple[int, int], ...]:
        """The PE modes' (wbits, abits): the arch's ``native_precision`` first (default: the
        first mode), then the others in the arch file's order."""
        pairs = [(m.wbits, m.abits) for m in self.arch.pe.modes]
        n = self.arch.native_precision
        if n is not None:
            pairs.remove((n.wbits, n.abits))
            pairs.insert(0, (n.wbits, n.abits))
        return tuple(pairs)

    def peak_macs_per_cycle(self, wbits: int, abits: int) -> float:
        a = self.arch
        return a.array.rows * a.array.cols * a.mode(wbits, abits).macs_per_cycle

    def on_chip_bytes(self) -> float:
        return self.arch.memory.l2.size_kb * 1024

    def causal_query_block(self) -> int:
        """In Q.K^T the keys lie along the array's columns, so a query block is ``cols``."""
        return self.arch.array.cols

    def describe(self) -> str:
        a = self.arch
        return (f"{a.array.rows}x{a.array.cols} {a.array.dataflow.upper()}, "
                f"{a.clock_ghz:g} GHz")

    def _result(self, operator: str, **fields) -> OpResult:
        return OpResult(components=self.energy_components, operator=operator,
                        **fields).check(f"{self.arch.name} ({self.arch.type})")

    @property
    def pe_width(self) -> float:
        """Bit-products per cycle of the PE datapath (sizes its area and leakage)."""
        return max(m.wbits * m.abits * m.macs_per_cycle for m in self.arch.pe.modes)

    def leakage_uw(self) -> dict:
        t, a = self.tech, self.arch
        return {
            "pe_array": a.array.rows * a.array.cols * t.pe_leakage_uw(self.pe_width),
            "sram": sum(t.sram_leakage_uw(kb) for kb in self.sram_kb.values()),
            "l2": t.l2_leakage_uw(a.memory.l2.size_kb),
            "vector": a.vector.lanes * t.vector_lane_leakage_uw,
        }

    def area_um2(self) -> dict:
        t, a = self.tech, self.arch
        return {
            "pe_array": a.array.rows * a.array.cols * t.pe_area_um2(self.pe_width),
            "sram": sum(t.sram_area_um2(kb) for kb in self.sram_kb.values()),
            "l2": t.l2_area_um2(a.memory.l2.size_kb),
            "vector": a.vector.lanes * t.vector_lane_area_um2,
            "control": t.controller_area_um2,
        }

    def _add_static(self, ledger: EnergyLedger, cycles: int) -> None:
        # uW * ns = 1e-15 J = 1e-3 pJ
        ns = self.clock.seconds(cycles) * 1e9
        for comp, uw in self.leakage_uw().items():
            ledger.add("static", f"leakage_{comp}", ns, uw * 1e-3)

    # ------------------------------------------------------------------------------ GEMM ----
    def gemm(self, M: int, K: int, N: int, *, wbits: int = 8, abits: int = 8,
             dataflow: str | None = None, array: tuple[int, int] | None = None,
             convention: str = "strata", place: OperandPlacement = OperandPlacement(),
             outliers: WeightOutliers | None = None,
             trace: TraceRecorder | None = None, seed: int = 0,
             compress: bool = True, view=None) -> OpResult:
        """One GEMM; ``outliers`` describes the weight matrix for outlier-aware accelerators
        (a plain systolic array computes every weight alike and ignores it). ``seed`` is the
        experiment's seed: with :func:`op_seed` it seeds every random draw of the op (none on
        a plain array). ``compress=False`` simulates every repeated tile and fold in full (same
        result, for checking). ``view`` (hashable, types built on this one) says how the array
        sees the weights, e.g. an N:M pattern (see :meth:`array_view`); None: as stored. The
        result is memoized on every argument, seed included."""
        dataflow = dataflow or self.arch.array.dataflow
        if dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {dataflow!r}")
        rows, cols = array if array is not None else (self.arch.array.rows, self.arch.array.cols)
        key = (int(M), int(K), int(N), int(wbits), int(abits), dataflow, int(rows), int(cols),
               convention, place, outliers, int(seed), bool(compress))
        if trace is not None:          # a traced run records spans, so it is never memoized
            return self._gemm_uncached(*key, trace=trace, view=view)
        return self._gemm(*key) if view is None else self._gemm(*key, view=view)

    def _outer_tilings(self, M, K, N, wbits, abits, dataflow) -> list[list[tuple[int, int, int]]]:
        """Candidate outer tilings (a list of sub-GEMM shapes each), the mapper's choices:

        the whole GEMM at once, or the streamed dimension (M for WS/OS, N for IS) cut into
        chunks small enough that a chunk's streamed operand stays resident in its SRAM half
        (the stationary operand is then fetched once per chunk instead)."""
        split_n = dataflow == "is"
        full = N if split_n else M
        unit_bytes = K * (wbits if split_n else abits) / 8
        fit = int(self.sram_kb["weight" if split_n else "ifmap"] * 1024 / 2 // unit_bytes)
        options = [[(M, K, N)]]
        if 1 <= fit < full:
            check_chunk_count(M, K, N, -(-full // fit))   # before the list is built
            sizes = [fit] * (full // fit) + ([full % fit] if full % fit else [])
            options.append([(M, K, s) if split_n else (s, K, N) for s in sizes])
        return options

    def _schedule(self, shapes, wbits, abits, dataflow, rows, cols, m, convention, place,
                  act_bits=None):
        """Array timings and memory plans of a sequence of sub-GEMMs, run back to back."""
        l2kb = self.arch.memory.l2.size_kb
        distinct = {}          # chunks of one GEMM mostly share a shape: plan each shape once
        for shape in shapes:
            if shape not in distinct:
                timing = array_timing(*shape, rows, cols, dataflow, m, convention)
                distinct[shape] = (timing, plan_gemm(timing.mapping, *shape, wbits, abits,
                                                     self.sram_kb, l2kb, place, act_bits))
        return [distinct[shape] for shape in shapes]

    # hooks for accelerators built on this one ------------------------------------------------
    def stored_weight_bits(self, wbits: int, outliers: WeightOutliers | None) -> float:
        """Bits one weight occupies in memory (a format with metadata stores more)."""
        return wbits

    def array_view(self, M: int, K: int, N: int, wbits: int, abits: int,
                   outliers: WeightOutliers | None, view) -> "ArrayView":
        """How the array sees one GEMM: the K it folds over, the stored bits per weight, the
        bits of activation operand per element along that K, and the MACs it executes. The
        plain array sees the GEMM as it is (``view`` must be None)."""
        if view is not None:
            raise ValueError(f"accelerator type {self.arch.type!r} takes no weight view "
                             f"(got {view!r})")
        return ArrayView(K, self.stored_weight_bits(wbits, outliers), abits, M * K * N)

    def fold_extra_cycles(self, gemm: GemmOperands, timing, outliers: WeightOutliers | None,
                          seed):
        """Cycles each fold of one (sub-)GEMM takes beyond the plain array model (int64 per
        fold) and event counters, or (None, {}) when the array has nothing else in its path.
        ``seed`` (for ``numpy.random.default_rng``) comes from :func:`op_seed`."""
        return None, {}

    def extra_energy(self, gemm: GemmOperands, ledger: EnergyLedger, counters: dict,
                     cols: int) -> None:
        """Charge the energy of the events ``fold_extra_cycles`` counted."""

    def _gemm_uncached(self, M, K, N, wbits, abits, dataflow, rows, cols, convention, place,
                       outliers=None, seed=0, compress=True, trace=None, view=None) -> OpResult:
        m = self.arch.mode(wbits, abits).macs_per_cycle
        av = self.array_view(M, K, N, wbits, abits, outliers, view)
        Ka, wstore, act_bits = av.K, av.weight_bits, av.act_bits
        check_gemm_size(map_gemm(M, Ka, N, rows, cols, dataflow, m), M, Ka, N, m)
        operands = GemmOperands(M=M, K=K, N=N, wbits=wbits, abits=abits, macs_per_cycle=m,
                                compress=compress, view=view, array_K=Ka)

        def roofline(parts):
            """(cycles estimate, DRAM bytes): the mapper is latency first, then traffic."""
            dram = sum(p.total("fetch_dram") + p.total("store_dram") for _, p in parts)
            compute = sum(t.total for t, _ in parts)
            return max(compute, math.ceil(dram / self.dram_bytes_per_cycle)), dram

        candidates = [self._schedule(shapes, wstore, abits, dataflow, rows, cols, m, convention,
                                     place, None if act_bits == abits else act_bits)
                      for shapes in self._outer_tilings(M, Ka, N, wbits, act_bits, dataflow)]
        fitting = [c for c in candidates
                   if all(all(v <= self.sram_kb[b] * 512 for b, v in p.fold_bytes.items())
                          for _, p in c)]
        if not fitting:        # the smallest tiling's first misfit names the buffer
            smallest = candidates[-1]
            _, first_plan = smallest[0]
            check_buffers_fit(first_plan, self.sram_kb)
        parts = min(candidates, key=roofline)
        self._check_rates(sum(p.total("fetch_dram") + p.total("store_dram") for _, p in parts),
                          sum(p.total("fill") + p.total("drain") for _, p in parts),
                          sum(p.total("array_reads") + p.total("array_writes") for _, p in parts))

        # compute span of each memory tile on its sub-GEMM's ideal-memory fold schedule, plus
        # whatever else the folds pass through (e.g. ReCoN)
        content = (M, K, N, wbits, abits, dataflow, rows, cols, outliers) + (
            () if view is None else (view,))
        spans, plans, extra_total, counters = [], [p for _, p in parts], 0, {}
        for i, (timing, plan) in enumerate(parts):
            bounds = np.r_[0, timing.issue_times()[plan.first_fold[1:]], timing.total]
            span = np.diff(bounds)
            chunk_seed = op_seed(seed, content)
            chunk_seed = chunk_seed + i if isinstance(chunk_seed, int) else chunk_seed + [i]
            extra, events = self.fold_extra_cycles(operands, timing, outliers, chunk_seed)
            if extra is not None:
                span = span + np.add.reduceat(extra, plan.first_fold)
                extra_total += int(extra.sum())
                for k, v in events.items():
                    counters[k] = counters.get(k, 0) + v
            spans.append(span)
        pipe = self._run_pipeline(plans, np.concatenate(spans), trace, compress)
        total = pipe.total
        compute = sum(t.total for t, _ in parts) + extra_total
        require(total >= compute, f"{self.arch.name} ({self.arch.type})",
                f"gemm {M}x{K}x{N}", "pipeline total >= compute", total=total, compute=compute)

        def tot(name):
            return sum(p.total(name) for p in plans)

        def per_buffer(attr, buf):
            return sum(getattr(p, attr).get(buf, 0) for p in plans)

        led = EnergyLedger()
        t = self.tech
        led.add("pe_array", f"mac_w{wbits}a{abits}", av.macs, t.mac_pj(wbits, abits, m))
        for buf, kb in self.sram_kb.items():
            led.add("sram", f"{buf}_read_byte", per_buffer("buffer_reads", buf),
                    t.sram_read_pj_per_byte(kb))
            led.add("sram", f"{buf}_write_byte", per_buffer("buffer_writes", buf),
                    t.sram_write_pj_per_byte(kb))
        l2kb = self.arch.memory.l2.size_kb
        led.add("l2", "read_byte", tot("fill") + tot("store_dram"), t.l2_read_pj_per_byte(l2kb))
        led.add("l2", "write_byte", tot("fetch_dram") + tot("drain"), t.l2_write_pj_per_byte(l2kb))
        dram_pj = t.dram_pj_per_bit(self.arch.memory.dram.kind)
        led.add("dram", "read_bit", 8 * tot("fetch_dram"), dram_pj)
        led.add("dram", "write_bit", 8 * tot("store_dram"), dram_pj)
        led.add("noc", "array_edge_byte", tot("array_reads") + tot("array_writes"),
                t.noc_pj_per_byte)
        self.extra_energy(operands, led, counters, cols)
        self._add_static(led, total)
        return self._result(f"gemm {M}x{K}x{N} w{wbits}a{abits} {dataflow}",
                            cycles=total, compute_cycles=compute, stall_cycles=total - compute,
                            stall_memory=pipe.stall_memory, stall_sram=pipe.stall_sram,
                            stall_drain=total - pipe.array_end, macs=av.macs,
                            peak_macs_per_cycle=rows * cols * m,
                            dram_read_bytes=tot("fetch_dram"), dram_write_bytes=tot("store_dram"),
                            dram_busy_cycles=pipe.dram_busy, l2_busy_cycles=pipe.l2_busy,
                            tiles=sum(p.tiles for p in plans),
                            folds=sum(t.mapping.folds for t, _ in parts),
                            chunks=len(parts), energy=led, counters=counters)

    def _check_rates(self, dram_bytes, l2_bytes, sram_bytes=0) -> None:
        """An op whose bytes would take more than 2^53 cycles on a port is refused (the rates'
        keys are named); see memory_plan.check_transfer."""
        mem = self.arch.memory
        check_transfer(dram_bytes, self.dram_bytes_per_cycle, "memory.dram.bandwidth_gbps",
                       mem.dram.bandwidth_gbps)
        check_transfer(l2_bytes, mem.l2.bytes_per_cycle, "memory.l2.bytes_per_cycle",
                       mem.l2.bytes_per_cycle)
        check_transfer(sram_bytes, mem.sram.bytes_per_cycle, "memory.sram.bytes_per_cycle",
                       mem.sram.bytes_per_cycle)

    def _run_pipeline(self, plans, spans, trace, compress=True):
        """Fetch / compute / drain of the memory tiles (see :mod:`sim.hw.tile_pipeline`)."""
        def cat(name):
            return np.concatenate([getattr(p, name) for p in plans])
        port = cat("array_reads") + cat("array_writes")
        sram_bpc = self.arch.memory.sram.bytes_per_cycle
        dur = np.maximum(spans, np.ceil(port / sram_bpc).astype(np.int64))
        field = {"fetch_dram": cat("fetch_dram"), "fill": cat("fill"), "dur": dur,
                 "span": spans, "drain": cat("drain"), "store": cat("store_dram")}
        X = np.stack([field[f] for f in FIELDS], axis=1).astype(np.int64)
        return run_tiles(X, self.ports, trace, compress)

    # ------------------------------------------------------------------- vector / memory ----
    def vector(self, elements: int, ops_per_element: float, in_bytes: int, out_bytes: int,
               *, place: OperandPlacement = OperandPlacement(a_src="l2", w_src="l2",
                                                             o_dst="l2")) -> OpResult:
        """Element-wise op on the vector unit, streaming through L2 (and DRAM if placed there)."""
        t, mem = self.tech, self.arch.memory
        ops = int(math.ceil(elements * ops_per_element))
        compute = -(-ops // self.arch.vector.lanes)
        dram_r = in_bytes if place.a_src == "dram" else 0
        dram_w = out_bytes if place.o_dst == "dram" else 0
        self._check_rates(dram_r + dram_w, in_bytes + out_bytes)
        l2_busy = int(hold_cycles_array(in_bytes + out_bytes, mem.l2.bytes_per_cycle))
        dram_busy = int(hold_cycles_array(dram_r + dram_w, self.dram_bytes_per_cycle))
        total = max(compute, l2_busy, dram_busy) + (self.dram_latency if dram_r else 0)
        led = EnergyLedger()
        l2kb = mem.l2.size_kb
        led.add("vector", "op", ops, t.vector_pj_per_op)
        led.add("l2", "read_byte", in_bytes, t.l2_read_pj_per_byte(l2kb))
        led.add("l2", "write_byte", out_bytes, t.l2_write_pj_per_byte(l2kb))
        dram_pj = t.dram_pj_per_bit(mem.dram.kind)
        led.add("dram", "read_bit", 8 * dram_r, dram_pj)
        led.add("dram", "write_bit", 8 * dram_w, dram_pj)
        self._add_static(led, total)
        return self._result("vector", cycles=total, compute_cycles=compute,
                            stall_cycles=total - compute,
                            stall_memory=total - compute, dram_read_bytes=dram_r,
                            dram_write_bytes=dram_w, dram_busy_cycles=dram_busy,
                            l2_busy_cycles=l2_busy, energy=led)

    def memory_op(self, read_bytes: int, write_bytes: int = 0) -> OpResult:
        """A pure DRAM -> L2 move (e.g. an embedding gather): bandwidth plus latency."""
        mem, t = self.arch.memory, self.tech
        self._check_rates(read_bytes + write_bytes, read_bytes)
        busy = int(hold_cycles_array(read_bytes + write_bytes, self.dram_bytes_per_cycle))
        total = busy + self.dram_latency
        led = EnergyLedger()
        dram_pj = t.dram_pj_per_bit(mem.dram.kind)
        led.add("dram", "read_bit", 8 * read_bytes, dram_pj)
        led.add("dram", "write_bit", 8 * write_bytes, dram_pj)
        led.add("l2", "write_byte", read_bytes, t.l2_write_pj_per_byte(mem.l2.size_kb))
        self._add_static(led, total)
        return self._result("memory", cycles=total, compute_cycles=0, stall_cycles=total,
                            stall_memory=total, dram_read_bytes=read_bytes,
                            dram_write_bytes=write_bytes, dram_busy_cycles=busy, energy=led)
