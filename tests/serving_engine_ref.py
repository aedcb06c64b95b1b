"""A deliberately plain reference of one LLM engine client, for tests/test_engine_reference.py.

It re-implements, from the documented rules (``sim/system/schedulers.py``, ``engine.py``,
``kv.py`` docstrings, the README serving section, vLLM v0 / Sarathi-Serve semantics), one
client serving a list of requests, one step at a time on an integer-nanosecond clock. It
shares no code with ``sim.system``: no decode runs, no vectorisation, no fast paths; the KV
block manager is a dict of blocks per request. Step cost is a function the caller passes
(``cost(prefill=[(new, past)], decode=[context]) -> int ns``), so durations are exact.

Rules it follows (one client, co-located prefill and decode):

* arrivals: a request whose ``prompt + output - 1`` tokens of KV need more blocks than the
  client has is rejected on arrival (``exceeds_kv_capacity``); others join the back of the
  waiting queue. The engine looks at its queue when a step ends, or when a request arrives
  while it is idle (then it sees every request arrived by that instant).
* ordering: ``fcfs`` takes the waiting queue as it stands (arrival order; a preempted
  sequence goes back to the front); ``least_work_left`` sorts it by tokens still to process
  (uncached known tokens + tokens still to generate), ties by arrival order.
* KV: a sequence holds ``ceil(cached tokens / block_size)`` blocks. A decode step caches one
  more token. When a decode needs a block and none is free, the most recently admitted
  running sequence not yet scheduled in this step is preempted (it may be the decode
  itself): its blocks are freed, its cached tokens reset to 0, it goes to the front of the
  waiting queue and later re-enters as a prefill of prompt + generated tokens (recompute),
  whose completion emits its next token.
* ``static``: only when nothing runs, admit waiting sequences in order, whole, while the
  sequence limit, the token budget and free blocks allow (a prompt longer than the budget is
  rejected, ``prompt_exceeds_max_num_batched_tokens``; any other misfit stops admission);
  prefill them in one step, then decode the batch to its end.
* ``continuous`` (vLLM v0): the same whole-prompt admission with ``max_num_seqs - running``
  slots every time the engine looks; if it admitted any, the step is that prefill alone,
  else one decode step for every running sequence.
* ``chunked`` (Sarathi-Serve / vLLM v1): every running decode first; the rest of the token
  budget goes to running partial prefills (admission order), then to waiting sequences while
  fewer than ``max_num_seqs`` run; a chunk is cut to the budget and to the KV room (its held
  blocks plus the free ones); filling stops at the first sequence that gets nothing.
* ``mixed``: the same but a prefill is never cut: a waiting prompt goes whole into the step or
  filling stops; one longer than the whole budget is rejected.
* a pure decode step is padded up to the smallest CUDA-graph size >= its batch (none: as is)
  with context-0 dummies, priced but producing nothing; host time is added to every step;
  a step lasts ``max(1, cost + host)`` ns.
* a chunk that brings a sequence's cache up to its known tokens emits one token at the step
  end; a decode emits one; the last one finishes the request and frees its blocks.
"""
from __future__ import annotations

from collections import Counter


class RefSeq:
    def __init__(self, rid, rank, arrival, prompt, output):
        self.rid, self.rank, self.arrival = rid, rank, arrival
        self.prompt, self.output = prompt, output
        self.generated = 0
        self.cached = 0              # tokens whose KV is in the cache
        self.blocks = 0
        self.first = self.last = self.finish = None
        self.status, self.reason = "pending", ""
        self.preemptions = 0

    @property
    def known(self):                 # tokens the model has seen or produced
        return self.prompt + self.generated

    @property
    def uncached(self):
        return self.known - self.cached

    @property
    def decoding(self):              # has produced a token and only that token is uncached
        return self.generated >= 1 and self.uncached == 1


class ReferenceEngine:
    def __init__(self, cost, *, scheduler, max_num_seqs, max_num_batched_tokens, block_size,
                 kv_blocks, host_ns=0, cuda_graph_sizes=(), ordering="fcfs"):
        assert scheduler in ("static", "continuous", "chunked", "mixed")
        self.cost, self.scheduler = cost, scheduler
        self.max_seqs, self.max_tokens = max_num_seqs, max_num_batched_tokens
        self.bs, self.capacity = block_size, kv_blocks
        self.host_ns = host_ns
        self.graphs = sorted(cuda_graph_sizes)
        self.lwl = ordering == "least_work_left"
        self.waiting: list[RefSeq] = []
        self.running: list[RefSeq] = []
        self.steps: list[tuple] = []
        self.gaps = Counter()
        self.ties = 0               # arrivals exactly at a step's end (order left undefined)

    # ------------------------------------------------------------------------- KV ----
    def used(self):
        return sum(s.blocks for s in self.running)

    def free(self):
        return self.capacity - self.used()

    def blocks_for(self, tokens):
        return (tokens + self.bs - 1) // self.bs

    def cache_upto(self, s, tokens):
        need = self.blocks_for(tokens) - s.blocks
        assert need <= self.free(), "reference over-allocated KV"
        s.blocks = max(s.blocks, self.blocks_for(tokens))

    # --------------------------------------------------------------------- queues ----
    def queue(self):
        if self.lwl:
            return sorted(self.waiting, key=lambda s: (s.uncached + s.output - s.generated, s.rank))
        return list(self.waiting)

    def start(self, s):
        self.waiting.remove(s)
        self.running.append(s)

    def preempt(self, s):
        self.running.remove(s)
        s.blocks = 0
        s.cached = 0
        s.preemptions += 1
        self.waiting.insert(0, s)

    def reject(self, s, reason, now):
        self.waiting.remove(s)
        s.status, s.reason, s.finish = "rejected", reason, now

    # ----------------------------------------------------------------- scheduling ----
    def decodes(self):
        """Every running decode gets its token; vLLM v0 preemption when a block is missing."""
        granted = []
        for s in [s for s in self.running if s.decoding]:
            if s not in self.running:
                continue
            while self.blocks_for(s.cached + 1) > s.blocks and self.free() == 0:
                victim = [v for v in self.running if v not in granted][-1]
                self.preempt(victim)
                if victim is s:
                    break
            if s in self.running:
                self.cache_upto(s, s.cached + 1)
                granted.append(s)
        return granted

    def admit_whole(self, slots, now):
        chunks, budget = [], self.max_tokens
        for s in self.queue():
            if slots == 0:
                break
            n = s.uncached
            if n > self.max_tokens:
                self.reject(s, "prompt_exceeds_max_num_batched_tokens", now)
                continue
            if n > budget or self.blocks_for(s.known) > self.free():
                break
            self.start(s)
            self.cache_upto(s, s.known)
            chunks.append((s, n))
            budget -= n
            slots -= 1
        return chunks

    def fill(self, budget, whole, now):
        """Prefill work for ``budget`` tokens beside the decodes (chunked / mixed)."""
        chunks = []
        partial = [s for s in self.running if not s.decoding]
        assert not (whole and partial), "mixed never leaves a prefill half done"
        for s in partial:
            if budget <= 0:
                return chunks
            room = (s.blocks + self.free()) * self.bs - s.cached
            n = min(s.uncached, budget, room)
            if n <= 0:
                return chunks
            self.cache_upto(s, s.cached + n)
            chunks.append((s, n))
            budget -= n
        for s in self.queue():
            if budget <= 0 or len(self.running) >= self.max_seqs:
                break
            assert s.cached == 0 and s.blocks == 0
            if whole:
                n = s.uncached
                if n > self.max_tokens:
                    self.reject(s, "prompt_exceeds_max_num_batched_tokens", now)
                    continue
                if n > budget or self.blocks_for(n) > self.free():
                    break
            else:
                n = min(s.uncached, budget, self.free() * self.bs)
                if n <= 0:
                    break
            self.start(s)
            self.cache_upto(s, n)
            chunks.append((s, n))
            budget -= n
        return chunks

    def plan(self, now):
        """(prefill chunks [(seq, new tokens)], decode sequences) of the next step."""
        if self.scheduler == "static":
            if not self.running:
                chunks = self.admit_whole(self.max_seqs, now)
                if chunks:
                    return chunks, []
            assert all(s.decoding for s in self.running)
            return [], self.decodes()
        if self.scheduler == "continuous":
            chunks = self.admit_whole(self.max_seqs - len(self.running), now)
            if chunks:
                return chunks, []
            return [], self.decodes()
        dec = self.decodes()
        return self.fill(self.max_tokens - len(dec), self.scheduler == "mixed", now), dec

    # ----------------------------------------------------------------------- run ----
    def emit(self, s, now):
        s.generated += 1
        if s.first is None:
            s.first = now
        else:
            self.gaps[now - s.last] += 1
        s.last = now
        if s.generated == s.output:
            self.running.remove(s)
            s.blocks = 0
            s.status, s.finish = "completed", now

    def run(self, requests):
        """``requests``: [(rid, arrival_ns, prompt, output)]; returns {rid: RefSeq}."""
        todo = sorted(requests, key=lambda r: (r[1], r[0]))
        seqs = {r[0]: RefSeq(r[0], i, r[1], r[2], r[3]) for i, r in enumerate(todo)}
        arrivals = [seqs[r[0]] for r in todo]
        now, busy_until = 0, None
        while True:
            while arrivals and arrivals[0].arrival <= now:
                s = arrivals.pop(0)
                if s.arrival == now and busy_until == now:
                    self.ties += 1
                if self.blocks_for(s.prompt + s.output - 1) > self.capacity:
                    s.status, s.reason, s.finish = "rejected", "exceeds_kv_capacity", s.arrival
                else:
                    self.waiting.append(s)
            chunks, dec = self.plan(now)
            if not chunks and not dec:
                if not arrivals:
                    break
                now, busy_until = arrivals[0].arrival, None      # idle until the next one
                continue
            pre = [(n, s.cached) for s, n in chunks]
            ctx = [s.cached for s in dec]
            width = len(dec)
            if dec and not chunks:
                width = next((g for g in self.graphs if g >= len(dec)), len(dec))
            cost = self.cost(pre, ctx + [0] * (width - len(dec)))
            end = now + max(1, cost + self.host_ns)
            kind = "mixed" if chunks and dec else ("prefill" if chunks else "decode")
            self.steps.append((kind, now, end, len(chunks) + len(dec), len(chunks) + width,
                               sum(n for _, n in chunks) + len(dec),
                               sum(p for _, p in pre) + sum(ctx), self.used(), cost))
            now = busy_until = end
            for s, n in chunks:
                s.cached += n
                if s.cached == s.known:
                    self.emit(s, now)
            for s in dec:
                s.cached += 1
                self.emit(s, now)
        assert not self.waiting and not self.running
        return seqs
