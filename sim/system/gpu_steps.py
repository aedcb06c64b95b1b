"""Step pricing for GPU clients (``type: gpu``): the GPU model's own structure, fast.

A generic :class:`sim.StepTable` sums per-sequence attention curves, which a GPU does not do:
there a layer's attention is *one* fused kernel per phase over every sequence of the step
(:meth:`sim.hw.gpu.GpuAccelerator._attention_kernel`), whose split-KV chunk, CTA count, merge
traffic, kernel overheads and power all depend on the whole set of contexts. Summing
one-sequence probes counts a kernel overhead per sequence (a 64-decode Llama-3-8B step on an
H100 came out 10x too slow that way). :class:`GpuStepTable` prices a step the way the GPU
model does, split where the model itself is a sum:

    step = f_tok(T) + f_head(S) + L x (prefill kernel(chunks) + decode kernel(contexts))

* ``f_tok(T)``: the embedding gather and every per-token kernel of the ``L`` decoder blocks
  (norms, fused q/k/v with the KV append, o_proj, residuals, fused gate/up, act, down), which
  depend on the step's token count only; ``f_head(S)``: final norm and ``lm_head`` over the
  ``S`` sequences. :func:`token_kernels` prices those nodes the way
  :meth:`GpuAccelerator.price_nodes` does, over numpy arrays of sizes, so the build tabulates
  both for *every* size 1..``max_tokens`` in one pass (one decoder block when all blocks have
  the same precisions, checked; else every block): nothing is interpolated.
* attention: exact. Prefill chunks go through the accelerator's own kernel (memoized there);
  decode contexts through :func:`decode_kernels`, the decode branch of that kernel written over
  numpy arrays of steps, so that a run of decode steps (``decode_run``) is one pass. Its
  equality with the scalar kernel (cycles exactly, energy to rounding) is tested.

So every step equals ``sim.simulate_step`` exactly in cycles and to float rounding in energy
(``tests/test_gpu_steps.py`` checks random ragged steps); the build checks two steps against
``simulate_step`` too and fails loudly if the GPU model has grown a term this split does not
know. The vectorised functions mirror the scalar ones of :mod:`sim.hw.gpu` operation for
operation: a change there must be made here too (the tests and the build check say so).
"""
from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from sim.config import ConfigError
from sim.core.clock import _SNAP_REL_TOL
from sim.hw.gpu import DECODE_BLOCK
from sim.workload.graph import StepShape, ragged_shape, ragged_step, shape_ops
from sim.workload.precision import resolve_precision
from sim.workload.step_table import CYCLES, ENERGY, StepEstimate, table_ranges

WHERE = "<GpuStepTable>"
HEAD_OPS = ("final_norm", "lm_head")
_NOT_SHAPE = ("name", "index", "layer")


def _ceil_cycles(x: np.ndarray) -> np.ndarray:
    """:func:`sim.core.clock.ceil_cycles` over an array (float noise above an integer snaps)."""
    nearest = np.round(x)
    snap = np.abs(x - nearest) <= _SNAP_REL_TOL * np.maximum(1.0, np.abs(x))
    return np.where(snap, nearest, np.ceil(x)).astype(np.int64)


def decode_kernels(accel, lkv: np.ndarray, *, nkv: int, group: int, head_dim: int,
                   abits: int) -> tuple[np.ndarray, np.ndarray]:
    """(cycles, energy [compute, memory, idle] pJ) of one layer's fused decode-attention kernel
    for each row of ``lkv`` (steps x sequences: the keys each sequence attends, context + 1):
    :meth:`GpuAccelerator._attention_kernel` (phase ``decode``) and ``_kernel``, elementwise
    over steps, in the same float operations (sums of integers are exact in any order)."""
    c, kn, spec = accel.cal, accel.cal.kernels, accel.spec
    sms = spec.sms
    lkv = np.asarray(lkv, dtype=np.int64)
    b = abits / 8
    keys = lkv.sum(axis=1)
    flops = (4.0 * group * head_dim * nkv) * keys
    nbytes = (nkv * (2 * group * head_dim * lkv.shape[1] + 2 * head_dim * keys)) * b
    kv_tokens = nkv * keys
    max_len = lkv.max(axis=1)
    peak = accel._achieved_peak(abits, abits, c.attention_fraction)
    chunk = np.ceil(kv_tokens / (c.decode_ctas_per_sm * sms)).astype(np.int64)
    np.maximum(chunk, c.decode_min_chunk, out=chunk)
    chunk = -(-chunk // DECODE_BLOCK) * DECODE_BLOCK
    splits_each = (-(-lkv // chunk[:, None])).sum(axis=1)
    compute_s = flops / peak
    t = np.maximum(compute_s, nbytes / (accel.bandwidth * np.minimum(1.0, (nkv * splits_each) / sms)))
    kernels = 1
    if kn.decode_combine:
        split = max_len > chunk
        if split.any():
            per_seq = (-(-max_len // chunk) * lkv.shape[1] if kn.decode_combine_padded
                       else splits_each)
            part = nkv * per_seq * group * head_dim * 4
            t = np.where(split, t + (1 + kn.decode_combine_passes) * part / accel.bandwidth, t)
            kernels = np.where(split, 1 + kn.decode_combine, 1)
    total = t + kernels * accel.overhead + 0.0
    cycles = _ceil_cycles(total * accel.clock.hz)       # total > 0: bytes always move
    energy = _energy(accel, total, flops, nbytes, abits)
    if not c.cuda_graph:            # the kernels launched from the host (GpuAccelerator._plus_time)
        extra = np.broadcast_to(kernels * (c.launch_overhead_us * 1e-6), total.shape)
        on = extra > 0
        cycles = cycles + np.where(on, _ceil_cycles(extra * accel.clock.hz), 0)
        energy = energy + _energy(accel, extra, 0.0, 0.0, abits) * on[:, None]
    return cycles, energy


def _energy(accel, seconds, flops, nbytes, abits, wbits=None) -> np.ndarray:
    """:meth:`GpuAccelerator.power_w` and ``_energy`` elementwise: [compute, memory, idle] pJ
    (the tensor peak of ``wbits``/``abits``; ``wbits`` defaults to ``abits``)."""
    p, spec = accel.cal.power, accel.spec
    seconds = np.asarray(seconds, dtype=float)
    positive = bool((seconds > 0).all())
    safe = seconds if positive else np.where(seconds > 0, seconds, 1.0)
    u_c = np.minimum(1.0, flops / safe / accel.peak_flops(
        abits if wbits is None else wbits, abits))
    u_m = np.minimum(1.0, nbytes / safe / (spec.hbm_bandwidth_gbps * 1e9))
    pc, pm = p.compute_w * u_c, p.memory_w * u_m
    room = max(spec.tdp_w - p.idle_w, 0.0)
    both = pc + pm
    over = both > room
    if over.any():
        scale = room / np.where(over, both, 1.0)
        pc, pm = np.where(over, pc * scale, pc), np.where(over, pm * scale, pm)
    if not positive:
        pc, pm = np.where(seconds > 0, pc, 0.0), np.where(seconds > 0, pm, 0.0)
    idle = min(p.idle_w, spec.tdp_w)
    ns = seconds * 1e9
    out = np.empty((len(ns), 3))
    out[:, 0] = ns * (pc * 1e3)
    out[:, 1] = ns * (pm * 1e3)
    out[:, 2] = ns * (idle * 1e3)
    return out


def _gemm_seconds(M: np.ndarray, K: int, N: int, *, peak, bandwidth, sms, knee, a_bytes,
                  w_bytes, o_bytes):
    """:func:`sim.hw.gpu.gemm_seconds` over an array of row counts ``M`` (with arrays of
    activation and output bytes): the fastest tiling, ties kept as the scalar loop keeps them."""
    from sim.hw.gpu import gemm_tilings
    best = moved_best = None
    for t, moved, _ in gemm_tilings(M, K, N, peak=peak, bandwidth=bandwidth, sms=sms, knee=knee,
                                    a_bytes=a_bytes, w_bytes=w_bytes, o_bytes=o_bytes,
                                    minimum=np.minimum, maximum=np.maximum):
        if best is None:
            best, moved_best = t, np.broadcast_to(moved, t.shape).copy()
        else:
            better = t < best - 1e-15
            best = np.where(better, t, best)
            moved_best = np.where(better, moved, moved_best)
    return best, moved_best


class _Kernels:
    """Sums of GPU kernels over an array of sizes: cycles (int64) and [compute, memory, idle]
    pJ, built the way ``GpuAccelerator._kernel`` and ``_plus_time`` build an OpResult."""

    def __init__(self, accel, n: int):
        self.a = accel
        self.cycles = np.zeros(n, dtype=np.int64)
        self.energy = np.zeros((n, 3))
        self.kernels = np.zeros(n, dtype=np.int64)

    def kernel(self, seconds, flops, nbytes, wbits=16, abits=16, kernels=1, extra_s=0.0):
        """One ``_kernel`` (its overheads included) per element; returns nothing, sums in."""
        a = self.a
        total = seconds + kernels * a.overhead + extra_s
        total = np.broadcast_to(np.asarray(total, dtype=float), self.cycles.shape)
        self.cycles += np.where(total > 0, _ceil_cycles(total * a.clock.hz), 0)
        self.energy += _energy(a, total, flops, nbytes, abits, wbits)
        self.kernels += kernels
        return self

    def plus_time(self, seconds) -> None:
        """``_plus_time``: extra whole cycles and idle energy over ``seconds`` (where > 0)."""
        a = self.a
        seconds = np.broadcast_to(np.asarray(seconds, dtype=float), self.cycles.shape)
        on = seconds > 0
        self.cycles += np.where(on, _ceil_cycles(seconds * a.clock.hz), 0)
        self.energy += _energy(a, seconds, 0.0, 0.0, 16) * on[:, None]


def token_kernels(accel, ops_at, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cycles, [compute, memory, idle] pJ) of graph nodes without attention (GEMMs, vector and
    memory ops), priced as :meth:`GpuAccelerator.price_nodes` prices them, for every step size
    in ``sizes``. ``ops_at(n)`` gives the nodes at size n; their sizes must be affine in n
    (checked)."""
    a, kn, cal = accel, accel.cal.kernels, accel.cal
    lo, hi = ops_at(1), ops_at(2)
    size_keys = ("M", "a_bytes", "o_bytes", "kv_write_bytes", "bytes", "elements")
    n = np.asarray(sizes, dtype=np.int64)

    def field(i, key):
        return lo[i][key] + (hi[i][key] - lo[i][key]) * (n - 1)
    for m in (3, int(n.max()) if len(n) else 3):           # affine in n, or say so
        probe = ops_at(m)
        for i, op in enumerate(probe):
            for key in size_keys:
                if op[key] != lo[i][key] + (hi[i][key] - lo[i][key]) * (m - 1):
                    raise ConfigError("graph node sizes affine in the step's tokens",
                                      file=WHERE, key=f"{op['name']}.{key}", got=str(op[key]))
    out = _Kernels(a, len(n))
    by_layer: dict = {}
    for i, op in enumerate(lo):
        by_layer.setdefault(op["layer"], {}).setdefault(op["op"], []).append(i)
    done = set()
    launch = cal.launch_overhead_us * 1e-6
    for i, op in enumerate(lo):
        if i in done:
            continue
        kind, name = op["kind"], op["op"]
        one = _Kernels(a, len(n))
        if kind == "gemm":
            group = by_layer[op["layer"]]
            fuse = ((kn.fused_qkv and name in ("q_proj", "k_proj", "v_proj")) and
                    ("q_proj", "k_proj", "v_proj")) or \
                   ((kn.fused_gate_up and name in ("gate_proj", "up_proj")) and
                    ("gate_proj", "up_proj")) or (name,)
            members = [j for f in fuse for j in group.get(f, [])]
            done.update(members)
            N = sum(lo[j]["N"] for j in members)
            M, K = field(i, "M"), op["K"]
            wb, ab = op["wbits"], op["abits"]
            peak = a._achieved_peak(wb, ab, cal.compute_fraction)
            t, moved = _gemm_seconds(
                M, K, N, peak=peak, bandwidth=a.bandwidth, sms=a.spec.sms,
                knee=cal.tile_intensity_knee, a_bytes=field(i, "a_bytes"),
                w_bytes=sum(lo[j]["w_bytes"] for j in members),
                o_bytes=sum(field(j, "o_bytes") for j in members))
            one.kernel(t, 2.0 * M * K * N, moved, wb, ab)
            if name == "lm_head" and kn.lm_gather:
                one.plus_time(kn.lm_gather * a.overhead)
                one.kernels += kn.lm_gather
            kv = sum(field(j, "kv_write_bytes") for j in members)
            if np.any(kv) and kn.kv_write:
                one.plus_time(2 * kv / a.bandwidth)
                one.plus_time(kn.kv_write * a.overhead)
                one.kernels += kn.kv_write
        elif kind == "vector":
            k = {"norm_attn": kn.norm, "norm_ffn": kn.norm, "final_norm": kn.norm,
                 "act": kn.act}.get(name, kn.residual)
            nbytes = field(i, "bytes") * k
            one.kernel(nbytes / a.bandwidth, 0.0, nbytes, kernels=k)
        elif kind == "memory":
            nbytes = field(i, "bytes")
            one.kernel(nbytes / a.bandwidth, 0.0, nbytes, kernels=kn.embed,
                       extra_s=launch if cal.cuda_graph else 0.0)
        else:
            raise ConfigError("GEMM, vector and memory nodes outside attention", file=WHERE,
                              key=op["name"], got=repr(kind))
        if not cal.cuda_graph:
            one.plus_time(one.kernels * launch)
        out.cycles += one.cycles
        out.energy += one.energy
    return out.cycles, out.energy


class GpuStepTable:
    """Time and energy of ragged steps of one model on one GPU (see the module docstring).

    Takes :class:`sim.StepTable`'s range and step options (``max_tokens``, ``max_chunk``,
    ``max_past``, ``max_context``; ``precision``, ``causal``, ``causal_block``, ``seed``);
    it has no grid options, since nothing is interpolated, and ``max_past`` defaults to any
    past a chunk can have within the model's ``max_position``. ``estimate`` answers like
    ``StepTable.estimate``, ``decode_run`` a run of decode steps at once."""

    ssm = False

    def __init__(self, arch, model, *, max_tokens: int = 8192, max_chunk: int = 2048,
                 max_past: int | None = None, max_context: int | None = None,
                 precision=None, causal: bool = True, causal_block: int | None = None,
                 seed: int = 0):
        from sim.api import accelerator_for, simulate_step
        from sim.workload.step import resolve_config
        self.arch = resolve_config("arch", arch)
        self.model = resolve_config("workloads", model)
        if self.arch.type != "gpu":
            raise ConfigError("an arch of type 'gpu'", file=WHERE, key="arch",
                              got=repr(self.arch.type))
        if self.model.architecture != "transformer":
            raise ConfigError("a transformer model (attention kernels)", file=WHERE,
                              key="model", got=repr(self.model.architecture))
        self.options = dict(precision=precision, causal=causal, causal_block=causal_block,
                            seed=seed)
        # no grid to size: by default any past a chunk can have (past + new <= max_position)
        self.max_tokens, self.max_chunk, self.max_past, self.max_context = table_ranges(
            self.model.max_position, max_tokens, max_chunk, max_past, max_context, WHERE,
            any_past=True)
        self.accel = accelerator_for(self.arch)
        self.run_model, self.notes = resolve_precision(self.accel, self.model, precision,
                                                       file=WHERE, warn=False)
        self.seed = seed
        self.clock_seconds_per_cycle = 1.0 / self.accel.clock.hz
        self.components = ("compute", "memory", "idle", "link")
        self.block = (causal_block or self.accel.causal_query_block()) if causal else None
        m = self.run_model
        self.layers = m.num_layers
        self.nkv = m.num_kv_heads
        self.group = m.num_heads // m.num_kv_heads
        self.head_dim = m.head_dim or m.hidden_size // m.num_heads
        self._singles: dict[int, tuple] = {}
        self._one = None
        self._prefills: dict = {}
        self._build()
        self._check(simulate_step)

    # ------------------------------------------------------------------------- build ----
    def _token_ops(self, T: int, S: int) -> tuple[list, list, list]:
        """(per-token nodes outside the blocks, the blocks' nodes, head nodes) of a step of
        ``T`` tokens and ``S`` sequences without attention."""
        shape = StepShape(tokens=T, sequences=S, lm_rows=S, attention=())
        ops = shape_ops(self.run_model, shape)
        outer = [o for o in ops if o["layer"] < 0 and o["op"] not in HEAD_OPS]
        head = [o for o in ops if o["layer"] < 0 and o["op"] in HEAD_OPS]
        blocks = [o for o in ops if o["layer"] >= 0]
        return outer, blocks, head

    def _uniform_blocks(self) -> bool:
        """Whether every decoder block is node for node the first one (same precisions)."""
        _, blocks, _ = self._token_ops(3, 2)
        first = [o for o in blocks if o["layer"] == 0]
        strip = lambda o: {k: v for k, v in o.items() if k not in _NOT_SHAPE}   # noqa: E731
        ref = [strip(o) for o in first]
        n = len(first)
        return all([strip(o) for o in blocks[i * n:(i + 1) * n]] == ref
                   for i in range(self.layers))

    def _build(self) -> None:
        uniform = self._uniform_blocks()
        repeat = self.layers if uniform else 1
        sizes = np.arange(1, self.max_tokens + 1)

        def outer(T):
            return self._token_ops(T, 1)[0]

        def blocks(T):
            b = self._token_ops(T, 1)[1]
            return [o for o in b if o["layer"] == 0] if uniform else b

        def head(S):
            return self._token_ops(S, S)[2]
        c_out, e_out = token_kernels(self.accel, outer, sizes)
        c_blk, e_blk = token_kernels(self.accel, blocks, sizes)
        c_head, e_head = token_kernels(self.accel, head, sizes)
        width = 1 + len(self.components)
        self._tok = np.zeros((len(sizes), width))
        self._tok[:, CYCLES] = c_out + repeat * c_blk
        self._tok[:, 1:4] = e_out + repeat * e_blk
        self._head = np.zeros((len(sizes), width))
        self._head[:, CYCLES] = c_head
        self._head[:, 1:4] = e_head
        probe = shape_ops(self.run_model, ragged_shape(ragged_step((), (5,)), causal_block=None))
        qk = next(o for o in probe if o["op"] == "qk")
        if (qk["count"], qk["M"], qk["K"], qk["N"]) != (self.nkv, self.group, self.head_dim, 6):
            raise ConfigError("a decode Q·Kᵀ node of (kv_heads, heads per KV head, head_dim, "
                              "context + 1)", file=WHERE, key="model",
                              got=str((qk["count"], qk["M"], qk["K"], qk["N"])))
        # layers by the activation bits their attention runs at (one group unless a
        # layer_precision rule sets some layers apart)
        bits: dict[int, int] = {}
        for o in probe:
            if o["op"] == "qk":
                bits[o["abits"]] = bits.get(o["abits"], 0) + 1
        self.attention_bits = tuple(sorted(bits.items()))

    def _check(self, simulate_step) -> None:
        """Two steps on grid nodes against ``simulate_step``: equal cycles, energy to 1e-9."""
        B = self.block or 1
        steps = [dict(decode=[7, 300, min(5000, self.max_context)]),
                 dict(prefill=[(min(B + 3, self.max_chunk), min(40, self.max_past))],
                      decode=[0, min(900, self.max_context)])]
        for step in steps:
            T = sum(n for n, _ in step.get("prefill", ())) + len(step["decode"])
            if T > self.max_tokens:
                continue
            ref = simulate_step(self.arch, self.model, **step, **self.options)
            got = self.estimate(**step)
            if got.cycles != ref.cycles or not math.isclose(
                    got.energy_total_pj, ref.energy_total_pj, rel_tol=1e-9):
                raise ConfigError("the GPU model's step = tokens + head + layers x attention "
                                  "kernels (sim.system.gpu_steps)", file=WHERE, key=str(step),
                                  got=f"{got.cycles} cycles vs simulate_step's {ref.cycles}")

    # ------------------------------------------------------------------------ lookup ----
    def _fixed(self, T: int, S: int) -> np.ndarray:
        """The per-token and per-sequence kernels of a step of T tokens and S sequences."""
        return self._tok[T - 1] + self._head[S - 1]

    def _decode(self, lkv: np.ndarray) -> np.ndarray:
        """[cycles, energies] of the L decode-attention kernels of each row of ``lkv``."""
        total = 0
        for abits, layers in self.attention_bits:
            cycles, energy = decode_kernels(self.accel, lkv, nkv=self.nkv, group=self.group,
                                            head_dim=self.head_dim, abits=abits)
            out = np.zeros((len(lkv), 1 + len(self.components)))
            out[:, CYCLES] = cycles
            out[:, 1:4] = energy
            total = total + layers * out
        return total

    def _prefill(self, prefill, both: bool) -> np.ndarray:
        """The L prefill-attention kernels of sorted chunks (memoized: chunked prefill repeats
        its (new, past) pairs across requests; a value is never changed once stored)."""
        key = (prefill, both)
        hit = self._prefills.get(key)
        if hit is None:
            if len(self._prefills) >= 1 << 16:
                self._prefills.clear()
            hit = self._prefills[key] = self._prefill_kernels(prefill, both)
        return hit

    def _prefill_kernels(self, prefill, both: bool) -> np.ndarray:
        shape = ragged_shape(ragged_step(prefill, ()), causal_block=self.block)
        shapes = tuple((p.seqs * self.nkv, self.group * p.lq, self.head_dim, p.lkv)
                       for p in shape.attention)
        a = self.accel
        total = 0
        for abits, layers in self.attention_bits:
            r = a._attention_kernel("prefill", shapes, abits, both, (self.nkv, self.group))
            if not a.cal.cuda_graph:
                r = a._plus_time(r, r.counters.get("kernels", 0) * a.cal.launch_overhead_us
                                 * 1e-6)
            v = np.zeros(1 + len(self.components))
            v[CYCLES] = r.cycles
            for comp, e in r.energy.by_component().items():
                v[1 + self.components.index(comp)] += e
            total = total + layers * v
        return total

    def _inside(self, step) -> None:
        if step.tokens > self.max_tokens:
            raise ConfigError(f"at most max_tokens ({self.max_tokens}) tokens in a step of "
                              "this table", file=WHERE, key="prefill", got=f"{step.tokens} tokens")
        for n, p in step.prefill:
            # prefill attention is priced exactly: a short chunk may sit on more than
            # max_past past tokens as long as its keys fit the range (<= max_position)
            if (n > self.max_chunk or n + p > self.max_past + self.max_chunk
                    or n + p > self.model.max_position):
                raise ConfigError(f"a chunk inside this table: new_tokens <= {self.max_chunk}, "
                                  f"new + past tokens <= {min(self.max_past + self.max_chunk, self.model.max_position)}",
                                  file=WHERE, key="prefill", got=str((n, p)))
        if step.decode and step.decode[-1] > self.max_context:
            raise ConfigError(f"decode contexts <= max_context ({self.max_context})",
                              file=WHERE, key="decode", got=str(step.decode[-1]))

    def _result(self, v: np.ndarray) -> StepEstimate:
        cycles = float(v[CYCLES])
        energy = MappingProxyType({c: float(e) for c, e in zip(self.components, v[ENERGY])})
        return StepEstimate(cycles=cycles, seconds=cycles * self.clock_seconds_per_cycle,
                            energy_pj=energy)

    def estimate(self, prefill=(), decode=()) -> StepEstimate:
        """Cycles, seconds and energy by component (pJ) of one ragged step."""
        step = ragged_step(prefill, decode, where=WHERE)
        self._inside(step)
        v = self._fixed(step.tokens, step.sequences)
        if len(step.decode) == 1:        # (row c of the one-sequence kernels: the same floats)
            v = v + self._one_decode()[step.decode[0]]
        elif step.decode:
            v = v + self._decode(np.array([step.decode], dtype=np.int64) + 1)[0]
        if step.prefill:
            v = v + self._prefill(step.prefill, bool(step.decode))
        return self._result(v)

    def _one_decode(self) -> np.ndarray:
        """The decode-attention kernels of one sequence at every context 0..max_context."""
        if self._one is None:
            self._one = self._decode(np.arange(1, self.max_context + 2, dtype=np.int64)[:, None])
        return self._one

    def _single(self, pads: int) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, pJ) of a decode step of one sequence at every context 0..max_context with
        ``pads`` padding sequences, computed once (elementwise, so entry c is what a run or
        ``estimate`` of that step computes)."""
        curve = self._singles.get(pads)
        if curve is None:
            lkv = np.ones((self.max_context + 1, 1 + pads), dtype=np.int64)
            lkv[:, pads] = np.arange(self.max_context + 1) + 1
            curve = self._singles[pads] = self._seconds_joules(
                self._fixed(1 + pads, 1 + pads) + self._decode(lkv))
        return curve

    def decode_run(self, contexts, pads: int, steps: int):
        """(seconds, joules) arrays of ``steps`` pure decode steps: step k has the contexts
        ``c + k`` and ``pads`` padding sequences at context 0; each equals ``estimate`` of
        that step (same operations, so the same floats)."""
        ctx = np.sort(np.asarray(contexts, dtype=np.int64))
        n = len(ctx)
        S = n + pads
        if S > self.max_tokens or int(ctx[-1]) + steps - 1 > self.max_context:
            raise ConfigError(f"decode steps inside the table (at most {self.max_tokens} "
                              f"sequences, contexts <= {self.max_context})", file=WHERE,
                              key="decode", got=f"{S} sequences, context {int(ctx[-1]) + steps - 1}")
        if n == 1:          # one sequence: a slice of its curve over all contexts
            c0 = int(ctx[0])
            secs, joules = self._single(pads)
            return secs[c0:c0 + steps], joules[c0:c0 + steps]
        lkv = np.empty((steps, S), dtype=np.int64)
        lkv[:, :pads] = 1
        lkv[:, pads:] = ctx[None, :] + np.arange(steps)[:, None] + 1
        return self._seconds_joules(self._fixed(S, S) + self._decode(lkv))

    def _seconds_joules(self, v: np.ndarray):
        """(seconds, pJ) of rows [cycles, energies], the pJ summed as ``estimate`` sums them."""
        secs = v[:, CYCLES] * self.clock_seconds_per_cycle
        e = v[:, ENERGY]
        joules = e[:, 0]
        for j in range(1, e.shape[1]):
            joules = joules + e[:, j]
        return secs, joules
