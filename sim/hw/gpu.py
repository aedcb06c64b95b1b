"""A GPU (``type: gpu``): per-kernel roofline with shape-dependent efficiencies and board power.

A step's graph nodes are priced together (:meth:`GpuAccelerator.price_nodes`), because on a GPU
one kernel may cover several nodes: q/k/v projections run as one fused GEMM (``fused_qkv``),
gate/up as another (``fused_gate_up``), and a layer's attention (Q·Kᵀ, softmax, P·V of every
sequence, every shape group) is one fused kernel per phase (prefill, decode). Every kernel
takes

    t = max(compute, memory) + kernel_overhead

* GEMM ``O[M,N] = A[M,K] W[K,N]``: the library is taken to pick the fastest of its tilings
  (tiles of ``TILES`` rows x columns, split-K factors 1..``MAX_SPLIT_K``). For one tiling,
  CTAs = ceil(M/tm) ceil(N/tn) s run in waves of ``sms`` (one CTA per SM); a CTA's tensor rate
  is the SM's share of the peak times the achieved fraction ``compute_fraction`` times a tile
  efficiency ``min(1, I(tile) / tile_intensity_knee)`` with ``I = tm tn / (tm + tn)``, the
  tile's operand reuse (FLOPs per byte loaded into shared memory is proportional to it; below
  the knee the SM's operand bandwidth, not its tensor cores, limits). Memory: weights +
  activations + outputs (+ split-K partial sums in fp32, written and read once) at
  ``hbm_fraction`` of the HBM bandwidth, scaled by ``min(1, CTAs / sms)`` (an SM without a
  CTA issues no loads). So the efficiency of a GEMM follows from tile quantisation (M = 65 on
  64-row tiles computes two tiles), wave quantisation (133 CTAs on 132 SMs take two waves)
  and operand reuse, not from a fit per shape.
* attention: the graph's parts (``sim.workload.graph.ragged_shape``) are each sequence's own
  shape. Prefill is FlashAttention-2's forward kernel (what torch SDPA's flash backend runs):
  one CTA per (query block of ``Br`` rows, query head) walks the keys the causal mask leaves
  it in tiles of ``Bc`` (diagonal tiles computed whole; ``FA2_TILES`` by head_dim). Per score
  element a CTA spends ``4 d`` tensor FLOPs at ``attention_fraction`` of the SM's tensor peak
  *plus* one exponential at the SM's special-function rate (``gpu.sfu_per_clk``): FA2 issues
  the softmax between its MMAs, so the two add, and the exponential's share grows as head_dim
  shrinks (at d = 64 it is about a third of the time). A CTA also loads its Q tile and first
  K/V tiles and stores its O tile at its SM's share of the HBM bandwidth. ``ctas_per_sm`` CTAs
  share an SM (shared memory and registers), so each runs at that fraction of the SM when the
  grid fills the GPU. CTAs are dispatched in grid order (query blocks of a head in increasing
  causal length, heads one after another) to the first free slot, so the longest blocks of the
  last heads run last and leave a tail: the causal kernel's efficiency is below the dense one
  (and LPT would underestimate it). Short prompts that leave the GPU idle take the split-KV
  path of FA2's heuristic (``fa2_num_splits``): 64-row blocks, the keys cut in ``s`` chunks,
  and a combine kernel. Memory: Q, O and the K/V each block reads, at the achieved bandwidth.
  Decode: a split-KV kernel (flash-decoding): the KV of each sequence
  is cut into chunks sized so that about ``decode_ctas_per_sm`` x ``sms`` CTAs exist, so work
  follows each sequence's own context (one long sequence among short ones costs its own
  bytes, not the batch's maximum); time = KV bytes at the achieved bandwidth (scaled by the
  CTAs in flight), plus ``decode_combine_kernels`` extra kernels when any sequence is split.
* vector ops (norms, activation, residual adds, the embedding gather, KV-cache writes) are
  memory bound: each of the op's ``kernels`` moves its bytes at the achieved bandwidth.
* launch: with CUDA graphs (``cuda_graph: true``) one ``launch_overhead_us`` per step (the
  graph launch), else one per kernel.

Power: P = idle + compute_w u_c + memory_w u_m, capped at the TDP, with u_c the kernel's
FLOP rate over the peak and u_m its byte rate over the HBM bandwidth; energy = P t, booked as
``idle`` (idle_w t) and ``compute`` / ``memory`` (the dynamic part, scaled down together when
the cap binds). Tensor parallelism is the generic one of :mod:`sim.workload.parallel`. A
collective is one ring kernel at idle power: with ``calibration.collectives`` (fitted on NCCL
traces by ``bench/fit_collectives.py``) it takes ``launch + steps hop + bus_bytes / bus_bw`` of
the protocol that is fastest for its size (NCCL's own selection rule), with ``steps`` = 2(p-1)
ring hops for an all-reduce and p-1 for an all-gather and ``bus_bytes`` = 2(p-1)/p and (p-1)/p
of the buffer; without it, the ring of the arch's ``chip_link`` figures plus a kernel overhead.

Units: the OpResult's cycles are of ``clock_ghz`` (the boost clock); the figures of the arch
file are spec-sheet numbers (sources in the files), the calibration fractions are fitted on
measured traces (``bench/fit_gpu.py``, ``traces/h200/calibration.yaml``).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import replace
from functools import lru_cache
from typing import Annotated

from pydantic import Field

from ..config.schema import ArchConfig, NonNegFloat, PosFloat, PosInt, StrictModel
from ..core import EnergyLedger
from .interface import Accelerator, OpResult
from .registry import register

# the types this module registers (read by sim.hw.registry without importing the module)
ACCELERATOR_TYPES = ("gpu",)

__all__ = ["GpuAccelerator", "GpuArchConfig", "TILES", "gemm_seconds", "ring_seconds",
           "ring_steps", "calibrated_ring_seconds", "GpuCollectives"]

Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
#: CTA tiles (rows x columns of O) the GEMM library chooses among (CUTLASS/cuBLAS Hopper tiles)
TILES = ((128, 256), (256, 128), (128, 128), (64, 256), (64, 128), (128, 64), (64, 64))
MAX_SPLIT_K = 16
#: query block of the fused attention kernel (FlashAttention-2/3's BLOCK_M)
ATTENTION_BLOCK = 128
#: KV tokens one decode CTA loads per iteration (chunk sizes are multiples of it)
DECODE_BLOCK = 64
#: FlashAttention-2 forward tiles by head_dim (flash_fwd_launch_template.h, sm80+ path used on
#: sm90): largest head_dim -> (Br query rows, Bc key columns, warps per CTA)
FA2_TILES = ((64, 128, 128, 4), (128, 128, 64, 4), (256, 128, 64, 8))
#: FA2's split-KV path: query rows per CTA and key block by head_dim (flash_api.cpp)
FA2_SPLIT_ROWS = 64
FA2_SPLIT_BLOCK_N = ((64, 256), (128, 128), (256, 64))


class TensorPeaks(StrictModel):
    """Dense (no 2:4 sparsity) tensor-core peaks, TFLOP/s (TOPS for int8)."""

    bf16: PosFloat
    fp16: PosFloat
    fp8: PosFloat | None = None      # A100 has none
    int8: PosFloat


class GpuSpec(StrictModel):
    """Spec-sheet figures of one GPU board."""

    sms: PosInt
    l2_mb: PosFloat
    hbm_gb: PosFloat
    hbm_bandwidth_gbps: PosFloat
    tensor_tflops: TensorPeaks
    tdp_w: PosFloat
    base_clock_mhz: PosFloat
    boost_clock_mhz: PosFloat
    # special-function (exp2, rsqrt ...) results per SM per clock: 16 on compute capability
    # 8.x and 9.0 (CUDA C++ Programming Guide, arithmetic instruction throughput table)
    sfu_per_clk: PosInt = 16
    smem_per_sm_kb: PosFloat = 228     # shared memory a CTA may use per SM (H100/H200: 228)
    registers_per_sm: PosInt = 65536


class GpuKernels(StrictModel):
    """How the inference engine maps graph nodes to kernels (counts per node)."""

    fused_qkv: bool = True
    fused_gate_up: bool = True
    norm: PosInt = 1
    act: PosInt = 1
    residual: PosInt = 1
    embed: PosInt = 1
    kv_write: Annotated[int, Field(ge=0, le=64)] = 1      # KV-cache append (per layer)
    decode_combine: Annotated[int, Field(ge=0, le=64)] = 1  # merge of split-KV partials
    # passes over the fp32 partial outputs the merge makes, and whether every sequence's
    # partials are padded to the most split sequence's count (one dense [seqs, heads, splits,
    # head_dim] tensor) or only its own chunks are merged
    decode_combine_passes: Annotated[int, Field(ge=0, le=64)] = 2
    decode_combine_padded: bool = False
    mixed_concat: Annotated[int, Field(ge=0, le=64)] = 0   # joining prefill+decode outputs
    attention_exp_per_score: NonNegFloat = 1.0   # exponentials per score element (FA2: one)
    lm_gather: Annotated[int, Field(ge=0, le=64)] = 0     # picking the logit rows


class GpuPower(StrictModel):
    idle_w: PosFloat
    compute_w: NonNegFloat       # extra watts at 100 % of the tensor peak
    memory_w: NonNegFloat        # extra watts at 100 % of the HBM bandwidth


class RingProtocol(StrictModel):
    """One NCCL protocol (LL, LL128, Simple) of a ring collective: its latency per ring hop
    and the bus bandwidth it sustains (NCCL-tests' busbw: bytes a rank sends per second)."""

    name: str
    hop_us: NonNegFloat
    bus_gbps: PosFloat


class RingCollective(StrictModel):
    """A fitted ring collective: fixed cost of one call (launch, setup, tail) and protocols."""

    launch_us: NonNegFloat
    protocols: Annotated[list[RingProtocol], Field(min_length=1)]


class GpuCollectives(StrictModel):
    """Collectives fitted on measured traces; a kind left out falls back to ``chip_link``."""

    source: str = "uncalibrated"
    allreduce: RingCollective | None = None
    allgather: RingCollective | None = None


class GpuCalibration(StrictModel):
    """The few physical parameters fitted on traces (defaults: uncalibrated guesses)."""

    source: str = "uncalibrated defaults"
    compute_fraction: Fraction = 0.8       # of the tensor peak a big GEMM tile sustains
    attention_fraction: Fraction = 0.5     # of the tensor peak FA2's MMAs sustain (mma.sync)
    hbm_fraction: Fraction = 0.85          # of the HBM bandwidth a streaming kernel sustains
    tile_intensity_knee: PosFloat = 64.0   # tile reuse tm tn/(tm+tn) at which an SM is fed
    kernel_overhead_us: NonNegFloat = 2.0  # per kernel: launch gap, ramp-up and tail
    launch_overhead_us: NonNegFloat = 5.0  # per CUDA-graph launch (or per kernel without)
    decode_ctas_per_sm: PosFloat = 4.0     # split-KV target
    decode_min_chunk: PosInt = 128         # smallest KV chunk a decode CTA takes
    cuda_graph: bool = True
    power: GpuPower
    collectives: GpuCollectives | None = None
    kernels: GpuKernels = Field(default_factory=GpuKernels)


class GpuArchConfig(ArchConfig):
    """A GPU board (``type: gpu``)."""

    gpu: GpuSpec
    calibration: GpuCalibration


def ring_steps(kind: str, chips: int) -> int:
    """Ring hops of one collective: 2(p-1) for an all-reduce (reduce-scatter + all-gather)."""
    return {"allreduce": 2 * (chips - 1), "allgather": chips - 1}[kind]


def ring_seconds(kind: str, nbytes: float, chips: int, bandwidth: float, hop_s: float) -> float:
    """Ring all-reduce: 2(p-1)/p bytes/bandwidth + 2(p-1) hops; all-gather: half of that."""
    steps = ring_steps(kind, chips)
    return nbytes * steps / chips / bandwidth + steps * hop_s


def calibrated_ring_seconds(kind: str, nbytes: float, chips: int,
                            fit: RingCollective) -> tuple[float, str]:
    """(seconds, protocol) of a fitted ring collective of ``nbytes`` (an all-gather's output)
    on ``chips`` GPUs: the fastest protocol's launch + steps hop + bus bytes / bus bandwidth."""
    steps = ring_steps(kind, chips)
    bus = nbytes * steps / chips
    return min((fit.launch_us * 1e-6 + steps * p.hop_us * 1e-6 + bus / (p.bus_gbps * 1e9), p.name)
               for p in fit.protocols)


def tile_efficiency(tm: int, tn: int, knee: float) -> float:
    return min(1.0, tm * tn / (tm + tn) / knee)


def gemm_tilings(M, K: int, N: int, *, peak: float, bandwidth: float, sms: int, knee: float,
                 a_bytes, w_bytes, o_bytes, minimum=min, maximum=max):
    """Every tiling of :data:`TILES` x split-K of one GEMM as (seconds, bytes moved,
    (tm, tn, split)), in the order the fastest is chosen. ``M`` and the byte counts may be
    numpy arrays (with ``minimum``/``maximum`` = ``np.minimum``/``np.maximum``): the step
    tables price every row count at once with the same arithmetic."""
    flops_sm = peak / sms
    base = a_bytes + w_bytes + o_bytes
    for tm, tn in TILES:
        eff = tile_efficiency(tm, tn, knee)
        tiles = -(-M // tm) * -(-N // tn)
        for s in (1, 2, 4, 8, 16):
            if s > 1 and (s > MAX_SPLIT_K or K // s < 128):
                break
            ctas = tiles * s
            waves = -(-ctas // sms)
            t_c = waves * 2.0 * tm * tn * -(-K // s) / (flops_sm * eff)
            moved = base + (2 * 4 * M * N * s if s > 1 else 0)
            t_m = moved / (bandwidth * minimum(1.0, ctas / sms))
            yield maximum(t_c, t_m), moved, (tm, tn, s)


def gemm_seconds(M: int, K: int, N: int, *, peak: float, bandwidth: float, sms: int,
                 knee: float, a_bytes: float, w_bytes: float, o_bytes: float):
    """(seconds, bytes moved, chosen (tm, tn, split)) of one GEMM without the kernel overhead:
    the fastest tiling of :data:`TILES` x split-K. ``peak`` is the achieved tensor rate of the
    whole GPU (FLOP/s), ``bandwidth`` the achieved HBM rate (B/s)."""
    best = None
    for t, moved, tiling in gemm_tilings(M, K, N, peak=peak, bandwidth=bandwidth, sms=sms,
                                         knee=knee, a_bytes=a_bytes, w_bytes=w_bytes,
                                         o_bytes=o_bytes):
        if best is None or t < best[0] - 1e-15:
            best = (t, moved, tiling)
    return best


def fa2_tile(head_dim: int) -> tuple[int, int, int]:
    """(Br, Bc, warps) of FlashAttention-2's forward kernel for this head_dim."""
    for top, br, bc, warps in FA2_TILES:
        if head_dim <= top:
            return br, bc, warps
    return FA2_TILES[-1][1:]


def fa2_num_splits(blocks: int, slots: int, n_blocks: int, max_splits: int = 128) -> int:
    """Split-KV factor of FA2's heuristic: one split when the grid's ``blocks`` CTAs nearly fill
    the ``slots``, else the fewest splits of the ``n_blocks`` key blocks whose last wave is at
    least 85 % as full as the best choice's (split counts that give the same chunk size as one
    fewer are skipped)."""
    if blocks >= 0.8 * slots:
        return 1
    top = min(max_splits, slots, n_blocks)
    eff = {}
    for s in range(1, top + 1):
        if s > 1 and -(-n_blocks // s) == -(-n_blocks // (s - 1)):
            continue
        waves = blocks * s / slots
        eff[s] = waves / math.ceil(waves)
    best = max(eff.values())
    return next(s for s, e in eff.items() if e >= 0.85 * best)


def greedy_makespan(works: list, slots: int) -> float:
    """Finish time of CTAs of the given works dispatched in this order, each to the first free
    of ``slots`` identical slots (what the hardware block scheduler does)."""
    if len(works) <= slots:
        return max(works, default=0.0)
    heap = [0.0] * slots
    end = 0.0
    for w in works:
        t = heap[0] + w
        heapq.heapreplace(heap, t)
        if t > end:
            end = t
    return end


@register("gpu")
class GpuAccelerator(Accelerator):
    """A GPU built from one arch file (``type: gpu``)."""

    config_class = GpuArchConfig
    energy_components = ("compute", "memory", "idle", "link")

    def __init__(self, arch, tech=None):
        super().__init__(arch, tech)
        g, c = arch.gpu, arch.calibration
        self.spec, self.cal = g, c
        self.bandwidth = g.hbm_bandwidth_gbps * 1e9 * c.hbm_fraction    # achieved B/s
        self.overhead = c.kernel_overhead_us * 1e-6
        # layers repeat: price each distinct GEMM and attention kernel once (results are frozen)
        self._gemm_result = lru_cache(maxsize=8192)(self._gemm_result)
        self._attention_kernel = lru_cache(maxsize=8192)(self._attention_kernel)

    # ------------------------------------------------------------------ static properties ----
    def native_precisions(self):
        """bf16 first; int8/fp8 tensor cores (w8a8) and weight-only quantisation on bf16."""
        return ((16, 16), (8, 8), (8, 16), (4, 16))

    def peak_flops(self, wbits: int, abits: int) -> float:
        """Dense tensor FLOP/s at this precision (8-bit activations: fp8, else int8)."""
        t = self.spec.tensor_tflops
        if abits <= 8:
            return (t.fp8 or t.int8) * 1e12
        return t.bf16 * 1e12

    def peak_macs_per_cycle(self, wbits: int, abits: int) -> float:
        return self.peak_flops(wbits, abits) / 2 / (self.arch.clock_ghz * 1e9)

    def area_um2(self) -> dict:
        return {}

    def memory_capacity_bytes(self) -> float:
        return self.spec.hbm_gb * 1e9

    def on_chip_bytes(self) -> float:
        return self.spec.l2_mb * 2**20

    def causal_query_block(self) -> int:
        return ATTENTION_BLOCK

    def describe(self) -> str:
        g = self.spec
        return (f"GPU, {g.sms} SMs, {g.tensor_tflops.bf16:g} TFLOP/s bf16, "
                f"{g.hbm_gb:g} GB at {g.hbm_bandwidth_gbps:g} GB/s, {g.tdp_w:g} W")

    # ----------------------------------------------------------------------- one kernel ----
    def _kernel(self, operator: str, seconds: float, flops: float, nbytes: float,
                compute_s: float, macs: int = 0, wbits: int = 16, abits: int = 16,
                kernels: int = 1, extra_s: float = 0.0) -> OpResult:
        """The OpResult of ``kernels`` kernels lasting ``seconds`` of roofline time in all,
        plus their overheads and ``extra_s`` (a launch); energy from the power model."""
        total_s = seconds + kernels * self.overhead + extra_s
        cycles = self.clock.cycles(total_s) if total_s > 0 else 0
        compute = min(cycles, self.clock.cycles(compute_s)) if compute_s > 0 else 0
        mem_cycles = min(cycles, self.clock.cycles(nbytes / self.bandwidth)) if nbytes else 0
        led = self._energy(total_s, flops, nbytes, wbits, abits)
        return OpResult(cycles=cycles, compute_cycles=compute, stall_cycles=cycles - compute,
                        stall_memory=cycles - compute, macs=int(macs),
                        peak_macs_per_cycle=self.peak_macs_per_cycle(wbits, abits),
                        dram_read_bytes=int(nbytes), dram_busy_cycles=mem_cycles,
                        energy=led, components=self.energy_components, operator=operator,
                        counters={"kernels": int(kernels)}
                        ).check(f"{self.arch.name} ({self.arch.type})")

    def power_w(self, seconds: float, flops: float, nbytes: float, wbits=16, abits=16):
        """(idle W, dynamic compute W, dynamic memory W) over a kernel, capped at the TDP."""
        p = self.cal.power
        if seconds <= 0:
            return p.idle_w, 0.0, 0.0
        u_c = min(1.0, flops / seconds / self.peak_flops(wbits, abits))
        u_m = min(1.0, nbytes / seconds / (self.spec.hbm_bandwidth_gbps * 1e9))
        pc, pm = p.compute_w * u_c, p.memory_w * u_m
        room = max(self.spec.tdp_w - p.idle_w, 0.0)
        if pc + pm > room:
            scale = room / (pc + pm)
            pc, pm = pc * scale, pm * scale
        return min(p.idle_w, self.spec.tdp_w), pc, pm

    def _energy(self, seconds, flops, nbytes, wbits=16, abits=16) -> EnergyLedger:
        idle, pc, pm = self.power_w(seconds, flops, nbytes, wbits, abits)
        led = EnergyLedger()
        ns = seconds * 1e9
        led.add("idle", "board_ns", ns, idle * 1e3)       # 1 W for 1 ns = 1e-9 J = 1e3 pJ
        led.add("compute", "tensor_ns", ns, pc * 1e3)
        led.add("memory", "hbm_ns", ns, pm * 1e3)
        return led

    def _achieved_peak(self, wbits, abits, fraction):
        return self.peak_flops(wbits, abits) * fraction

    def _gemm_result(self, M, K, N, wbits, abits, a_bytes, w_bytes, o_bytes, operator):
        c = self.cal
        peak = self._achieved_peak(wbits, abits, c.compute_fraction)
        t, moved, _ = gemm_seconds(M, K, N, peak=peak, bandwidth=self.bandwidth,
                                   sms=self.spec.sms, knee=c.tile_intensity_knee,
                                   a_bytes=a_bytes, w_bytes=w_bytes, o_bytes=o_bytes)
        flops = 2.0 * M * K * N
        return self._kernel(operator, t, flops, moved, min(t, flops / peak), macs=M * K * N,
                            wbits=wbits, abits=abits)

    # ------------------------------------------------------- interface (node by node) ----
    def gemm(self, M: int, K: int, N: int, *, wbits: int = 16, abits: int = 16, **_) -> OpResult:
        """One GEMM kernel (activations and outputs at abits, weights at wbits)."""
        return self._gemm_result(M, K, N, wbits, abits, math.ceil(M * K * abits / 8),
                                 math.ceil(K * N * wbits / 8), math.ceil(M * N * abits / 8),
                                 f"gemm {M}x{K}x{N}")

    def vector(self, elements: int, ops_per_element: float, in_bytes: int, out_bytes: int,
               **_) -> OpResult:
        nbytes = in_bytes + out_bytes
        return self._kernel("vector", nbytes / self.bandwidth, 0.0, nbytes, 0.0)

    def memory_op(self, read_bytes: int, write_bytes: int = 0) -> OpResult:
        nbytes = read_bytes + write_bytes
        return self._kernel("memory", nbytes / self.bandwidth, 0.0, nbytes, 0.0)

    def collective(self, kind: str, nbytes: int, chips: int) -> OpResult:
        """A ring collective on NVLink: one kernel, idle power over its time. Fitted figures
        (``calibration.collectives``, their own fixed cost in place of the kernel overhead)
        where there are some for this kind, else ``chip_link``'s."""
        bw, hop, pj_bit = self.chip_link()
        fit = getattr(self.cal.collectives, kind, None) if self.cal.collectives else None
        if fit is not None:
            t, _ = calibrated_ring_seconds(kind, nbytes, chips, fit)
            r = replace(self._kernel(kind, t, 0.0, 0.0, 0.0, kernels=0),
                        counters={"kernels": 1})
        else:
            r = self._kernel(kind, ring_seconds(kind, nbytes, chips, bw, hop), 0.0, 0.0, 0.0)
        steps = ring_steps(kind, chips)
        led = r.energy.copy()
        led.add("link", f"{kind}_bit", 8 * nbytes * steps / chips, pj_bit)
        return replace(r, energy=led)

    # -------------------------------------------------------------- the step as a whole ----
    def price_nodes(self, ops: list, seed: int = 0) -> list:
        """One OpResult per node: fused GEMMs are priced once on the first node of the group
        (the others get 0), a layer's attention once per phase on its first Q·Kᵀ node."""
        kn = self.cal.kernels
        zero = self._kernel("fused", 0.0, 0.0, 0.0, 0.0, kernels=0)
        out: list = [None] * len(ops)
        by_layer: dict[int, dict[str, list[int]]] = {}
        for i, op in enumerate(ops):
            by_layer.setdefault(op["layer"], {}).setdefault(op["op"], []).append(i)
        for i, op in enumerate(ops):
            if out[i] is not None:
                continue
            kind, name = op["kind"], op["op"]
            group = by_layer[op["layer"]]
            if kind == "gemm":
                fuse = ((kn.fused_qkv and name in ("q_proj", "k_proj", "v_proj")) and
                        ("q_proj", "k_proj", "v_proj")) or \
                       ((kn.fused_gate_up and name in ("gate_proj", "up_proj")) and
                        ("gate_proj", "up_proj")) or (name,)
                members = [j for n in fuse for j in group.get(n, [])]
                N = sum(ops[j]["N"] for j in members)
                r = self._gemm_result(op["M"], op["K"], N, op["wbits"], op["abits"],
                                      op["a_bytes"], sum(ops[j]["w_bytes"] for j in members),
                                      sum(ops[j]["o_bytes"] for j in members),
                                      f"gemm {op['M']}x{op['K']}x{N} ({'+'.join(fuse)})")
                if name == "lm_head" and kn.lm_gather:
                    r = self._plus_kernels(r, kn.lm_gather)
                r = self._plus_kv_write(r, ops, members)
                for j in members:
                    out[j] = zero
                out[i] = r
            elif kind == "attention" or name == "softmax":
                self._price_attention(ops, group, out, zero)
            elif kind == "vector":
                k = {"norm_attn": kn.norm, "norm_ffn": kn.norm, "final_norm": kn.norm,
                     "act": kn.act}.get(name, kn.residual)
                nbytes = op["bytes"] * k
                out[i] = self._kernel(name, nbytes / self.bandwidth, 0.0, nbytes, 0.0,
                                      kernels=k)
            elif kind == "memory":
                nbytes = op["bytes"]
                launch = self.cal.launch_overhead_us * 1e-6 if self.cal.cuda_graph else 0.0
                out[i] = self._kernel(name, nbytes / self.bandwidth, 0.0, nbytes, 0.0,
                                      kernels=kn.embed, extra_s=launch)
            elif kind == "collective":
                out[i] = self.collective(name, op["bytes"], op["chips"])
            else:
                out[i] = self.run_operator(kind, op, seed=seed)
        if not self.cal.cuda_graph:            # every kernel launched from the host
            launch = self.cal.launch_overhead_us * 1e-6
            out = [self._plus_time(r, r.counters.get("kernels", 0) * launch) for r in out]
        return out

    def _plus_time(self, r: OpResult, seconds: float) -> OpResult:
        if seconds <= 0:
            return r
        extra = self.clock.cycles(seconds)
        led = r.energy.copy().merge(self._energy(seconds, 0.0, 0.0))
        return replace(r, cycles=r.cycles + extra, stall_cycles=r.stall_cycles + extra,
                       stall_memory=r.stall_memory + extra, energy=led)

    def _plus_kernels(self, r: OpResult, k: int) -> OpResult:
        r = self._plus_time(r, k * self.overhead)
        return replace(r, counters={**r.counters, "kernels": r.counters.get("kernels", 0) + k})

    def _plus_kv_write(self, r: OpResult, ops, members) -> OpResult:
        """The KV-cache append of the new keys and values (``kv_write`` kernels)."""
        kn = self.cal.kernels
        kv = sum(ops[j]["kv_write_bytes"] for j in members)
        if not kv or not kn.kv_write:
            return r
        r = self._plus_time(r, 2 * kv / self.bandwidth)      # read the new K/V, write them
        return self._plus_kernels(r, kn.kv_write)

    def _price_attention(self, ops, group, out, zero) -> None:
        """All attention nodes of one layer: one prefill kernel and one decode kernel, priced
        on the first Q·Kᵀ node of each phase (the other attention nodes get 0)."""
        qk = group.get("qk", [])
        phases = {"prefill": [j for j in qk if ops[j]["part"] != "decode"],
                  "decode": [j for j in qk if ops[j]["part"] == "decode"]}
        for j in qk + group.get("av", []) + group.get("softmax", []):
            out[j] = zero
        both = all(phases.values())
        heads = self._layer_heads(ops, group, ops[qk[0]]["K"]) if qk else (1, 1)
        for phase, nodes in phases.items():
            if nodes:
                shapes = tuple((ops[j]["count"], ops[j]["M"], ops[j]["K"], ops[j]["N"])
                               for j in nodes)
                out[nodes[0]] = self._attention_kernel(phase, shapes, ops[nodes[0]]["abits"],
                                                       both, heads)

    @staticmethod
    def _layer_heads(ops, group, head_dim: int) -> tuple[int, int]:
        """(KV heads, query heads per KV head) of a layer (of this shard), from its q_proj and
        k_proj widths; (1, 1) when the graph has no such projections."""
        q, k = group.get("q_proj"), group.get("k_proj")
        if not q or not k or not head_dim:
            return 1, 1
        kvh = max(1, ops[k[0]]["N"] // head_dim)
        return kvh, max(1, ops[q[0]]["N"] // max(1, ops[k[0]]["N"]))

    def _attention_kernel(self, phase: str, shapes: tuple, abits: int, both: bool,
                          heads: tuple[int, int] = (1, 1)) -> OpResult:
        """One fused attention kernel over parts ``(count, M, d, keys)`` (Q·Kᵀ node shapes) of
        a layer with ``heads`` = (KV heads, query heads per KV head)."""
        c, kn = self.cal, self.cal.kernels
        sms = self.spec.sms
        b = abits / 8
        flops = nbytes = 0.0
        kv_tokens, max_len = 0.0, 0
        for count, M, d, lkv in shapes:
            flops += 4.0 * M * d * lkv * count          # Q.K^T and P.V
            # Q in, O out (M rows per KV head), K and V of the keys the part attends
            nbytes += count * (2 * M * d + 2 * lkv * d) * b
            kv_tokens += lkv * count
            max_len = max(max_len, lkv)
        peak = self._achieved_peak(abits, abits, c.attention_fraction)
        kernels = 1
        if phase == "prefill":
            compute_s, combine_s, combine_kernels = self._fa2_prefill(shapes, heads, abits)
            t = max(compute_s, nbytes / self.bandwidth) + combine_s
            kernels += combine_kernels
            if both:
                kernels += kn.mixed_concat
        else:
            # split-KV: the KV of each (sequence, KV head) cut into chunks sized for
            # decode_ctas_per_sm x sms CTAs in all
            chunk = max(c.decode_min_chunk, math.ceil(kv_tokens / (c.decode_ctas_per_sm * sms)))
            chunk = -(-chunk // DECODE_BLOCK) * DECODE_BLOCK
            ctas = sum(count * -(-lkv // chunk) for count, _, _, lkv in shapes)
            compute_s = flops / peak
            t = max(compute_s, nbytes / (self.bandwidth * min(1.0, ctas / sms)))
            if max_len > chunk and kn.decode_combine:
                # partial outputs in fp32 (M rows x d per CTA), written, then merged
                splits = -(-max_len // chunk)
                part = sum(count * (splits if kn.decode_combine_padded else -(-lkv // chunk))
                           * M * d * 4 for count, M, d, lkv in shapes)
                t += (1 + kn.decode_combine_passes) * part / self.bandwidth
                kernels += kn.decode_combine
        return self._kernel(f"attention {phase}", t, flops, nbytes, min(t, compute_s),
                            macs=int(flops / 2), wbits=abits, abits=abits, kernels=kernels)

    def _fa2_prefill(self, shapes: tuple, heads: tuple[int, int], abits: int):
        """(CTA makespan s, combine kernel s, extra kernels) of FA2's forward kernel over the
        prefill parts ``(count = sequences x KV heads, M = g x query rows, d, keys)``."""
        c, g = self.cal, self.spec
        kvh, group = heads
        b = abits / 8
        d = shapes[0][2]
        hz = self.arch.clock_ghz * 1e9
        # seconds per score element on one SM: tensor MACs of Q.K^T and P.V, then the exp
        t_el = (4.0 * d / (self._achieved_peak(abits, abits, c.attention_fraction) / g.sms)
                + c.kernels.attention_exp_per_score / (g.sfu_per_clk * hz))
        sm_bw = self.bandwidth / g.sms
        # parts as (query rows, keys, CTAs per query head), shortest first: the grid order
        parts = sorted(((M // group, lkv, max(1, count // kvh)) for count, M, _, lkv in shapes),
                       key=lambda p: (p[1], p[0]))
        heads_total = kvh * group
        blocks = sum(-(-lq // FA2_SPLIT_ROWS) * n for lq, _, n in parts) * heads_total
        block_n = next((bn for top, bn in FA2_SPLIT_BLOCK_N if d <= top),
                       FA2_SPLIT_BLOCK_N[-1][1])
        n_blocks = -(-max(lkv for _, lkv, _ in parts) // block_n)
        # FA2 sizes the split decision for two CTAs per SM
        splits = fa2_num_splits(blocks, 2 * g.sms, n_blocks)
        if splits == 1:
            br, bc, warps = fa2_tile(d)
            rows_of = lambda lq, lkv: [(br, lkv)] * -(-lq // br)    # noqa: E731
        else:
            br, bc, warps = FA2_SPLIT_ROWS, block_n, 4
            chunk = -(-n_blocks // splits) * block_n            # keys of one split

            def rows_of(lq, lkv):        # 64-row blocks, their keys cut in chunks
                out = []
                for m in range(-(-lq // br)):
                    keys = lkv - max(0, lq - (m + 1) * br)
                    out += [(br, min(chunk, keys - k * chunk)) for k in range(splits)
                            if keys > k * chunk]
                return out
        # CTAs resident per SM: shared memory of the Q, K, V tiles, and registers (255 each)
        tile_smem = (br + 2 * bc) * d * b
        resident = max(1, min(int(g.smem_per_sm_kb * 1024 // tile_smem),
                              g.registers_per_sm // (warps * 32 * 255)))
        prologue = (2 * br + 2 * bc) * d * b / sm_bw       # Q and first K/V in, O out
        per_head = []
        for lq, lkv, n in parts:
            works = [rows * -(-keys // bc) * bc * t_el + prologue
                     for rows, keys in rows_of(lq, lkv)]
            per_head += works * n
        ctas = len(per_head) * heads_total
        share = min(resident, -(-ctas // g.sms))            # CTAs sharing one SM
        works = [w * share for w in per_head] * heads_total
        makespan = greedy_makespan(works, share * g.sms)
        if splits == 1:
            return makespan, 0.0, 0
        # combine: fp32 partial outputs and their log-sum-exp read, the output written
        rows = sum(lq * n for lq, _, n in parts) * heads_total
        combine_bytes = rows * (splits * (d + 1) * 4 + d * b)
        return makespan, combine_bytes / self.bandwidth, 1

