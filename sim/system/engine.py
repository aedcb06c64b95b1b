"""An LLM engine client: a step loop on the coordinator's simpy clock (integer nanoseconds).

Each iteration asks its scheduler (:mod:`sim.system.schedulers`) for a plan, prices it on the
backend (a pure-decode batch padded up to the next CUDA-graph capture size with context-0
dummy sequences: they cost compute and produce nothing), adds the host time per step, waits
that long, then applies it: chunks advance ``computed``; a sequence whose KV has caught up with
its known tokens emits one token. When nothing can run the engine sleeps until woken by a new
request or freed KV. A prefill-role engine (disaggregated pools) hands every sequence whose
prefill finished to the coordinator, which moves its KV and frees it here afterwards.
"""
from __future__ import annotations

import bisect
import math

from sim.config import ConfigError
from sim.core.invariants import require

from .kv import KVBlockManager
from .schedulers import SCHEDULERS, is_decode

NS = 1e-9


class Seq:
    """One request inside the LLM stages."""

    __slots__ = ("rid", "req", "prompt", "output", "generated", "computed", "known", "arrival_ns",
                 "token_ns", "preemptions", "client", "order")

    def __init__(self, rid, req, prompt, output, arrival_ns, order):
        self.rid, self.req = rid, req
        self.prompt, self.output = int(prompt), int(output)
        self.generated = 0
        self.computed = 0
        self.known = self.prompt          # prompt + generated
        self.arrival_ns = arrival_ns
        self.token_ns: list[int] = []
        self.preemptions = 0
        self.client = None
        self.order = order      # FCFS key: (arrival, request id)

    def work_left(self) -> int:
        return (self.known - self.computed) + (self.output - self.generated)


ENGINE_KEYS = {"scheduler", "max_num_seqs", "max_num_batched_tokens", "block_size",
               "memory_gb", "activation_reserve_gb", "host_s", "cuda_graph_sizes", "ordering",
               "kv_blocks"}


class LLMEngine:
    def __init__(self, coord, name: str, backend, *, scheduler="continuous", max_num_seqs=256,
                 max_num_batched_tokens=2048, block_size=16, memory_gb=80.0,
                 activation_reserve_gb=0.0, host_s=0.0, cuda_graph_sizes=(), ordering="fcfs",
                 kv_blocks=None, role="both", where="<cluster>"):
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
        self.steps: list[tuple] = []
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
            kind = ("prefill" if not plan.decode else "mixed") if plan.prefill else "decode"
            self.steps.append((self.name, kind, start * NS, now * NS, len(pre) + nd,
                               len(pre) + padded, tokens, ctx, self.kv.used, cost.joules))
            for s, _ in plan.prefill:
                if s.computed == s.known:
                    self._emit(s, now)
            for s in plan.decode:        # the hot loop: one token per decoding sequence
                s.computed += 1
                s.generated += 1
                s.known += 1
                s.token_ns.append(now)
                if s.generated == s.output or self.role == "prefill":
                    self._finish(s)

    def _emit(self, s: Seq, now: int) -> None:
        s.generated += 1
        s.known += 1
        s.token_ns.append(now)
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
