"""An LLM engine client: a step loop on the coordinator's simpy clock (integer nanoseconds).

Each iteration asks its scheduler (:mod:`sim.system.schedulers`) for a plan, prices it on the
backend (a pure-decode batch padded up to the next CUDA-graph capture size with context-0
dummy sequences: they cost compute and produce nothing), adds the host time per step, waits
that long, then applies it: chunks advance ``computed``; a sequence whose KV has caught up with
its known tokens emits one token. When nothing can run the engine sleeps until woken by a new
request or freed KV. A prefill-role engine (disaggregated pools) hands every sequence whose
prefill finished to the coordinator, which moves its KV and frees it here afterwards.

Memory. A day of traffic is tens of millions of steps and tokens, so nothing is kept per
token: a sequence holds its first and latest token times, and the gaps between tokens go to a
:class:`GapSamples` shared by the coordinator's engines (distinct gaps with token counts; a
decode run adds each of its later steps once, weighted by its sequences). Steps are typed
columns; a decode run is one row of ``RUN_COLUMNS`` plus three numbers per step.
"""
from __future__ import annotations

import bisect
import math
from array import array

import numpy as np

from sim.config import ConfigError

from .kv import KVBlockManager
from .schedulers import SCHEDULERS

NS = 1e-9


class GapSamples:
    """Inter-token gaps of a run (whole ns) with how many tokens had each, kept as distinct
    values: new samples are buffered and merged into the distinct values every
    :attr:`LIMIT` samples, so memory follows the number of distinct gaps, not of tokens (the
    counts are exact whenever the merges happen)."""

    LIMIT = 1 << 20

    def __init__(self):
        self.ns = array("q")
        self.tokens = array("q")
        self.values = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)

    def add(self, gap_ns: int) -> None:
        self.ns.append(gap_ns)
        self.tokens.append(1)

    def add_many(self, gaps_ns: np.ndarray, tokens) -> None:
        """Gaps (int64 array); ``tokens`` an int (each gap's token count) or an int64 array."""
        self.ns.frombytes(gaps_ns.tobytes())
        if isinstance(tokens, (int, np.integer)):
            self.tokens.frombytes(array("q", (int(tokens),)).tobytes() * len(gaps_ns))
        else:
            self.tokens.frombytes(tokens.tobytes())

    def check(self) -> None:
        if len(self.ns) > self.LIMIT:
            self._merge()

    def _merge(self) -> None:
        v = np.concatenate([self.values, np.frombuffer(self.ns, np.int64)])
        w = np.concatenate([self.counts, np.frombuffer(self.tokens, np.int64)])
        self.values, where = np.unique(v, return_inverse=True)
        self.counts = np.bincount(where.ravel(), weights=w, minlength=len(self.values)
                                  ).astype(np.int64)
        self.ns, self.tokens = array("q"), array("q")

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct gaps in ns, ascending; tokens per gap)."""
        self._merge()
        return self.values, self.counts


class Seq:
    """One request inside the LLM stages."""

    __slots__ = ("rid", "req", "prompt", "output", "generated", "computed", "known", "arrival_ns",
                 "first_ns", "last_ns", "preemptions", "client", "order")

    def __init__(self, rid, req, prompt, output, arrival_ns, order):
        self.rid, self.req = rid, req
        self.prompt, self.output = int(prompt), int(output)
        self.generated = 0
        self.computed = 0
        self.known = self.prompt          # prompt + generated
        self.arrival_ns = arrival_ns
        self.first_ns = None      # first token out (ns)
        self.last_ns = None       # latest token out: the next token's gap starts here
        self.preemptions = 0
        self.client = None
        self.order = order      # FCFS key: (arrival, request id)

    def work_left(self) -> int:
        return (self.known - self.computed) + (self.output - self.generated)


# typed columns: a day of traffic has tens of millions of steps (49 bytes each); counts of
# sequences, tokens and KV blocks fit 32 bits, summed contexts may not
STEP_COLUMNS = (("kind", "b"), ("start_ns", "q"), ("end_ns", "q"), ("sequences", "i"),
                ("padded_sequences", "i"), ("tokens", "i"), ("context_tokens", "q"),
                ("kv_blocks_used", "i"), ("energy_j", "d"))
STEP_DTYPES = {c: np.dtype(t) for c, t in STEP_COLUMNS}
#: one row per decode run: its first step's start, steps, sequences, padded sequences, the
#: summed context of its first step
RUN_COLUMNS = (("start_ns", "q"), ("steps", "q"), ("sequences", "i"), ("padded_sequences", "i"),
               ("context_tokens", "q"))
#: one row per step of a decode run
RUN_STEP_COLUMNS = (("duration_ns", "q"), ("kv_blocks_used", "i"), ("energy_j", "d"))
KINDS = ("prefill", "decode", "mixed")
#: most steps one decode run covers before the engine looks again
MAX_RUN = 2048

ENGINE_KEYS = {"scheduler", "max_num_seqs", "max_num_batched_tokens", "block_size",
               "memory_gb", "activation_reserve_gb", "host_s", "cuda_graph_sizes", "ordering",
               "kv_blocks"}


class LLMEngine:
    def __init__(self, coord, name: str, backend, *, scheduler="continuous", max_num_seqs=256,
                 max_num_batched_tokens=2048, block_size=16, memory_gb=80.0,
                 activation_reserve_gb=0.0, host_s=0.0, cuda_graph_sizes=(), ordering="fcfs",
                 kv_blocks=None, role="both", where="<cluster>", keep_steps=True, gaps=None):
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"one of {sorted(SCHEDULERS)} (or 'disaggregated' for the cluster)",
                              file=where, key="engine.scheduler", got=repr(scheduler))
        if ordering not in ("fcfs", "least_work_left"):
            raise ConfigError("'fcfs' or 'least_work_left'", file=where, key="engine.ordering",
                              got=repr(ordering))
        for key, v in (("max_num_seqs", max_num_seqs), ("max_num_batched_tokens", max_num_batched_tokens),
                       ("block_size", block_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError("an integer >= 1", file=where, key=f"engine.{key}", got=repr(v))
        self.coord, self.name, self.backend = coord, name, backend
        self.env = coord.eng.env
        self.schedule = SCHEDULERS[scheduler]
        self.scheduler_name = scheduler
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.host_ns = float(host_s) / NS
        self.graph_sizes = sorted(int(g) for g in cuda_graph_sizes)
        self.lwl = ordering == "least_work_left"
        self.role = role
        if kv_blocks is not None:
            self.kv = KVBlockManager(int(kv_blocks), block_size, where)
        else:
            self.kv = KVBlockManager.from_memory(memory_gb * 1e9, backend.weight_bytes,
                                                 activation_reserve_gb * 1e9,
                                                 backend.kv_bytes_per_token, block_size, where)
        self.waiting: list[Seq] = []
        self.running: list[Seq] = []
        self.running_set: set = set()
        self.running_rids: set = set()
        self.wake = None
        # step rows, one typed column each (a day of traffic has millions of steps); a decode
        # run is one row of RUN_COLUMNS plus, per step, its duration, KV blocks and energy
        # (the rest of its rows follows from those: see Coordinator._steps_frame)
        self.keep_steps = keep_steps
        self.cols = {c: array(t) for c, t in STEP_COLUMNS}
        self.runs = {c: array(t) for c, t in RUN_COLUMNS}
        self.run_steps = {c: array(t) for c, t in RUN_STEP_COLUMNS}
        self.steps = 0
        self.busy_ns = 0
        # inter-token gaps as weighted samples (shared by the coordinator's engines); a
        # decode run adds its step durations once, weighted by its sequences
        self.gaps = gaps if gaps is not None else GapSamples()
        self.run_state = None       # (starts, ends, kv_used, sequences) of a decode run in flight
        self.load_tokens_left = 0     # for routers: prefill + decode tokens still to process
        self.load_prompt = 0
        self.load_output = 0
        self.energy_j = 0.0
        self.preemptions = 0
        self.env.process(self._loop())

    # ---------------------------------------------------------------- queue operations ----
    def ordered_waiting(self):
        if self.lwl:
            return sorted(self.waiting, key=lambda s: (s.work_left(), s.order))
        return list(self.waiting)

    def can_ever_fit(self, prompt: int, output: int) -> bool:
        return self.kv.blocks_for(prompt + output - 1) <= self.kv.num_blocks

    def submit(self, s: Seq) -> None:
        s.client = self
        if self.waiting and s.order < self.waiting[-1].order:
            bisect.insort(self.waiting, s, key=lambda q: q.order)
        else:
            self.waiting.append(s)
        self.load_prompt += s.prompt
        self.load_output += s.output
        self.load_tokens_left += s.work_left()
        self._wake()

    def _wake(self) -> None:
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def admit(self, s: Seq) -> None:
        self.waiting.remove(s)
        self.running.append(s)
        self.running_set.add(s)
        self.running_rids.add(s.rid)

    def _leave(self, s: Seq) -> None:
        self.running.remove(s)
        self.running_set.discard(s)
        self.running_rids.discard(s.rid)
        self.load_prompt -= s.prompt
        self.load_output -= s.output
        self.load_tokens_left -= s.work_left()

    def preempt(self, s: Seq) -> None:
        """Recompute preemption: drop its KV, back to the front of the queue."""
        self.running.remove(s)
        self.running_set.discard(s)
        self.running_rids.discard(s.rid)
        self.kv.free(s.rid)
        self.load_tokens_left += s.computed
        s.computed = 0
        s.preemptions += 1
        self.preemptions += 1
        self.waiting.insert(0, s)

    def reject(self, s: Seq, reason: str) -> None:
        self.waiting.remove(s)
        self.kv.free(s.rid)
        self.load_prompt -= s.prompt
        self.load_output -= s.output
        self.load_tokens_left -= s.work_left()
        self.coord.reject(s.req, reason, self)

    def release(self, s: Seq) -> None:
        """Free the KV a prefill-role engine kept for a sequence until it was transferred."""
        self.kv.free(s.rid)
        self._wake()

    # ---------------------------------------------------------------------- step loop ----
    def _pad(self, n: int) -> int:
        i = bisect.bisect_left(self.graph_sizes, n)
        return self.graph_sizes[i] if i < len(self.graph_sizes) else n

    def _loop(self):
        env = self.env
        while True:
            preempted = self.preemptions
            plan = self.schedule(self)
            if not plan:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            pre = [(n, s.computed) for s, n in plan.prefill]
            dec = [s.computed for s in plan.decode]
            nd = len(dec)
            padded = self._pad(nd) if not pre and nd else nd
            if padded > nd:
                dec = dec + [0] * (padded - nd)
            # a preemption put sequences back in the queue with their blocks freed: the next
            # look may admit or reject where this one could not, so this step runs alone
            if not pre and self.role != "prefill" and self.preemptions == preempted:
                horizon, add = self._horizon(plan.decode)
                if horizon >= 2:
                    yield from self._decode_run(plan.decode, padded, horizon, add)
                    continue
            cost = self.backend.price(pre, dec)
            dur = max(1, math.ceil(cost.seconds / NS + self.host_ns))
            start = env.now
            self.energy_j += cost.joules
            finishing = [s for s, n in plan.prefill if s.computed + n == s.known]
            if self.role == "prefill" and finishing:
                self.coord.prefill_started(self, finishing, start, dur)
            yield env.timeout(dur)
            now = env.now
            tokens = 0
            for s, n in plan.prefill:
                s.computed += n
                tokens += n
                self.load_tokens_left -= n
            self.load_tokens_left -= nd
            tokens += nd
            ctx = sum(c for _, c in pre) + sum(dec[:nd])
            kind = (0 if not plan.decode else 2) if plan.prefill else 1
            self._row(kind, start, now, len(pre) + nd, len(pre) + padded, tokens, ctx,
                      self.kv.used, cost.joules)
            for s, _ in plan.prefill:
                if s.computed == s.known:
                    self._emit(s, now)
            add_gap = self.gaps.add
            for s in plan.decode:        # the hot loop: one token per decoding sequence
                s.computed += 1
                s.generated += 1
                s.known += 1
                add_gap(now - s.last_ns)
                s.last_ns = now
                if s.generated == s.output or self.role == "prefill":
                    self._finish(s)
            self.gaps.check()

    def _row(self, kind, start, end, seqs, padded, tokens, ctx, kv_used, joules) -> None:
        self.steps += 1
        self.busy_ns += end - start
        if not self.keep_steps:
            return
        c = self.cols
        c["kind"].append(kind)
        c["start_ns"].append(start)
        c["end_ns"].append(end)
        c["sequences"].append(seqs)
        c["padded_sequences"].append(padded)
        c["tokens"].append(tokens)
        c["context_tokens"].append(ctx)
        c["kv_blocks_used"].append(kv_used)
        c["energy_j"].append(joules)

    # ------------------------------------------------------------------ decode runs ----
    # Between two events that can change a decision (a new request or freed KV wakes the
    # engine; a sequence finishing; a KV block running short) the scheduler of a pure decode
    # step would pick the same sequences every step, each one token further on. The engine
    # then prices those steps one by one (exactly, through the backend, like single steps)
    # but waits for them with one timeout, and applies them together. A wake in the middle
    # ends the run at the first step boundary at or after it, which is where the step-by-step
    # loop would have looked at its queue next. Routers read loads through live_* so they see
    # what the step-by-step loop would show at that instant.

    def _run_blocks(self, seqs, steps: int) -> np.ndarray:
        """New KV blocks the decode steps 2..steps need (the first one is reserved already)."""
        bs = self.kv.block_size
        cnt = np.bincount(np.array([(-s.computed) % bs for s in seqs]), minlength=bs)
        m = np.arange(1, steps)            # step m + 1 appends token at offset m
        return cnt[m % bs]

    def _horizon(self, seqs) -> tuple[int, np.ndarray | None]:
        """(steps the run can take, cumulative new blocks of its steps 2..k)."""
        k = min(min(s.output - s.generated for s in seqs), MAX_RUN)
        if k < 2:
            return k, None
        add = np.cumsum(self._run_blocks(seqs, k))
        fit = int(np.searchsorted(add, self.kv.free_blocks, side="right"))
        return min(k, fit + 1), add

    def _decode_run(self, seqs, padded, steps, add):
        env = self.env
        nd = len(seqs)
        ctx0 = sum(s.computed for s in seqs)
        secs, joules = self.backend.price_decode_run([s.computed for s in seqs], padded - nd, steps)
        dur = np.maximum(1, np.ceil(np.asarray(secs) / NS + self.host_ns)).astype(np.int64)
        start = env.now
        ends = start + np.cumsum(dur)
        adds = np.concatenate(([0], add[:steps - 1]))
        used0 = self.kv.used
        self.run_state = (ends, used0 + adds, nd, start)
        self.wake = env.event()
        total = int(ends[-1] - start)
        yield env.any_of([env.timeout(total), self.wake])
        self.wake = None
        now = env.now
        done = int(np.searchsorted(ends, now, side="left")) + 1   # the step in flight completes
        done = min(done, steps)
        if ends[done - 1] > now:
            yield env.timeout(int(ends[done - 1]) - now)
        self.run_state = None
        ends_done = ends[:done]
        last = int(ends_done[-1])
        jl = np.asarray(joules[:done], dtype=np.float64)
        self.energy_j += float(jl.sum())
        self.steps += done
        self.busy_ns += last - start
        if self.keep_steps:
            r, rs = self.runs, self.run_steps
            for col, v in (("start_ns", start), ("steps", done), ("sequences", nd),
                           ("padded_sequences", padded), ("context_tokens", ctx0)):
                r[col].append(v)
            rs["duration_ns"].frombytes(dur[:done].tobytes())
            rs["kv_blocks_used"].frombytes((used0 + adds[:done]).astype(np.int32).tobytes())
            rs["energy_j"].frombytes(jl.tobytes())
        # gaps: each sequence's first token of the run after its previous one, then every
        # later step of the run (its duration), for all nd sequences at once
        g = self.gaps
        g.add_many(np.array([int(ends_done[0]) - s.last_ns for s in seqs], dtype=np.int64), 1)
        if done > 1:
            g.add_many(dur[1:done], nd)
        g.check()
        kv, bs = self.kv, self.kv.block_size
        held = kv.held
        grown = 0
        for s in seqs:
            c0 = s.computed
            extra = (c0 + done - 1) // bs - c0 // bs     # blocks for steps 2..done
            if extra:
                held[s.rid] += extra
                grown += extra
            s.computed = c0 + done
            s.generated += done
            s.known += done
            s.last_ns = last
        kv.used += grown
        self.load_tokens_left -= nd * done
        for s in seqs:
            if s.generated == s.output:
                self._finish(s)

    def live_tokens_left(self) -> int:
        rs = self.run_state
        if rs is None:
            return self.load_tokens_left
        ends, _, nd, _ = rs
        return self.load_tokens_left - nd * int(np.searchsorted(ends, self.env.now, side="right"))

    def live_kv_used(self) -> int:
        rs = self.run_state
        if rs is None:
            return self.kv.used
        ends, used, _, _ = rs
        started = int(np.searchsorted(ends, self.env.now, side="right"))   # steps begun so far - 1
        return int(used[min(started, len(used) - 1)])

    def _emit(self, s: Seq, now: int) -> None:
        s.generated += 1
        s.known += 1
        if s.first_ns is None:
            s.first_ns = now
        else:                   # a token after a recompute preemption: its gap counts
            self.gaps.add(now - s.last_ns)
        s.last_ns = now
        if s.generated == s.output or self.role == "prefill":
            self._finish(s)

    def _finish(self, s: Seq) -> None:
        if s.generated == s.output:     # (work_left: an emitted token moves from the output
            self._leave(s)              # count to the known tokens, so the load is unchanged)
            self.kv.free(s.rid)
            self.coord.llm_done(s, self)
        elif self.role == "prefill":
            self._leave(s)
            self.coord.prefilled(s, self)
